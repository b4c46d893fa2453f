#!/usr/bin/env bash
# Set up .venv, then run every notebook (nbdev_test), build the docs site (scripts/docs.sh) and run the tests in
# tests/ (pytest), the browser test of the site included (it skips, saying why, where Chromium is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export ALPACA_FT_SHARED="${ALPACA_FT_SHARED:-$(cd .. && pwd)/shared}"
export WANDB_MODE=offline WANDB_SILENT=true WANDB_DIR="${WANDB_DIR:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d "$ALPACA_FT_SHARED" ] || echo "note: $ALPACA_FT_SHARED not found: tests that need the real Llama 2 tokenizer and data will be skipped"
python scripts/make_readme.py --check
nbdev_test --n_workers 2
bash scripts/docs.sh --allow-errors  # a notebook that raises fails nbdev_test above and test_docs below
ALPACA_FT_DOCS_BUILT=1 python -m pytest tests -q -ra
