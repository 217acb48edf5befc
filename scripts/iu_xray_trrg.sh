#!/usr/bin/env bash
# TRRG on IU-Xray: disease-aware contrastive pre-training of the vision encoder, then clue-enhanced LoRA fine-tuning
# of Llama-2-7B-chat, then test-split evaluation.
#
# The TRRG paper's full text and code are not public: these settings are a RECONSTRUCTION. Stage 2 follows
# R2GenGPT, the open code this line of work builds on (Swin-B at 224 px, Llama-2-7B-chat, lr 1e-4 with cosine decay,
# 15 epochs, batch 8, beam 3, up to 100 new tokens); stage 1's lr, epochs and batch size are our choices. See
# cxrgen/trainers/trrg_contrastive.py and trrg.py, and the model card, for every assumption.
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

cxrgen prepare iu-xray "${REPORTS_ARG[@]}" --images "$NLM_IMAGES" --seed 42 --output "$RUN/annotation.json"

# 1. Disease-aware image-sentence contrastive pre-training (Swin-B + BERT-base-sized text tower).
cxrgen train trrg-contrastive --config iu-xray --data "$RUN/annotation.json" --images "$NLM_IMAGES" \
    --output "$RUN/contrastive" --learning_rate 1e-4 --weight_decay 0.05 --num_train_epochs 30 \
    --per_device_train_batch_size 32 --bf16 true --report_to tensorboard

# 2. Clue-enhanced fine-tuning: vision tower and disease prompts from stage 1, LoRA r=16 on the LLM's attention.
cxrgen train trrg --config iu-xray --init "$RUN/contrastive" --data "$RUN/annotation.json" --images "$NLM_IMAGES" \
    --output "$RUN/trrg" --learning_rate 1e-4 --lr_scheduler_type cosine --num_train_epochs 15 \
    --per_device_train_batch_size 8 --metric_for_best_model bleu_4 --bf16 true --report_to tensorboard

# 3. Test-split evaluation (the final folder is the LoRA-merged model).
cxrgen evaluate --model "$RUN/trrg" --data "$RUN/annotation.json" --images "$NLM_IMAGES" --split test \
    --num-beams 3 --max-new-tokens 100 --batch-size 8 --output "$RUN/evaluation-test"
