#!/usr/bin/env bash
# Train the out-of-distribution detector (cxr-gate), calibrate the bundled autoencoders'
# reconstruction-error thresholds, and measure the gate on held-out images
# (the numbers in docs/model-card.md, section "Out-of-distribution gate").
#
# Usage: scripts/train-gate.sh [DATA_CSV]
# One thread; about 15 min for the detector on a shared 2-core machine, 2 min per
# autoencoder calibration, 10 min for the benchmark. Only the training split of DATA is
# used for training and thresholds; the benchmark reads the validation split.
set -euo pipefail
DATA=${1:-../shared/data/covid-qu-ex/train.csv}
CACHE=${GIFSPLANATION_CACHE:-$HOME/.cache/gifsplanation}   # decoded uint8 images, not in the repo
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."

# 1. The detector: fp16 weights + sidecar with the calibrated threshold.
$PY -m gifsplanation.models.gate train --data "$DATA" --out src/gifsplanation/weights/cxr-gate.pt \
    --steps 3000 --batch-size 64 --lr 3e-3 --seed 0 --threads 1 --cache-dir "$CACHE"

# 2. Reconstruction-error thresholds (99.5th percentile on the training split), written as
#    "ood" into each bundled autoencoder's sidecar (nothing else in it changes).
for AE in cxr-ae-7x7 cxr-ae-14x14; do
    $PY -m gifsplanation.models.gate calibrate-ae "$AE" --data "$DATA" --threads 1 \
        --cache-dir "$CACHE" --write
done

# 3. Held-out measurement: validation CXRs, the xrv test images, scikit-image photos,
#    unseen synthetic patterns, transformed and mirrored validation CXRs.
$PY benchmarks/ood_gate.py --data "$DATA" --cache-dir "$CACHE" --threads 1 \
    --json benchmarks/results/ood-gate.json
