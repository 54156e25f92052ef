#!/usr/bin/env bash
# From a fresh clone to a running endpoint on any machine, offline: install memoria and its runtimes,
# build the tiny local models, and start them in the background at http://127.0.0.1:8200/v1.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
python3 -m venv .venv
.venv/bin/pip install -q -e . 2>&1 | quiet
.venv/bin/memoria setup
VLLM_PY="$(.venv/bin/python -c 'from memoria_cli.home import Home; from memoria_cli.runtimes import Runtimes; r = Runtimes(Home.from_env().runtimes); print(r.python_of(r.vllm))')"
"$VLLM_PY" tools/make_tiny_models.py ~/.local/share/memoria/models
.venv/bin/memoria up -d --profile tiny
echo "try: .venv/bin/memoria status   and   .venv/bin/memoria down"
