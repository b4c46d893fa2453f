#!/usr/bin/env bash
# Set up .venv, then run every notebook and build the docs site from them (scripts/docs.sh: each notebook runs in a
# fresh process, as `nbdev_test` runs it, and a notebook that raises fails this script), then run the tests in
# tests/ (pytest), the browser test of the site included (it skips, saying why, where Chromium is missing).
# Running the notebooks once, for the site, instead of once for nbdev_test and again for the site halves the time
# the real-model lessons take; `nbdev_test` itself still works on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export ALPACA_FT_SHARED="${ALPACA_FT_SHARED:-$(cd .. && pwd)/shared}"
export WANDB_MODE=offline WANDB_SILENT=true WANDB_DIR="${WANDB_DIR:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d "$ALPACA_FT_SHARED" ] || echo "note: $ALPACA_FT_SHARED not found: tests that need the real Llama 2 tokenizer and data will be skipped"
python scripts/make_readme.py --check
bash scripts/docs.sh  # executes every notebook; one that raises stops here, naming the notebook and the cell
ALPACA_FT_DOCS_BUILT=1 python -m pytest tests -q -ra
