"""TRRG stage 2 with TRL's SFTTrainer (LoRA on the LLM) instead of ``cxrgen train trrg``.

A recipe for users who already train with TRL. It uses the cxrgen package for everything but the training loop:

    python scripts/trrg_sft_recipe.py --config tiny --data DATA/annotation.json --images DATA/images --output RUN \\
        [--init STAGE1_FOLDER] [--lora-r 16] [SFTConfig arguments, e.g. --max_steps 100 --use_cpu true]
    python scripts/trrg_sft_recipe.py --model TRRG_FOLDER --data ... --images ... --output RUN

- The model: ``--model`` a saved TRRG stage-2 folder (e.g. ``<trrg run>/base-model`` or a final folder), or
  ``--config`` a ``cxrgen train trrg`` preset / YAML (with ``--init`` a stage-1 folder), built as that stage builds it
  and saved to ``RUN/base-model``.
- The data: each training study becomes a conversational row ``{"images": [views], "prompt": [user turn: one image
  item per view + the instruction], "completion": [assistant turn: the report]}``. With ``processing_class`` set to
  the ``TrrgProcessor``, TRL picks its vision-language collator: the chat template renders the prompt (one
  ``<image>`` per view, expanded by the processor into the image and clue placeholders), the completion is
  right-padded after it and the prompt is masked out of the loss. The disease-aware consistency loss needs
  ``disease_labels``, which this collator does not pass: use ``cxrgen train trrg`` to train with it.
- SFTConfig settings that matter for this model: ``max_length=None`` (truncation would cut placeholders), packing and
  padding-free off (refused for vision data), ``bf16``/activation checkpointing off on CPU (SFTConfig turns both on
  by default); any SFTConfig argument can be appended to the command line.
- The output: the LoRA adapter (``RUN/adapter``) and, merged into the full-precision base, the final complete model
  folder ``RUN`` (loads with ``AutoModel.from_pretrained(RUN, trust_remote_code=True)``); ``--lora-r 0`` trains
  the whole model instead and saves it to ``RUN``.
"""

import argparse
import logging
import sys
from pathlib import Path

from peft import PeftModel
from trl import SFTConfig, SFTTrainer

from cxrgen.compat import CHECKPOINTING_ARGUMENT
from cxrgen.trainers.arguments import build_training_args
from cxrgen.trainers.processors import load_processor
from cxrgen.trainers.stage_config import load_stage_config
from cxrgen.trainers.training_data import load_split
from cxrgen.trainers.trrg import ADAPTER_DIR, BASE_MODEL_DIR, build_model_and_processor, lora_config, merged_model

logger = logging.getLogger(__name__)

SFT_DEFAULTS = {
    "max_length": None,
    CHECKPOINTING_ARGUMENT: False,
    "bf16": False,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 8,
    "num_train_epochs": 3,
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_num_workers": 0,
}


def sft_rows(dataset, instruction):
    """Study rows (``images``, ``report``) -> TRL conversational prompt/completion rows (``images`` kept)."""

    def to_row(study):
        content = [{"type": "image"} for _ in study["images"]] + [{"type": "text", "text": instruction}]
        return {
            "prompt": [{"role": "user", "content": content}],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": study["report"]}]}],
        }

    keep = {"images", "prompt", "completion"}
    return dataset.map(to_row, remove_columns=[name for name in dataset.column_names if name not in keep])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved TRRG stage-2 model folder")
    source.add_argument("--config", help="a `cxrgen train trrg` preset name or YAML file to build the model from")
    parser.add_argument("--init", help="with --config: a TRRG stage-1 (trrg-contrastive) folder")
    parser.add_argument("--data", required=True, help="annotation.json")
    parser.add_argument("--images", required=True, help="the image root of the annotation's paths")
    parser.add_argument("--output", required=True, help="the run folder")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (0: full fine-tuning)")
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    return parser.parse_known_args(argv)


def main(argv=None):
    """Run the recipe; returns the final model folder."""
    from cxrgen.modeling.trrg import TrrgForConditionalGeneration
    from cxrgen.processing.processing_trrg import TrrgProcessor

    options, sft_argv = parse_args(sys.argv[1:] if argv is None else argv)
    if options.init is not None and options.config is None:
        raise ValueError("--init builds a new model from --config; a --model folder is already initialised.")
    output = Path(options.output)
    args = build_training_args(output, SFT_DEFAULTS, cli_args=sft_argv, args_class=SFTConfig, source="recipe")
    train = load_split(options.data, options.images, "train")
    if options.model is not None:
        base_folder = Path(options.model)
    else:
        base_folder = output / BASE_MODEL_DIR
        with args.main_process_first(desc="TRRG base model"):
            if not base_folder.is_dir():
                model, processor, transferred = build_model_and_processor(
                    load_stage_config(options.config), train["report"], options.init
                )
                if transferred:
                    logger.info("--init %s: %s", options.init, transferred)
                model.save_pretrained(base_folder)
                processor.save_pretrained(base_folder)
    model = TrrgForConditionalGeneration.from_pretrained(base_folder)
    processor = load_processor(base_folder, TrrgProcessor)
    lora = None
    if options.lora_r > 0:
        lora = lora_config(model, {"r": options.lora_r, "alpha": options.lora_alpha, "dropout": options.lora_dropout})

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_rows(train, processor.prompt),
        processing_class=processor,
        peft_config=lora,
    )
    trainer.train()
    if isinstance(trainer.model, PeftModel):
        trainer.save_model(str(output / ADAPTER_DIR))
    if trainer.is_world_process_zero():
        final = merged_model(base_folder, output / ADAPTER_DIR) if lora is not None else trainer.model
        final.save_pretrained(output)
        processor.save_pretrained(output)
    return output


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(f"Saved {main()}")
