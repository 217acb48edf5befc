"""TRRG (Truthful Radiology Report Generation) as transformers models.

Only the paper's abstract is public (Wang et al., MICCAI 2025, arXiv 2408.12141). It names the parts: stage-1
contrastive pre-training for fine-grained disease perception, and a stage-2 LLM fed with a clue injection module
(zero-shot disease perception), a cross-modal clue interaction module over an arbitrary number of clues and a
disease-aware consistency loss. Every design detail below is a reconstruction; the choices:

Stage 1 (`TrrgForContrastivePretraining`)
  * Any transformers vision encoder (default Swin-B) and a BERT-like text encoder ([CLS] state), each followed by
    a bias-free linear projection into a `projection_dim` joint space, learnable temperature (CLIP init 1/0.07).
  * Image-sentence pairs: one sentence sampled per report, favouring sentences with a positive or uncertain
    finding (`sample_report_sentences`, weight `finding_sentence_weight`) against the normal-text imbalance.
  * Symmetric InfoNCE with soft targets: in-batch pairs whose sentences are identical (same token ids) or carry
    the same non-empty finding labels are positives of each other, the target mass split evenly among them.
  * Multi-view studies: each real view is embedded and L2-normalised, the study embedding is the renormalised
    mean over real views (`pixel_mask`).
  * Zero-shot perception (CheXzero-style): for each observation, several positive and several negative prompts
    are embedded, averaged per polarity and renormalised; p = softmax(scale * [cos(v, t+), cos(v, t-)])[0].
  * Disease-prompt loss (`prompt_loss_weight`; on in the tiny preset, off by default): the prompts of every
    observation are encoded in each step and the study's zero-shot logits are trained with BCE against its
    report's labels (positive = 1, positives weighted per observation by `prompt_positive_weights`, the trainer's
    capped negative/positive ratio). The sentence contrast alone aligns images with report sentences but not with
    the prompts the zero-shot head reads: on the phantom benchmark it left that head near chance (macro AUROC
    ~0.7, one observation inverted); the added loss brought it to ~0.87 in one seed (benchmarks/QUALITY.md).

Stage 2 (`TrrgForConditionalGeneration`, the transformers 5 VLM layout: `model` = `TrrgModel` backbone returning
`last_hidden_state`, an `lm_head` tied to the LLM's input embeddings only with `tie_word_embeddings`, the LLM at
`model.language_model`)
  * Vision tower (any transformers vision encoder) -> per view the patch tokens plus the pooled global token,
    mapped to the interaction width by an MLP projector (Linear-act-Linear-LayerNorm). Only real views are
    encoded.
  * Zero-shot disease head: the stage-1 visual projection, temperature and prompt embeddings (a persistent
    buffer, so the text tower is not needed); frozen by default (`freeze_zero_shot_head`) so that the stage-1
    perception stays the robust prior the clues are built from.
  * The vision tower is fine-tuned with the rest unless `freeze_vision_tower` (on in the tiny CPU recipe, with
    observation-balanced sampling of the training studies: without the two, its stage 2 wrote the normal report
    for every study; benchmarks/QUALITY.md).
  * Clue injection: observations are selected by per-observation threshold, top-k, all or none (the ablation
    without clues); `clue_probabilities` given to `forward` / `generate` replace the zero-shot head's as their
    source (clues from another classifier, or another study's, to test that the report follows them); each clue is
    MLP([t_polarity ; p]) + observation embedding + polarity embedding, polarity = p >= threshold (`clue_threshold`,
    one per observation; the tiny CPU recipe sets each where the stage-1 probabilities reach their best F1 on the
    training split: at 0.5 its rarity-weighted head fires far more clues than there are findings). Selected
    clues are packed most probable first into `num_clue_tokens` slots; empty slots carry a learned "no clue"
    embedding, so prompts have a fixed length and the KV cache needs no mask surgery.
  * Clue teacher forcing (`label_clue_rate`; on in the tiny CPU recipe, off by default): in training, that share
    of the studies builds its clues from the report's own labels instead of the zero-shot head (positive = 1,
    else 0), so every clue the LLM learns from is right; generation always reads the zero-shot clues. Trained on
    the zero-shot clues only (right for some studies, wrong for others), the small from-scratch LLM learned to
    ignore its clue slots: its loss on training reports was the same with the true labels as clues as with none.
  * Cross-modal clue interaction: `interaction_layers` pre-LN blocks; clue tokens cross-attend to the visual
    memory (patch tokens = fine grain, global tokens = coarse grain), then `num_query_tokens` learned queries
    cross-attend to [visual memory ; clues] with the empty clue slots masked (0..all clues per study in one
    batch). It works at `interaction_hidden_size` (Q-Former-like, so that a 4096-wide LLM does not make it huge);
    a linear layer maps its outputs to the LLM width: clue-grounded visual tokens (-> `<image>` slots) and
    visually grounded clues (-> `<clue>` slots).
  * Disease-aware consistency loss: a linear head over the mean of the clue-grounded query tokens gives one logit
    per observation, trained with BCE against the report's labels (positive = 1, other codes = 0, or float
    targets) and added to the LM loss with weight `disease_loss_weight`.
  * The processor writes `<image>` x num_query_tokens and `<clue>` x num_clue_tokens placeholders; the model
    scatters the embeddings into them (`masked_scatter`), a count mismatch raises, and both ids are suppressed in
    generation. `get_image_features()` (the whole vision side, run once per prompt) / `structured_findings()` give
    the per-observation probabilities and the clues used.

Self-contained (torch/transformers and sibling single-dot imports) because it is copied to the Hub as remote code.
"""

import copy
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    Cache,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_trrg import TrrgConfig, TrrgContrastiveConfig
from .pipeline_trrg import TrrgReportPipeline

# Four-way mention codes of cxrgen.labels (copied: remote code cannot import the package).
_POSITIVE, _UNCERTAIN = 1, 3
_CLIP_LOGIT_SCALE = math.log(1 / 0.07)

# transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in the model inputs `generate` builds, in
# the forward of its language models and in every ModelOutput field. This file also runs as remote code on whatever
# release the downloader has, so it hands the cache on under the running release's name and takes either keyword.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def accepts_either_cache_name(forward: Callable) -> Callable:
    """Decorate a `forward(..., cache=...)` so that it also takes the cache as `past_key_values` (transformers < 5.24)."""

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        legacy = kwargs.pop("past_key_values", None)
        if legacy is not None:
            if kwargs.get("cache") is not None:
                raise ValueError("Pass the KV cache as `cache` or as `past_key_values`, not both")
            kwargs["cache"] = legacy
        return forward(self, *args, **kwargs)

    return wrapper


def _vision_width(vision_config):
    width = getattr(vision_config, "hidden_size", None)
    if width is None and getattr(vision_config, "hidden_sizes", None):
        width = vision_config.hidden_sizes[-1]
    if width is None:
        raise ValueError(f"vision_config ({vision_config.model_type}) has neither hidden_size nor hidden_sizes")
    return int(width)


def _check_pixel_inputs(pixel_values, pixel_mask):
    """Normalise to (B, V, C, H, W) pixels and a boolean (B, V) view mask, rejecting studies without a real view."""
    if pixel_values.ndim == 4:
        pixel_values = pixel_values[:, None]
    if pixel_values.ndim != 5:
        raise ValueError(
            f"pixel_values must be (B, V, C, H, W) or (B, C, H, W), got shape {tuple(pixel_values.shape)}"
        )
    batch, views = pixel_values.shape[:2]
    if pixel_mask is None:
        view_mask = torch.ones(batch, views, dtype=torch.bool, device=pixel_values.device)
    else:
        if tuple(pixel_mask.shape) != (batch, views):
            raise ValueError(f"pixel_mask must be (B, V) = {(batch, views)}, got {tuple(pixel_mask.shape)}")
        view_mask = pixel_mask.to(device=pixel_values.device).bool()
    empty = (~view_mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"pixel_mask marks no real view for studies {empty}; every study needs at least one image")
    return pixel_values, view_mask


def _encode_views(vision_model, pixel_values, view_mask):
    """Encode the real views only: (B, V, N, D) patch tokens and (B, V, D) global tokens, zeros for padded views."""
    batch, views = view_mask.shape
    flat_mask = view_mask.flatten()
    real = pixel_values.flatten(0, 1)[flat_mask].to(vision_model.dtype)
    outputs = vision_model(pixel_values=real, return_dict=True)
    tokens = outputs.last_hidden_state
    if tokens.ndim == 4:  # convolutional encoders return (n, C, h, w) maps
        tokens = tokens.flatten(2).transpose(1, 2)
    pooled = getattr(outputs, "pooler_output", None)
    pooled = tokens.mean(1) if pooled is None else pooled.flatten(1)
    patch = tokens.new_zeros(batch * views, *tokens.shape[1:])
    patch[flat_mask] = tokens
    glob = pooled.new_zeros(batch * views, pooled.shape[-1])
    glob[flat_mask] = pooled
    return patch.view(batch, views, *tokens.shape[1:]), glob.view(batch, views, -1)


def _study_embedding(view_embeds, view_mask):
    """L2-normalised mean of the L2-normalised real-view embeddings: (B, V, P) -> (B, P)."""
    view_embeds = F.normalize(view_embeds, dim=-1) * view_mask[..., None].to(view_embeds.dtype)
    return F.normalize(view_embeds.sum(1), dim=-1)


def _zero_shot_logits(study_embeds, prompt_embeds, logit_scale):
    """Log-odds of positive vs negative prompt per observation: (B, P), (D, 2, P) -> (B, D)."""
    sims = torch.einsum("bp,dkp->bdk", study_embeds, prompt_embeds.to(study_embeds.dtype)) * logit_scale.exp()
    # softmax over [positive, negative] taken at index 0 equals sigmoid of the difference
    return sims[..., 0] - sims[..., 1]


def sample_report_sentences(
    sentences: Sequence[str],
    sentence_labels: Sequence[Sequence[int]],
    finding_weight: float,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Draw `num_samples` sentence indices without replacement, favouring sentences that mention a finding.

    `sentence_labels[i]` are the 14 four-way codes of sentence i (observation 0 is "No Finding"); a sentence with a
    positive or uncertain finding gets weight `finding_weight` (`TrrgContrastiveConfig.finding_sentence_weight`),
    the others weight 1.
    """
    if len(sentences) != len(sentence_labels):
        raise ValueError(f"{len(sentences)} sentences but {len(sentence_labels)} label rows")
    if not 1 <= num_samples <= len(sentences):
        raise ValueError(f"num_samples must be in 1..{len(sentences)} (number of sentences), got {num_samples}")
    weights = torch.tensor(
        [
            finding_weight if any(c in (_POSITIVE, _UNCERTAIN) for c in labels[1:]) else 1.0
            for labels in sentence_labels
        ]
    )
    return torch.multinomial(weights, num_samples, replacement=False, generator=generator).tolist()


def contrastive_soft_targets(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    finding_labels: torch.LongTensor | None = None,
) -> torch.FloatTensor:
    """Row-normalised (B, B) targets: a pair is positive if same index, same sentence or same non-empty findings."""
    ids = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, -1)
    positive = (ids[:, None, :] == ids[None, :, :]).all(-1)
    if finding_labels is not None:
        if finding_labels.shape[0] != input_ids.shape[0]:
            raise ValueError(f"finding_labels has {finding_labels.shape[0]} rows for {input_ids.shape[0]} sentences")
        mentioned = (finding_labels != 0).any(-1)
        same = (finding_labels[:, None, :] == finding_labels[None, :, :]).all(-1)
        positive = positive | (same & mentioned[:, None] & mentioned[None, :])
    positive = positive | torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    positive = positive.float()
    return positive / positive.sum(-1, keepdim=True)


def soft_contrastive_loss(logits_per_image: torch.FloatTensor, targets: torch.FloatTensor) -> torch.FloatTensor:
    """Symmetric soft-target InfoNCE (targets built symmetric, so the text side uses the same matrix)."""
    image_loss = -(targets * logits_per_image.log_softmax(-1)).sum(-1).mean()
    text_loss = -(targets * logits_per_image.t().log_softmax(-1)).sum(-1).mean()
    return (image_loss + text_loss) / 2


# ----------------------------------------------------------------------------------------------------- stage 1
@dataclass
class TrrgContrastiveOutput(ModelOutput):
    """Stage-1 output: soft-target InfoNCE loss, similarity logits and normalised embeddings."""

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


class TrrgContrastivePreTrainedModel(PreTrainedModel):
    config: TrrgContrastiveConfig
    config_class = TrrgContrastiveConfig
    base_model_prefix = "trrg_contrastive"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TrrgForContrastivePretraining):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)


class TrrgForContrastivePretraining(TrrgContrastivePreTrainedModel):
    """Stage 1: disease-aware image-sentence contrastive pre-training and zero-shot disease perception."""

    def __init__(self, config: TrrgContrastiveConfig):
        super().__init__(config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.text_model = AutoModel.from_config(config.text_config)
        self.visual_projection = nn.Linear(_vision_width(config.vision_config), config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    def get_image_features(
        self, pixel_values: torch.FloatTensor, pixel_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """Normalised study embeddings (B, P) from (B, V, C, H, W) pixels (views averaged) or (B, C, H, W)."""
        pixel_values, view_mask = _check_pixel_inputs(pixel_values, pixel_mask)
        _, glob = _encode_views(self.vision_model, pixel_values, view_mask)
        return _study_embedding(self.visual_projection(glob), view_mask)

    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
    ) -> torch.FloatTensor:
        """Normalised sentence embeddings (B, P) from the text encoder's first ([CLS]) token."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return F.normalize(self.text_projection(hidden[:, 0]), dim=-1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        finding_labels: torch.LongTensor | None = None,
        disease_labels: torch.LongTensor | None = None,
        prompt_input_ids: torch.LongTensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        prompt_token_type_ids: torch.LongTensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> TrrgContrastiveOutput:
        """Contrast each study with its sampled sentence; `finding_labels` (B, 14) are the sentences' label codes.

        With `config.prompt_loss_weight` > 0 the loss adds the disease-prompt BCE: `prompt_input_ids` (and mask)
        tokenise `config.flat_disease_prompts()`, `disease_labels` (B, 14) are the studies' report codes
        (positive = 1, every other code = 0, as the clinical-efficacy metrics count them).
        """
        if pixel_values is None or input_ids is None:
            raise ValueError("TrrgForContrastivePretraining needs both pixel_values and input_ids")
        image_embeds = self.get_image_features(pixel_values, pixel_mask)
        text_embeds = self.get_text_features(input_ids, attention_mask, token_type_ids)
        if image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError(f"{image_embeds.shape[0]} studies but {text_embeds.shape[0]} sentences in the batch")
        logits_per_image = self.logit_scale.exp() * image_embeds @ text_embeds.t()
        loss = None
        if return_loss:
            if self.config.same_findings_positive:
                targets = contrastive_soft_targets(input_ids, attention_mask, finding_labels)
            else:
                targets = torch.eye(len(input_ids), device=input_ids.device)
            loss = soft_contrastive_loss(logits_per_image, targets.to(logits_per_image.dtype))
            if self.config.prompt_loss_weight > 0:
                if prompt_input_ids is None or disease_labels is None:
                    raise ValueError(
                        "prompt_loss_weight > 0: the batch needs prompt_input_ids (the tokenised "
                        "config.flat_disease_prompts()) and disease_labels (B, 14 report codes)"
                    )
                prompt_features = self.get_text_features(
                    prompt_input_ids, prompt_attention_mask, prompt_token_type_ids
                )
                zero_shot_logits = _zero_shot_logits(
                    image_embeds, self.prompt_embeds(prompt_features), self.logit_scale
                )
                loss = loss + self.config.prompt_loss_weight * self.prompt_loss(zero_shot_logits, disease_labels)
        return TrrgContrastiveOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )

    def prompt_embeds(self, prompt_features: torch.FloatTensor) -> torch.FloatTensor:
        """Ensembled prompt embeddings (D, 2, P), index 0 positive, 1 negative, from the text features of
        `config.flat_disease_prompts()` in that order (each polarity's prompts averaged and renormalised)."""
        embeds, start = [], 0
        for positives, negatives in self.config.disease_prompts():
            pair = []
            for prompts in (positives, negatives):
                pair.append(F.normalize(prompt_features[start : start + len(prompts)].mean(0), dim=-1))
                start += len(prompts)
            embeds.append(torch.stack(pair))
        if start != len(prompt_features):
            raise ValueError(
                f"{len(prompt_features)} prompt sentences given, the config's disease prompts have {start}"
            )
        return torch.stack(embeds)

    @torch.no_grad()
    def encode_disease_prompts(self, tokenizer: PreTrainedTokenizerBase) -> torch.FloatTensor:
        """Ensembled prompt embeddings (D, 2, P): index 0 positive, 1 negative, for each observation."""
        enc = tokenizer(self.config.flat_disease_prompts(), padding=True, return_tensors="pt").to(self.device)
        features = self.get_text_features(enc["input_ids"], enc.get("attention_mask"), enc.get("token_type_ids"))
        return self.prompt_embeds(features)

    def prompt_loss(self, zero_shot_logits: torch.FloatTensor, disease_labels: torch.LongTensor) -> torch.FloatTensor:
        """BCE of the zero-shot logits (B, D) against the report codes (B, D), positives weighted per observation by
        `config.prompt_positive_weights`."""
        targets = _disease_targets(disease_labels, zero_shot_logits.shape[1]).to(zero_shot_logits.dtype)
        weights = self.config.prompt_positive_weights
        pos_weight = None if weights is None else zero_shot_logits.new_tensor(weights)
        return F.binary_cross_entropy_with_logits(zero_shot_logits, targets, pos_weight=pos_weight)

    @torch.no_grad()
    def zero_shot(
        self,
        pixel_values: torch.FloatTensor,
        tokenizer: PreTrainedTokenizerBase | None = None,
        pixel_mask: torch.Tensor | None = None,
        prompt_embeds: torch.FloatTensor | None = None,
    ) -> torch.FloatTensor:
        """Probability (B, D) of each observation for an image or a multi-view study."""
        if prompt_embeds is None:
            if tokenizer is None:
                raise ValueError("zero_shot needs the text tokenizer or precomputed prompt_embeds")
            prompt_embeds = self.encode_disease_prompts(tokenizer)
        study = self.get_image_features(pixel_values, pixel_mask)
        return torch.sigmoid(_zero_shot_logits(study, prompt_embeds, self.logit_scale))


# ----------------------------------------------------------------------------------------------------- stage 2
@dataclass
class TrrgPerception(ModelOutput):
    """What the vision side hands the LLM, plus the structured findings.

    image_embeds (B, Q, H) clue-grounded visual tokens; clue_embeds (B, S, H) visually grounded clues (empty slots
    hold the "no clue" embedding); disease_probs (B, D) zero-shot probabilities; disease_logits (B, D) consistency
    head logits; clue_ids (B, S) observation index per slot; clue_polarity (B, S) 1 = positive; clue_mask (B, S).
    """

    image_embeds: torch.FloatTensor | None = None
    clue_embeds: torch.FloatTensor | None = None
    disease_probs: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    clue_ids: torch.LongTensor | None = None
    clue_polarity: torch.LongTensor | None = None
    clue_mask: torch.BoolTensor | None = None


@dataclass
class TrrgModelOutputWithPast(BaseModelOutputWithPast):
    """Backbone output: the LLM's hidden states plus the perception of the current images (prefill only)."""

    disease_probs: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    clue_ids: torch.LongTensor | None = None
    clue_polarity: torch.LongTensor | None = None
    clue_mask: torch.BoolTensor | None = None


# The perception fields the backbone output adds to the LLM's and the LM output hands on.
_PERCEPTION_FIELDS = tuple(
    name
    for name in TrrgModelOutputWithPast.__dataclass_fields__
    if name not in BaseModelOutputWithPast.__dataclass_fields__
)


@dataclass
class TrrgCausalLMOutputWithPast(CausalLMOutputWithPast):
    """LM output; `loss` = LM loss + disease_loss_weight * disease_loss when both labels are given."""

    lm_loss: torch.FloatTensor | None = None
    disease_loss: torch.FloatTensor | None = None
    disease_probs: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    clue_ids: torch.LongTensor | None = None
    clue_polarity: torch.LongTensor | None = None
    clue_mask: torch.BoolTensor | None = None


class TrrgProjector(nn.Module):
    """Vision width -> interaction width for patch and global tokens."""

    def __init__(self, config: TrrgConfig):
        super().__init__()
        hidden = config.interaction_hidden_size
        self.fc1 = nn.Linear(_vision_width(config.vision_config), hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.fc2 = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, features: torch.FloatTensor) -> torch.FloatTensor:
        """(..., Dv) vision tokens -> (..., H) tokens of the interaction width."""
        return self.norm(self.fc2(self.act(self.fc1(features))))


class TrrgZeroShotHead(nn.Module):
    """Stage-1 zero-shot perception without the text tower: visual projection, temperature, prompt embeddings."""

    def __init__(self, config: TrrgConfig):
        super().__init__()
        self.visual_projection = nn.Linear(_vision_width(config.vision_config), config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(_CLIP_LOGIT_SCALE))
        self.register_buffer("prompt_embeds", torch.zeros(len(config.observation_names), 2, config.projection_dim))

    def forward(self, global_tokens: torch.FloatTensor, view_mask: torch.BoolTensor) -> torch.FloatTensor:
        """(B, V, Dv) global view tokens -> (B, D) log-odds of each observation."""
        study = _study_embedding(self.visual_projection(global_tokens), view_mask)
        return _zero_shot_logits(study, self.prompt_embeds, self.logit_scale)


class TrrgClueInjector(nn.Module):
    """Selects clues from the zero-shot probabilities and embeds observation, polarity and probability."""

    def __init__(self, config: TrrgConfig):
        super().__init__()
        hidden = config.interaction_hidden_size
        self.selection = config.clue_selection
        self.num_slots = config.num_clue_tokens
        self.thresholds = config.thresholds()
        self.fc1 = nn.Linear(config.projection_dim + 1, hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.fc2 = nn.Linear(hidden, hidden)
        self.observation_embeddings = nn.Embedding(len(config.observation_names), hidden)
        self.polarity_embeddings = nn.Embedding(2, hidden)
        # fills the unused clue slots of the LLM prompt, so it lives in the LLM's embedding space
        self.null_clue = nn.Parameter(torch.zeros(config.text_config.hidden_size))

    def forward(
        self, probs: torch.FloatTensor, prompt_embeds: torch.FloatTensor
    ) -> tuple[torch.FloatTensor, torch.LongTensor, torch.LongTensor, torch.BoolTensor]:
        """(B, D) probabilities, (D, 2, P) prompt embeddings -> clues (B, S, H), then the observation index,
        polarity (1 = positive) and selection mask of each slot, all (B, S)."""
        positive = probs >= torch.tensor(self.thresholds, dtype=probs.dtype, device=probs.device)
        every = torch.full_like(positive, self.selection != "none")
        selected = positive if self.selection == "threshold" else every
        # most probable first; unselected observations sort behind every selected one
        score = torch.where(selected, probs, probs - 2.0)
        order = score.sort(dim=-1, descending=True, stable=True).indices[:, : self.num_slots]
        clue_mask = selected.gather(1, order)
        polarity = positive.gather(1, order).long()
        clue_prompts = prompt_embeds.to(probs.dtype)[order, 1 - polarity]  # prompt index 0 = positive
        features = torch.cat([clue_prompts, probs.gather(1, order)[..., None]], dim=-1)
        clues = self.fc2(self.act(self.fc1(features)))
        clues = clues + self.observation_embeddings(order) + self.polarity_embeddings(polarity)
        return clues, order, polarity, clue_mask


class TrrgInteractionLayer(GradientCheckpointingLayer):
    """Clues <- visual memory, then queries <- [visual memory ; clues]; pre-LN residual blocks with FFNs."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.memory_norm = nn.LayerNorm(hidden)
        self.clue_norm = nn.LayerNorm(hidden)
        self.clue_attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.clue_ffn_norm = nn.LayerNorm(hidden)
        self.clue_ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.query_norm = nn.LayerNorm(hidden)
        self.clue_key_norm = nn.LayerNorm(hidden)
        self.query_attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.query_ffn_norm = nn.LayerNorm(hidden)
        self.query_ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(
        self,
        queries: torch.FloatTensor,
        clues: torch.FloatTensor,
        memory: torch.FloatTensor,
        memory_padding: torch.BoolTensor,
        clue_padding: torch.BoolTensor,
    ) -> tuple[torch.FloatTensor, torch.FloatTensor]:
        """(B, Q, H) queries, (B, S, H) clues, (B, M, H) visual memory and the (B, M) / (B, S) padding masks
        (True = ignored) -> updated (B, Q, H) queries and (B, S, H) clues."""
        memory = self.memory_norm(memory)
        normed = self.clue_norm(clues)
        clues = (
            clues + self.clue_attention(normed, memory, memory, key_padding_mask=memory_padding, need_weights=False)[0]
        )
        clues = clues + self.clue_ffn(self.clue_ffn_norm(clues))
        keys = torch.cat([memory, self.clue_key_norm(clues)], dim=1)
        padding = torch.cat([memory_padding, clue_padding], dim=1)
        normed = self.query_norm(queries)
        queries = queries + self.query_attention(normed, keys, keys, key_padding_mask=padding, need_weights=False)[0]
        queries = queries + self.query_ffn(self.query_ffn_norm(queries))
        return queries, clues


class TrrgClueInteraction(nn.Module):
    """Cross-modal clue interaction over any number (0..all) of clues per study."""

    def __init__(self, config: TrrgConfig):
        super().__init__()
        hidden = config.interaction_hidden_size
        if hidden % config.interaction_heads:
            raise ValueError(
                f"TrrgConfig.interaction_heads ({config.interaction_heads}) must divide interaction_hidden_size ({hidden})"
            )
        self.layers = nn.ModuleList(
            TrrgInteractionLayer(hidden, config.interaction_heads, config.interaction_dropout)
            for _ in range(config.interaction_layers)
        )
        self.queries = nn.Parameter(torch.zeros(config.num_query_tokens, hidden))
        self.query_out_norm = nn.LayerNorm(hidden)
        self.clue_out_norm = nn.LayerNorm(hidden)
        self.language_projection = nn.Linear(hidden, config.text_config.hidden_size)

    def forward(
        self,
        clues: torch.FloatTensor,
        memory: torch.FloatTensor,
        memory_padding: torch.BoolTensor,
        clue_padding: torch.BoolTensor,
    ) -> tuple[torch.FloatTensor, torch.FloatTensor, torch.FloatTensor]:
        """Returns the queries in interaction width, and queries and clues projected to the LLM width."""
        queries = self.queries[None].expand(memory.shape[0], -1, -1).to(memory.dtype)
        for layer in self.layers:
            queries, clues = layer(queries, clues, memory, memory_padding, clue_padding)
        queries = self.query_out_norm(queries)
        return queries, self.language_projection(queries), self.language_projection(self.clue_out_norm(clues))


class TrrgPreTrainedModel(PreTrainedModel):
    config: TrrgConfig
    config_class = TrrgConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["TrrgInteractionLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def enable_input_require_grads(self) -> None:
        """Mark the LLM's token embeddings as requiring grad (for frozen-base training with checkpointing).

        The generic version hooks every sub-model's input embeddings and fails on vision towers whose patch
        embedding returns a tuple (Swin); the visual and clue embeddings come from trainable modules anyway.
        """

        def require_grads(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self._require_grads_hooks = [self.get_input_embeddings().register_forward_hook(require_grads)]
        self._require_grads_hook = self._require_grads_hooks[0]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, TrrgClueInteraction):
            init.normal_(module.queries, std=std)
        elif isinstance(module, TrrgZeroShotHead):
            init.constant_(module.logit_scale, _CLIP_LOGIT_SCALE)
            init.copy_(module.prompt_embeds, F.normalize(torch.randn_like(module.prompt_embeds), dim=-1))
        elif isinstance(module, TrrgClueInjector):
            init.normal_(module.null_clue, std=std)


class TrrgModel(TrrgPreTrainedModel):
    """Backbone: vision tower, projector, zero-shot head, clue injection and interaction, and the LLM body."""

    def __init__(self, config: TrrgConfig):
        super().__init__(config)
        if config.image_token_id is None or config.clue_token_id is None:
            raise ValueError(
                "TrrgConfig.image_token_id and clue_token_id must be set (the tokenizer's <image>/<clue> ids)"
            )
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.projector = TrrgProjector(config)
        self.zero_shot_head = TrrgZeroShotHead(config)
        self.clue_injector = TrrgClueInjector(config)
        self.interaction = TrrgClueInteraction(config)
        self.disease_head = nn.Linear(config.interaction_hidden_size, len(config.observation_names))
        self.language_model = AutoModel.from_config(config.text_config)
        self._freeze()
        self.post_init()

    def _freeze(self) -> None:
        for frozen, module in (
            (self.config.freeze_zero_shot_head, self.zero_shot_head),
            (self.config.freeze_vision_tower, self.vision_tower),
        ):
            if frozen:
                module.requires_grad_(False)

    def train(self, mode: bool = True) -> "TrrgModel":
        """`nn.Module.train`, keeping the zero-shot head and the vision tower frozen when `config.freeze_zero_shot_head`
        / `config.freeze_vision_tower` are set (a frozen tower also stays in eval mode, its dropout off)."""
        # from_pretrained re-creates parameters with requires_grad=True and ends with eval(): re-freezing here keeps
        # the modules frozen in loaded models too, before any optimizer collects their parameters.
        super().train(mode)
        self._freeze()
        if self.config.freeze_vision_tower:
            self.vision_tower.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.Tensor | None = None,
        clue_probabilities: torch.FloatTensor | None = None,
        label_clue_targets: torch.FloatTensor | None = None,
    ) -> TrrgPerception:
        """The whole vision side: visual tokens and clues for the placeholders, plus the structured findings.

        `pixel_values` (B, V, C, H, W) or (B, C, H, W); `pixel_mask` (B, V) is 1 for real views, 0 for padding.
        `clue_probabilities` (B, D) replace the zero-shot head's probabilities as the source of the clues (and of
        `disease_probs`): clues from another classifier, or another study's clues swapped in to test that the reports
        follow them. `label_clue_targets` (B, D), the report's labels in [0, 1]: in training mode, each study takes
        its clues from them instead with probability `config.label_clue_rate` (clue teacher forcing).
        """
        pixel_values, view_mask = _check_pixel_inputs(pixel_values, pixel_mask)
        patch, glob = _encode_views(self.vision_tower, pixel_values, view_mask)
        if clue_probabilities is None:
            probs = torch.sigmoid(self.zero_shot_head(glob, view_mask))
        else:
            expected = (pixel_values.shape[0], len(self.config.observation_names))
            if tuple(clue_probabilities.shape) != expected:
                raise ValueError(
                    f"clue_probabilities must have shape {expected} (studies, observations), "
                    f"got {tuple(clue_probabilities.shape)}"
                )
            probs = clue_probabilities.to(device=glob.device, dtype=glob.dtype)
        if self.training and self.config.label_clue_rate > 0 and label_clue_targets is not None:
            from_labels = torch.rand(probs.shape[0], device=probs.device) < self.config.label_clue_rate
            probs = torch.where(from_labels[:, None], label_clue_targets.to(probs), probs)
        clues, clue_ids, polarity, clue_mask = self.clue_injector(probs, self.zero_shot_head.prompt_embeds)

        visual = self.projector(torch.cat([glob[:, :, None], patch], dim=2))  # (B, V, 1 + N, H), global first
        batch, views, tokens, hidden = visual.shape
        if self.config.multi_view_fusion == "mean":
            weights = view_mask[..., None, None].to(visual.dtype)
            memory = (visual * weights).sum(1) / weights.sum(1)
            memory_padding = torch.zeros(batch, tokens, dtype=torch.bool, device=visual.device)
        else:
            memory = visual.reshape(batch, views * tokens, hidden)
            memory_padding = (~view_mask)[..., None].expand(batch, views, tokens).reshape(batch, views * tokens)
        queries, image_embeds, clues = self.interaction(clues.to(visual.dtype), memory, memory_padding, ~clue_mask)
        clues = torch.where(clue_mask[..., None], clues, self.clue_injector.null_clue.to(clues.dtype))
        return TrrgPerception(
            image_embeds=image_embeds,
            clue_embeds=clues,
            disease_probs=probs,
            disease_logits=self.disease_head(queries.mean(1)),
            clue_ids=clue_ids,
            clue_polarity=polarity,
            clue_mask=clue_mask,
        )

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.FloatTensor, image_features: TrrgPerception
    ) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        """(B, L, 1) masks of the `<image>` and `<clue>` placeholders, found by token id or, without `input_ids`, by
        their embedding; raises unless every sequence has one slot per visual token and one per clue."""
        studies, sequences = image_features.image_embeds.shape[0], inputs_embeds.shape[0]
        if studies != sequences:
            raise ValueError(f"image features of {studies} studies for {sequences} sequences")
        masks = []
        for token_id, name, features in (
            (self.config.image_token_id, "<image>", image_features.image_embeds),
            (self.config.clue_token_id, "<clue>", image_features.clue_embeds),
        ):
            if input_ids is None:
                placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
                mask = (inputs_embeds == placeholder).all(-1)
            else:
                mask = input_ids == token_id
            counts = mask.sum(1)
            if (counts != features.shape[1]).any():
                raise ValueError(
                    f"Every sequence needs exactly {features.shape[1]} {name} placeholder tokens (id {token_id}), "
                    f"found {counts.tolist()}; build the inputs with TrrgProcessor for this model's config"
                )
            masks.append(mask[..., None].to(inputs_embeds.device))
        return masks[0], masks[1]

    def scatter_image_features(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.FloatTensor, image_features: TrrgPerception
    ) -> torch.FloatTensor:
        """`inputs_embeds` with the visual tokens and clues of `get_image_features` written into their placeholders."""
        image_mask, clue_mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
        inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features.image_embeds.to(inputs_embeds))
        return inputs_embeds.masked_scatter(clue_mask, image_features.clue_embeds.to(inputs_embeds))

    @can_return_tuple
    @accepts_either_cache_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        clue_probabilities: torch.FloatTensor | None = None,
        label_clue_targets: torch.FloatTensor | None = None,
        **kwargs,
    ) -> TrrgModelOutputWithPast | tuple:
        """LLM hidden states for the prompt with the image features scattered into its placeholders (when
        `pixel_values` are given), plus the perception of those images (`clue_probabilities`, `label_clue_targets`:
        see `get_image_features`)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            placeholders = (input_ids == self.config.image_token_id) | (input_ids == self.config.clue_token_id)
            if pixel_values is None and placeholders.any():
                raise ValueError("input_ids contain <image>/<clue> placeholders but no pixel_values were given")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_features = None
        if pixel_values is not None:
            if pixel_values.shape[0] != inputs_embeds.shape[0]:
                raise ValueError(
                    f"pixel_values has {pixel_values.shape[0]} studies for {inputs_embeds.shape[0]} sequences"
                )
            image_features = self.get_image_features(pixel_values, pixel_mask, clue_probabilities, label_clue_targets)
            inputs_embeds = self.scatter_image_features(input_ids, inputs_embeds, image_features)

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{CACHE_FIELD: cache},
            **kwargs,
        )
        # Decoding steps have no images: their outputs leave the perception fields empty (no per-step TrrgPerception).
        perception = (
            {} if image_features is None else {name: getattr(image_features, name) for name in _PERCEPTION_FIELDS}
        )
        return TrrgModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **perception,
        )


def _disease_targets(disease_labels, num_observations):
    if disease_labels.ndim != 2 or disease_labels.shape[1] != num_observations:
        raise ValueError(f"disease_labels must be (B, {num_observations}), got {tuple(disease_labels.shape)}")
    if disease_labels.is_floating_point():
        if ((disease_labels < 0) | (disease_labels > 1)).any():
            raise ValueError("float disease_labels are targets and must lie in [0, 1]")
        return disease_labels
    if ((disease_labels < 0) | (disease_labels > 3)).any():
        raise ValueError("integer disease_labels must be the four-way codes 0..3 (0 blank, 1 pos, 2 neg, 3 uncertain)")
    return (disease_labels == _POSITIVE).float()


# Attention projections LoRA adapts, per LLM architecture (peft `target_modules` names).
LORA_ATTENTION_MODULES = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "phi3": ("qkv_proj", "o_proj"),
    "gpt2": ("c_attn", "c_proj"),
}


class TrrgForConditionalGeneration(TrrgPreTrainedModel, GenerationMixin):
    """TRRG stage 2: clue-enhanced radiology report generation with any causal LM (see the module docstring).

    For LoRA, adapt `lora_target_modules()` (the LLM's attention projections only) and train
    `lora_trainable_modules` fully (peft `modules_to_save`); for 4-bit/8-bit loading, skip
    `quantization_skip_modules` (full prefixes: bitsandbytes matches skip modules by prefix, not by name part).
    """

    lora_trainable_modules = ("projector", "clue_injector", "interaction", "disease_head")
    quantization_skip_modules = (
        "model.vision_tower",
        "model.projector",
        "model.zero_shot_head",
        "model.clue_injector",
        "model.interaction",
        "model.disease_head",
        "lm_head",
    )

    # The loss is a token-mean LM loss plus a study-mean disease loss. The Trainer's `num_items_in_batch` (label tokens
    # of the whole accumulated batch) fits the LM term only: dividing the disease term by it as well would weight each
    # study's findings by the length of its report. So the Trainer gets per-batch means and averages them over the
    # accumulation steps, which matches one large batch whenever the micro-batches hold as many label tokens.
    accepts_loss_kwargs = False

    def __init__(self, config: TrrgConfig):
        # Written on a copy, so that the caller's config object is left as it was. Every save must load remotely as
        # AutoModel and as the "image-to-text" pipeline; the pipeline file travels with the code because this module
        # imports it.
        config = copy.deepcopy(config)
        module = __name__.rsplit(".", 1)[-1]
        config.auto_map = {"AutoModel": f"{module}.{type(self).__name__}", **(getattr(config, "auto_map", None) or {})}
        config.custom_pipelines = {
            "image-to-text": {
                "impl": f"{TrrgReportPipeline.__module__.rsplit('.', 1)[-1]}.{TrrgReportPipeline.__name__}",
                "pt": ["AutoModelForImageTextToText"],
                "type": "multimodal",
            }
        }
        super().__init__(config)
        self.model = TrrgModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # The LLM's embedding module is named by its architecture (embed_tokens, wte, ...); transformers ties the
        # pair only when config.tie_word_embeddings is set.
        embeddings = self.model.get_input_embeddings()
        name = next(path for path, sub in self.model.language_model.named_modules() if sub is embeddings)
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()
        placeholders = [config.image_token_id, config.clue_token_id]
        suppressed = list(self.generation_config.suppress_tokens or [])
        self.generation_config.suppress_tokens = suppressed + [t for t in placeholders if t not in suppressed]

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def lora_target_modules(self) -> str:
        """peft `target_modules` regex: the attention projections of the LLM, nothing else."""
        model_type = self.config.text_config.model_type
        if model_type not in LORA_ATTENTION_MODULES:
            raise ValueError(
                f"no default LoRA targets for LLM type {model_type!r} (known: {sorted(LORA_ATTENTION_MODULES)}); "
                "pass target_modules to peft.LoraConfig yourself"
            )
        names = "|".join(LORA_ATTENTION_MODULES[model_type])
        # gpt2's MLP also has a c_proj: require an attention block in the path
        return rf".*language_model\..*(attn|attention)\.({names})"

    @classmethod
    def nf4_quantization_config(cls, compute_dtype: torch.dtype = torch.bfloat16) -> BitsAndBytesConfig:
        """bitsandbytes nf4 (double-quantised) for the LLM's linear layers; the vision and clue modules and `lm_head`
        stay in full precision. Pass it to `from_pretrained(..., quantization_config=...)`."""
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=list(cls.quantization_skip_modules),
        )

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.Tensor | None = None,
        clue_probabilities: torch.FloatTensor | None = None,
    ) -> TrrgPerception:
        """See `TrrgModel.get_image_features`."""
        return self.model.get_image_features(pixel_values, pixel_mask, clue_probabilities)

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.FloatTensor, image_features: TrrgPerception
    ) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        """See `TrrgModel.get_placeholder_mask`."""
        return self.model.get_placeholder_mask(input_ids, inputs_embeds, image_features)

    def scatter_image_features(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.FloatTensor, image_features: TrrgPerception
    ) -> torch.FloatTensor:
        """See `TrrgModel.scatter_image_features`."""
        return self.model.scatter_image_features(input_ids, inputs_embeds, image_features)

    @torch.no_grad()
    def structured_findings(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_features: TrrgPerception | Mapping[str, torch.Tensor] | None = None,
    ) -> list[dict]:
        """Per study: {"probabilities": {observation: p}, "clues": [{observation, polarity, probability}, ...]}.

        From the pixels, or from `image_features` already computed by `get_image_features` (any mapping with its
        disease_probs, clue_ids, clue_polarity and clue_mask), so that the vision side does not run twice.
        """
        if (pixel_values is None) == (image_features is None):
            raise ValueError("structured_findings takes pixel_values or image_features, exactly one of them")
        if image_features is None:
            image_features = self.get_image_features(pixel_values, pixel_mask)
        names = list(self.config.observation_names)
        studies = []
        for probs, ids, polarity, mask in zip(
            image_features["disease_probs"].float().tolist(),
            image_features["clue_ids"].tolist(),
            image_features["clue_polarity"].tolist(),
            image_features["clue_mask"].tolist(),
        ):
            clues = [
                {"observation": names[i], "polarity": "positive" if pol else "negative", "probability": probs[i]}
                for i, pol, used in zip(ids, polarity, mask)
                if used
            ]
            studies.append({"probabilities": dict(zip(names, probs)), "clues": clues})
        return studies

    @can_return_tuple
    @accepts_either_cache_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        disease_labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        clue_probabilities: torch.FloatTensor | None = None,
        **kwargs,
    ) -> TrrgCausalLMOutputWithPast | tuple:
        """Causal LM forward; `labels` (-100 = ignored) give the LM loss, `disease_labels` (B, D) the consistency loss;
        `clue_probabilities` (B, D) replace the zero-shot probabilities the clues come from (`generate` takes them
        too, e.g. to swap in another study's clues)."""
        if "num_items_in_batch" in kwargs:
            raise ValueError(
                "the TRRG loss is a per-batch mean (accepts_loss_kwargs = False): num_items_in_batch would rescale "
                "its LM term but not its disease term"
            )
        targets = None
        if disease_labels is not None:
            targets = _disease_targets(disease_labels, len(self.config.observation_names))
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            clue_probabilities=clue_probabilities,
            label_clue_targets=targets,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        lm_loss = disease_loss = None
        if labels is not None:
            lm_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        if disease_labels is not None:
            if outputs.disease_logits is None:
                raise ValueError("disease_labels need pixel_values (the consistency head reads the image)")
            disease_loss = F.binary_cross_entropy_with_logits(
                outputs.disease_logits.float(), targets.to(outputs.disease_logits.device).float()
            )
        loss = None
        if lm_loss is not None or disease_loss is not None:
            loss = lm_loss if lm_loss is not None else 0.0
            if disease_loss is not None:
                loss = loss + self.config.disease_loss_weight * disease_loss
        return TrrgCausalLMOutputWithPast(
            loss=loss,
            lm_loss=lm_loss,
            disease_loss=disease_loss,
            logits=logits,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{name: getattr(outputs, name) for name in _PERCEPTION_FIELDS},
        )

    @torch.no_grad()
    def load_contrastive(
        self, contrastive_model: TrrgForContrastivePretraining, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        """Copy a stage-1 model's vision encoder, visual projection and temperature, and its prompt embeddings."""
        head = self.model.zero_shot_head
        source = contrastive_model.config
        if list(source.observation_names) != list(self.config.observation_names):
            raise ValueError("the stage-1 and stage-2 configs list different observation_names")
        if source.projection_dim != self.config.projection_dim:
            raise ValueError(f"stage-1 projection_dim {source.projection_dim} != stage-2 {self.config.projection_dim}")
        self.model.vision_tower.load_state_dict(contrastive_model.vision_model.state_dict())
        head.visual_projection.load_state_dict(contrastive_model.visual_projection.state_dict())
        head.logit_scale.copy_(contrastive_model.logit_scale)
        head.prompt_embeds.copy_(contrastive_model.encode_disease_prompts(tokenizer))

    @classmethod
    def from_parts(
        cls,
        language_model: PreTrainedConfig | str | os.PathLike,
        vision_encoder: PreTrainedConfig | str | os.PathLike | None = None,
        contrastive_model: TrrgForContrastivePretraining | str | os.PathLike | None = None,
        contrastive_tokenizer: PreTrainedTokenizerBase | None = None,
        **config_kwargs,
    ) -> "TrrgForConditionalGeneration":
        """Build a stage-2 model from a causal LM and a vision encoder, optionally initialised from stage 1.

        `language_model`: a causal LM config, or a local checkpoint folder whose weights are loaded.
        `vision_encoder`: a vision config or a local checkpoint folder (default Swin-B config); leave it out when a
        stage-1 model (or its folder) is given as `contrastive_model`, which provides the vision encoder, the
        zero-shot head and, with `contrastive_tokenizer` (default: the tokenizer saved in the stage-1 folder),
        the prompt embeddings. `config_kwargs` go to `TrrgConfig` (image_token_id and clue_token_id are required).
        """
        language = None
        if isinstance(language_model, PreTrainedConfig):
            text_config = language_model
        else:
            language = AutoModelForCausalLM.from_pretrained(language_model)
            text_config = language.config
        vision = None
        if contrastive_model is not None:
            if vision_encoder is not None:
                raise ValueError("pass either vision_encoder or contrastive_model: stage 1 holds the vision encoder")
            if isinstance(contrastive_model, (str, os.PathLike)):
                if contrastive_tokenizer is None:
                    contrastive_tokenizer = AutoTokenizer.from_pretrained(contrastive_model)
                contrastive_model = TrrgForContrastivePretraining.from_pretrained(contrastive_model)
            if contrastive_tokenizer is None:
                raise ValueError("contrastive_tokenizer is needed to embed the disease prompts of the stage-1 model")
            vision_config = contrastive_model.config.vision_config
            config_kwargs.setdefault("projection_dim", contrastive_model.config.projection_dim)
            config_kwargs.setdefault("observation_names", list(contrastive_model.config.observation_names))
        elif isinstance(vision_encoder, PreTrainedConfig) or vision_encoder is None:
            vision_config = vision_encoder
        else:
            vision = AutoModel.from_pretrained(vision_encoder)
            vision_config = vision.config
        model = cls(TrrgConfig(vision_config=vision_config, text_config=text_config, **config_kwargs))
        with torch.no_grad():
            if language is not None:
                model.model.language_model.load_state_dict(language.base_model.state_dict())
                if not model.config.tie_word_embeddings:  # tied, lm_head already is the loaded input embedding
                    model.lm_head.weight.copy_(language.get_output_embeddings().weight)
            if vision is not None:
                model.model.vision_tower.load_state_dict(vision.state_dict())
        if contrastive_model is not None:
            model.load_contrastive(contrastive_model, contrastive_tokenizer)
        return model


__all__ = [
    "TrrgContrastiveOutput",
    "TrrgForConditionalGeneration",
    "TrrgForContrastivePretraining",
    "TrrgModel",
    "TrrgPerception",
    "TrrgPreTrainedModel",
    "contrastive_soft_targets",
    "sample_report_sentences",
    "soft_contrastive_loss",
]
