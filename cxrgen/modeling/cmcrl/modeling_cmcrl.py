"""CMCRL as transformers models: RadCARE pre-training (`CmcrlForPreTraining`) and VLCI report generation
(`CmcrlForConditionalGeneration`).

Self-contained (torch, transformers and sibling single-dot imports only) because `save_pretrained` ships this
file to the Hub as remote code.

VLCI, per study of V views: a transformers backbone (ResNet-101 C1-C4 by default) gives a G x G grid per view;
tokens = [CLS ‖ view_1 patches ‖ ... ‖ view_V patches] go through a pre-LN transformer encoder, then the Visual
Deconfounding Module (VDM): local features = CaaM block over the top-k patches of each head's attention
rollout; global features = a stride-2 relative-position attention block per view ((G/2)^2 tokens); the two are
fused into a mediator M_v and the encoder output receives a front-door intervention H + FDI(H, M_v), with
FDI(X, M) = softmax(X M^T) softmax(M X^T) X. The decoder embeds the report, applies the Linguistic
Deconfounding Module (LDM: a mediator M_l built from the local features and the detached, normalised
word-embedding table, then a causal front-door intervention) and runs pre-LN decoder layers.

Deliberate differences from the reference code (WissingChen/VLCI), with the default config:
- The LDM is causal: position t samples the sequence only from positions <= t (the reference's inner softmax
  spans the whole target sequence, so training sees future tokens and padding). With a KV cache the LDM step
  is computed incrementally and exactly (the cached prefix is kept in an extra cache slot).
  `ldm_variant="reference"` computes the reference's LDM instead (no KV cache then), for converted checkpoints.
- Standard `nn.LayerNorm` (biased variance, eps inside the square root) instead of the reference's
  unbiased-std LayerNorm with eps added to the std; `layer_norm_variant="reference"` computes the reference's.
  `convert_vlci_checkpoint.reference_config` sets both switches, so a converted checkpoint computes what the
  reference computes.
- Generation uses the transformers `GenerationMixin` with an `EncoderDecoderCache` (self- and cross-attention
  keys/values, the LDM prefix and mediator); the reference re-runs the whole prefix at every beam step. The
  iu-xray and mimic-cxr presets rank beams as the reference does (summed log-probability,
  `generation_length_penalty: 0`) and block repeated trigrams (`generation_no_repeat_ngram_size: 3`), which the
  reference's configs ask for (`block_trigrams`) but its beam search ignores.
- Distinct [PAD]=0, [BOS]=1, [EOS]=2 ids (the reference uses 0 for all three); EOS is always a training
  target, in VLCI and in RadCARE (whose reference never trains EOS).
- Any number of views up to `num_views`, with a `pixel_mask` for missing views (masked in every attention,
  in the rollout top-k, the global fusion and the front-door sampling; missing views never enter the
  backbone) and learned view embeddings (the reference concatenates exactly two views with the same
  positional embedding and no view embedding; `use_view_embeddings=False` drops them).
- The attention rollout uses the attention probabilities before dropout (the reference rolls out dropped-out
  maps during training).
- RadCARE: text tokens only ever go through the text expert (the reference's `vt2v` routes them through the
  vision expert); the decoder ends each path with its own LayerNorm (`layer_norm` for text, `image_layer_norm`
  for patches; the reference shares one); `t2t` encodes the text prefix alone (no CLS token); the degradation is
  configurable (max-pool, average pool, bilinear, none); the four tasks are sampled per forward call from
  `pretraining_task_probs` (the reference runs vt2t and vt2v as two optimiser steps of one draw). As in the
  reference, the image path of the decoder attends bidirectionally and the text path causally.
- The front-door `causal_proj` variant of the reference (off in every shipped config) is not implemented, so
  its unused projections (2.1M parameters) are absent: the IU-Xray preset has 71.7M parameters against the
  reference's 73.9M at the same vocabulary, the rest of the difference being its fixed position table.
- The positional tables are computed, not stored; the FFN widths of the global sampler and of the mediator
  fusion follow `intermediate_size` (4 x width in the paper presets, as in the reference).
- `generate()` suppresses [PAD] and [BOS] (never training targets); labels keep their leading [BOS] and the
  model scores labels[:, 1:], so generated sequences and labels have the same form.
"""

import copy
import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import AutoBackbone, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput, Seq2SeqLMOutput

from .configuration_cmcrl import PRETRAINING_TASKS, CmcrlConfig

# Imported so that every `save_pretrained` (model, Trainer checkpoint) copies the pipeline file next to this
# one: transformers ships a remote-code module together with its single-dot imports.
from .pipeline_cmcrl import RadiologyReportGenerationPipeline  # noqa: F401

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
VIEW_EMBEDDINGS = "encoder.embeddings.view_embeddings.weight"

# transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in the model inputs `generate` builds and
# in every ModelOutput field. This file also runs as remote code on whatever release the downloader has, so it
# writes the cache under the running release's field name and takes it under either keyword.
CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


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


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------
@dataclass
class CmcrlEncoderOutput(ModelOutput):
    """Output of the VLCI image encoder.

    `attention_mask` (B, 1 + V*G*G) marks real tokens (CLS and the patches of real views);
    `attention_rollout` (B, heads, V*G*G) is each head's CLS-to-patch attention rollout (patch index
    v*G*G + row*G + col); `local_patch_indices` (B, heads*top_k) are the patches selected from it, head-major;
    `local_features` (B, heads*top_k, D) the local features built from them.
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    local_features: torch.FloatTensor | None = None
    attention_rollout: torch.FloatTensor | None = None
    local_patch_indices: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class CmcrlSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus the encoder's attention rollout and selected local patches (see CmcrlEncoderOutput)."""

    attention_rollout: torch.FloatTensor | None = None
    local_patch_indices: torch.LongTensor | None = None


@dataclass
class CmcrlPreTrainingOutput(ModelOutput):
    """Output of one RadCARE step. `task_index` indexes PRETRAINING_TASKS ("vt2t", "vt2v", "v2v", "t2t").

    Text tasks fill `text_loss`, `logits` and `text_labels` (the postfix targets, -100 = ignored); image tasks fill
    `image_loss`, `pred_patches`, `target_patches` (B, P, 3*p*p) and `mim_mask` (B, P; 1 = hidden patch).
    """

    loss: torch.FloatTensor | None = None
    text_loss: torch.FloatTensor | None = None
    image_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    text_labels: torch.LongTensor | None = None
    pred_patches: torch.FloatTensor | None = None
    target_patches: torch.FloatTensor | None = None
    mim_mask: torch.LongTensor | None = None
    task_index: torch.LongTensor | None = None


@dataclass
class CmcrlTransferReport:
    """Which VLCI weights were copied from a RadCARE checkpoint, which start fresh, which RadCARE weights were unused.

    `fresh_layers` names the encoder / decoder layers beyond the pre-trained depth (e.g. "encoder.layers.3"), all
    of whose tensors start fresh; `partial` maps a tensor copied in part to what was copied (view embeddings of
    more or fewer views than RadCARE's)."""

    copied: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    fresh_layers: list[str] = field(default_factory=list)
    partial: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the counts, the layers that start fresh and the tensors copied in part."""
        text = f"copied {len(self.copied)} tensors, {len(self.fresh)} start fresh, {len(self.unused)} unused"
        if self.fresh_layers:
            text += f"; layers beyond the pre-trained depth start fresh: {', '.join(self.fresh_layers)}"
        for name, what in self.partial.items():
            text += f"; {name}: {what}"
        return text


# ----------------------------------------------------------------------------------------------------------
# Positional encodings (computed on the fly: nothing to persist, nothing to re-create after loading)
# ----------------------------------------------------------------------------------------------------------
def _sinusoid_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) encoding laid out as [sin | cos] halves (MAE's 1-D sin-cos)."""
    omega = torch.arange(dim // 2, device=positions.device, dtype=torch.float32) / (dim / 2.0)
    angles = positions.float()[:, None] / (10000.0**omega)[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def text_position_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) with sin on even and cos on odd channels (the Transformer's encoding)."""
    div = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * div[None, :]
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


def grid_position_encoding(grid: int, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(grid*grid, dim) 2-D sin-cos encoding, row-major; first half encodes the column, second half the row (MAE)."""
    coords = torch.arange(grid, device=device)
    cols = coords.repeat(grid)
    rows = coords.repeat_interleave(grid)
    return torch.cat([_sinusoid_1d(cols, dim // 2), _sinusoid_1d(rows, dim // 2)], dim=1)


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
def _mask_scores(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return scores if mask is None else scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


class CmcrlReferenceLayerNorm(nn.LayerNorm):
    """The reference's LayerNorm: weight * (x - mean) / (unbiased std + eps) + bias. Same parameters as
    `nn.LayerNorm`, which divides by sqrt(biased variance + eps) instead."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        mean = hidden_states.mean(-1, keepdim=True)
        std = hidden_states.std(-1, keepdim=True)
        return self.weight * (hidden_states - mean) / (std + self.eps) + self.bias


def layer_norm(config: CmcrlConfig, size: int) -> nn.LayerNorm:
    """The LayerNorm of `config.layer_norm_variant` ("standard" or "reference") over `size` features."""
    norm_class = CmcrlReferenceLayerNorm if config.layer_norm_variant == "reference" else nn.LayerNorm
    return norm_class(size, eps=config.layer_norm_eps)


class CmcrlDropout(nn.Dropout):
    """`nn.Dropout` keeping a boolean mask for the backward pass. PyTorch's CPU dropout keeps its mask as a float
    tensor of the input's size, four times the memory, for each of the model's dropouts (the attention
    probabilities' are the largest); the draws, outputs and gradients are the same."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return hidden_states
        return torch.native_dropout(hidden_states, self.p, True)[0]


class CmcrlAttention(nn.Module):
    """Multi-head attention returning its (pre-dropout) probabilities; caches keys/values in an EncoderDecoderCache.

    `attention_mask` is boolean, broadcastable to (B, heads, Lq, Lk), True = may attend. Keys and values may have
    batch size 1 and broadcast over the queries' batch (the LDM's vocabulary dictionary).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, layer_idx: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = CmcrlDropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention (or cross-attention to `key_value_states`) -> (output (B, Lq, D), probabilities)."""
        is_cross = key_value_states is not None
        query = self._heads(self.q_proj(hidden_states))
        layer_cache = None
        if cache is not None:
            layer_cache = cache.cross_attention_cache if is_cross else cache.self_attention_cache
        if is_cross and layer_cache is not None and cache.is_updated.get(self.layer_idx):
            key, value = layer_cache.layers[self.layer_idx].keys, layer_cache.layers[self.layer_idx].values
        else:
            source = key_value_states if is_cross else hidden_states
            key, value = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
            if layer_cache is not None:
                key, value = layer_cache.update(key, value, self.layer_idx)
                if is_cross:
                    cache.is_updated[self.layer_idx] = True
        # Scaling the queries rather than the (much larger) scores; with head_dim 64 the factor 1/8 is a power of
        # two, so the scores are bit-identical either way.
        query = query * self.scaling
        batch, heads, query_length, _ = query.shape
        shared = key.shape[0] == 1 < batch
        if shared:
            # One dictionary for the whole batch (the LDM's vocabulary): the batch folds into the query rows, so
            # the shared keys and values are not copied once per sample (a broadcasting matmul would), and the
            # scores stay in that (heads, batch * queries, keys) layout until they are returned.
            query = query.transpose(0, 1).reshape(heads, batch * query_length, self.head_dim)
            key, value = key[0], value[0]
            if attention_mask is not None:
                attention_mask = attention_mask.expand(batch, heads, query_length, key.shape[-2])
                attention_mask = attention_mask.transpose(0, 1).reshape(heads, batch * query_length, -1)
        scores = query @ key.transpose(-1, -2)
        if attention_mask is not None:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)  # a fresh tensor: no copy
        probs = scores.softmax(dim=-1)
        out = self.dropout(probs) @ value
        if shared:
            out = out.view(heads, batch, query_length, self.head_dim).transpose(0, 1)
            probs = probs.view(heads, batch, query_length, -1).transpose(0, 1)
        return self.out_proj(out.transpose(1, 2).reshape(hidden_states.shape)), probs


class CmcrlFeedForward(nn.Module):
    """Position-wise feed-forward network: fc1, activation, dropout, fc2."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.act = ACT2FN[activation]
        self.dropout = CmcrlDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class CmcrlEncoderLayer(GradientCheckpointingLayer):
    """Pre-LN transformer encoder layer; returns the attention probabilities for the rollout."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        d = config.hidden_size
        self.self_attn_layer_norm = layer_norm(config, d)
        self.self_attn = CmcrlAttention(d, config.num_attention_heads, config.attention_dropout)
        self.final_layer_norm = layer_norm(config, d)
        self.ffn = CmcrlFeedForward(d, config.intermediate_size, config.activation_function, config.dropout)
        self.dropout = CmcrlDropout(config.dropout)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) -> (hidden states, attention probabilities (B, heads, L, L))."""
        attn, probs = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask=attention_mask)
        hidden_states = hidden_states + self.dropout(attn)
        hidden_states = hidden_states + self.dropout(self.ffn(self.final_layer_norm(hidden_states)))
        return hidden_states, probs


class CmcrlMultiwayEncoderLayer(CmcrlEncoderLayer):
    """RadCARE encoder layer: shared self-attention, then a vision expert for the leading `num_vision_tokens`
    tokens and a text expert for the rest (the vision expert keeps the VLCI encoder layer's parameter names)."""

    def __init__(self, config: CmcrlConfig):
        super().__init__(config)
        d = config.hidden_size
        self.text_final_layer_norm = layer_norm(config, d)
        self.text_ffn = CmcrlFeedForward(d, config.intermediate_size, config.activation_function, config.dropout)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, num_vision_tokens: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) with the vision tokens first -> (hidden states, attention probabilities)."""
        attn, probs = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask=attention_mask)
        hidden_states = hidden_states + self.dropout(attn)
        vision, text = hidden_states[:, :num_vision_tokens], hidden_states[:, num_vision_tokens:]
        if vision.shape[1]:
            vision = vision + self.dropout(self.ffn(self.final_layer_norm(vision)))
        if text.shape[1]:
            text = text + self.dropout(self.text_ffn(self.text_final_layer_norm(text)))
        return torch.cat([vision, text], dim=1), probs


class CmcrlDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN decoder layer: (causal) self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, config: CmcrlConfig, layer_idx: int):
        super().__init__()
        d, heads = config.hidden_size, config.num_attention_heads
        self.self_attn_layer_norm = layer_norm(config, d)
        self.self_attn = CmcrlAttention(d, heads, config.attention_dropout, layer_idx)
        self.encoder_attn_layer_norm = layer_norm(config, d)
        self.encoder_attn = CmcrlAttention(d, heads, config.attention_dropout, layer_idx)
        self.final_layer_norm = layer_norm(config, d)
        self.ffn = CmcrlFeedForward(d, config.intermediate_size, config.activation_function, config.dropout)
        self.dropout = CmcrlDropout(config.dropout)

    def _path(self, path: str):
        return self.encoder_attn_layer_norm, self.encoder_attn, self.final_layer_norm, self.ffn

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        path: str = "text",
    ) -> torch.Tensor:
        """(B, L, D) -> (B, L, D) through the "text" path (or RadCARE's "image" path)."""
        cross_norm, cross_attn, ffn_norm, ffn = self._path(path)
        attn, _ = self.self_attn(
            self.self_attn_layer_norm(hidden_states), attention_mask=self_attention_mask, cache=cache
        )
        hidden_states = hidden_states + self.dropout(attn)
        if encoder_hidden_states is not None:
            attn, _ = cross_attn(
                cross_norm(hidden_states),
                key_value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                cache=cache,
            )
            hidden_states = hidden_states + self.dropout(attn)
        return hidden_states + self.dropout(ffn(ffn_norm(hidden_states)))


class CmcrlMultimodalDecoderLayer(CmcrlDecoderLayer):
    """RadCARE decoder layer: shared self-attention; a text path (VLCI's decoder-layer names) and an image path
    with its own cross-attention and feed-forward."""

    def __init__(self, config: CmcrlConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        d = config.hidden_size
        self.image_encoder_attn_layer_norm = layer_norm(config, d)
        self.image_encoder_attn = CmcrlAttention(d, config.num_attention_heads, config.attention_dropout, layer_idx)
        self.image_final_layer_norm = layer_norm(config, d)
        self.image_ffn = CmcrlFeedForward(d, config.intermediate_size, config.activation_function, config.dropout)

    def _path(self, path: str):
        if path == "image":
            return (
                self.image_encoder_attn_layer_norm,
                self.image_encoder_attn,
                self.image_final_layer_norm,
                self.image_ffn,
            )
        return super()._path(path)


def _replayable(
    module: nn.Module, function: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`function` (which runs `module`) made safe for checkpointing to call twice: the replay in the backward pass
    leaves the module's batch-norm running statistics as the first call left them (it would otherwise update them a
    second time, so that a checkpointed step would not train the same model)."""
    calls = []

    def replayable(hidden_states: torch.Tensor) -> torch.Tensor:
        if not calls:
            calls.append(True)
            return function(hidden_states)
        statistics = [(buffer, buffer.clone()) for buffer in module.buffers()]
        try:
            return function(hidden_states)
        finally:  # also when the replay stops early, once it has recomputed what the backward pass needs
            for buffer, saved in statistics:
                buffer.copy_(saved)

    return replayable


class CmcrlVisionEmbeddings(nn.Module):
    """Backbone features -> linear projection + 2-D sin-cos position (+ view embedding) -> LayerNorm; plus a CLS token."""

    # Set by `gradient_checkpointing_enable()` (transformers sets it on every module that has the attribute).
    gradient_checkpointing = False

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.config = config
        self.backbone = AutoBackbone.from_config(config.backbone_config)
        if config.backbone_config.model_type == "resnet":
            # Every ReLU of transformers' ResNet follows a batch norm or a residual sum whose output nothing else
            # reads, so it may overwrite it: the same features, a tenth less backbone time at inference.
            for module in self.backbone.modules():
                if isinstance(module, nn.ReLU):
                    module.inplace = True
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.proj = nn.Linear(self.backbone.channels[-1], config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.view_embeddings = (
            nn.Embedding(config.num_views, config.hidden_size) if config.use_view_embeddings else None
        )
        self.layer_norm = layer_norm(config, config.hidden_size)
        self.dropout = CmcrlDropout(config.dropout)

    def train(self, mode: bool = True) -> "CmcrlVisionEmbeddings":
        """`nn.Module.train`, keeping a frozen backbone in eval mode."""
        # A frozen backbone keeps its BatchNorm running statistics: batch statistics would make training and
        # inference see different features.
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
            self.backbone.requires_grad_(False)
        return self

    def _checkpoint_segments(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The backbone as functions that checkpointing runs one after the other, each replayed alone in the backward
        pass, so that the replay never holds more than one segment's activations: for transformers' ResNet the stem
        and each stage up to the last feature map, for other backbones the whole backbone."""
        if self.config.backbone_config.model_type == "resnet":
            last = self.backbone.stage_names.index(self.backbone.out_features[-1])
            modules = [self.backbone.embedder, *self.backbone.encoder.stages[:last]]
            return [_replayable(module, module) for module in modules]
        return [_replayable(self.backbone, lambda images: self.backbone(images).feature_maps[-1])]

    def position_encoding(self, num_views: int, device: torch.device | str | None) -> torch.Tensor:
        """(1 + V*G*G, D): zero for CLS, the same grid encoding for every view."""
        grid = grid_position_encoding(self.config.grid_size, self.config.hidden_size, device)
        return torch.cat([grid.new_zeros(1, grid.shape[1]), grid.repeat(num_views, 1)])

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        """(B, V, 3, H, W), (B, V) bool -> tokens (B, 1 + V*G*G, D); only real views run through the backbone."""
        batch, views = pixel_values.shape[:2]
        size, grid = self.config.image_size, self.config.grid_size
        if pixel_values.shape[-2:] != (size, size):
            raise ValueError(
                f"pixel_values: expected images of {size}x{size} pixels, got {tuple(pixel_values.shape[-2:])}"
            )
        real = pixel_mask.reshape(-1)
        # Channels-last images make the whole convolutional backbone run channels-last: oneDNN's convolution and
        # batch-norm kernels are faster in that layout on CPU (benchmarks/RESULTS.md); the values differ by float
        # rounding only.
        images = pixel_values.reshape(-1, *pixel_values.shape[2:])[real].contiguous(memory_format=torch.channels_last)
        # A frozen backbone runs without autograd: from_pretrained re-creates parameters with requires_grad=True.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # Non-reentrant whatever the checkpointing kwargs: the images need no gradient, and a reentrant
                # checkpoint would then cut the backbone off from the loss.
                features = images
                for segment in self._checkpoint_segments():
                    features = torch.utils.checkpoint.checkpoint(segment, features, use_reentrant=False)
            else:
                features = self.backbone(images).feature_maps[-1]
        if features.shape[-2:] != (grid, grid):
            raise ValueError(
                f"backbone_config: the backbone gives a {tuple(features.shape[-2:])} grid at {size} px, but "
                f"backbone_stride={self.config.backbone_stride} expects {grid}x{grid}"
            )
        tokens = self.proj(features.flatten(2).transpose(1, 2))
        patches = tokens.new_zeros(batch * views, grid * grid, tokens.shape[-1])
        patches[real] = tokens
        patches = patches.view(batch, views, grid * grid, -1)
        patches = patches + grid_position_encoding(grid, patches.shape[-1], patches.device).to(patches.dtype)
        if self.view_embeddings is not None:
            patches = patches + self.view_embeddings.weight[:views, None, :]
        patches = self.dropout(self.layer_norm(patches.flatten(1, 2)))
        return torch.cat([self.cls_token.expand(batch, -1, -1), patches], dim=1)


class CmcrlTextEmbeddings(nn.Module):
    """Word embedding * sqrt(D) + sinusoidal position, dropout, LayerNorm."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.scale = math.sqrt(config.hidden_size)
        self.max_positions = config.max_position_embeddings
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layer_norm = layer_norm(config, config.hidden_size)
        self.dropout = CmcrlDropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
        """(B, L) ids at positions past_length.. -> (B, L, D) embeddings."""
        end = past_length + input_ids.shape[1]
        if end > self.max_positions:
            raise ValueError(f"input_ids: position {end - 1} exceeds max_position_embeddings={self.max_positions}")
        positions = torch.arange(past_length, end, device=input_ids.device)
        embeddings = self.word_embeddings(input_ids) * self.scale
        embeddings = embeddings + text_position_encoding(positions, embeddings.shape[-1]).to(embeddings.dtype)
        return self.layer_norm(self.dropout(embeddings))


# ----------------------------------------------------------------------------------------------------------
# Deconfounding modules
# ----------------------------------------------------------------------------------------------------------
def front_door_intervention(
    features: torch.Tensor, mediator: torch.Tensor, feature_mask: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """FDI(X, M) = softmax_m(X M^T) softmax_x(M X^T) X: sample x given each mediator (within the sample, over
    `feature_mask` only), then average the samples by P(m | x)."""
    sampled = _mask_scores(
        mediator @ features.transpose(1, 2) * scale, feature_mask[:, None, :] if feature_mask is not None else None
    )
    sampled = sampled.softmax(dim=-1) @ features
    return (features @ mediator.transpose(1, 2) * scale).softmax(dim=-1) @ sampled


def causal_front_door_intervention(
    queries: torch.Tensor, keys: torch.Tensor, mediator: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """FDI for a causal sequence: query i (the last Lq of the Lk key positions) samples x from keys <= its position."""
    q_len, k_len = queries.shape[1], keys.shape[1]
    allowed = torch.arange(k_len, device=keys.device)[None, :] <= torch.arange(q_len, device=keys.device)[:, None] + (
        k_len - q_len
    )
    scores = (mediator @ keys.transpose(1, 2) * scale)[:, None]  # (B, 1, M, Lk)
    sample_weights = _mask_scores(scores, allowed[None, :, None, :]).softmax(dim=-1)  # (B, Lq, M, Lk)
    mediator_probs = (queries @ mediator.transpose(1, 2) * scale).softmax(dim=-1)  # (B, Lq, M)
    return torch.einsum("bqm,bqmk,bkd->bqd", mediator_probs, sample_weights, keys)


class CmcrlCaamBlock(nn.Module):
    """Causal-attention (CaaM) block: the same projections give a confounder branch softmax(-S)V (with the residual
    and FFN) and a complementary branch softmax(S)V (through the same FFN); their sum is returned."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        d = config.hidden_size
        self.attention = CmcrlAttention(d, config.num_attention_heads, config.attention_dropout)
        self.layer_norm = layer_norm(config, d)
        self.ffn_layer_norm = layer_norm(config, d)
        self.ffn = CmcrlFeedForward(d, config.intermediate_size, config.activation_function, config.dropout)
        self.dropout = CmcrlDropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D): the sum of both branches."""
        attn = self.attention
        h = self.layer_norm(x)
        q, k, v = attn._heads(attn.q_proj(h)), attn._heads(attn.k_proj(h)), attn._heads(attn.v_proj(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)

        def branch(s: torch.Tensor) -> torch.Tensor:
            return attn.out_proj((attn.dropout(s.softmax(dim=-1)) @ v).transpose(1, 2).reshape(x.shape))

        x = x + self.dropout(branch(-scores))
        complement = self.dropout(branch(scores))
        x = x + self.dropout(self.ffn(self.ffn_layer_norm(x)))
        return x + complement + self.dropout(self.ffn(self.ffn_layer_norm(complement)))


class CmcrlLocalSampler(nn.Module):
    """Top-k patches per head of the CLS attention rollout A_L ... A_1, refined with CLS by a CaaM block."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.top_k = config.local_top_k
        self.block = CmcrlCaamBlock(config)

    def forward(
        self, hidden_states: torch.Tensor, attentions: list[torch.Tensor], token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder output (B, 1 + P, D), each layer's attention probabilities and the (B, 1 + P) token mask ->
        (local features (B, heads*k, D), CLS rollout (B, heads, P), selected patch indices (B, heads*k))."""
        rollout = attentions[-1][:, :, 0]  # CLS row of the product, computed row-vector first
        for probs in reversed(attentions[:-1]):
            rollout = (rollout.unsqueeze(-2) @ probs).squeeze(-2)
        rollout = rollout[..., 1:]
        scores = rollout.masked_fill(~token_mask[:, None, 1:], -float("inf"))
        indices = scores.topk(self.top_k, dim=-1).indices.flatten(1)  # (B, heads*k), head-major
        patches = hidden_states[:, 1:].gather(1, indices[..., None].expand(-1, -1, hidden_states.shape[-1]))
        local = self.block(torch.cat([hidden_states[:, :1], patches], dim=1))[:, 1:]
        return local, rollout, indices


class CmcrlGlobalSampler(nn.Module):
    """Per view: max-pool the G x G grid by 2, then 1x1-conv shortcut + relative-position attention, then an FFN."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        d, g = config.hidden_size, config.global_grid_size
        self.grid, self.pooled = config.grid_size, g
        self.num_heads, self.head_dim = config.global_num_heads, config.global_head_dim
        inner = self.num_heads * self.head_dim
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.shortcut = nn.Conv2d(d, d, 1, bias=False)
        self.attn_layer_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * inner, bias=False)
        self.out_proj = nn.Linear(inner, d)
        self.relative_position_bias = nn.Parameter(torch.zeros((2 * g - 1) ** 2, self.num_heads))
        self.ffn_layer_norm = nn.LayerNorm(d)
        self.ffn = CmcrlFeedForward(d, config.intermediate_size, "gelu", 0.0)

    def _relative_index(self, device):
        g = self.pooled
        coords = torch.stack(
            torch.meshgrid(torch.arange(g, device=device), torch.arange(g, device=device), indexing="ij")
        ).flatten(1)
        rel = coords[:, :, None] - coords[:, None, :] + (g - 1)
        return rel[0] * (2 * g - 1) + rel[1]

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, V*G*G, D) -> (B, V*g*g, D) with g = ceil(G/2)."""
        batch, _, d = patches.shape
        grid = patches.reshape(-1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        pooled = self.pool(grid)
        tokens = pooled.flatten(2).transpose(1, 2)
        q, k, v = (
            t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
            for t in self.qkv(self.attn_layer_norm(tokens)).chunk(3, dim=-1)
        )
        bias = self.relative_position_bias[self._relative_index(patches.device)].permute(2, 0, 1)
        probs = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias).softmax(dim=-1)
        attn = self.out_proj((probs @ v).transpose(1, 2).flatten(2))
        out = self.shortcut(pooled).flatten(2).transpose(1, 2) + attn
        out = out + self.ffn(self.ffn_layer_norm(out))
        return out.reshape(batch, -1, d)


class CmcrlLocalGlobalFusion(nn.Module):
    """Mediator M_v: local self-attention and local-to-global attention, concatenated, projected, plus a
    two-linear refinement (no activation in between, as in the reference)."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        d, heads = config.hidden_size, config.num_attention_heads
        self.local_layer_norm = layer_norm(config, d)
        self.global_layer_norm = layer_norm(config, d)
        self.local_attn = CmcrlAttention(d, heads, config.attention_dropout)
        self.local_global_attn = CmcrlAttention(d, heads, config.attention_dropout)
        self.proj = nn.Linear(2 * d, d)
        self.layer_norm = layer_norm(config, d)
        self.fc1 = nn.Linear(d, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, d)

    def forward(self, local: torch.Tensor, global_: torch.Tensor, global_mask: torch.Tensor) -> torch.Tensor:
        """Local (B, K, D) and global (B, N, D) features, (B, N) mask of real global tokens -> M_v (B, K, D)."""
        local, global_ = self.local_layer_norm(local), self.global_layer_norm(global_)
        local_local = local + self.local_attn(local)[0]
        local_global = local + self.local_global_attn(local, global_, attention_mask=global_mask[:, None, None, :])[0]
        fused = self.layer_norm(self.proj(torch.cat([local_local, local_global], dim=-1)))
        return fused + self.fc2(self.fc1(fused))


class CmcrlCrossLayer(nn.Module):
    """Pre-LN (query side) cross-attention plus feed-forward."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        d = config.hidden_size
        self.attn_layer_norm = layer_norm(config, d)
        self.attn = CmcrlAttention(d, config.num_attention_heads, config.attention_dropout)
        self.ffn_layer_norm = layer_norm(config, d)
        self.ffn = CmcrlFeedForward(d, config.ldm_intermediate_size, config.activation_function, config.dropout)
        self.dropout = CmcrlDropout(config.dropout)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        """Queries (B, Lq, D) attend to `key_value` (B or 1, Lk, D) -> (B, Lq, D)."""
        query = query + self.dropout(self.attn(self.attn_layer_norm(query), key_value)[0])
        return query + self.dropout(self.ffn(self.ffn_layer_norm(query)))


class CmcrlLinguisticDeconfounder(nn.Module):
    """LDM: mediator M_l from the local visual features and the vocabulary dictionary, then a causal front-door
    intervention on the decoder input. With a cache, the mediator and the embedded prefix live in the cache slot
    after the decoder layers', so each step costs one new row.

    `ldm_variant="reference"`: the intervention spans the whole sequence (future tokens and padding), and the
    dictionary leaves out [PAD] and [BOS], whose rows a converted checkpoint copies from the reference's single
    special row (kept once, as [EOS]); it takes no cache."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        d = config.hidden_size
        self.causal = config.ldm_variant == "causal"
        never_generated = {config.pad_token_id, config.bos_token_id}
        self.dictionary_rows = (
            None if self.causal else [row for row in range(config.vocab_size) if row not in never_generated]
        )
        self.word_scale = math.sqrt(d)
        self.scale = 1 / math.sqrt(d) if config.fdi_scale else 1.0
        self.dictionary_layer_norm = layer_norm(config, d)
        self.local_layer_norm = layer_norm(config, d)
        self.text_cross_layer = CmcrlCrossLayer(config)
        self.visual_cross_layer = CmcrlCrossLayer(config)
        self.mediator_layer_norm = layer_norm(config, d)

    def mediator(self, local_features: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, K, D) local features and the (V, D) word-embedding table -> the (B, K, D) mediator M_l."""
        if self.dictionary_rows is not None:
            word_embeddings = word_embeddings[self.dictionary_rows]
        dictionary = self.dictionary_layer_norm(word_embeddings.detach() * self.word_scale)[None]
        local = self.local_layer_norm(local_features)
        mediator = self.text_cross_layer(local, dictionary)
        return self.mediator_layer_norm(self.visual_cross_layer(mediator, local) + mediator)

    def forward(
        self,
        hidden_states: torch.Tensor,
        local_features: torch.Tensor,
        word_embeddings: torch.Tensor,
        cache: EncoderDecoderCache | None = None,
        cache_index: int = 0,
    ) -> torch.Tensor:
        """Embedded decoder input (B, L, D) -> the same after the front-door intervention with M_l."""
        if not self.causal:
            if cache is not None:
                raise ValueError(
                    'ldm_variant="reference" samples from the whole sequence, so it cannot run with a KV cache: '
                    "pass use_cache=False (its generation_config does)"
                )
            mediator = self.mediator(local_features, word_embeddings)
            return hidden_states + front_door_intervention(hidden_states, mediator, scale=self.scale)
        if cache is None:
            mediator, keys = self.mediator(local_features, word_embeddings), hidden_states
        else:
            self_cache, cross_cache = cache.self_attention_cache, cache.cross_attention_cache
            for layer_cache in (self_cache, cross_cache):
                # A cache built from the config has exactly one layer per decoder layer; the LDM owns the next slot.
                while len(layer_cache.layers) <= cache_index:
                    layer_cache.layers.append(DynamicLayer())
            if cache.is_updated.get(cache_index):
                mediator = cross_cache.layers[cache_index].keys[:, 0]
            else:
                mediator = self.mediator(local_features, word_embeddings)
                cross_cache.update(mediator[:, None], mediator[:, None], cache_index)
                cache.is_updated[cache_index] = True
            keys = self_cache.update(hidden_states[:, None], hidden_states[:, None], cache_index)[0][:, 0]
        return hidden_states + causal_front_door_intervention(hidden_states, keys, mediator, self.scale)


# ----------------------------------------------------------------------------------------------------------
# Encoder / decoder stacks
# ----------------------------------------------------------------------------------------------------------
def _views(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None, max_views: int):
    """Normalise to (B, V, 3, H, W) and a (B, V) bool mask, with clear errors."""
    if pixel_values.dim() == 4:
        pixel_values = pixel_values[:, None]
    if pixel_values.dim() != 5:
        raise ValueError(
            f"pixel_values: expected (B, V, 3, H, W) or (B, 3, H, W), got shape {tuple(pixel_values.shape)}"
        )
    batch, views = pixel_values.shape[:2]
    if views > max_views:
        raise ValueError(f"pixel_values: {views} views per study, but the config allows num_views={max_views}")
    if pixel_mask is None:
        pixel_mask = torch.ones(batch, views, dtype=torch.bool, device=pixel_values.device)
    if tuple(pixel_mask.shape) != (batch, views):
        raise ValueError(f"pixel_mask: expected shape {(batch, views)}, got {tuple(pixel_mask.shape)}")
    pixel_mask = pixel_mask.bool()
    if not pixel_mask.any(dim=1).all():
        raise ValueError("pixel_mask: every study needs at least one real view (a row of zeros was given)")
    return pixel_values, pixel_mask


class CmcrlVisionEncoder(nn.Module):
    """VLCI image encoder: embeddings, transformer layers, VDM (local and global sampling, fusion, front-door
    intervention), final LayerNorm. This is what `get_encoder()` returns for generation."""

    main_input_name = "pixel_values"

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.config = config
        self.embeddings = CmcrlVisionEmbeddings(config)
        self.layers = nn.ModuleList([CmcrlEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.local_sampler = CmcrlLocalSampler(config) if (config.use_vdm or config.use_ldm) else None
        self.global_sampler = CmcrlGlobalSampler(config) if config.use_vdm else None
        self.mediator_fusion = CmcrlLocalGlobalFusion(config) if config.use_vdm else None
        self.fdi_scale = 1 / math.sqrt(config.hidden_size) if config.fdi_scale else 1.0
        self.layer_norm = layer_norm(config, config.hidden_size)

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool | None = True,
    ) -> CmcrlEncoderOutput:
        """pixel_values (B, V, 3, H, W) or (B, 3, H, W); pixel_mask (B, V), 1 = real view. Returns CmcrlEncoderOutput."""
        if return_dict is False:
            raise ValueError("return_dict=False is not supported: the encoder returns a CmcrlEncoderOutput")
        pixel_values, pixel_mask = _views(pixel_values, pixel_mask, self.config.num_views)
        patches_per_view = self.config.grid_size**2
        hidden = self.embeddings(pixel_values, pixel_mask)
        token_mask = torch.cat(
            [pixel_mask.new_ones(pixel_mask.shape[0], 1), pixel_mask.repeat_interleave(patches_per_view, 1)], 1
        )
        attention_mask = token_mask[:, None, None, :]
        all_hidden, attentions = (hidden,), []
        for layer in self.layers:
            hidden, probs = layer(hidden, attention_mask)
            attentions.append(probs)
            all_hidden += (hidden,)
        if self.config.readd_position_after_encoder:
            hidden = hidden + self.embeddings.position_encoding(pixel_values.shape[1], hidden.device).to(hidden.dtype)
        local = rollout = indices = None
        if self.local_sampler is not None:
            local, rollout, indices = self.local_sampler(hidden, attentions, token_mask)
        if self.global_sampler is not None:
            global_ = self.global_sampler(hidden[:, 1:])
            global_mask = pixel_mask.repeat_interleave(self.config.global_grid_size**2, 1)
            mediator = self.mediator_fusion(local, global_, global_mask)
            hidden = hidden + front_door_intervention(hidden, mediator, token_mask, self.fdi_scale)
        hidden = self.layer_norm(hidden)
        return CmcrlEncoderOutput(
            last_hidden_state=hidden,
            attention_mask=token_mask.long(),
            local_features=local,
            attention_rollout=rollout,
            local_patch_indices=indices,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class CmcrlTextDecoder(nn.Module):
    """VLCI report decoder: text embeddings, LDM, causal pre-LN decoder layers, final LayerNorm."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.embeddings = CmcrlTextEmbeddings(config)
        self.ldm = CmcrlLinguisticDeconfounder(config) if config.use_ldm else None
        if self.ldm is not None and not self.ldm.causal:
            logger.warning(
                'CmcrlConfig.ldm_variant="reference": the LDM sees future tokens and padding during training '
                "(teacher forcing), as the reference code does; use it to reproduce converted checkpoints, not to "
                'train new models ("causal" is the default).'
            )
        self.layers = nn.ModuleList([CmcrlDecoderLayer(config, i) for i in range(config.decoder_layers)])
        self.layer_norm = layer_norm(config, config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        local_features: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
    ) -> torch.Tensor:
        """(B, L) decoder ids (the new ones when a cache holds the prefix) -> (B, L, D) hidden states."""
        past = cache.get_seq_length() if cache is not None else 0
        hidden = self.embeddings(input_ids, past)
        if self.ldm is not None:
            hidden = self.ldm(hidden, local_features, self.embeddings.word_embeddings.weight, cache, len(self.layers))
        length = input_ids.shape[1]
        causal = torch.arange(past + length, device=input_ids.device)[None, :] <= (
            torch.arange(length, device=input_ids.device)[:, None] + past
        )
        cross_mask = encoder_attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            # The cache as a keyword: gradient checkpointing then drops it (a replayed layer would write it twice).
            hidden = layer(hidden, causal, encoder_hidden_states, cross_mask, cache=cache)
        return self.layer_norm(hidden)


class CmcrlMultiwayEncoder(nn.Module):
    """RadCARE encoder: vision embeddings and multiway layers over [vision tokens ‖ text tokens]."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.embeddings = CmcrlVisionEmbeddings(config)
        self.layers = nn.ModuleList([CmcrlMultiwayEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.layer_norm = layer_norm(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, token_mask: torch.Tensor, num_vision_tokens: int) -> torch.Tensor:
        """Embedded [vision ‖ text] tokens (B, L, D) with their (B, L) mask -> (B, L, D)."""
        for layer in self.layers:
            hidden, _ = layer(hidden, token_mask[:, None, None, :], num_vision_tokens)
        return self.layer_norm(hidden)


class CmcrlMultimodalDecoder(nn.Module):
    """RadCARE decoder: text embeddings, multimodal layers, a LayerNorm per path and the MAE mask token."""

    def __init__(self, config: CmcrlConfig):
        super().__init__()
        self.embeddings = CmcrlTextEmbeddings(config)
        self.layers = nn.ModuleList([CmcrlMultimodalDecoderLayer(config, i) for i in range(config.decoder_layers)])
        self.layer_norm = layer_norm(config, config.hidden_size)
        self.image_layer_norm = layer_norm(config, config.hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(
        self,
        hidden: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        path: str = "text",
    ) -> torch.Tensor:
        """(B, L, D) decoder inputs attending to `memory` (B, M, D) through `path` ("text" or "image") -> (B, L, D)."""
        cross_mask = memory_mask[:, None, None, :] if memory_mask is not None else None
        for layer in self.layers:
            hidden = layer(hidden, self_mask, memory, cross_mask, path=path)
        return (self.image_layer_norm if path == "image" else self.layer_norm)(hidden)


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------
class CmcrlPreTrainedModel(PreTrainedModel):
    """Shared by the RadCARE and VLCI models: weight initialisation (xavier-uniform linears and convolutions with zero
    biases, as in the reference; N(0, initializer_range) embeddings, CLS and mask tokens) and backbone loading."""

    config_class = CmcrlConfig
    config: CmcrlConfig
    base_model_prefix = "cmcrl"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    # The Trainer must not pass num_items_in_batch: the loss here is already a per-token mean.
    accepts_loss_kwargs = False
    # The encoder and decoder layers are GradientCheckpointingLayers; the vision embeddings checkpoint the backbone.
    supports_gradient_checkpointing = True
    _no_split_modules = ["CmcrlEncoderLayer", "CmcrlDecoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CmcrlVisionEmbeddings):
            init.normal_(module.cls_token, std=std)
        elif isinstance(module, CmcrlMultimodalDecoder):
            init.normal_(module.mask_token, std=std)
        elif isinstance(module, CmcrlGlobalSampler):
            init.zeros_(module.relative_position_bias)

    def load_backbone_weights(self, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> list[str]:
        """Load the vision backbone's weights from a transformers checkpoint of its architecture: a local folder or a
        Hub id saved from the backbone, its base model or an image classifier (`ResNetBackbone`, `ResNetModel` or
        `ResNetForImageClassification` for the default ResNet-101, e.g. "microsoft/resnet-101"; `cxrgen train
        backbone` folders). Stages beyond the configured ones (ResNet stage 4) are not used. Works for every CMCRL
        model (RadCARE and VLCI); extra kwargs go to `from_pretrained`. Returns the names of the loaded tensors.

        Raises ValueError when the checkpoint lacks a tensor of the backbone or has another shape for one.
        """
        current = self.encoder.embeddings.backbone
        # The backbone's own class: AutoBackbone.from_pretrained asks the Hub whether the name is a repo first.
        loaded = type(current).from_pretrained(os.fspath(pretrained_model_name_or_path), **kwargs).state_dict()
        expected = current.state_dict()
        missing = sorted(set(expected) - set(loaded))
        if missing:
            raise ValueError(
                f"{pretrained_model_name_or_path}: backbone checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}"
            )
        for name, tensor in expected.items():
            if loaded[name].shape != tensor.shape:
                raise ValueError(
                    f"{pretrained_model_name_or_path}: backbone tensor {name} has shape {tuple(loaded[name].shape)}, "
                    f"this config's backbone expects {tuple(tensor.shape)} (another backbone_config?)"
                )
        current.load_state_dict({name: loaded[name] for name in expected})
        unused = len(loaded) - len(expected)
        if unused:
            logger.info("%s: %d backbone tensors not used (a later stage)", pretrained_model_name_or_path, unused)
        return list(expected)


def _report_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class CmcrlForConditionalGeneration(CmcrlPreTrainedModel, GenerationMixin):
    """VLCI: report generation from a study of chest X-ray views.

    `labels` are full report sequences as `CmcrlProcessor` produces them: [BOS] words [EOS], padding = -100. The
    model reads labels[:, :-1] and predicts labels[:, 1:], so `generate()` returns sequences of the same form.
    """

    def __init__(self, config: CmcrlConfig):
        super().__init__(config)
        self.encoder = CmcrlVisionEncoder(config)
        self.decoder = CmcrlTextDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()
        self.generation_config.max_length = config.max_report_length
        self.generation_config.num_beams = config.generation_num_beams
        self.generation_config.no_repeat_ngram_size = config.generation_no_repeat_ngram_size
        self.generation_config.length_penalty = config.generation_length_penalty
        # The reference LDM changes earlier positions as the prefix grows: every step re-runs the whole prefix.
        self.generation_config.use_cache = config.ldm_variant == "causal" or not config.use_ldm
        # [PAD] and [BOS] are never training targets; an untrained model must not emit them either.
        self.generation_config.suppress_tokens = [config.pad_token_id, config.bos_token_id]

    def get_input_embeddings(self) -> nn.Embedding:
        """The decoder's word embeddings."""
        return self.decoder.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the decoder's word embeddings."""
        self.decoder.embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head (not tied to the word embeddings, as in the reference)."""
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        """Replace the LM head."""
        self.lm_head = value

    @staticmethod
    def _reorder_cache(cache: EncoderDecoderCache, beam_idx: torch.LongTensor) -> EncoderDecoderCache:
        """Beam search's reordering (GenerationMixin calls it when the model defines it): the self-attention cache
        (with the LDM's prefix) only. The cross-attention cache (encoder keys and values, the LDM mediator) is the
        same for every beam of a study and beams are only ever reordered within their study, so copying it at every
        step, as `EncoderDecoderCache.reorder_cache` does, changes nothing; it took about 40 % of the generation time
        (benchmarks/RESULTS.md)."""
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache

    @accepts_either_cache_name
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        encoder_outputs: CmcrlEncoderOutput | None = None,
        cache: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CmcrlSeq2SeqLMOutput:
        r"""pixel_values (B, V, 3, H, W) or (B, 3, H, W) with pixel_mask (B, V); either `labels` ([BOS] ... [EOS],
        -100 padding; teacher-forced on labels[:, :-1]) or `decoder_input_ids` (logits only)."""
        if return_dict is False:
            raise ValueError("return_dict=False is not supported: the model returns a CmcrlSeq2SeqLMOutput")
        targets = None
        if labels is not None:
            if decoder_input_ids is not None:
                raise ValueError(
                    "Pass either labels (teacher forcing on labels[:, :-1]) or decoder_input_ids, not both"
                )
            start = self.config.decoder_start_token_id
            if labels.shape[1] < 2 or (labels[:, 0] != start).any():
                raise ValueError(
                    f"labels: every row must start with [BOS] (id {start}) and hold at least one target, as "
                    "CmcrlProcessor produces them"
                )
            decoder_input_ids = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, self.config.pad_token_id)
            targets = labels[:, 1:]
        if decoder_input_ids is None:
            raise ValueError("Either labels or decoder_input_ids is required")
        if encoder_outputs is None:
            if pixel_values is None:
                raise ValueError("Either pixel_values or encoder_outputs is required")
            encoder_outputs = self.encoder(
                pixel_values,
                pixel_mask,
                output_attentions=bool(output_attentions),
                output_hidden_states=bool(output_hidden_states),
            )
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        hidden = self.decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            encoder_outputs.attention_mask,
            encoder_outputs.local_features,
            cache if use_cache else None,
        )
        logits = self.lm_head(hidden)
        return CmcrlSeq2SeqLMOutput(
            loss=_report_loss(logits, targets) if targets is not None else None,
            logits=logits,
            **{CACHE_FIELD: cache if use_cache else None},
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            attention_rollout=encoder_outputs.attention_rollout,
            local_patch_indices=encoder_outputs.local_patch_indices,
        )

    @classmethod
    def from_pretraining(
        cls, pretraining: "CmcrlForPreTraining | str | os.PathLike", config: CmcrlConfig | None = None
    ) -> tuple["CmcrlForConditionalGeneration", CmcrlTransferReport]:
        """Initialise VLCI from RadCARE (a `CmcrlForPreTraining` or a folder saved from one).

        Copied: the backbone, projection, CLS token, view embeddings and LayerNorm of the vision embeddings; the
        vision expert of every pre-trained encoder layer (its text expert is unused); the text path of every
        pre-trained decoder layer (self-attention, cross-attention and feed-forward; the image path, the mask token,
        `image_layer_norm` and the patch head are unused); the final LayerNorms, word embeddings and LM head.
        Fresh: VDM, LDM and, when `config` is deeper than RadCARE (the reference pre-trains 3+3 layers and fine-tunes
        6+6 on MIMIC-CXR), the layers beyond the pre-trained depth, named in the report's `fresh_layers`. RadCARE
        pre-trains on single images, so only the first row of its view embeddings is trained; with fewer views in
        RadCARE than in `config`, its rows are copied and the others start fresh, with more (a two-view RadCARE for
        one-view MIMIC-CXR) its first rows are copied (`partial`). Returns (model,
        CmcrlTransferReport); a shape mismatch elsewhere (vocab_size, hidden_size, backbone) is a ValueError.
        """
        if not isinstance(pretraining, CmcrlForPreTraining):
            pretraining = CmcrlForPreTraining.from_pretrained(pretraining)
        model = cls(config if config is not None else copy.deepcopy(pretraining.config))
        source, target = pretraining.state_dict(), model.state_dict()
        report = CmcrlTransferReport()
        state = {}
        for name, tensor in target.items():
            if name not in source:
                report.fresh.append(name)
                continue
            value = source[name]
            if name == VIEW_EMBEDDINGS and value.shape[1:] == tensor.shape[1:] and len(value) < len(tensor):
                report.partial[name] = f"rows 0-{len(value) - 1} of {len(tensor)} copied, the others start fresh"
                value = torch.cat([value, tensor[len(value) :]])
            elif name == VIEW_EMBEDDINGS and value.shape[1:] == tensor.shape[1:] and len(value) > len(tensor):
                # A RadCARE of two views (IU-Xray and MIMIC-CXR pre-trained together) for a one-view MIMIC-CXR VLCI.
                report.partial[name] = f"rows 0-{len(tensor) - 1} of RadCARE's {len(value)} copied"
                value = value[: len(tensor)]
            elif value.shape != tensor.shape:
                raise ValueError(
                    f"Cannot transfer {name}: RadCARE has shape {tuple(value.shape)}, VLCI expects "
                    f"{tuple(tensor.shape)} (vocab_size, hidden_size and backbone must match)"
                )
            report.copied.append(name)
            state[name] = value
        model.load_state_dict(state, strict=False)
        report.unused = sorted(set(source) - set(report.copied))
        for stack, layers in (("encoder", model.encoder.layers), ("decoder", model.decoder.layers)):
            pretrained = len(getattr(pretraining, stack).layers)
            report.fresh_layers += [f"{stack}.layers.{index}" for index in range(pretrained, len(layers))]
        logger.info("VLCI from RadCARE: %s", report.summary())
        return model, report


class CmcrlForPreTraining(CmcrlPreTrainedModel):
    """RadCARE: multiway encoder + multimodal decoder trained on four tasks.

    forward(task=..., pixel_values (B, 3, H, W), input_ids (B, L) = [BOS] words [EOS] [PAD]..., attention_mask,
    prefix_lengths (B,), mask_noise (B, P)). Tasks: "vt2t" image + text prefix -> postfix; "vt2v" masked
    image + text -> hidden patches; "v2v" masked image -> hidden patches; "t2t" prefix -> postfix. Without a task
    one is drawn from `config.pretraining_task_probs` among those the given inputs allow. `prefix_lengths` (in
    [1, number of words]) counts prefix tokens including [BOS]; `mask_noise` orders patches for masking (lowest
    kept). Both are drawn at random when omitted, prefix lengths uniformly in the reference's range: at least one
    prefix word and two postfix words (a report of two words is cut after its first, one of one word before it).
    """

    def __init__(self, config: CmcrlConfig):
        super().__init__(config)
        self.encoder = CmcrlMultiwayEncoder(config)
        self.decoder = CmcrlMultimodalDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.patch_head = nn.Linear(config.hidden_size, 3 * config.backbone_stride**2)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The decoder's word embeddings."""
        return self.decoder.embeddings.word_embeddings

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head of the text tasks."""
        return self.lm_head

    # -- inputs -------------------------------------------------------------------------------------------
    def degrade(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Low-resolution copy at full size: down by `degradation_factor`, then back up (nearest for pooling)."""
        mode, factor = self.config.degradation, self.config.degradation_factor
        if mode == "none" or factor == 1:
            return pixel_values
        size = pixel_values.shape[-2:]
        if mode == "maxpool":
            low = F.max_pool2d(pixel_values, factor + 1, stride=factor, padding=factor // 2)
            return F.interpolate(low, size=size, mode="nearest")
        if mode == "avgpool":
            return F.interpolate(F.avg_pool2d(pixel_values, factor, ceil_mode=True), size=size, mode="nearest")
        low = F.interpolate(pixel_values, scale_factor=1 / factor, mode="bilinear", align_corners=False)
        return F.interpolate(low, size=size, mode="bilinear", align_corners=False)

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, P, p*p*3) patches aligned with the backbone's token grid."""
        p, g = self.config.backbone_stride, self.config.grid_size
        x = pixel_values.reshape(pixel_values.shape[0], 3, g, p, g, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(pixel_values.shape[0], g * g, p * p * 3)

    def _split_text(self, input_ids, attention_mask, prefix_lengths):
        cfg = self.config
        if attention_mask is None:
            attention_mask = input_ids != cfg.pad_token_id
        lengths = attention_mask.long().sum(1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        words = lengths - 2
        if (input_ids[:, 0] != cfg.bos_token_id).any() or (
            input_ids[rows, (lengths - 1).clamp(min=0)] != cfg.eos_token_id
        ).any():
            raise ValueError("input_ids: every row must be [BOS] words [EOS] followed by padding")
        if (words < 1).any():
            raise ValueError("input_ids: every report needs at least one word to split into prefix and postfix")
        if prefix_lengths is None:
            # The reference's range: at least one prefix word and two postfix words (fewer for reports too short).
            low = words.clamp(max=2)
            high = (words - 1).clamp(min=low)
            prefix_lengths = low + (torch.rand(words.shape, device=words.device) * (high - low + 1)).long()
        prefix_lengths = prefix_lengths.to(input_ids.device).long()
        if (prefix_lengths < 1).any() or (prefix_lengths > words).any():
            raise ValueError("prefix_lengths: expected 1 <= prefix length <= number of words of each report")
        prefix_width = int(prefix_lengths.max())
        prefix_mask = torch.arange(prefix_width, device=input_ids.device)[None, :] < prefix_lengths[:, None]
        prefix = input_ids[:, :prefix_width].masked_fill(~prefix_mask, cfg.pad_token_id)
        postfix_lengths = lengths - prefix_lengths  # words after the cut, then [EOS]
        width = int(postfix_lengths.max())
        offsets = torch.arange(width, device=input_ids.device)[None, :]
        positions = (prefix_lengths[:, None] + offsets).clamp(max=input_ids.shape[1] - 1)
        labels = input_ids.gather(1, positions).masked_fill(offsets >= postfix_lengths[:, None], IGNORE_INDEX)
        decoder_input = torch.cat([torch.full_like(labels[:, :1], cfg.bos_token_id), labels[:, :-1]], dim=1)
        decoder_input = decoder_input.masked_fill(decoder_input == IGNORE_INDEX, cfg.pad_token_id)
        return prefix, prefix_mask, decoder_input, labels

    def _mask_patches(self, batch: int, noise, device):
        patches = self.config.grid_size**2
        keep = max(1, int(patches * (1 - self.config.mask_ratio)))
        if noise is None:
            noise = torch.rand(batch, patches, device=device)
        if tuple(noise.shape) != (batch, patches):
            raise ValueError(f"mask_noise: expected shape {(batch, patches)}, got {tuple(noise.shape)}")
        keep_indices = noise.argsort(dim=1)[:, :keep]
        mask = torch.ones(batch, patches, dtype=torch.long, device=device)
        mask.scatter_(1, keep_indices, 0)
        return keep_indices, mask

    def _choose_task(self, has_images: bool, has_text: bool) -> str:
        needs = {"vt2t": (True, True), "vt2v": (True, True), "v2v": (True, False), "t2t": (False, True)}
        weights = torch.tensor(
            [
                p if (not needs[t][0] or has_images) and (not needs[t][1] or has_text) else 0.0
                for t, p in zip(PRETRAINING_TASKS, self.config.pretraining_task_probs)
            ]
        )
        if weights.sum() <= 0:
            raise ValueError(
                "No pre-training task has a positive probability for the given inputs (pixel_values / input_ids)"
            )
        return PRETRAINING_TASKS[int(torch.multinomial(weights, 1))]

    # -- forward ------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        task: str | None = None,
        prefix_lengths: torch.LongTensor | None = None,
        mask_noise: torch.FloatTensor | None = None,
        return_dict: bool | None = None,
    ) -> CmcrlPreTrainingOutput:
        """One RadCARE step of `task` (drawn when None); see the class docstring for the inputs."""
        if return_dict is False:
            raise ValueError("return_dict=False is not supported: the model returns a CmcrlPreTrainingOutput")
        task = task if task is not None else self._choose_task(pixel_values is not None, input_ids is not None)
        if task not in PRETRAINING_TASKS:
            raise ValueError(f"task={task!r}: expected one of {PRETRAINING_TASKS}")
        uses_image, uses_text = task != "t2t", task != "v2v"
        if uses_image and pixel_values is None:
            raise ValueError(f"task {task!r} needs pixel_values")
        if uses_text and input_ids is None:
            raise ValueError(f"task {task!r} needs input_ids")
        task_index = torch.tensor(PRETRAINING_TASKS.index(task))

        vision = token_mask = keep_indices = mim_mask = None
        if uses_image:
            if pixel_values.dim() == 5:
                if pixel_values.shape[1] != 1:
                    raise ValueError(
                        "pixel_values: RadCARE pre-trains on single images, expected (B, 3, H, W) or (B, 1, 3, H, W)"
                    )
                pixel_values = pixel_values[:, 0]
            batch, device = pixel_values.shape[0], pixel_values.device
            real = torch.ones(batch, 1, dtype=torch.bool, device=device)
            vision = self.encoder.embeddings(self.degrade(pixel_values)[:, None], real)
            if task in ("vt2v", "v2v"):
                keep_indices, mim_mask = self._mask_patches(batch, mask_noise, device)
                kept = vision[:, 1:].gather(1, keep_indices[..., None].expand(-1, -1, vision.shape[-1]))
                vision = torch.cat([vision[:, :1], kept], dim=1)
            token_mask = torch.ones(batch, vision.shape[1], dtype=torch.bool, device=device)
        num_vision = 0 if vision is None else vision.shape[1]

        if task in ("vt2t", "t2t"):
            prefix, prefix_mask, decoder_input, text_labels = self._split_text(
                input_ids, attention_mask, prefix_lengths
            )
            tokens, mask = self.decoder.embeddings(prefix), prefix_mask
            if vision is not None:
                tokens, mask = torch.cat([vision, tokens], 1), torch.cat([token_mask, prefix_mask], 1)
            memory = self.encoder(tokens, mask, num_vision)
            length = decoder_input.shape[1]
            causal = torch.ones(length, length, dtype=torch.bool, device=decoder_input.device).tril()
            logits = self.lm_head(
                self.decoder(self.decoder.embeddings(decoder_input), causal, memory, mask, path="text")
            )
            loss = _report_loss(logits, text_labels)
            return CmcrlPreTrainingOutput(
                loss=loss, text_loss=loss, logits=logits, text_labels=text_labels, task_index=task_index
            )

        memory = memory_mask = None
        if task == "vt2v":
            text_mask = attention_mask.bool() if attention_mask is not None else input_ids != self.config.pad_token_id
            tokens = torch.cat([vision, self.decoder.embeddings(input_ids)], 1)
            encoded = self.encoder(tokens, torch.cat([token_mask, text_mask], 1), num_vision)
            memory, memory_mask = encoded[:, num_vision:], text_mask
        else:
            encoded = self.encoder(vision, token_mask, num_vision)
        slots = self.decoder.mask_token.expand(encoded.shape[0], self.config.grid_size**2, -1)
        slots = slots.scatter(1, keep_indices[..., None].expand(-1, -1, encoded.shape[-1]), encoded[:, 1:num_vision])
        position = self.encoder.embeddings.position_encoding(1, encoded.device).to(encoded.dtype)
        hidden = self.decoder(
            torch.cat([encoded[:, :1], slots], 1) + position, None, memory, memory_mask, path="image"
        )
        pred_patches = self.patch_head(hidden[:, 1:])
        target = self.patchify(pixel_values)
        if self.config.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        per_patch = (pred_patches.float() - target.float()).pow(2).mean(-1)
        loss = (per_patch * mim_mask).sum() / mim_mask.sum()
        return CmcrlPreTrainingOutput(
            loss=loss,
            image_loss=loss,
            pred_patches=pred_patches,
            target_patches=target,
            mim_mask=mim_mask,
            task_index=task_index,
        )


__all__ = [
    "CmcrlEncoderOutput",
    "CmcrlForConditionalGeneration",
    "CmcrlForPreTraining",
    "CmcrlPreTrainedModel",
    "CmcrlPreTrainingOutput",
    "CmcrlSeq2SeqLMOutput",
    "CmcrlTransferReport",
]
