#!/usr/bin/env bash
# Command 1: set up (idempotent) and run the main job, the demo audit, on the offline default model and data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lorasec demo "$@"
