#!/usr/bin/env bash
# The README's demo command: installs TI Trainer and trains an embedding on the tiny built-in model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh "standalone"
python -m extension demo "$@"
