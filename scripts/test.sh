#!/usr/bin/env bash
# Set up (if needed), lint, and run the test suite: `bash scripts/test.sh [pytest args]`.
# ruff, then mypy (both configured in pyproject.toml) run first; any finding fails the script before pytest starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check stefaland stefaland_cli tests benchmarks examples scripts
.venv/bin/python -m mypy
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider "$@"
