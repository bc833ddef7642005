#!/usr/bin/env bash
# CapsNet and DeepCaps on the whole of Fashion-MNIST with the recipe of the campaign's finalists
# (benchmarks/fmnist_campaign.sh, `final`): all 60,000 training images, shift and left-right
# flip, Adam at 1e-3 decayed 10 % an epoch, 30 epochs planned. Each network trains in parts:
# STOP_AFTER epochs in this call (the schedule stays the 30-epoch one), and the next call with
# a larger STOP_AFTER continues the same run from its last checkpoint. The test split is read
# after every epoch, for the curve; the docs report the last epoch's reading (no epoch is
# chosen on it). docs/nas.md, "Fashion-MNIST at full scale", says how far each got.
#
#   CAPSLAB_DATA=../shared/datasets MODELS=capsnet STOP_AFTER=8 bash benchmarks/fmnist_baselines.sh
#   MODELS=deepcaps STOP_AFTER=5 bash benchmarks/fmnist_baselines.sh
#   MODELS="capsnet deepcaps" STOP_AFTER=30 bash benchmarks/fmnist_baselines.sh   # to the end
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fmnist-baselines}
CAPSLAB=${CAPSLAB:-.venv/bin/capslab}
MODELS=${MODELS:-capsnet deepcaps}
EPOCHS=${EPOCHS:-30}
STOP_AFTER=${STOP_AFTER:-$EPOCHS}

for model in $MODELS; do
    run="$OUT/$model"
    resume=(); if [ -f "$run/last.pt" ]; then resume=(--resume); fi
    "$CAPSLAB" train --model "$model" --dataset fashion-mnist --epochs "$EPOCHS" \
        --stop-after "$STOP_AFTER" --augment --hflip \
        --policy exp-decay --policy-opt decay_every=epoch --policy-opt rate=0.9 \
        --seed 0 --out "$run" "${resume[@]}"
done
