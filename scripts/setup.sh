#!/usr/bin/env bash
# Create .venv (if missing) and install alpaca_ft with its dev/test tools; CPU build of torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
# torch first, pinned: on these machines torch==2.13.0 is a local CPU wheel; an unpinned torch pulls a CUDA build
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0 2>&1 | grep -v -i warning || true
python -m pip install -q -e ".[dev]" 2>&1 | grep -v -i warning || true
python -c "import alpaca_ft, torch, transformers, datasets; print('alpaca_ft', alpaca_ft.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| datasets', datasets.__version__)"
