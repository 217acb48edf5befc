"""Data collators of the two TRRG training stages.

Both take rows of :func:`cxrgen.data.annotation.annotation_to_dataset_dict` (``id``, ``images`` = the views of a
study, ``report``, ``labels`` = 14 CheXpert codes) and return model batches.

- :class:`TrrgContrastiveCollator` (stage 1): one sentence is sampled per study, disease-aware: every sentence is
  labelled on its own with the project labeler and sentences that mention a positive or uncertain finding are
  ``finding_sentence_weight`` times more likely (:func:`~cxrgen.modeling.trrg.modeling_trrg.sample_report_sentences`).
  The sentence's own codes go to the model as ``finding_labels`` (the soft-target positives).
- :class:`TrrgCollator` (stage 2): :class:`~cxrgen.processing.processing_trrg.TrrgProcessor` training sequences
  (prompt + report + EOS, ``labels`` masking the prompt and the padding) and the study's codes as
  ``disease_labels`` for the disease-aware consistency loss.

Training-time sampling draws from torch's global random generator, which the Trainer seeds and saves in its
checkpoints, so a resumed run samples the same sentences as an uninterrupted one. With a ``seed`` the draw of each
study depends only on that seed and the study id (the same sentence at every evaluation).
"""

import zlib
from collections.abc import Callable

import torch
from transformers import BaseImageProcessor, PreTrainedTokenizerBase, ProcessorMixin

from cxrgen.data.collators import check_rows, processor_num_views, study_views
from cxrgen.labeler import label_report, split_sentences
from cxrgen.labels import NUM_OBSERVATIONS
from cxrgen.modeling.trrg.modeling_trrg import sample_report_sentences


def report_sentences(report: str, where: str = "report") -> list[str]:
    """The sentences of a report in the labeler's normal form (lower case, words joined by single spaces)."""
    sentences = [" ".join(words) for words in split_sentences(report)]
    if not sentences:
        raise ValueError(f"{where}: the report {report!r} has no sentence with a word in it")
    return sentences


def _study_labels(rows):
    labels = []
    for row in rows:
        codes = list(row["labels"])
        if len(codes) != NUM_OBSERVATIONS or any(code not in (0, 1, 2, 3) for code in codes):
            raise ValueError(
                f"study {row.get('id')!r}: 'labels' must be {NUM_OBSERVATIONS} mention codes in 0..3, got {codes}"
            )
        labels.append(codes)
    return torch.tensor(labels, dtype=torch.long)


class TrrgContrastiveCollator:
    """Study rows -> stage-1 batch: ``pixel_values``, ``pixel_mask``, one sentence per study, ``finding_labels``.

    ``tokenizer`` is the text encoder's tokenizer (its first token is the sentence embedding: [CLS] or [BOS]).
    ``labeler(text) -> 14 codes`` labels each sentence; the per-report table of sentences and codes is cached.
    ``seed``: draw each study's sentence from a generator seeded by ``seed`` and the study id (for evaluation);
    ``None`` draws from torch's global generator (for training: a new draw every epoch).
    ``disease_prompts`` (``TrrgContrastiveConfig.flat_disease_prompts()``, for its disease-prompt loss) adds them
    tokenised to every batch (``prompt_input_ids`` ...) with the studies' report codes as ``disease_labels``.
    """

    def __init__(
        self,
        image_processor: BaseImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        finding_sentence_weight: float = 4.0,
        labeler: Callable[[str], list[int]] = label_report,
        max_length: int | None = None,
        num_views: int | None = None,
        seed: int | None = None,
        disease_prompts: list[str] | None = None,
    ):
        if finding_sentence_weight <= 0:
            raise ValueError(f"finding_sentence_weight must be > 0, got {finding_sentence_weight}")
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.finding_sentence_weight = finding_sentence_weight
        self.labeler = labeler
        self.max_length = max_length
        self.num_views = num_views
        self.seed = seed
        self._sentence_tables = {}
        self.prompt_inputs = {}
        if disease_prompts:
            prompts = tokenizer(list(disease_prompts), padding=True, return_tensors="pt")
            self.prompt_inputs = {
                f"prompt_{key}": prompts[key]
                for key in ("input_ids", "attention_mask", "token_type_ids")
                if key in prompts
            }

    def sentence_table(self, report: str, where: str = "report") -> tuple[list[str], list[list[int]]]:
        """(sentences, per-sentence codes) of a report, labelled once and cached."""
        if report not in self._sentence_tables:
            sentences = report_sentences(report, where)
            self._sentence_tables[report] = (sentences, [list(self.labeler(sentence)) for sentence in sentences])
        return self._sentence_tables[report]

    def sample(self, row: dict) -> tuple[str, list[int]]:
        """One sentence of the row's report and its codes, drawn disease-aware."""
        sentences, labels = self.sentence_table(row["report"], f"study {row.get('id')!r}")
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{row['id']}".encode()))
        index = sample_report_sentences(sentences, labels, self.finding_sentence_weight, generator=generator)[0]
        return sentences[index], labels[index]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        check_rows(rows, max_views=processor_num_views(self.image_processor, self.num_views))
        sentences, finding_labels = zip(*(self.sample(row) for row in rows))
        batch = dict(
            self.image_processor([study_views(row) for row in rows], num_views=self.num_views, return_tensors="pt")
        )
        truncation = {} if self.max_length is None else {"truncation": True, "max_length": self.max_length}
        text = self.tokenizer(list(sentences), padding=True, return_tensors="pt", **truncation)
        batch.update({key: text[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in text})
        batch["finding_labels"] = torch.tensor(finding_labels, dtype=torch.long)
        if self.prompt_inputs:
            batch.update(self.prompt_inputs)
            batch["disease_labels"] = _study_labels(rows)
        return batch


class TrrgCollator:
    """Study rows -> stage-2 batch: the processor's training sequences plus ``disease_labels`` (B, 14 codes).

    ``max_length`` truncates the report (never its EOS, never the prompt; see ``TrrgProcessor``).
    """

    def __init__(self, processor: ProcessorMixin, max_length: int | None = None, num_views: int | None = None):
        self.processor = processor
        self.max_length = max_length
        self.num_views = num_views

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        check_rows(rows, ("id", "images", "report", "labels"), processor_num_views(self.processor, self.num_views))
        batch = self.processor(
            images=[study_views(row) for row in rows],
            reports=[row["report"] for row in rows],
            max_length=self.max_length,
            num_views=self.num_views,
            return_tensors="pt",
        )
        batch = dict(batch)
        batch["disease_labels"] = _study_labels(rows)
        return batch


__all__ = ["TrrgCollator", "TrrgContrastiveCollator", "report_sentences"]
