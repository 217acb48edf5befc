#!/usr/bin/env bash
# TRRG on MIMIC-CXR: contrastive pre-training, clue-enhanced LoRA fine-tuning of Llama-2-7B-chat, evaluation.
#
# RECONSTRUCTED settings (the TRRG paper's details are not public): stage 2 follows R2GenGPT's MIMIC-CXR run
# (batch 8 per GPU on 4 GPUs); stage 1 is our choice. The settings are the mimic-cxr preset
# (cxrgen/modeling/trrg/presets/mimic-cxr.yaml) over the stage defaults, as in scripts/iu_xray_trrg.sh.
#
# Hardware: 4 GPUs with >= 24 GB each for stage 2 as R2GenGPT ran it (launch with
# `torchrun --nproc_per_node 4 -m cxrgen.cli train trrg ...`, see the README); one such GPU works with 4x the time.
# Stage 1 on ~270k studies: about a day on one A100. Needs PhysioNet access to MIMIC-CXR-JPG and the gated
# meta-llama/Llama-2-7b-chat-hf (accept its licence, `hf auth login`).
#
# Inputs: MIMIC_ROOT (MIMIC-CXR-JPG with its CSVs, report files and files/), RUN (the run folder).
set -euo pipefail

: "${MIMIC_ROOT:?set MIMIC_ROOT to the MIMIC-CXR-JPG folder}"
RUN="${RUN:-runs/mimic-cxr-trrg}"

cxrgen prepare mimic-cxr --root "$MIMIC_ROOT" --output "$RUN/annotation.json"

cxrgen train trrg-contrastive --config mimic-cxr --data "$RUN/annotation.json" --images "$MIMIC_ROOT" \
    --output "$RUN/contrastive" --bf16 true --report_to tensorboard

cxrgen train trrg --config mimic-cxr --init "$RUN/contrastive" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" \
    --output "$RUN/trrg" --bf16 true --report_to tensorboard

cxrgen evaluate --model "$RUN/trrg" --data "$RUN/annotation.json" --images "$MIMIC_ROOT" --split test \
    --num-beams 3 --max-new-tokens 120 --batch-size 8 --output "$RUN/evaluation-test"
