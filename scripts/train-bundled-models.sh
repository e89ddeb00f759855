#!/usr/bin/env bash
# Train the bundled models (cxr-classifier, cxr-ae-14x14, cxr-ae-7x7) on COVID-QU-Ex and copy
# their fp16 weights + JSON sidecars into src/gifsplanation/weights/.
# Usage: scripts/train-bundled-models.sh [DATA_CSV] [RUNS_DIR]
# Runs the three trainings in parallel, one torch thread each (sized for a 2-core CPU).
set -euo pipefail
DATA=${1:-../shared/data/covid-qu-ex/train.csv}
RUNS=${2:-runs}
CACHE=${GIFSPLANATION_CACHE:-$HOME/.cache/gifsplanation}
PY=${PYTHON:-python}
WEIGHTS=$(dirname "$0")/../src/gifsplanation/weights
mkdir -p "$RUNS" "$WEIGHTS"

$PY -m gifsplanation train classifier "$DATA" --out "$RUNS/cxr-classifier" \
    --epochs 24 --batch-size 32 --lr 2e-3 --channels 16,32,64,128 --blocks 1 --head softmax \
    --seed 0 --threads 1 --time-limit 35 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-classifier.log" 2>&1 &
$PY -m gifsplanation train autoencoder "$DATA" --out "$RUNS/cxr-ae-14x14" \
    --epochs 8 --batch-size 16 --lr 2e-3 --channels 8,16,32,64 --latent-channels 16 --blocks 1 \
    --seed 0 --threads 1 --time-limit 45 --val-limit 192 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-ae-14x14.log" 2>&1 &
$PY -m gifsplanation train autoencoder "$DATA" --out "$RUNS/cxr-ae-7x7" \
    --epochs 8 --batch-size 16 --lr 2e-3 --channels 8,16,32,64,128 --latent-channels 64 \
    --blocks 1 --seed 0 --threads 1 --time-limit 45 --val-limit 192 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-ae-7x7.log" 2>&1 &
wait

for name in cxr-classifier cxr-ae-14x14 cxr-ae-7x7; do
    cp "$RUNS/$name/model.pt" "$WEIGHTS/$name.pt"
    cp "$RUNS/$name/model.json" "$WEIGHTS/$name.json"
done
echo "weights in $WEIGHTS:"; ls -l "$WEIGHTS"
