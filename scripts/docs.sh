#!/usr/bin/env bash
# Build the docs site offline into _docs/: execute the notebooks, nbdev's processing (_proc/), mkdocs-material.
# Extra arguments go to scripts/docs.py (--force: execute every notebook again; --jobs N).
# Open it with: python -m http.server -d _docs   (Quarto users: `nbdev_docs` builds nbdev's own site instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
. .venv/bin/activate
export ALPACA_FT_SHARED="${ALPACA_FT_SHARED:-$(cd .. && pwd)/shared}"
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true WANDB_DIR="${WANDB_DIR:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TQDM_DISABLE=1 NO_MKDOCS_2_WARNING=1  # no progress bars in the pages
python scripts/docs.py "$@"
