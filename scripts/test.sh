#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run all of them (CI runs exactly this).
#   .venv/                       memoria itself, editable, with its test tools
#   memoria setup                the vLLM (CPU build without a GPU) and LiteLLM runtimes; idempotent
#   .cache/tiny-models/          tiny models built on the spot by the end-to-end tests (no download)
#   espeak-ng, sox, chromium     Debian's packages, for speech and the status page's browser test
set -euo pipefail
cd "$(dirname "$0")/.."
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]' 2>&1 | quiet
.venv/bin/memoria setup
# speech and audio formats for the transcription tests (Debian's espeak-ng and sox); Chromium for the status
# page's test (Debian's, driven by playwright: no browser download)
command -v espeak-ng >/dev/null && command -v sox >/dev/null && command -v chromium >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq espeak-ng sox chromium >/dev/null; }
.venv/bin/ruff check memoria_cli tests bench
.venv/bin/ruff format --check -q memoria_cli tests bench
.venv/bin/mypy  # --strict on memoria_cli ([tool.mypy] in pyproject.toml)
exec .venv/bin/python -m pytest -v --durations=15 --timeout 1200 tests "$@"
