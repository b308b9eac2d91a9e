#!/usr/bin/env bash
# The Python reference environment (transformers 5.24 on PyTorch 2.13), used by hand for the parity
# fixtures (make fixtures) and by the benchmark (make bench). CI never needs it. Idempotent; prints
# the interpreter path.
set -euo pipefail
venv="${THINKBENCH_PYREF:-${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench/pyref}"
if ! "$venv/bin/python" -c 'import transformers, torch, safetensors, numpy' 2>/dev/null; then
  echo "thinkbench: creating the reference environment in $venv (transformers 5.24, torch 2.13; a few GB)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==2.13.0" "transformers==5.24.0" safetensors numpy jinja2 >&2
fi
echo "$venv/bin/python"
