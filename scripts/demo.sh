#!/usr/bin/env bash
# `make demo`: set up, get Penn-Fudan, train the CPU config from scratch (7-11 min on 2 cores),
# evaluate, and leave everything in output/pennfudan_cpu/ (metrics.json, model_final.pth,
# model_best.pth, final_metrics.json/.md, report.html, predictions/, plots/).
#
# Environment knobs:
#   DETECTRON2_DATASETS=./datasets   dataset root; PennFudanPed is downloaded there if missing
#   DEMO_CONFIG=configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml
#   DEMO_OUTPUT=output/pennfudan_cpu
#   DEMO_OPTS="SOLVER.MAX_ITER 20"   extra KEY VALUE overrides (e.g. a quicker smoke run)
#   DEMO_SETUP=0                     skip scripts/setup.sh (environment already set up)
set -euo pipefail
cd "$(dirname "$0")/.."

export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-$PWD/datasets}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
CONFIG=${DEMO_CONFIG:-configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml}
OUTPUT=${DEMO_OUTPUT:-output/pennfudan_cpu}
read -r -a EXTRA <<< "${DEMO_OPTS:-}"
PY=${VENV:-.venv}/bin/python

say() { echo "[demo $(date +%H:%M:%S)] $*"; }

say "1/5 set-up"
if [ "${DEMO_SETUP:-1}" != 0 ]; then
    bash scripts/setup.sh
fi

say "2/5 data: PennFudanPed under $DETECTRON2_DATASETS"
if [ ! -d "$DETECTRON2_DATASETS/PennFudanPed/PNGImages" ]; then
    "$PY" datasets/prepare_pennfudan.py --root "$DETECTRON2_DATASETS"
fi

say "3/5 training $CONFIG -> $OUTPUT (evaluates at the end, writes final_metrics.md)"
"$PY" tools/train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUTPUT" "${EXTRA[@]}"

say "4/5 evaluation of model_best.pth"
# Training evaluated model_final.pth already; model_best.pth needs its own pass only when an
# earlier evaluation scored higher (final_metrics.md: the final model; eval_best/: the best).
SAME_WEIGHTS=$("$PY" -c "import sys, torch
a, b = (torch.load(f, map_location='cpu', weights_only=True)['model'] for f in sys.argv[1:])
print(int(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)))" \
    "$OUTPUT/model_best.pth" "$OUTPUT/model_final.pth")
if [ "$SAME_WEIGHTS" != 1 ]; then
    "$PY" tools/train_net.py --config-file "$CONFIG" --eval-only \
        MODEL.WEIGHTS "$OUTPUT/model_best.pth" OUTPUT_DIR "$OUTPUT/eval_best" "${EXTRA[@]}"
else
    say "model_best.pth holds the final weights, which the training evaluated"
fi

say "5/5 pictures"
# Six validation images (never seen in training).
mapfile -t IMAGES < <("$PY" -c "import instseg_d2.data; from detectron2.data import \
DatasetCatalog; print('\n'.join(d['file_name'] for d in DatasetCatalog.get('pennfudan_val')[:6]))")
"$PY" tools/infer.py --config-file "$OUTPUT/config.yaml" --weights "$OUTPUT/model_best.pth" \
    --input "${IMAGES[@]}" --dataset pennfudan_val --output "$OUTPUT/predictions"
"$PY" tools/plot_metrics.py "$OUTPUT" --output "$OUTPUT/plots"

say "done: results in $OUTPUT"
cat "$OUTPUT/final_metrics.md"
