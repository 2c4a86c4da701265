#!/usr/bin/env bash
# The README's test command: installs TI Trainer with its test extras and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh "standalone,ui,dev"
# The browser test drives Debian's Chromium (never a browser downloaded by playwright).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
# The tab is also built under the web UI's gradio 3.41.2 (in a separate environment).
if [ -z "${TI_TRAINER_GRADIO3_PYTHON:-}" ]; then
  if TI_TRAINER_GRADIO3_PYTHON=$(bash tools/gradio3-env.sh); then
    export TI_TRAINER_GRADIO3_PYTHON
  else
    echo "warning: could not build the gradio 3.41 environment; that test will be skipped" >&2
  fi
fi
python -m pytest -q "$@"
