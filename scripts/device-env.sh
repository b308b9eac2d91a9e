# Sourced by the GPU check scripts (device-check*.sh): the binaries' folder, the output folder, the
# Python with the CUDA PyTorch, and that PyTorch's libraries on the loader path (binaries built
# against it link them from there).
BIN="${BIN:-target/release}"
OUT="${OUT:-/tmp/thinkbench-device-check}"
mkdir -p "$OUT"
py="${PYTHON:-python3}"
torchlib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
