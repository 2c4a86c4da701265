#!/usr/bin/env bash
# Builds a Python environment with the web UI's own UI pins (gradio 3.41.2, fastapi 0.94,
# pydantic 1, Pillow 9.5) on top of the installed packages, and prints its python path.
# tests/test_ui_tab.py builds the tab in it when TI_TRAINER_GRADIO3_PYTHON points there.
set -euo pipefail
venv="${1:-${TMPDIR:-/tmp}/ti-trainer-gradio3}"
if [ ! -x "$venv/bin/python" ]; then
  python -m venv "$venv" >&2
  # Everything else (torch, ...) comes from the environment this script was started from.
  python -c "import sysconfig; print(sysconfig.get_paths()['purelib']); print(sysconfig.get_paths()['platlib'])" \
    > "$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_ti_trainer_parent.pth"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  "gradio==3.41.2" "fastapi==0.94.0" "pydantic==1.10.27" "Pillow==9.5.0" "numpy==1.26.4" \
  "huggingface_hub==0.25.2" "starlette==0.26.1" "httpx==0.24.1" >&2
echo "$venv/bin/python"
