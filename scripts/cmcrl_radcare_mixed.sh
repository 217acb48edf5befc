#!/usr/bin/env bash
# CMCRL stage 1 as the reference runs it (config/vlp.json of WissingChen/VLCI): RadCARE pre-trained once on IU-Xray
# and MIMIC-CXR together, from an ImageNet ResNet-101, with one vocabulary over both. scripts/iu_xray_cmcrl.sh and
# scripts/mimic_cxr_cmcrl.sh then fine-tune VLCI from the folder this writes ($RUN/radcare).
#
# Hardware: one GPU with >= 24 GB (the reference: a single RTX 3090, 24 GB). RadCARE runs 30 epochs at batch 64 over
# every training image of both datasets (~4k IU-Xray views and ~270k MIMIC-CXR images): days on one GPU (not measured
# here); several GPUs (torchrun, see the README) shorten it, with --per_device_train_batch_size divided by their
# number to keep the batch of 64. Add --bf16 true on Ampere or newer. Disk: ~570 GB for MIMIC-CXR-JPG, which needs PhysioNet credentials and its
# data use agreement. The ImageNet weights (microsoft/resnet-101) come from the Hub on the first run.
#
# Inputs (set them before running):
#   NLM_IMAGES  the NLM PNG folder of the Open-i Indiana chest X-ray collection (NLMCXR_png)
#   NLM_REPORTS the report archive NLMCXR_reports.tgz (default: the copy torchxrayvision ships)
#   MIMIC_ROOT  the MIMIC-CXR-JPG folder with mimic-cxr-2.0.0-{split,metadata,chexpert}.csv(.gz), the report files
#               and files/ (the images)
#   RUN         where the annotations, the mixed image root (links) and the RadCARE run go
#
# Settings: the radcare-mixed preset (cxrgen/modeling/cmcrl/presets/radcare-mixed.yaml: 3+3 layers, dropout 0,
# reports up to 100 tokens, the words seen at least 10 times in both training splits) and the RadCARE stage defaults
# (lr 5e-4, weight decay 1e-2, 30 epochs, batch 64, seed 42); cxrgen/trainers/radcare.py lists the differences from
# the reference (AdamW without AMSGrad, gradient-norm instead of value clipping).
set -euo pipefail

: "${NLM_IMAGES:?set NLM_IMAGES to the NLM PNG folder}"
: "${MIMIC_ROOT:?set MIMIC_ROOT to the MIMIC-CXR-JPG folder}"
RUN="${RUN:-runs/cmcrl-radcare-mixed}"
REPORTS_ARG=()
if [[ -n "${NLM_REPORTS:-}" ]]; then REPORTS_ARG=(--reports "$NLM_REPORTS"); fi

# 1. Each dataset's annotation (R2Gen's IU-Xray split; MIMIC-CXR's official split, one frontal image per study).
cxrgen prepare iu-xray "${REPORTS_ARG[@]}" --images "$NLM_IMAGES" --output "$RUN/iu-xray/annotation.json"
cxrgen prepare mimic-cxr --root "$MIMIC_ROOT" --output "$RUN/mimic-cxr/annotation.json"

# 2. One annotation of both, its image paths under $RUN/mixed/images (links to the two image roots); checked above.
cxrgen prepare mixed --iu-annotation "$RUN/iu-xray/annotation.json" --iu-images "$NLM_IMAGES" \
    --mimic-annotation "$RUN/mimic-cxr/annotation.json" --mimic-images "$MIMIC_ROOT" --output "$RUN/mixed" \
    --skip-image-check

# 3. RadCARE pre-training from the ImageNet ResNet-101, on the training studies of both datasets.
cxrgen train radcare --config radcare-mixed --backbone-weights microsoft/resnet-101 --data "$RUN/mixed/annotation.json" \
    --images "$RUN/mixed/images" --output "$RUN/radcare" --report_to tensorboard
