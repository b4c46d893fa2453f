#!/usr/bin/env bash
# Set up .venv, then run the main job offline on CPU: prepare the bundled sample, build a tiny Llama,
# fine-tune it for about a minute, evaluate, generate. Outputs go to ${1:-runs/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
alpaca_ft demo "${1:-runs/demo}" --overwrite
