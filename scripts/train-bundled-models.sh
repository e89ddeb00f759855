#!/usr/bin/env bash
# Train the bundled models on COVID-QU-Ex, install their fp16 weights + JSON sidecars into
# src/gifsplanation/weights/, calibrate the autoencoders' out-of-distribution thresholds,
# store the demo latent, and measure everything on the held-out split (the numbers in
# docs/model-card.md).
#
# Usage: scripts/train-bundled-models.sh [DATA_CSV] [RUNS_DIR]
# Sized for a 2-core CPU shared with other jobs; every step resumes from
# RUNS_DIR/<name>/last.pt when re-run (an interrupted run loses at most one epoch).
# Wall time here (load 2-9): AEs 40-45 min each (the sharp one 2 h), classifiers 11-70 min
# (the adversarially trained default: 70 min), measurements ~30 min.
# The OOD detector cxr-gate is trained by scripts/train-gate.sh; the alignment models
# (cxr-extent, cxr-shortcut-marker) by scripts/train-alignment-models.sh.
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
train() { $PY -m gifsplanation train "$@"; }

# 1. Autoencoders. Two bottlenecks with the same latent size 3,136 (16x14x14, 4 halvings;
#    64x7x7, 5 halvings: the default cxr-ae), plus a sharper one trained with SSIM and
#    gradient-difference loss terms and a resize+conv last upsampling (cxr-ae-sharp).
AE=(--batch-size 16 --lr 2e-3 --blocks 1 --seed 0 --threads 1 --val-limit 192
    --cache-dir "$CACHE" --resume)
train autoencoder "$DATA" --out "$RUNS/cxr-ae-14x14" --epochs 8 --channels 8,16,32,64 \
    --latent-channels 16 "${AE[@]}" > "$RUNS/cxr-ae-14x14.log" 2>&1 &
train autoencoder "$DATA" --out "$RUNS/cxr-ae-7x7" --epochs 8 --channels 8,16,32,64,128 \
    --latent-channels 64 "${AE[@]}" > "$RUNS/cxr-ae-7x7.log" 2>&1 &
wait
train autoencoder "$DATA" --out "$RUNS/cxr-ae-sharp" --epochs 8 --channels 12,24,48,96 \
    --latent-channels 32 --final-upsample resize --ssim-weight 0.5 --gradient-weight 1.0 \
    "${AE[@]}" > "$RUNS/cxr-ae-sharp.log" 2>&1
for name in cxr-ae-14x14 cxr-ae-7x7 cxr-ae-sharp; do
    install "$name" "$name"
    # refuse inputs the autoencoder cannot reconstruct: 1.75 x the 99.5th percentile of
    # its reconstruction error on the training split, written into the sidecar ("ood")
    $PY -m gifsplanation.models.gate calibrate-ae "$name" --data "$DATA" --threads 1 \
        --cache-dir "$CACHE" --write
done

# 2. Classifiers, all on original images only except the kept 0.1 one; independent sigmoid
#    outputs COVID-19, Pneumonia (COVID-19 or not), Non-COVID pneumonia; strong
#    augmentation; an auxiliary infection-mask head (--mask-weight); operating points.
CLF=(--batch-size 32 --lr 2e-3 --channels 16,32,64,128 --blocks 1 --head sigmoid
     --output "COVID-19=COVID-19" --output "Pneumonia=COVID-19|Non-COVID pneumonia"
     --output "Non-COVID pneumonia=Non-COVID pneumonia" --augment-strength strong
     --mask-weight 1 --seed 0 --threads 2 --cache-dir "$CACHE" --resume)
# 2a. the default: adversarially trained (each batch replaced by its FGSM perturbation,
#     L-inf radius 64 of 2048, random start), so that changing its mind takes a visible
#     change of the image; its counterfactuals darken the lungs.
train classifier "$DATA" --out "$RUNS/cxr-classifier-fgsm-long" --epochs 24 "${CLF[@]}" \
    --adv-eps 64 --adv-steps 1 > "$RUNS/cxr-classifier-fgsm-long.log" 2>&1
install cxr-classifier-fgsm-long cxr-classifier
# 2b. the same recipe without adversarial training: higher AUC, invisible counterfactuals.
train classifier "$DATA" --out "$RUNS/cxr-classifier-mask" --epochs 24 "${CLF[@]}" \
    > "$RUNS/cxr-classifier-mask.log" 2>&1
install cxr-classifier-mask cxr-classifier-accurate
# 2c. the 0.1 classifier (softmax, half of its training images reconstructions of either
#     autoencoder), kept to reproduce 0.1's numbers.
train classifier "$DATA" --out "$RUNS/cxr-classifier-recon" --epochs 12 --batch-size 32 \
    --lr 2e-3 --channels 16,32,64,128 --blocks 1 --head softmax --seed 0 --threads 2 \
    --recon-ae cxr-ae-14x14 --recon-ae cxr-ae-7x7 --recon-prob 0.5 --cache-dir "$CACHE" \
    --resume > "$RUNS/cxr-classifier-recon.log" 2>&1
install cxr-classifier-recon cxr-classifier-recon-softmax

# 3. The demo input: a synthetic latent (see gifsplanation.models.demo.make_demo_latent).
$PY -c "from gifsplanation.models.demo import save_demo_latent; save_demo_latent()"
ls -l "$WEIGHTS"

# 4. Held-out measurements (docs/model-card.md): classifier AUC, each autoencoder's MAE,
#    SSIM and fine-edge ratio, Table K.1, and per autoencoder and frame mode the IoU of
#    latentshift-max maps with the infection masks and the lower goal reached.
OUTS=(--output "COVID-19=COVID-19" --output "Pneumonia=COVID-19|Non-COVID pneumonia"
      --output "Non-COVID pneumonia=Non-COVID pneumonia")
$PY -m gifsplanation.models.validation --data "$DATA" --classifier cxr-classifier "${OUTS[@]}" \
    --ae cxr-ae --ae cxr-ae-14x14 --ae cxr-ae-sharp --mode both --n-iou 40 --threads 1 \
    --out "$RUNS/validation/cxr-classifier.json"
$PY -m gifsplanation.models.validation --data "$DATA" --classifier cxr-classifier-accurate \
    "${OUTS[@]}" --ae cxr-ae --mode both --n-iou 40 --threads 1 \
    --out "$RUNS/validation/cxr-classifier-accurate.json"
