"""The "image-to-text" pipeline of CMCRL checkpoints (transformers 5 has no built-in task of that name).

Saved CMCRL configs name it in `custom_pipelines`, so `pipeline("image-to-text", model=folder_or_repo,
trust_remote_code=True)` builds it. Self-contained (transformers only): it travels to the Hub as remote code.
"""

from transformers import Pipeline


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

    def preprocess(self, study):
        views = list(study) if isinstance(study, (list, tuple)) else [study]
        return self.processor(images=[views], return_tensors="pt")

    def _forward(self, model_inputs, generate_kwargs=None):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs or {}, return_dict_in_generate=False)
        return {"report_ids": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs):
        return {"generated_text": self.processor.post_process_generation(model_outputs["report_ids"])[0]}
