#!/usr/bin/env bash
# The main job end to end on the embedded default — a virtual world, local disk, CPU:
#   synth → build (incl. gridded sources on a local dask cluster) → pretrain (CVGM) →
#   finetune on the PUB folds (LSTM-SL baseline and StefaLand-resConn) → report.
# Everything lands in ${DEMO_DIR:-demo}/. Re-running resumes/skips finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
STEFALAND=.venv/bin/stefaland
DEMO="${DEMO_DIR:-demo}"
mkdir -p "$DEMO"

echo "== 1/5 virtual world (CAMELS-format files, gridded rasters, intake catalog)"
"$STEFALAND" data synth "$DEMO/world" --sites 60 --years 4 --seed 1 --gridded --quiet

echo "== 2/5 data build → sharded zarr store"
"$STEFALAND" data build --catalog "$DEMO/world/virtual_world.yaml" --out "$DEMO/world.zarr" --shard-size 16

echo "== 3/5 masked pretraining (tiny encoder)"
"$STEFALAND" pretrain --store "$DEMO/world.zarr" --config configs/pretrain_tiny.yaml --out "$DEMO/runs/pretrain" --quiet

echo "== 4/5 finetuning on the 10 PUB folds"
sed "s#^  name: lstm#  name: stefaland_resconn\n  pretrained: $DEMO/runs/pretrain#" configs/finetune_tiny.yaml > "$DEMO/finetune_resconn.yaml"
"$STEFALAND" finetune --store "$DEMO/world.zarr" --config configs/finetune_tiny.yaml --out "$DEMO/runs/finetune/lstm" \
  --task camels --split pub --fold all --model lstm --quiet
"$STEFALAND" finetune --store "$DEMO/world.zarr" --config "$DEMO/finetune_resconn.yaml" --out "$DEMO/runs/finetune/resconn" \
  --task camels --split pub --fold all --quiet

echo "== 5/5 report"
"$STEFALAND" report camels --split pub --runs "$DEMO/runs/finetune" --out "$DEMO/report" --quiet
cat "$DEMO/report/"*table.md
echo "demo complete: see $DEMO/report/"
