#!/usr/bin/env bash
# Installs TI Trainer for standalone use (CPU torch, diffusers/transformers, the CLIP vocabulary).
# Usage: bash tools/install.sh [extra,...]   e.g. "standalone,dev"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-standalone}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A torch already present (e.g. a CUDA build on a GPU machine) is kept; otherwise the CPU build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${extras}]"
# open_clip ships the CLIP BPE vocabulary; its torchvision dependency is not needed for that.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('open_clip') is None)" \
  || python -m pip install -q --no-deps "open_clip_torch>=2.20"
