#!/usr/bin/env bash
# Writes .cargo/config.toml so that plain `cargo build/test/run` find libtorch and the binaries
# run without LD_LIBRARY_PATH (the library directory is baked in as an rpath).
#   default:                 the CPU libtorch installed by scripts/setup-libtorch.sh
#   LIBTORCH_USE_PYTORCH=1:  the libtorch inside the active Python's PyTorch 2.13 (use this for CUDA)
#   LIBTORCH=/path:          any libtorch 2.13 tree
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${LIBTORCH_USE_PYTORCH:-0}" = "1" ]; then
  libdir="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  env_block=$'LIBTORCH_USE_PYTORCH = "1"\nLIBTORCH_BYPASS_VERSION_CHECK = "1"'
else
  libtorch="${LIBTORCH:-$(scripts/setup-libtorch.sh)}"
  libdir="$libtorch/lib"
  env_block="LIBTORCH = \"$libtorch\""
fi

mkdir -p .cargo
tmp="$(mktemp .cargo/config.toml.XXXXXX)"
cat > "$tmp" <<TOML
# Written by scripts/write-cargo-config.sh (make setup); not committed: it names this machine's paths.
[env]
$env_block

[target.x86_64-unknown-linux-gnu]
rustflags = ["-C", "link-arg=-Wl,-rpath,$libdir"]

[target.aarch64-unknown-linux-gnu]
rustflags = ["-C", "link-arg=-Wl,-rpath,$libdir"]
TOML
mv "$tmp" .cargo/config.toml
