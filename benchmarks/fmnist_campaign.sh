#!/usr/bin/env bash
# The full-scale Fashion-MNIST search (docs/nas.md, "Fashion-MNIST at full scale"): the
# efficient preset, all 60,000 training images (5,000 held out for selection), the accuracy
# objective at CapsAcc's 8 bits, NASCaps's hardware figures as limits; then the most accurate
# front members fully trained and tested once. Every step resumes: run the script again after
# an interruption (stop it with Ctrl-C, or `kill -TERM` when it runs in the background, where
# Ctrl-C's SIGINT is ignored; do not pause it with SIGSTOP: candidates have a wall-clock limit).
#
#   CAPSLAB_DATA=../shared/datasets bash benchmarks/fmnist_campaign.sh          # all of it
#   STEP=search bash benchmarks/fmnist_campaign.sh                              # one step
#   STEP=final MEMBERS=1-9 bash benchmarks/fmnist_campaign.sh                   # these front members
#   SPACE=preset=nascaps RUN=runs/fmnist-paper MAX_TIME=3600 STEP=search bash ... # the paper's space, 1 h
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/fmnist-efficient}
CAPSLAB=${CAPSLAB:-.venv/bin/capslab}
GENERATIONS=${GENERATIONS:-8}       # 10 + 8 x 10 = 90 candidates
FINAL_EPOCHS=${FINAL_EPOCHS:-30}
BEST=${BEST:-4}
MEMBERS=${MEMBERS:-}                # front numbers (e.g. 1,2,7 or 1-9) instead of the BEST most accurate
STEP=${STEP:-all}
SPACE=${SPACE:-preset=efficient}    # preset=nascaps: the paper's space (used when the search starts)
MAX_TIME=${MAX_TIME:-}              # seconds of search in this call; the next call resumes
capped=(); if [ -n "$MAX_TIME" ]; then capped=(--max-time "$MAX_TIME"); fi

search() {
    if [ -f "$RUN/run.json" ]; then
        # to the generations it was started with; one worker, as started (resume's default
        # is one per core, and two candidates on two cores time out)
        "$CAPSLAB" search resume "$RUN" --workers 1 "${capped[@]}"
    else
        # limits: the strictest reading of NASCaps's 92.15 % network (-88 % energy, -79 %
        # latency, -63 % memory against the lower of CapsNet's and DeepCaps's Table 3 figures)
        "$CAPSLAB" search run --dataset fashion-mnist --space "$SPACE" \
            --accuracy-mode accelerator --accuracy-bits 8 \
            --limit energy_mJ=4.20 --limit latency_ms=0.376 --limit memory_KiB=3168 \
            --rungs 1,3 --promote 0.5 --population 10 --offspring 10 \
            --generations "$GENERATIONS" --val-size 5000 --workers 1 --time-limit 900 \
            --seed 0 --out "$RUN" "${capped[@]}"
    fi
    "$CAPSLAB" search report "$RUN"
}

final() {
    # the whole training split (the validation images go back in), shift and left-right flip
    # augmentation (clothes look the same mirrored), the learning rate decayed 10 % an epoch
    # (0.047x after 30); the test split read once, after the final epoch
    if [ -n "$MEMBERS" ]; then chosen=(--members "$MEMBERS"); else chosen=(--best "$BEST"); fi
    "$CAPSLAB" search finalize "$RUN" "${chosen[@]}" --epochs "$FINAL_EPOCHS" \
        --policy exp-decay --policy-opt decay_every=epoch --policy-opt rate=0.9 --hflip \
        --out "$RUN/final-decay"
}

case "$STEP" in
    search) search ;;
    final) final ;;
    all) search; final ;;
    *) echo "STEP is search, final or all, not $STEP" >&2; exit 2 ;;
esac
