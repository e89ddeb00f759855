#!/usr/bin/env bash
# Train the bundled models (cxr-classifier, cxr-ae-14x14, cxr-ae-7x7) on COVID-QU-Ex, install
# their fp16 weights + JSON sidecars into src/gifsplanation/weights/, and measure them on the
# held-out split (numbers for docs/model-card.md).
#
# Usage: scripts/train-bundled-models.sh [DATA_CSV] [RUNS_DIR]
# The three trainings run in parallel, one torch thread each (sized for a 2-core CPU; about
# 25-45 min each there). Re-running resumes from RUNS_DIR/<name>/last.pt.
set -euo pipefail
DATA=${1:-../shared/data/covid-qu-ex/train.csv}
RUNS=${2:-runs}
CACHE=${GIFSPLANATION_CACHE:-$HOME/.cache/gifsplanation}   # decoded uint8 images, not in the repo
PY=${PYTHON:-python}
WEIGHTS=$(cd "$(dirname "$0")/.." && pwd)/src/gifsplanation/weights
mkdir -p "$RUNS" "$WEIGHTS"

$PY -m gifsplanation train classifier "$DATA" --out "$RUNS/cxr-classifier" \
    --epochs 12 --batch-size 32 --lr 2e-3 --channels 16,32,64,128 --blocks 1 --head softmax \
    --seed 0 --threads 1 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-classifier.log" 2>&1 &
$PY -m gifsplanation train autoencoder "$DATA" --out "$RUNS/cxr-ae-14x14" \
    --epochs 8 --batch-size 16 --lr 2e-3 --channels 8,16,32,64 --latent-channels 16 --blocks 1 \
    --seed 0 --threads 1 --val-limit 192 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-ae-14x14.log" 2>&1 &
$PY -m gifsplanation train autoencoder "$DATA" --out "$RUNS/cxr-ae-7x7" \
    --epochs 8 --batch-size 16 --lr 2e-3 --channels 8,16,32,64,128 --latent-channels 64 \
    --blocks 1 --seed 0 --threads 1 --val-limit 192 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-ae-7x7.log" 2>&1 &
wait

for name in cxr-classifier cxr-ae-14x14 cxr-ae-7x7; do
    $PY -c "import sys; from gifsplanation.models.checkpoint import install_weights as i; \
i(sys.argv[1], sys.argv[2])" "$RUNS/$name/model.pt" "$WEIGHTS/$name.pt"
done
ls -l "$WEIGHTS"

# Held-out measurements: classifier AUC, AE MAE, AE effect on predictions, IoU of
# latentshift-max maps with the infection masks (80 COVID-19 val images).
$PY -m gifsplanation.models.validation --data "$DATA" --classifier cxr-classifier \
    --ae cxr-ae-14x14 --ae cxr-ae-7x7 --n-iou 80 --out "$RUNS/validation.json"
