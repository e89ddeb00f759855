#!/usr/bin/env bash
# Train the bundled models on COVID-QU-Ex, install their fp16 weights + JSON sidecars into
# src/gifsplanation/weights/, store the demo latent, and measure everything on the held-out
# split (the numbers in docs/model-card.md).
#
# Usage: scripts/train-bundled-models.sh [DATA_CSV] [RUNS_DIR]
# Sized for a 2-core CPU: the two autoencoders train in parallel (one thread each, ~40 min
# on a shared machine), then the classifier (~16 min, 2 threads) on originals and on both
# autoencoders' reconstructions. Re-running resumes from RUNS_DIR/<name>/last.pt.
set -euo pipefail
DATA=${1:-../shared/data/covid-qu-ex/train.csv}
RUNS=${2:-runs}
CACHE=${GIFSPLANATION_CACHE:-$HOME/.cache/gifsplanation}   # decoded uint8 images, not in the repo
PY=${PYTHON:-python}
WEIGHTS=$(cd "$(dirname "$0")/.." && pwd)/src/gifsplanation/weights
mkdir -p "$RUNS" "$WEIGHTS"
install() {  # install RUN_FOLDER NAME: copy model.pt + sidecar into the package, check sha256
    $PY -c "import sys; from gifsplanation.models.checkpoint import install_weights as i; \
i(sys.argv[1], sys.argv[2])" "$RUNS/$1/model.pt" "$WEIGHTS/$2.pt"
}

# 1. Two bottlenecks: 16x14x14 (4 halvings) and 64x7x7 (5 halvings), same latent size 3,136.
$PY -m gifsplanation train autoencoder "$DATA" --out "$RUNS/cxr-ae-14x14" \
    --epochs 8 --batch-size 16 --lr 2e-3 --channels 8,16,32,64 --latent-channels 16 --blocks 1 \
    --seed 0 --threads 1 --val-limit 192 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-ae-14x14.log" 2>&1 &
$PY -m gifsplanation train autoencoder "$DATA" --out "$RUNS/cxr-ae-7x7" \
    --epochs 8 --batch-size 16 --lr 2e-3 --channels 8,16,32,64,128 --latent-channels 64 \
    --blocks 1 --seed 0 --threads 1 --val-limit 192 --cache-dir "$CACHE" --resume \
    > "$RUNS/cxr-ae-7x7.log" 2>&1 &
wait
install cxr-ae-14x14 cxr-ae-14x14
install cxr-ae-7x7 cxr-ae-7x7

# 2. The classifier sees half of its training images as reconstructions of either AE, so
#    f(D(E(x))) stays close to f(x) (the paper's Table K.1).
$PY -m gifsplanation train classifier "$DATA" --out "$RUNS/cxr-classifier-recon" \
    --epochs 12 --batch-size 32 --lr 2e-3 --channels 16,32,64,128 --blocks 1 --head softmax \
    --seed 0 --threads 2 --recon-ae cxr-ae-14x14 --recon-ae cxr-ae-7x7 --recon-prob 0.5 \
    --cache-dir "$CACHE" --resume > "$RUNS/cxr-classifier-recon.log" 2>&1
install cxr-classifier-recon cxr-classifier

# 3. The demo input: a synthetic latent (see gifsplanation.models.demo.make_demo_latent).
$PY -c "from gifsplanation.models.demo import save_demo_latent; save_demo_latent()"
ls -l "$WEIGHTS"

# 4. Held-out measurements: classifier AUC, AE MAE, AE effect on predictions, IoU of
#    latentshift-max maps with the infection masks (80 COVID-19 val images).
$PY -m gifsplanation.models.validation --data "$DATA" --classifier cxr-classifier \
    --ae cxr-ae-14x14 --ae cxr-ae-7x7 --n-iou 80 --out "$RUNS/validation.json"
