#!/usr/bin/env bash
# CMCRL on IU-Xray with the paper's (reference code's) settings: RadCARE pre-training, then VLCI fine-tuning,
# then evaluation on the R2Gen test split.
#
# Hardware: one GPU with >= 16 GB (the reference trained on a single NVIDIA RTX 3090, 24 GB). RadCARE at batch 64 on
# 224 px two-view studies needs ~20 GB in fp32; add --bf16 true on Ampere or newer to halve it. About 2-3 h on an
# A100 for both stages. On CPU use it only as a dry run with a few --max_steps.
#
# Inputs (set them before running):
#   NLM_IMAGES  the NLM PNG folder of the Open-i Indiana chest X-ray collection (NLMCXR_png)
#   NLM_REPORTS the report archive NLMCXR_reports.tgz (default: the copy torchxrayvision ships)
#   RUN         where the annotation, runs and evaluation go
#
# Settings: the iu-xray preset (cxrgen/modeling/cmcrl/presets/iu-xray.yaml: the paper's model sizes) and the stage
# defaults, which are the reference's training settings; the trainer docstrings (cxrgen/trainers/radcare.py, vlci.py)
# list them with the known differences from the reference (AdamW without AMSGrad, gradient-norm instead of value
# clipping). Trainer arguments appended to a `train` line override them.
set -euo pipefail

: "${NLM_IMAGES:?set NLM_IMAGES to the NLM PNG folder}"
RUN="${RUN:-runs/iu-xray-cmcrl}"
REPORTS_ARG=()
if [[ -n "${NLM_REPORTS:-}" ]]; then REPORTS_ARG=(--reports "$NLM_REPORTS"); fi

# 1. R2Gen annotation: R2Gen's studies and split.
cxrgen prepare iu-xray "${REPORTS_ARG[@]}" --images "$NLM_IMAGES" --output "$RUN/annotation.json"

# 2. RadCARE pre-training (stage 1).
cxrgen train radcare --config iu-xray --data "$RUN/annotation.json" --images "$NLM_IMAGES" --output "$RUN/radcare" \
    --report_to tensorboard

# 3. VLCI fine-tuning (stage 2), initialised from RadCARE; the best val BLEU-4 checkpoint becomes the final model.
cxrgen train vlci --config iu-xray --init "$RUN/radcare" --data "$RUN/annotation.json" --images "$NLM_IMAGES" \
    --output "$RUN/vlci" --report_to tensorboard

# 4. Test-split evaluation (beam search as the model config's generation_num_beams): predictions.jsonl,
# metrics.json, report.md.
cxrgen evaluate --model "$RUN/vlci" --data "$RUN/annotation.json" --images "$NLM_IMAGES" --split test \
    --output "$RUN/evaluation-test"
