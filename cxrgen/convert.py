"""``cxrgen convert``: official checkpoints of other code bases as complete cxrgen model folders.

`convert_vlci` turns a WissingChen/VLCI checkpoint into a `CmcrlForConditionalGeneration` folder (safetensors
weights, config, remote code, a `CmcrlProcessor` whose tokenizer holds the reference vocabulary in its order, and a
model card) that computes what the reference code computes (:mod:`cxrgen.modeling.cmcrl.convert_vlci_checkpoint`).
"""

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# R2Gen's unknown-word token; the package's tokenizer has its own ([UNK]), which takes its row.
REFERENCE_UNK = "<unk>"
PRESET_CLEANING = {"iu-xray": "iu", "mimic-cxr": "mimic"}


def read_reference_vocab(path: str | os.PathLike) -> list[str]:
    """The reference vocabulary in id order (R2Gen's `idx2token`: the token of id 1, 2, ...) from a JSON list of
    tokens, a JSON object mapping tokens to ids (`token2idx`) or ids to tokens (`idx2token`), or a text file with
    one token per line. Ids must run 1..V without gaps (id 0 is the reference's BOS/EOS/PAD)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Vocabulary file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if isinstance(vocab, list) and all(isinstance(token, str) for token in vocab):
        return vocab
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{path}: expected a list of tokens or a token <-> id mapping")
    keys_are_ids = all(str(key).isdigit() for key in vocab)
    pairs = {int(key): value for key, value in vocab.items()} if keys_are_ids else None
    if pairs is None:
        if not all(isinstance(value, int) for value in vocab.values()):
            raise ValueError(f"{path}: a token2idx mapping needs integer ids")
        pairs = {value: key for key, value in vocab.items()}
    if sorted(pairs) != list(range(1, len(vocab) + 1)):
        raise ValueError(f"{path}: the ids must be 1..{len(vocab)} without gaps or repeats (id 0 is BOS/EOS/PAD)")
    return [pairs[index] for index in range(1, len(vocab) + 1)]


def convert_vlci(
    checkpoint: str | os.PathLike,
    vocab: str | os.PathLike,
    output: str | os.PathLike,
    preset: str = "iu-xray",
    cleaning_style: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Convert an official VLCI checkpoint (`model_best.pth`) with its vocabulary into the model folder `output`.

    `preset` gives the geometry ("iu-xray": 3+3 layers, two views; "mimic-cxr": 6+6 layers, one view), except
    the depths and the LDM's FFN width, which are read from the checkpoint (`checkpoint_geometry`);
    `cleaning_style` the processor's report cleaning (default: the preset's dataset). The config reproduces the
    reference computation (`reference_config`): its LDM sees future tokens, so fine-tuning the folder trains on
    them. Returns the folder.
    """
    from cxrgen.hub_cards.card import build_model_card, save_model_card
    from cxrgen.modeling.cmcrl.convert_vlci_checkpoint import (
        checkpoint_geometry,
        convert_vlci_state_dict,
        read_vlci_checkpoint,
        reference_config,
        token_rows,
    )
    from cxrgen.processing.image_processing_cxr import CxrImageProcessor
    from cxrgen.processing.processing_cmcrl import CmcrlProcessor
    from cxrgen.processing.tokenization import report_tokenizer_from_vocab

    reference_vocab = read_reference_vocab(vocab)
    state_dict = read_vlci_checkpoint(checkpoint)
    config = reference_config(preset, **checkpoint_geometry(state_dict))
    tokenizer = report_tokenizer_from_vocab(
        [token for token in reference_vocab if token != REFERENCE_UNK], model_max_length=config.max_report_length
    )
    config.vocab_size = len(tokenizer)
    model, report = convert_vlci_state_dict(state_dict, config, token_rows(reference_vocab, tokenizer))
    image_processor = CxrImageProcessor(size={"height": config.image_size, "width": config.image_size})
    style = cleaning_style or PRESET_CLEANING.get(str(preset), "iu")
    processor = CmcrlProcessor(image_processor, tokenizer, cleaning_style=style)

    output = Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    name = Path(checkpoint).name
    mimic = "mimic" in str(preset)
    card = build_model_card(
        output,
        model_name=f"VLCI ({name}, converted)",
        repo_id=repo_id or output.resolve().name,
        method="cmcrl",
        metrics=None,
        dataset_name="MIMIC-CXR" if mimic else "IU-Xray",
        dataset_id="mimic-cxr" if mimic else "iu-xray",
        dataset_split="test",
        metrics_source_description=None,
        is_phantom_data=False,
        training_setup={
            "stage": "converted official VLCI checkpoint (WissingChen/VLCI)",
            "checkpoint": name,
            "preset": preset,
            "reference vocabulary": f"{len(reference_vocab)} tokens",
            "tensors converted": len(report.converted),
            "tensors dropped (recomputed or unused)": len(report.dropped),
            "computation": "the reference's LayerNorm and LDM (the LDM sees future tokens in training)",
        },
        initialization=f"converted from the official checkpoint {name}",
    )
    save_model_card(card, output)
    logger.info("Converted %s: %d tensors, %d dropped", name, len(report.converted), len(report.dropped))
    return output


__all__ = ["convert_vlci", "read_reference_vocab"]
