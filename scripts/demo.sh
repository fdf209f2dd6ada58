#!/usr/bin/env bash
# The main job end to end on the embedded default — a virtual world, local disk, CPU:
#   synth → build (incl. gridded sources on a local dask cluster) → pretrain (CVGM, per PUB fold,
#   leaving that fold out) → finetune on the PUB folds (LSTM-SL and StefaLand-resConn) → report.
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

echo "== 3/5 masked pretraining, once per PUB fold with that fold's sites left out (no leakage)"
for k in 1 2 3 4 5 6 7 8 9 10; do
  sed "s/^data: {\(.*\)}/data: {\1, exclude: {split: pub, fold: $k}}/" configs/pretrain_tiny.yaml > "$DEMO/pretrain-$k.yaml"
  "$STEFALAND" pretrain --store "$DEMO/world.zarr" --config "$DEMO/pretrain-$k.yaml" --out "$DEMO/runs/pretrain/fold-$k" --quiet
done

echo "== 4/5 finetuning on the 10 PUB folds: LSTM-SL and StefaLand-resConn"
sed "s#^  name: lstm#  name: stefaland_resconn\n  pretrained: $DEMO/runs/pretrain/fold-{fold}#" configs/finetune_tiny.yaml > "$DEMO/finetune_resconn.yaml"
"$STEFALAND" finetune --store "$DEMO/world.zarr" --config configs/finetune_tiny.yaml --out "$DEMO/runs/finetune/lstm" \
  --task camels --split pub --fold all --model lstm --quiet
"$STEFALAND" finetune --store "$DEMO/world.zarr" --config "$DEMO/finetune_resconn.yaml" --out "$DEMO/runs/finetune/resconn" \
  --task camels --split pub --fold all --quiet

echo "== 5/5 report"
"$STEFALAND" report camels --split pub --runs "$DEMO/runs/finetune" --out "$DEMO/report" --quiet
cat "$DEMO/report/"*table.md
echo "demo complete: see $DEMO/report/"
