#!/usr/bin/env bash
# Create .venv with StefaLand and everything its tests need. Safe to re-run.
# torch==2.13.0 goes first, alone: an unpinned torch would pull a multi-GB CUDA build.
# Then ONE pip command for everything else, so pip resolves all pins together.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,geo,eo]"
