#!/usr/bin/env bash
# llama.cpp's libraries built for AVX2 + FMA + F16C only (no AVX-512, no AVX-VNNI: what a Zen 3 or
# Haswell-to-Comet-Lake CPU has), so that an AVX-512 machine can compare thinkbench and llama.cpp
# as an AVX2-only machine would run them: `BENCH_ISA=avx2 scripts/bench_llamacpp.sh` points
# llama-cpp-python at these (LLAMA_CPP_LIB_PATH) and caps thinkbench with THINKBENCH_ISA=avx2.
# Built once from the source package scripts/setup-llamacpp.sh unpacked (5-10 min on two cores),
# with cmake from the reference python's packages. Outside CI. Prints the library folder.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(scripts/setup-pyref.sh)"
llama_cpp="$(scripts/setup-llamacpp.sh)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench/llamacpp"
build="$cache/build-avx2"
lib="$cache/lib-avx2"
if [ ! -f "$lib/libllama.so" ]; then
  "$py" -c "import cmake" 2>/dev/null || "$py" -m pip install --quiet cmake ninja >&2
  bin="$(dirname "$py")"
  echo "setup-llamacpp-avx2: building llama.cpp for AVX2 only (5-10 min on two cores)" >&2
  "$bin/cmake" -S "$llama_cpp" -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$bin/ninja" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF >&2
  "$bin/cmake" --build "$build" --target llama -j "$(nproc)" >&2
  mkdir -p "$lib"
  find "$build" -name 'lib*.so*' -exec cp -P {} "$lib/" \;
fi
echo "$lib"
