"""TrrgProcessor: chest X-ray studies + the LLM's tokenizer -> TRRG prompts, training targets and labels.

Self-contained (torch, transformers and sibling single-dot imports) because it travels to the Hub as remote code.
"""

from typing import Any

import torch
from transformers import BatchFeature, ImageProcessingMixin, PreTrainedConfig, PreTrainedTokenizerBase
from transformers.processing_utils import ProcessorMixin

from .image_processing_cxr import CxrImageProcessor, _group_studies

# R2GenGPT's instruction, the usual prompt of LLM-based report generation.
DEFAULT_PROMPT = "Generate a comprehensive and detailed diagnosis report for this chest xray image."

# One <image> per view in the user turn (the processor expands them), the report and EOS in the assistant turn.
DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ ' ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}IMAGE_TOKEN{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


class TrrgProcessor(ProcessorMixin):
    """Builds TRRG inputs from studies (one image, a flat list of single-view studies, or a list of view lists).

    The image processor defaults to `CxrImageProcessor`.

    Prompts hold one `<image>` per view (the default prompt is `bos + <image> x views + prompt`). The processor
    expands the first `<image>` of each study into `num_query_tokens` image placeholders followed by
    `num_clue_tokens` clue placeholders (the model fuses the views itself) and removes the other views' markers.
    Special tokens are written explicitly (BOS in the prompt, EOS after the report), so the tokenizer is called
    with `add_special_tokens=False`. Without `reports` the output is a left-padded generation batch; with
    `reports` each sequence is prompt + report + EOS, right-padded, with `labels` masking the prompt and padding.
    `max_length` truncates the report, never its EOS (R2GenGPT truncated after appending it).
    """

    text_kwargs = {"add_special_tokens": False, "padding": True}

    def __init__(
        self,
        image_processor: ImageProcessingMixin | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
        num_query_tokens: int = 32,
        num_clue_tokens: int = 14,
        prompt: str = DEFAULT_PROMPT,
        **kwargs,
    ):
        if tokenizer is None:
            raise ValueError("TrrgProcessor needs the LLM's tokenizer, with the <image> and <clue> tokens added.")
        self.image_token = getattr(tokenizer, "image_token", None) or "<image>"
        self.clue_token = getattr(tokenizer, "clue_token", None) or "<clue>"
        self.image_token_id = self._special_id(tokenizer, self.image_token)
        self.clue_token_id = self._special_id(tokenizer, self.clue_token)
        if tokenizer.eos_token is None:
            raise ValueError("TrrgProcessor needs a tokenizer with an eos_token to end the reports")
        self.num_query_tokens = num_query_tokens
        self.num_clue_tokens = num_clue_tokens
        self.prompt = prompt
        if image_processor is None:
            image_processor = CxrImageProcessor()
        if chat_template is None:
            chat_template = DEFAULT_CHAT_TEMPLATE.replace("IMAGE_TOKEN", self.image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @staticmethod
    def _special_id(tokenizer, token):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token; add it as a special token and resize the LLM")
        return token_id

    @classmethod
    def for_model(
        cls,
        config: PreTrainedConfig,
        image_processor: ImageProcessingMixin | None,
        tokenizer: PreTrainedTokenizerBase,
        **kwargs,
    ) -> "TrrgProcessor":
        """A processor matching a `TrrgConfig` (placeholder counts and token ids are checked)."""
        processor = cls(
            image_processor,
            tokenizer,
            num_query_tokens=config.num_query_tokens,
            num_clue_tokens=config.num_clue_tokens,
            **kwargs,
        )
        if (processor.image_token_id, processor.clue_token_id) != (config.image_token_id, config.clue_token_id):
            raise ValueError(
                f"tokenizer ids of {processor.image_token}/{processor.clue_token} are "
                f"{processor.image_token_id}/{processor.clue_token_id}, the config expects "
                f"{config.image_token_id}/{config.clue_token_id}"
            )
        return processor

    def build_prompts(self, images: Any) -> list[str]:
        """Default prompt per study: BOS, one `<image>` per view, then the instruction."""
        bos = self.tokenizer.bos_token or ""
        return [bos + self.image_token * len(study) + self.prompt for study in _group_studies(images, None)]

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """The placeholders that replace the `image_idx`-th `<image>` of the batch: the image and clue placeholder
        block for the first view of a study, nothing for its other views."""
        first_views, start = set(), 0
        for views in image_inputs["pixel_mask"].sum(1).tolist():
            first_views.add(start)
            start += int(views)
        if image_idx not in first_views:
            return ""
        return self._placeholders()

    def _placeholders(self):
        return self.image_token * self.num_query_tokens + self.clue_token * self.num_clue_tokens

    def _default_prompt_ids(self) -> list[int]:
        """Token ids of the default prompt, the same for every study: its views share one placeholder block."""
        text = self.build_prompts([None])[0].replace(self.image_token, self._placeholders(), 1)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(
        self,
        images: object = None,
        text: str | list[str] | None = None,
        reports: str | list[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Prompts (left-padded) or, with `reports`, training sequences with `labels` (right-padded)."""
        if images is not None and text is None:
            text = self.build_prompts(images)
        if isinstance(text, str):
            text = [text]
        if images is not None:
            views = [len(study) for study in _group_studies(images, kwargs.get("num_views"))]
            markers = [sample.count(self.image_token) for sample in text]
            if markers != views:
                raise ValueError(
                    f"text must hold one {self.image_token} per view of its study: {len(text)} prompts with "
                    f"{markers} markers for {len(views)} studies with {views} views"
                )
        kwargs.setdefault("add_special_tokens", False)
        kwargs.setdefault("return_tensors", "pt")
        if reports is None:
            # Explicit: transformers releases before 5.23 do not apply the class-level text_kwargs defaults here.
            kwargs.setdefault("padding", True)
            kwargs.setdefault("padding_side", "left")
            return super().__call__(images=images, text=text, **kwargs)
        return self._training_batch(images, text, reports, **kwargs)

    def _training_batch(
        self, images, text, reports, max_length=None, padding_side="right", return_tensors="pt", **kwargs
    ):
        if isinstance(reports, str):
            reports = [reports]
        if text is None or len(reports) != len(text):
            raise ValueError(f"reports: expected one report per prompt, got {len(reports)} for {len(text or [])}")
        for key in ("padding", "truncation"):
            kwargs.pop(key, None)
        prompts = super().__call__(images=images, text=text, padding=False, return_tensors=None, **kwargs)
        report_ids = self.tokenizer(list(reports), add_special_tokens=False)["input_ids"]
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("TrrgProcessor needs a tokenizer with a pad_token to batch reports")
        sequences, labels = [], []
        for index, (prompt, target) in enumerate(zip(prompts["input_ids"], report_ids)):
            if max_length is not None:
                budget = max_length - len(prompt) - 1
                if budget < 0:
                    raise ValueError(
                        f"max_length={max_length} leaves no room for the report of sample {index}: "
                        f"its prompt alone has {len(prompt)} tokens"
                    )
                target = target[:budget]
            target = target + [eos]
            sequences.append(list(prompt) + target)
            labels.append([-100] * len(prompt) + target)
        longest = max(len(s) for s in sequences)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for sequence, label in zip(sequences, labels):
            fill = longest - len(sequence)
            mask = [1] * len(sequence)
            if padding_side == "left":
                sequence, mask, label = [pad] * fill + sequence, [0] * fill + mask, [-100] * fill + label
            else:
                sequence, mask, label = sequence + [pad] * fill, mask + [0] * fill, label + [-100] * fill
            batch["input_ids"].append(sequence)
            batch["attention_mask"].append(mask)
            batch["labels"].append(label)
        for key in ("pixel_values", "pixel_mask"):
            if key in prompts:
                batch[key] = prompts[key]
        return BatchFeature(batch, tensor_type=return_tensors)

    def post_process_generation(
        self, generated_ids: torch.Tensor | list[list[int]], prompt_length: int | None = None
    ) -> list[str]:
        """Report texts from `generate()` output (the prompt, then the report): prompt and special tokens dropped.

        `prompt_length` is the width of the `input_ids` given to `generate` (0 for ids without the prompt). Left out,
        the ids must start with this processor's default prompt, whose length is fixed; anything else (a custom
        `text`, ids without their prompt) raises rather than guessing where the report starts.
        """
        generated_ids = torch.as_tensor(generated_ids)
        if prompt_length is None:
            prompt = torch.tensor(self._default_prompt_ids(), dtype=generated_ids.dtype, device=generated_ids.device)
            prompt_length = len(prompt)
            if generated_ids.shape[1] < prompt_length or not (generated_ids[:, :prompt_length] == prompt).all():
                raise ValueError(
                    "generated_ids do not start with this processor's default prompt; pass "
                    "prompt_length=inputs['input_ids'].shape[1] (the prompt width given to generate)"
                )
        reports = self.tokenizer.batch_decode(generated_ids[:, prompt_length:], skip_special_tokens=True)
        return [report.strip() for report in reports]

    @property
    def model_input_names(self) -> list[str]:
        """The model inputs of a batch (training batches also hold `labels`)."""
        return ["input_ids", "attention_mask", "pixel_values", "pixel_mask"]


__all__ = ["TrrgProcessor"]
