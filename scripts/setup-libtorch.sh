#!/usr/bin/env bash
# Installs a CPU libtorch 2.13.0 (the version tch 0.26 is built for) outside the clone, once.
#
# Why this way: tch's own download feature needs a host we cannot reach, but the PyTorch wheel
# from the Python package registry carries a complete libtorch tree (torch/lib + torch/include).
# Its libtorch.so pulls in the multi-GB CUDA stack, so for a CPU install we link against a tiny
# replacement libtorch.so that depends only on libtorch_cpu and libc10. libtorch_cpu itself needs
# libcudart.so.13 and libcupti.so.13 to load (no GPU is needed), which come from two small wheels.
#
# A GPU user instead points the build at a full PyTorch 2.13 install: LIBTORCH_USE_PYTORCH=1.
#
# Prints the install directory on stdout. Idempotent: a finished install has a .complete marker,
# and the tree is assembled in a temporary directory and renamed into place, so a killed run never
# leaves a half-installed libtorch behind.
set -euo pipefail

TORCH_VERSION=2.13.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench"
dest="${THINKBENCH_LIBTORCH:-$cache_root/libtorch-$TORCH_VERSION-cpu}"

if [ -f "$dest/.complete" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$(dirname "$dest")"
work="$(mktemp -d "$(dirname "$dest")/.libtorch-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "thinkbench: installing libtorch $TORCH_VERSION (CPU) into $dest (one-time, ~530 MB download)" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/wheels" \
  "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION" >&2

tree="$work/libtorch"
mkdir -p "$tree/lib"
( cd "$work" && python3 - "$work/wheels" "$tree" <<'PY'
import sys, zipfile, pathlib, shutil
wheels, tree = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
keep_libs = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1", "libcudart.so.13", "libcupti.so.13"}
for whl in wheels.glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir():
                continue
            if name.startswith("torch/include/"):
                out = tree / "include" / name[len("torch/include/"):]
            elif pathlib.PurePosixPath(name).name in keep_libs:
                out = tree / "lib" / pathlib.PurePosixPath(name).name
            elif name.startswith("torch/share/cmake/"):
                out = tree / "share" / "cmake" / name[len("torch/share/cmake/"):]
            else:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
)

# The replacement libtorch.so: no symbols of its own, it only records torch_cpu and c10 as
# needed libraries, so `-ltorch` resolves without the CUDA stack.
echo "" > "$work/empty.c"
cc -shared -fPIC -o "$tree/lib/libtorch.so" "$work/empty.c" \
  -Wl,--no-as-needed -L"$tree/lib" -ltorch_cpu -lc10 -Wl,-rpath,'$ORIGIN'
echo "$TORCH_VERSION" > "$tree/build-version"
touch "$tree/.complete"

rm -rf "$dest"
mv "$tree" "$dest"
echo "$dest"
