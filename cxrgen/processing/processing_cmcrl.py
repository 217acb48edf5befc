"""CmcrlProcessor: chest X-ray studies + the word-level report tokenizer -> CMCRL inputs, labels and reports.

Self-contained (torch, transformers and sibling single-dot imports) because it travels to the Hub as remote code.
"""

from collections.abc import Iterable

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase
from transformers.processing_utils import ProcessorMixin

from .cleaning import STYLES, clean_report
from .image_processing_cxr import CxrImageProcessor

IGNORE_INDEX = -100


class CmcrlProcessor(ProcessorMixin):
    """Images -> `pixel_values` (B, V, 3, H, W) + `pixel_mask` (B, V) with the image processor (`CxrImageProcessor`
    unless another is given); reports -> cleaned with `clean_report(style=cleaning_style)` (saved with the
    processor) and tokenized as `labels` = [BOS] words [EOS], truncated to `max_length` (default: the tokenizer's
    `model_max_length`) keeping [EOS], padding = -100. This is the form `CmcrlForConditionalGeneration` trains on
    and `generate()` returns; `post_process_generation` turns generated ids back into report strings.
    """

    def __init__(
        self,
        image_processor: CxrImageProcessor | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        cleaning_style: str = "iu",
        **kwargs,
    ):
        if cleaning_style not in STYLES:
            raise ValueError(f"cleaning_style={cleaning_style!r}: expected one of {STYLES}")
        if tokenizer is None:
            raise ValueError(
                "CmcrlProcessor needs the report tokenizer (see cxrgen.processing.build_report_tokenizer)"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(tokenizer, name) is None:
                raise ValueError(
                    f"CmcrlProcessor: the tokenizer has no {name[:-3]} ([PAD], [BOS] and [EOS] are required)"
                )
        self.cleaning_style = cleaning_style
        super().__init__(image_processor if image_processor is not None else CxrImageProcessor(), tokenizer, **kwargs)

    def __call__(
        self,
        images: object = None,
        text: str | list[str] | None = None,
        num_views: int | None = None,
        max_length: int | None = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """`images`: one image, a flat list (single-view studies) or a list of studies (lists of views);
        `text`: one report or a list of reports (one per study when both are given)."""
        if images is None and text is None:
            raise ValueError("CmcrlProcessor needs images, text (reports) or both")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, num_views=num_views, return_tensors="pt", **kwargs))
        if text is not None:
            data["labels"] = self.encode_reports(text, max_length)
            if images is not None and data["labels"].shape[0] != data["pixel_values"].shape[0]:
                raise ValueError(
                    f"CmcrlProcessor: {data['pixel_values'].shape[0]} studies but {data['labels'].shape[0]} reports; "
                    "expected one report per study"
                )
        return BatchFeature(data=data, tensor_type=return_tensors)

    def encode_reports(self, text: str | Iterable[str], max_length: int | None = None) -> torch.LongTensor:
        """Clean and tokenize reports into (B, L) labels: [BOS] words [EOS], -100 padding."""
        reports = [text] if isinstance(text, str) else list(text)
        cleaned = []
        for index, report in enumerate(reports):
            report = clean_report(report, self.cleaning_style)
            if not report:
                raise ValueError(f"Report {index} has no words left after cleaning (style {self.cleaning_style!r})")
            cleaned.append(report)
        encoded = self.tokenizer(
            cleaned,
            truncation=True,
            max_length=max_length or self.tokenizer.model_max_length,
            padding=True,
            return_tensors="pt",
        )
        return encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, IGNORE_INDEX)

    def post_process_generation(self, generated_ids: torch.Tensor | list[list[int]]) -> list[str]:
        """Generated (or label) ids -> reports: leading [BOS]/[PAD] dropped, cut at the first [EOS], -100 ignored.
        [UNK] stays visible so unknown words are not silently removed."""
        tokenizer = self.tokenizer
        skip = {tokenizer.pad_token_id, tokenizer.bos_token_id, IGNORE_INDEX}
        reports = []
        for row in torch.as_tensor(generated_ids).tolist():
            ids = []
            for token in row:
                if token == tokenizer.eos_token_id:
                    break
                if token not in skip:
                    ids.append(token)
            reports.append(tokenizer.decode(ids, skip_special_tokens=False))
        return reports


__all__ = ["CmcrlProcessor"]
