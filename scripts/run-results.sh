#!/usr/bin/env bash
# Regenerate every number of docs/results.md: the exact `gifsplanation evaluate` commands,
# on the COVID-QU-Ex validation split, with the bundled (default) models.
#
# Usage: scripts/run-results.sh [DATA_CSV] [OUT_DIR]
#   DATA_CSV  default ../shared/data/covid-qu-ex/train.csv (read at run time, never copied)
#   OUT_DIR   default results/ (one folder per command; each holds per_item.csv, summary.csv,
#             table.md, a PNG plot and manifest.json with every argument and engine setting)
# Environment:
#   PYTHON=...   interpreter with gifsplanation installed (default: python)
#   SAMPLE=N     override every --limit with N (a quick check that the commands run; the
#                numbers of a sample are not the page's numbers)
#   THREADS=N    torch CPU threads per command (default 1: the machines are shared)
#
# Every Latent Shift experiment runs with the engine defaults (fast search, relative goals
# −30% / +5%, |λ| ≤ 10000, image-change stop 0.1, 10 frames) in BOTH frame modes on the same
# images (--mode both: residual x + D(z₀+λdz) − D(z₀), the default, and the paper's
# reconstruction D(z₀+λdz)), so each table can compare them with paired Wilcoxon tests.
# Images are drawn per target with seed 0; a smaller --limit draws a prefix of a larger one.
# One extra run repeats the counterfactuals at the paper's cap |λ| ≤ 1000.
# Each command resumes from its cache when re-run; a folder written with other engine
# options is refused (use another OUT_DIR).
# Cost on a 2-core CPU: roughly 1.5–2 hours at the page's limits (Latent Shift twice).
set -euo pipefail
DATA=${1:-../shared/data/covid-qu-ex/train.csv}
OUT=${2:-results}
PY=${PYTHON:-python}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
SAMPLE_ARGS=()
if [[ -n "${SAMPLE:-}" ]]; then
    SAMPLE_ARGS=(--limit "$SAMPLE")   # the last --limit wins
fi

D=(--data "$DATA" --split val --threads "$THREADS" --no-progress)
run() {  # run EXPERIMENT ARGS...: print the command, then run it
    local cmd=("$PY" -m gifsplanation evaluate "$@" "${D[@]}" "${SAMPLE_ARGS[@]}")
    echo "+ ${cmd[*]}" >&2
    "${cmd[@]}"
}

# Table K.1: f(x) vs f(D(E(x))) (no Latent Shift engine: no engine options).
run ae-impact --limit 80 --out "$OUT/ae-impact"
# Table 1: IoU, pointing game, relevance mass; Latent Shift in both modes, paired tests.
run iou --limit 50 --mode both --out "$OUT/iou"
# Counterfactual quality and what a removal changes, both modes, default cap.
run counterfactuals --limit 40 --mode both --out "$OUT/counterfactuals"
# The same images at the paper's cap (the "cap 1000" comparison on the page).
run counterfactuals --limit 40 --mode both --max-lambda 1000 --out "$OUT/counterfactuals-cap1000"
# Fig. 5: cascading randomisation, 6 steps over the classifier's Conv/Linear layers.
run randomization --limit 10 --steps 6 --mode both --out "$OUT/randomization"
# Fig. G.1: uniform noise k = 0..4 and Gaussian blur σ = 0..40 px (the defaults).
run robustness --limit 16 --mode both --out "$OUT/robustness"

echo "done: tables in $OUT/*/table.md; copy the PNGs to docs/results/ if the page uses them" >&2
