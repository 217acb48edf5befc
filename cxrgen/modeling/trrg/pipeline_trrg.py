"""The "image-to-text" pipeline of TRRG checkpoints (transformers 5 has no built-in task of that name).

Saved TRRG configs name it in `custom_pipelines`, so `pipeline("image-to-text", model=folder_or_repo,
trust_remote_code=True)` builds it. Self-contained (torch and transformers only): it travels to the Hub as remote code.
"""

import copy
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BatchFeature, GenerationConfig, Pipeline


def pad_studies(studies: list, pad_token_id: int) -> dict[str, torch.Tensor]:
    """One batch from single-study processor outputs, padded as TrrgProcessor pads a batch: prompts on the left,
    views on the right with all-zero images that `pixel_mask` marks as padding."""

    def padded(key: str, value: float, left: bool) -> torch.Tensor:
        width = max(study[key].shape[1] for study in studies)
        rows = []
        for study in studies:
            fill = width - study[key].shape[1]
            rows.append(
                F.pad(study[key], (0, 0) * (study[key].ndim - 2) + ((fill, 0) if left else (0, fill)), value=value)
            )
        return torch.cat(rows)

    return {
        "input_ids": padded("input_ids", pad_token_id, left=True),
        "attention_mask": padded("attention_mask", 0, left=True),
        "pixel_values": padded("pixel_values", 0.0, left=False),
        "pixel_mask": padded("pixel_mask", 0, left=False),
    }


class TrrgReportPipeline(Pipeline):
    """Generates a report for each chest X-ray study, with the per-observation probabilities and clues used.

    Input: a study, i.e. one image (path, PIL image or array) or a tuple/list of its views; a list of studies is
    processed study by study (so `["a.png", "b.png"]` is two single-view studies, `[["a.png", "b.png"]]` one
    two-view study), `batch_size` studies per `generate` call. Output per study: `{"generated_text",
    "probabilities", "clues"}`, the same whatever the batch size.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=100)

    def _sanitize_parameters(self, prompt=None, generate_kwargs=None, **kwargs):
        preprocess = {} if prompt is None else {"prompt": prompt}
        return preprocess, {"generate_kwargs": {**(generate_kwargs or {}), **kwargs}}, {}

    def preprocess(self, study: Any, prompt: str | None = None) -> dict[str, BatchFeature]:
        """One study (an image, or a list/tuple of its views) and an optional instruction -> the processor's
        single-study batch, kept whole under "study"."""
        views = list(study) if isinstance(study, (list, tuple)) else [study]
        text = None
        if prompt is not None:
            bos = self.processor.tokenizer.bos_token or ""
            text = [bos + self.processor.image_token * len(views) + prompt]
        # Kept whole, away from the base collate: `pad_collate_fn` would concatenate pixel_values of studies with
        # different view counts and pad prompts on the tokenizer's side; `_forward` pads as the processor does.
        return {"study": self.processor(images=[views], text=text, return_tensors="pt")}

    def _forward(self, model_inputs, generate_kwargs=None):
        studies = model_inputs["study"]
        inputs = pad_studies(
            studies if isinstance(studies, list) else [studies], self.processor.tokenizer.pad_token_id
        )
        generate_kwargs = self._call_generate_kwargs(generate_kwargs or {})
        features = self.model.get_image_features(inputs["pixel_values"], inputs["pixel_mask"])
        input_ids = inputs["input_ids"]
        config = generate_kwargs.get("generation_config", self.model.generation_config)
        if generate_kwargs.get("use_cache", config.use_cache):
            # The vision side runs once: its tokens enter the prompt embeddings, which only the first step reads.
            inputs_embeds = self.model.scatter_image_features(
                input_ids, self.model.get_input_embeddings()(input_ids), features
            )
            generated = self.model.generate(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                attention_mask=inputs["attention_mask"],
                **generate_kwargs,
            )
        else:  # without a KV cache every step re-reads the whole prompt, images included
            generated = self.model.generate(**inputs, **generate_kwargs)
        return {
            "report_ids": generated[:, input_ids.shape[1] :],
            **{key: features[key] for key in ("disease_probs", "clue_ids", "clue_polarity", "clue_mask")},
        }

    def _call_generate_kwargs(self, generate_kwargs: dict) -> dict:
        """This call's `generate` arguments on top of those given at init and the model's generation config."""
        if hasattr(self, "_prepare_generate_kwargs"):  # transformers >= 5.20
            return self._prepare_generate_kwargs(generate_kwargs, return_dict_in_generate=False)
        # Earlier releases merge the init arguments into `self.generation_config` when the pipeline is built; the
        # call's go into a copy, as `generate` deprecates a config passed together with loose parameters.
        generate_kwargs = dict(generate_kwargs)
        config = copy.deepcopy(generate_kwargs.pop("generation_config", None) or self.generation_config)
        unused = config.update(**generate_kwargs, return_dict_in_generate=False)
        return {"generation_config": config, **unused}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> dict[str, str | dict[str, float] | list[dict]]:
        """One study's generated ids and perception -> its report, per-observation probabilities and clues."""
        text = self.processor.post_process_generation(model_outputs["report_ids"], prompt_length=0)[0]
        findings = self.model.structured_findings(image_features=model_outputs)[0]
        return {"generated_text": text, "probabilities": findings["probabilities"], "clues": findings["clues"]}
