"""The "image-to-text" pipeline of CMCRL checkpoints (transformers 5 has no built-in task of that name).

Saved CMCRL configs name it in `custom_pipelines`, so `pipeline("image-to-text", model=folder_or_repo,
trust_remote_code=True)` builds it. Self-contained (torch and transformers only): it travels to the Hub as remote code.
"""

import copy
from typing import Any

import torch
from transformers import BatchFeature, Pipeline


class RadiologyReportGenerationPipeline(Pipeline):
    """Generates a report for each chest X-ray study.

    Input: a study, i.e. one image (path, PIL image or array) or a tuple of its views (e.g. `("frontal.png",
    "lateral.png")`); a list is a batch, each item a study, so `["a.png", "b.png"]` is two single-view studies and
    `[["a.png", "b.png"]]` one two-view study. Output per study: `{"generated_text": report}`. Generation
    arguments (`num_beams`, `max_new_tokens`, ...) pass through to `generate`.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    # The model's generation config (max length and beams of its preset) decides the defaults.
    _default_generation_config = None

    def _sanitize_parameters(self, generate_kwargs=None, **kwargs):
        return {}, {"generate_kwargs": {**(generate_kwargs or {}), **kwargs}}, {}

    def preprocess(self, study: Any) -> BatchFeature:
        """One study (an image, or a list/tuple of its views) -> the processor's single-study batch."""
        views = list(study) if isinstance(study, (list, tuple)) else [study]
        return self.processor(images=[views], return_tensors="pt")

    def _forward(self, model_inputs, generate_kwargs=None):
        return {"report_ids": self.model.generate(**model_inputs, **self._call_generate_kwargs(generate_kwargs or {}))}

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

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> dict[str, str]:
        """One study's generated ids -> `{"generated_text": report}`."""
        return {"generated_text": self.processor.post_process_generation(model_outputs["report_ids"])[0]}
