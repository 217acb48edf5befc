"""The "image-to-text" pipeline of TRRG checkpoints (transformers 5 has no built-in task of that name).

Saved TRRG configs name it in `custom_pipelines`, so `pipeline("image-to-text", model=folder_or_repo,
trust_remote_code=True)` builds it. Self-contained (transformers only): it travels to the Hub as remote code.
"""

from transformers import GenerationConfig, Pipeline


class TrrgReportPipeline(Pipeline):
    """Generates a report for each chest X-ray study, with the per-observation probabilities and clues used.

    Input: a study, i.e. one image (path, PIL image or array) or a tuple/list of its views; a list of studies is
    processed study by study (so `["a.png", "b.png"]` is two single-view studies, `[["a.png", "b.png"]]` one
    two-view study). Output per study: `{"generated_text", "probabilities", "clues"}`.
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

    def preprocess(self, study, prompt=None):
        views = list(study) if isinstance(study, (list, tuple)) else [study]
        text = None
        if prompt is not None:
            bos = self.processor.tokenizer.bos_token or ""
            text = [bos + self.processor.image_token * len(views) + prompt]
        return self.processor(images=[views], text=text, return_tensors="pt")

    def _forward(self, model_inputs, generate_kwargs=None):
        prompt_length = model_inputs["input_ids"].shape[1]
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs or {}, return_dict_in_generate=False)
        generated = self.model.generate(**model_inputs, **generate_kwargs)
        findings = self.model.structured_findings(model_inputs["pixel_values"], model_inputs.get("pixel_mask"))
        return {"report_ids": generated[:, prompt_length:], "findings": findings}

    def postprocess(self, model_outputs):
        text = self.processor.tokenizer.batch_decode(model_outputs["report_ids"], skip_special_tokens=True)[0]
        findings = model_outputs["findings"][0]
        return {"generated_text": text, "probabilities": findings["probabilities"], "clues": findings["clues"]}
