#!/usr/bin/env bash
# The openai SDK against `thinkbench serve` (scripts/serve_openai_client.py), from the Python
# reference environment; installs the `openai` package there on first use. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(scripts/setup-pyref.sh)"
"$py" -c 'import openai' 2>/dev/null || "$py" -m pip install --quiet openai >&2
[ -x target/release/thinkbench ] || make build >&2
exec "$py" scripts/serve_openai_client.py "$@"
