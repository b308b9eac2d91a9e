#!/usr/bin/env bash
# llama.cpp for the side-by-side benchmark (scripts/bench_llamacpp.sh, run by make bench), installed
# once into the Python reference environment (scripts/setup-pyref.sh), never in CI:
#   * llama-cpp-python 0.3.36 built from its source package with native CPU flags (about 10-15 min
#     on two cores), so llama.cpp uses every instruction this CPU has;
#   * the source package kept unpacked, for llama.cpp's converter (vendor/llama.cpp/
#     convert_hf_to_gguf.py and its gguf-py), which the bench runs with the same python;
#   * sentencepiece, which the converter imports.
# Idempotent. Prints the llama.cpp folder (the converter's) on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
py="$(scripts/setup-pyref.sh)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench/llamacpp"
src="$cache/llama_cpp_python-$version"
mkdir -p "$cache"
if [ ! -f "$src/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  echo "setup-llamacpp: fetching the llama-cpp-python $version source package" >&2
  "$py" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$cache" >&2
  tar xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
fi
if ! "$py" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
  echo "setup-llamacpp: building llama-cpp-python $version (native flags; 10-15 min on two cores)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip install --quiet --no-deps "$src" >&2
  "$py" -m pip install --quiet diskcache jinja2 typing-extensions >&2
fi
"$py" -c "import sentencepiece" 2>/dev/null || "$py" -m pip install --quiet sentencepiece >&2
echo "$src/vendor/llama.cpp"
