#!/usr/bin/env bash
# CMCRL on MIMIC-CXR with the paper's (reference code's) settings: RadCARE pre-training, VLCI fine-tuning, test-split
# evaluation.
#
# Hardware: one GPU with >= 24 GB (the reference: a single RTX 3090). MIMIC-CXR has ~270k training studies: RadCARE
# (30 epochs at batch 64) takes several days on one A100; use several GPUs (torchrun, see the README) to shorten it.
# Disk: ~570 GB for MIMIC-CXR-JPG. Access to MIMIC-CXR needs PhysioNet credentials and its data use agreement.
#
# Inputs:
#   MIMIC_ROOT  the MIMIC-CXR-JPG folder with mimic-cxr-2.0.0-{split,metadata,chexpert}.csv(.gz), the report files
#               and files/ (the images); image paths in the annotation are relative to it
#   RUN         where the annotation, runs and evaluation go
#
# Settings: as scripts/iu_xray_cmcrl.sh except the mimic-cxr preset (6+6 layers, one frontal image per study, reports
# up to 80 tokens) and the reference's vocabulary threshold of 10 (processor.min_frequency, set through a YAML
# config because the tokenizer is built by the first stage).
set -euo pipefail

: "${MIMIC_ROOT:?set MIMIC_ROOT to the MIMIC-CXR-JPG folder}"
RUN="${RUN:-runs/mimic-cxr-cmcrl}"
mkdir -p "$RUN"

cat > "$RUN/radcare.yaml" <<YAML
preset: mimic-cxr
processor: {min_frequency: 10, cleaning_style: mimic}
YAML

# 1. Annotation from the official split and report files (one frontal image per study, as R2Gen).
cxrgen prepare mimic-cxr --root "$MIMIC_ROOT" --output "$RUN/annotation.json"

# 2. RadCARE pre-training.
cxrgen train radcare --config "$RUN/radcare.yaml" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" \
    --output "$RUN/radcare" --report_to tensorboard

# 3. VLCI fine-tuning from RadCARE (its processor and vocabulary are reused).
cxrgen train vlci --config mimic-cxr --init "$RUN/radcare" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" \
    --output "$RUN/vlci" --report_to tensorboard

# 4. Test-split evaluation.
cxrgen evaluate --model "$RUN/vlci" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" --split test \
    --batch-size 32 --output "$RUN/evaluation-test"
