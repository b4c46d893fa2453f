#!/usr/bin/env bash
# Create .venv (if missing) and install alpaca_ft with its dev/test tools; the CPU build of torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
log=.venv/install.log
quiet() { "$@" >"$log" 2>&1 || { cat "$log"; echo "setup failed: $*" >&2; exit 1; }; }
quiet python -m pip install --upgrade pip
# torch first, pinned: on these machines torch==2.13.0 is a local CPU wheel; an unpinned torch pulls a CUDA build
python -c "import torch" 2>/dev/null || quiet python -m pip install torch==2.13.0
quiet python -m pip install -e ".[dev]"
python -c "import alpaca_ft, torch, transformers, datasets; print('alpaca_ft', alpaca_ft.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| datasets', datasets.__version__)"
