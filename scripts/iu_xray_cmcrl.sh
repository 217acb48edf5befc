#!/usr/bin/env bash
# CMCRL on IU-Xray with the paper's (reference code's) settings: VLCI fine-tuning from the RadCARE model that
# scripts/cmcrl_radcare_mixed.sh pre-trains on IU-Xray and MIMIC-CXR together (from ImageNet weights), then evaluation
# on the R2Gen test split.
#
# Hardware: one GPU with >= 16 GB (the reference trained on a single NVIDIA RTX 3090, 24 GB; VLCI runs batch 16 of
# 224 px two-view studies); time and memory are not measured here. On CPU use it only as a dry run with a few
# --max_steps.
#
# Inputs (set them before running):
#   NLM_IMAGES  the NLM PNG folder of the Open-i Indiana chest X-ray collection (NLMCXR_png)
#   NLM_REPORTS the report archive NLMCXR_reports.tgz (default: the copy torchxrayvision ships)
#   RADCARE     the RadCARE folder to start from (default: runs/cmcrl-radcare-mixed/radcare, from
#               scripts/cmcrl_radcare_mixed.sh); its processor and mixed vocabulary are reused
#   RUN         where the annotation, run and evaluation go
#
# Without MIMIC-CXR access, pre-train RadCARE on IU-Xray alone instead (not the reference's recipe: another
# vocabulary and far less pre-training data), then set RADCARE=$RUN/radcare:
#   cxrgen train radcare --config iu-xray --backbone-weights microsoft/resnet-101 --data "$RUN/annotation.json" \
#       --images "$NLM_IMAGES" --output "$RUN/radcare"
#
# Settings: the iu-xray preset (cxrgen/modeling/cmcrl/presets/iu-xray.yaml: the paper's model sizes and decoding)
# and the VLCI stage defaults, which are the reference's training settings; cxrgen/trainers/vlci.py lists them with
# the known differences from the reference (AdamW without AMSGrad, gradient-norm instead of value clipping). Trainer
# arguments appended to a `train` line override them.
set -euo pipefail

: "${NLM_IMAGES:?set NLM_IMAGES to the NLM PNG folder}"
RUN="${RUN:-runs/iu-xray-cmcrl}"
RADCARE="${RADCARE:-runs/cmcrl-radcare-mixed/radcare}"
if [[ ! -f "$RADCARE/config.json" ]]; then
    echo "$RADCARE holds no RadCARE model: run scripts/cmcrl_radcare_mixed.sh first or set RADCARE." >&2
    exit 2
fi
REPORTS_ARG=()
if [[ -n "${NLM_REPORTS:-}" ]]; then REPORTS_ARG=(--reports "$NLM_REPORTS"); fi

# 1. R2Gen annotation: R2Gen's studies and split.
cxrgen prepare iu-xray "${REPORTS_ARG[@]}" --images "$NLM_IMAGES" --output "$RUN/annotation.json"

# 2. VLCI fine-tuning from RadCARE (its backbone started from ImageNet there); the best val BLEU-4 checkpoint becomes
# the final model.
cxrgen train vlci --config iu-xray --init "$RADCARE" --data "$RUN/annotation.json" --images "$NLM_IMAGES" \
    --output "$RUN/vlci" --report_to tensorboard

# 3. Test-split evaluation (beam search as the model config's generation_num_beams): predictions.jsonl,
# metrics.json, report.md.
cxrgen evaluate --model "$RUN/vlci" --data "$RUN/annotation.json" --images "$NLM_IMAGES" --split test \
    --output "$RUN/evaluation-test"
