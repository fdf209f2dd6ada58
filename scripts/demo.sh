#!/usr/bin/env bash
# The main job end to end on the embedded default — a virtual world, local disk, CPU:
#   synth → build (incl. gridded sources on a local dask cluster) → pretrain (CVGM, once per held-out
#   PUB fold, leaving that fold out) → finetune LSTM-SL and StefaLand-resConn on those folds → report.
# Everything lands in ${DEMO_DIR:-demo}/. Re-running resumes/skips finished steps.
# A virtual world, not real basins: the figures show that the pipeline learns, not the paper's numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
STEFALAND=.venv/bin/stefaland
DEMO="${DEMO_DIR:-demo}"
FOLDS="${DEMO_FOLDS:-1,2}"   # a fold spec (all, 3, 1,2, 1-5): 2 of the 10 PUB folds (80 held-out basins) keep the demo to minutes
FOLDS="${FOLDS// /,}"         # "1 2" is read as 1,2
mkdir -p "$DEMO"

echo "== 1/5 virtual world: 400 basins x 3 years (CAMELS-format files, gridded rasters, intake catalog)"
"$STEFALAND" data synth "$DEMO/world" --sites 400 --years 3 --seed 1 --gridded --quiet

echo "== 2/5 data build → sharded zarr store"
"$STEFALAND" data build --catalog "$DEMO/world/virtual_world.yaml" --out "$DEMO/world.zarr" --shard-size 100

echo "== 3/5 masked pretraining, once per held-out PUB fold with that fold's basins left out (no leakage)"
"$STEFALAND" pretrain --store "$DEMO/world.zarr" --config configs/pretrain_demo.yaml --out "$DEMO/runs/pretrain" \
  --split pub --fold "$FOLDS" --quiet   # writes runs/pretrain/fold-<k>, each without fold k's basins

echo "== 4/5 finetuning on PUB folds ${FOLDS//,/, }: LSTM-SL and StefaLand-resConn"
sed "s#^  name: lstm#  name: stefaland_resconn\n  pretrained: $DEMO/runs/pretrain/fold-{fold}#" configs/finetune_demo.yaml > "$DEMO/finetune_resconn.yaml"
"$STEFALAND" finetune --store "$DEMO/world.zarr" --config configs/finetune_demo.yaml --out "$DEMO/runs/finetune/lstm" \
  --task camels --split pub --fold "$FOLDS" --model lstm --quiet
"$STEFALAND" finetune --store "$DEMO/world.zarr" --config "$DEMO/finetune_resconn.yaml" --out "$DEMO/runs/finetune/resconn" \
  --task camels --split pub --fold "$FOLDS" --quiet

echo "== 5/5 report (held-out basins of the folds run)"
"$STEFALAND" report camels --split pub --folds "$FOLDS" --runs "$DEMO/runs/finetune" --out "$DEMO/report" --quiet
cat "$DEMO/report/"*table.md
echo "demo complete: see $DEMO/report/"
