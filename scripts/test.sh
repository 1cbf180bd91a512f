#!/usr/bin/env bash
# Command 2: set up (idempotent) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -t 2 ] || export HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1  # a CI log: no bar redraws
.venv/bin/python -m pytest -q "$@"
