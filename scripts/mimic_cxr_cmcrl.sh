#!/usr/bin/env bash
# CMCRL on MIMIC-CXR with the paper's (reference code's) settings: VLCI fine-tuning from the RadCARE model that
# scripts/cmcrl_radcare_mixed.sh pre-trains on IU-Xray and MIMIC-CXR together (from ImageNet weights), then
# test-split evaluation.
#
# Hardware: one GPU with >= 24 GB (the reference: a single RTX 3090). MIMIC-CXR has ~270k training studies and VLCI
# runs 10 epochs of them at batch 16 with 6+6 layers (time not measured here); several GPUs (torchrun, see the README)
# shorten it. Disk: ~570 GB for MIMIC-CXR-JPG. Access to MIMIC-CXR needs PhysioNet credentials and its data use
# agreement.
#
# Inputs:
#   MIMIC_ROOT  the MIMIC-CXR-JPG folder with mimic-cxr-2.0.0-{split,metadata,chexpert}.csv(.gz), the report files
#               and files/ (the images); image paths in the annotation are relative to it
#   RADCARE     the RadCARE folder to start from (default: runs/cmcrl-radcare-mixed/radcare, from
#               scripts/cmcrl_radcare_mixed.sh); its processor and mixed vocabulary are reused
#   RUN         where the annotation, run and evaluation go
#
# Settings: as scripts/iu_xray_cmcrl.sh except the mimic-cxr preset (6+6 layers, of which RadCARE's 3+3 are
# pre-trained and the others start fresh, as in the reference; one frontal image per study; reports up to 80 tokens).
set -euo pipefail

: "${MIMIC_ROOT:?set MIMIC_ROOT to the MIMIC-CXR-JPG folder}"
RUN="${RUN:-runs/mimic-cxr-cmcrl}"
RADCARE="${RADCARE:-runs/cmcrl-radcare-mixed/radcare}"
if [[ ! -f "$RADCARE/config.json" ]]; then
    echo "$RADCARE holds no RadCARE model: run scripts/cmcrl_radcare_mixed.sh first or set RADCARE." >&2
    exit 2
fi

# 1. Annotation from the official split and report files (one frontal image per study, as R2Gen).
cxrgen prepare mimic-cxr --root "$MIMIC_ROOT" --output "$RUN/annotation.json"

# 2. VLCI fine-tuning from RadCARE (its processor and vocabulary are reused).
cxrgen train vlci --config mimic-cxr --init "$RADCARE" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" \
    --output "$RUN/vlci" --report_to tensorboard

# 3. Test-split evaluation.
cxrgen evaluate --model "$RUN/vlci" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" --split test \
    --batch-size 32 --output "$RUN/evaluation-test"
