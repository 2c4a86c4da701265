#!/usr/bin/env bash
# The README's test command: installs TI Trainer with its test extras and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh "standalone,dev"
python -m pytest -q "$@"
