#!/usr/bin/env bash
# TRRG on IU-Xray: disease-aware contrastive pre-training of the vision encoder, then clue-enhanced LoRA fine-tuning
# of Llama-2-7B-chat, then test-split evaluation.
#
# The TRRG paper's full text and code are not public: these settings are a RECONSTRUCTION. Stage 2 follows
# R2GenGPT, the open code this line of work builds on; stage 1's lr, epochs and batch size are our choices. The
# settings are the iu-xray preset (cxrgen/modeling/trrg/presets/iu-xray.yaml: models, epochs, lengths, decoding)
# over the stage defaults (cxrgen/trainers/trrg_contrastive.py and trrg.py: optimiser, schedule, batch size); see those
# files and the model card for every assumption. The evaluation's beams and new tokens repeat the preset's, as the
# saved model does not carry them.
#
# Hardware: one GPU with >= 24 GB for LoRA on the 7B LLM in bf16 (R2GenGPT: 2 GPUs for IU-Xray); with
# model.load_in_4bit (a YAML config) about 12 GB. Stage 2 downloads meta-llama/Llama-2-7b-chat-hf, a gated model:
# accept its licence on the Hub and log in (`hf auth login`) first.
#
# Inputs:
#   NLM_IMAGES  the NLM PNG folder; NLM_REPORTS optional (default: torchxrayvision's copy); RUN the run folder
set -euo pipefail

: "${NLM_IMAGES:?set NLM_IMAGES to the NLM PNG folder}"
RUN="${RUN:-runs/iu-xray-trrg}"
REPORTS_ARG=()
if [[ -n "${NLM_REPORTS:-}" ]]; then REPORTS_ARG=(--reports "$NLM_REPORTS"); fi

cxrgen prepare iu-xray "${REPORTS_ARG[@]}" --images "$NLM_IMAGES" --output "$RUN/annotation.json"

# 1. Disease-aware image-sentence contrastive pre-training (Swin-B + BERT-base-sized text tower).
cxrgen train trrg-contrastive --config iu-xray --data "$RUN/annotation.json" --images "$NLM_IMAGES" \
    --output "$RUN/contrastive" --bf16 true --report_to tensorboard

# 2. Clue-enhanced fine-tuning: vision tower and disease prompts from stage 1, LoRA r=16 on the LLM's attention.
cxrgen train trrg --config iu-xray --init "$RUN/contrastive" --data "$RUN/annotation.json" --images "$NLM_IMAGES" \
    --output "$RUN/trrg" --bf16 true --report_to tensorboard

# 3. Test-split evaluation (the final folder is the LoRA-merged model).
cxrgen evaluate --model "$RUN/trrg" --data "$RUN/annotation.json" --images "$NLM_IMAGES" --split test \
    --num-beams 3 --max-new-tokens 100 --batch-size 8 --output "$RUN/evaluation-test"
