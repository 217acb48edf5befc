"""Report generation from a saved model folder: load the model with its processor, generate reports for studies.

A study is the list of its images (paths, PIL images or arrays), frontal first, as the models were trained.
Every method's folder gives the report; methods with ``structured_findings`` in the registry (TRRG: the zero-shot
probability of each observation and the disease clues injected into the language model's prompt) give those too.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoProcessor

from cxrgen.methods import METHODS, get_method, resolve
from cxrgen.modeling import read_model_config
from cxrgen.modeling.loading import load_model_folder


def _class_name(path):
    return path.partition(":")[2]


@dataclass
class ReportGenerator:
    """A loaded model folder: the model (in eval mode), its processor and its method (a name of the registry)."""

    model: torch.nn.Module
    processor: object
    method: str
    folder: Path


def load_generator(
    folder: str | os.PathLike, device: str | torch.device = "cpu", allow_pickle: bool = False
) -> ReportGenerator:
    """Load a saved report-generating model folder of a registered method (config, safetensors weights, processor).

    Pickle weights (``pytorch_model.bin``) are refused unless ``allow_pickle``.

    Raises:
        FileNotFoundError: the folder or its config.json is missing.
        ValueError: the folder holds another kind of model (e.g. a pre-training checkpoint) or no processor.
        cxrgen.modeling.loading.ModelFolderError: no weights, pickle weights only, or weights that do not fit
            config.json (a ``ValueError`` too).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    config = read_model_config(folder)
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    generators = {resolve(spec.config).model_type: spec for spec in METHODS.values()}
    method = generators.get(model_type)
    if method is None or _class_name(method.model) not in architectures:
        expected = " or ".join(f"{_class_name(spec.model)} (model_type {key!r})" for key, spec in generators.items())
        first_stages = ", ".join(_class_name(spec.pretraining_model) for spec in METHODS.values())
        raise ValueError(
            f"{config_path}: model_type {model_type!r} with architectures {architectures} cannot generate reports; "
            f"expected {expected}. Pre-training checkpoints ({first_stages}) must be fine-tuned first."
        )
    if not (folder / "processor_config.json").is_file():
        raise ValueError(
            f"{folder} has no processor_config.json: save the processor (images + tokenizer) with the model."
        )
    model = load_model_folder(folder, allow_pickle=allow_pickle).to(device).eval()
    processor = AutoProcessor.from_pretrained(folder)
    if not isinstance(processor, resolve(method.processor)):
        raise ValueError(f"{folder}: expected a {_class_name(method.processor)}, found a {type(processor).__name__}.")
    return ReportGenerator(model=model, processor=processor, method=method.name, folder=folder)


def generation_kwargs(num_beams: int | None = None, max_new_tokens: int | None = None) -> dict[str, int]:
    """Overrides of the model's generation_config; settings left as None keep the saved ones."""
    kwargs = {}
    if num_beams is not None:
        if num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {num_beams}.")
        kwargs["num_beams"] = num_beams
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        kwargs["max_new_tokens"] = max_new_tokens
    return kwargs


@torch.inference_mode()
def generate_reports(
    generator: ReportGenerator,
    studies: Sequence[Sequence],
    batch_size: int = 16,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    study_inputs: Mapping[str, torch.Tensor] | None = None,
) -> list[dict]:
    """Generate one report per study.

    Args:
        generator: a :class:`ReportGenerator` from :func:`load_generator`.
        studies: a list of studies, each a non-empty list of its views (frontal first).
        batch_size: studies per ``generate`` call.
        num_beams, max_new_tokens: override the model's generation_config when given.
        study_inputs: further ``generate`` inputs with one row per study (e.g. TRRG's ``clue_probabilities``).

    Returns:
        One dict per study: ``{"report": str}``, plus the model's structured findings where the method has them
        (TRRG: ``"probabilities"`` ({observation: p}) and ``"clues"`` (``[{"observation", "polarity",
        "probability"}]``)).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    for index, study in enumerate(studies):
        if not isinstance(study, (list, tuple)) or not study:
            raise ValueError(f"Study {index}: expected a non-empty list of its images, got {study!r}.")
    kwargs = generation_kwargs(num_beams, max_new_tokens)
    study_inputs = dict(study_inputs or {})
    for name, values in study_inputs.items():
        if len(values) != len(studies):
            raise ValueError(f"study_inputs[{name!r}] has {len(values)} rows for {len(studies)} studies.")
    method = get_method(generator.method)
    device = generator.model.device
    results = []
    for start in range(0, len(studies), batch_size):
        batch = [list(study) for study in studies[start : start + batch_size]]
        inputs = generator.processor(images=batch, return_tensors="pt").to(device)
        extra = {name: values[start : start + batch_size].to(device) for name, values in study_inputs.items()}
        findings = [{}] * len(batch)
        if method.structured_findings:
            generated, findings = _generate_with_findings(generator.model, inputs, kwargs, extra)
        else:
            generated = generator.model.generate(**inputs, **extra, **kwargs)
        if method.prompt_in_output:
            reports = generator.processor.post_process_generation(generated, inputs["input_ids"].shape[1])
        else:
            reports = generator.processor.post_process_generation(generated)
        results.extend({"report": report, **found} for report, found in zip(reports, findings))
    return results


def _generate_with_findings(model, inputs, kwargs, extra):
    """Generate from a prompt whose image placeholders are filled here, and the structured findings of the same
    image features: the vision tower and the clue selection run once per study, not once for ``generate`` and once
    for the findings (the tokens are the same as ``generate(**inputs)``'s, tested)."""
    features = model.get_image_features(inputs["pixel_values"], inputs.get("pixel_mask"), **extra)
    input_ids = inputs["input_ids"]
    embeds = model.scatter_image_features(input_ids, model.get_input_embeddings()(input_ids), features)
    generated = model.generate(
        input_ids=input_ids, inputs_embeds=embeds, attention_mask=inputs.get("attention_mask"), **kwargs
    )
    return generated, model.structured_findings(image_features=features)


def format_generation(result: dict) -> str:
    """A human-readable rendering of one :func:`generate_reports` result (the report, then any findings)."""
    lines = [result["report"]]
    if "probabilities" in result:
        lines += ["", "Observation probabilities (zero-shot perception):"]
        lines += [f"  {name:<28} {p:.3f}" for name, p in result["probabilities"].items()]
        clues = ", ".join(f"{c['observation']} ({c['polarity']}, {c['probability']:.3f})" for c in result["clues"])
        lines += ["", f"Clues used: {clues or 'none'}"]
    return "\n".join(lines)
