"""Convert an official VLCI/CMCRL checkpoint (WissingChen/VLCI, a torch state dict) to `CmcrlForConditionalGeneration`.

The file is read with `torch.load(..., weights_only=True)`: nothing is unpickled beyond tensors and plain
containers. The reference vocabulary (R2Gen `idx2token`, ids 1..V, id 0 = BOS/EOS/PAD) is not stored in its
checkpoints, so the caller passes it to map the embedding and output rows onto this package's tokenizer.

To compute what the reference computes, convert with `reference_config(...)`: the reference's LayerNorm and its
LDM, which sees future tokens and padding (see `CmcrlConfig`). Special tokens: [PAD], [BOS] and [EOS] all take the
reference's row 0 in the word embeddings (the reference starts, pads and ends with id 0); in the output layer only
[EOS] keeps it, and [PAD] and [BOS] get a zero row with the lowest bias, so their probability is exactly 0 and the
softmax over [EOS] and the words is the reference's. The LDM leaves them out of its dictionary for the same reason.

The reference's front-door projections (`intervene.af_{1,2}.{q,out}`, used only with `causal_proj: true`, off in
every shipped config) exist in every checkpoint. Trained without `causal_proj` they never receive a gradient, so
their biases keep their zero initialisation: such tensors are dropped, and any non-zero one is an error, since this
package does not implement that variant.
"""

import os
import re
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from .configuration_cmcrl import CmcrlConfig
from .modeling_cmcrl import CmcrlForConditionalGeneration

_ATTN = r"(?:attn|self_attn|cross_attn|llf|lgf)\.linears\.([0-3])\."
_PROJ = ("q_proj", "k_proj", "v_proj", "out_proj")

# (official pattern, replacement); the first match wins. `\g<n>` groups carry layer / block indices.
_RULES = [
    # torchvision ResNet-101 children()[:-3]: 0 conv1, 1 bn1, 4..6 layer1..layer3
    (r"vis_embed\.patch_embed\.embed\.0\.weight$", "encoder.embeddings.backbone.embedder.embedder.convolution.weight"),
    (r"vis_embed\.patch_embed\.embed\.1\.(\w+)$", r"encoder.embeddings.backbone.embedder.embedder.normalization.\1"),
    (r"vis_embed\.patch_embed\.embed\.([4-6])\.(\d+)\.conv([1-3])\.weight$", "BACKBONE_CONV"),
    (r"vis_embed\.patch_embed\.embed\.([4-6])\.(\d+)\.bn([1-3])\.(\w+)$", "BACKBONE_BN"),
    (r"vis_embed\.patch_embed\.embed\.([4-6])\.(\d+)\.downsample\.0\.weight$", "BACKBONE_SHORTCUT_CONV"),
    (r"vis_embed\.patch_embed\.embed\.([4-6])\.(\d+)\.downsample\.1\.(\w+)$", "BACKBONE_SHORTCUT_BN"),
    (r"vis_embed\.proj\.(weight|bias)$", r"encoder.embeddings.proj.\1"),
    (r"vis_embed\.norm\.", "encoder.embeddings.layer_norm."),
    (r"cls_token$", "encoder.embeddings.cls_token"),
    (r"text_embed\.embed\.lut\.weight$", "VOCAB:decoder.embeddings.word_embeddings.weight"),
    (r"text_embed\.norm\.", "decoder.embeddings.layer_norm."),
    (r"logit\.(weight|bias)$", r"VOCAB:lm_head.\1"),
    # encoder layers
    (r"encoder\.layers\.(\d+)\.attn\.linears\.([0-3])\.", r"encoder.layers.\1.self_attn.PROJ\2."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.w_([12])\.", r"encoder.layers.\1.ffn.fc\2."),
    (r"encoder\.layers\.(\d+)\.sublayer_attn\.norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.layers\.(\d+)\.sublayer_ff\.norm\.", r"encoder.layers.\1.final_layer_norm."),
    (r"encoder\.norm\.", "encoder.layer_norm."),
    # VDM: local sampler (CaaM), global sampler (CoAtNet block), fusion (LGFM)
    (
        r"encoder\.local_sample\.causal_layer\.attn\.linears\.([0-3])\.",
        r"encoder.local_sampler.block.attention.PROJ\1.",
    ),
    (r"encoder\.local_sample\.causal_layer\.feed_forward\.w_([12])\.", r"encoder.local_sampler.block.ffn.fc\1."),
    (r"encoder\.local_sample\.causal_layer\.sublayer_attn\.norm\.", "encoder.local_sampler.block.layer_norm."),
    (r"encoder\.local_sample\.causal_layer\.sublayer_ff\.norm\.", "encoder.local_sampler.block.ffn_layer_norm."),
    (r"encoder\.global_sample\.global_sample\.proj\.weight$", "encoder.global_sampler.shortcut.weight"),
    (r"encoder\.global_sample\.global_sample\.attn\.1\.norm\.", "encoder.global_sampler.attn_layer_norm."),
    (
        r"encoder\.global_sample\.global_sample\.attn\.1\.fn\.relative_bias_table$",
        "encoder.global_sampler.relative_position_bias",
    ),
    (r"encoder\.global_sample\.global_sample\.attn\.1\.fn\.to_qkv\.weight$", "encoder.global_sampler.qkv.weight"),
    (r"encoder\.global_sample\.global_sample\.attn\.1\.fn\.to_out\.0\.", "encoder.global_sampler.out_proj."),
    (r"encoder\.global_sample\.global_sample\.ff\.1\.norm\.", "encoder.global_sampler.ffn_layer_norm."),
    (r"encoder\.global_sample\.global_sample\.ff\.1\.fn\.net\.0\.", "encoder.global_sampler.ffn.fc1."),
    (r"encoder\.global_sample\.global_sample\.ff\.1\.fn\.net\.3\.", "encoder.global_sampler.ffn.fc2."),
    (r"encoder\.do\.fuse\.norm_l\.", "encoder.mediator_fusion.local_layer_norm."),
    (r"encoder\.do\.fuse\.norm_g\.", "encoder.mediator_fusion.global_layer_norm."),
    (r"encoder\.do\.fuse\.llf\.linears\.([0-3])\.", r"encoder.mediator_fusion.local_attn.PROJ\1."),
    (r"encoder\.do\.fuse\.lgf\.linears\.([0-3])\.", r"encoder.mediator_fusion.local_global_attn.PROJ\1."),
    (r"encoder\.do\.fuse\.proj\.", "encoder.mediator_fusion.proj."),
    (r"encoder\.do\.fuse\.norm\.", "encoder.mediator_fusion.layer_norm."),
    (r"encoder\.do\.fuse\.fc\.0\.", "encoder.mediator_fusion.fc1."),
    (r"encoder\.do\.fuse\.fc\.1\.", "encoder.mediator_fusion.fc2."),
    # decoder layers
    (r"decoder\.layers\.(\d+)\.self_attn\.linears\.([0-3])\.", r"decoder.layers.\1.self_attn.PROJ\2."),
    (r"decoder\.layers\.(\d+)\.cross_attn\.linears\.([0-3])\.", r"decoder.layers.\1.encoder_attn.PROJ\2."),
    (r"decoder\.layers\.(\d+)\.feed_forward\.w_([12])\.", r"decoder.layers.\1.ffn.fc\2."),
    (r"decoder\.layers\.(\d+)\.sublayer_self\.norm\.", r"decoder.layers.\1.self_attn_layer_norm."),
    (r"decoder\.layers\.(\d+)\.sublayer_cross\.norm\.", r"decoder.layers.\1.encoder_attn_layer_norm."),
    (r"decoder\.layers\.(\d+)\.sublayer_ff\.norm\.", r"decoder.layers.\1.final_layer_norm."),
    (r"decoder\.norm\.", "decoder.layer_norm."),
    # LDM: fuse_t (local -> vocabulary), fuse_v (-> local), norms of the dictionary and the local features
    (r"decoder\.do\.fuse_([tv])\.attn\.linears\.([0-3])\.", r"decoder.ldm.CROSS\1.attn.PROJ\2."),
    (r"decoder\.do\.fuse_([tv])\.feed_forward\.w_([12])\.", r"decoder.ldm.CROSS\1.ffn.fc\2."),
    (r"decoder\.do\.fuse_([tv])\.sublayer_attn\.norm\.", r"decoder.ldm.CROSS\1.attn_layer_norm."),
    (r"decoder\.do\.fuse_([tv])\.sublayer_ff\.norm\.", r"decoder.ldm.CROSS\1.ffn_layer_norm."),
    (r"decoder\.do\.norm\.", "decoder.ldm.mediator_layer_norm."),
    (r"z_norm\.", "decoder.ldm.dictionary_layer_norm."),
    (r"fl_norm\.", "decoder.ldm.local_layer_norm."),
]
# Recomputed here (fixed sin-cos tables, the rel-pos index) or unused as shipped (causal_proj=false projections).
_DROPPED = re.compile(
    r"(vis_embed\.pos_embed|text_embed\.pos_encode\.pe|.*\.relative_index|.*\.intervene\.af_[12]\.(q|out)\.(weight|bias))$"
)
_CAUSAL_PROJ_BIAS = re.compile(r".*\.intervene\.af_[12]\.(q|out)\.bias$")


@dataclass
class VlciConversionReport:
    """Official keys converted (official -> this model's name), official keys dropped (recomputed or unused), and
    the token ids absent from the reference vocabulary (their rows keep the fresh initialisation)."""

    converted: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    fresh_tokens: list[int] = field(default_factory=list)


def _map_key(key: str) -> str | None:
    """This model's name for an official key (prefixed "VOCAB:" for vocabulary-indexed tables), or None."""
    for pattern, replacement in _RULES:
        match = re.match(pattern, key)
        if match is None:
            continue
        if replacement.startswith("BACKBONE"):
            stage, block = int(match.group(1)) - 4, match.group(2)
            prefix = f"encoder.embeddings.backbone.encoder.stages.{stage}.layers.{block}."
            if replacement == "BACKBONE_CONV":
                return prefix + f"layer.{int(match.group(3)) - 1}.convolution.weight"
            if replacement == "BACKBONE_BN":
                return prefix + f"layer.{int(match.group(3)) - 1}.normalization.{match.group(4)}"
            if replacement == "BACKBONE_SHORTCUT_CONV":
                return prefix + "shortcut.convolution.weight"
            return prefix + f"shortcut.normalization.{match.group(3)}"
        name = match.expand(replacement) + key[match.end() :]
        name = re.sub(r"PROJ([0-3])", lambda m: _PROJ[int(m.group(1))], name)
        name = name.replace("CROSSt", "text_cross_layer").replace("CROSSv", "visual_cross_layer")
        return name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return None


def reference_config(preset: str = "iu-xray", **overrides) -> CmcrlConfig:
    """A preset's `CmcrlConfig` set to compute what the reference code computes (its LayerNorm, its LDM, no
    view embeddings) and to decode as it does (3 beams ranked by summed log-probability, no n-gram blocking: the
    reference's beam search ignores its `block_trigrams` setting)."""
    settings = {
        "ldm_variant": "reference",
        "layer_norm_variant": "reference",
        "use_view_embeddings": False,
        "generation_num_beams": 3,
        "generation_length_penalty": 0.0,
        "generation_no_repeat_ngram_size": 0,
    }
    return CmcrlConfig.from_preset(preset, **{**settings, **overrides})


def token_rows(reference_vocab: list[str], tokenizer: PreTrainedTokenizerBase) -> list[int | None]:
    """Source row of the reference's embedding/logit tables for each id of `tokenizer` (None: unknown there).

    `reference_vocab[i]` is the reference's token id i + 1 (its `idx2token`); row 0 served as BOS, EOS and PAD.
    """
    rows = {token: index + 1 for index, token in enumerate(reference_vocab)}
    specials = {tokenizer.pad_token: 0, tokenizer.bos_token: 0, tokenizer.eos_token: 0}
    if "<unk>" in rows:
        specials[tokenizer.unk_token] = rows["<unk>"]
    vocab = tokenizer.get_vocab()
    by_id = [None] * len(vocab)
    for token, token_id in vocab.items():
        by_id[token_id] = token
    return [specials.get(token, rows.get(token)) for token in by_id]


def convert_vlci_state_dict(
    state_dict: dict[str, torch.Tensor], config: CmcrlConfig, rows: list[int | None]
) -> tuple[CmcrlForConditionalGeneration, VlciConversionReport]:
    """Map an official VLCI state dict onto a freshly initialised `CmcrlForConditionalGeneration(config)`.

    `rows` gives the source vocabulary row of each target token id (see `token_rows`). Returns (model, report).
    Raises ValueError on an unknown official key, a shape mismatch, a model tensor the checkpoint lacks, or
    trained `causal_proj` projections.
    """
    if len(rows) != config.vocab_size:
        raise ValueError(f"rows: {len(rows)} token rows for config.vocab_size={config.vocab_size}")
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    model = CmcrlForConditionalGeneration(config)
    target = model.state_dict()
    report = VlciConversionReport()
    new_state = {}
    known = torch.tensor([row is not None for row in rows])
    source_rows = torch.tensor([row if row is not None else 0 for row in rows])
    for key, value in state_dict.items():
        if _CAUSAL_PROJ_BIAS.match(key) and value.abs().max() > 0:
            raise ValueError(
                f"{key} is non-zero: the checkpoint was trained with causal_proj=true (learned front-door "
                "projections), a variant CmcrlForConditionalGeneration does not implement; it cannot be converted"
            )
        if _DROPPED.match(key):
            report.dropped.append(key)
            continue
        name = _map_key(key)
        if name is None:
            raise ValueError(f"Official checkpoint key {key!r} has no counterpart in CmcrlForConditionalGeneration")
        is_vocab = name.startswith("VOCAB:")
        name = name.removeprefix("VOCAB:")
        if name not in target:
            raise ValueError(f"Official key {key!r} maps to {name!r}, which this configuration does not have")
        if is_vocab:
            if int(source_rows.max()) >= value.shape[0]:
                raise ValueError(
                    f"{key}: {value.shape[0]} rows, but the reference vocabulary needs {int(source_rows.max()) + 1}"
                )
            value = torch.where(known.view(-1, *[1] * (value.dim() - 1)), value[source_rows], target[name])
        if value.shape != target[name].shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)}, but {name} expects {tuple(target[name].shape)}")
        new_state[name] = value.to(target[name].dtype)
        report.converted[key] = name
    position = state_dict.get("vis_embed.pos_embed")
    if position is not None:
        expected = model.encoder.embeddings.position_encoding(1, "cpu")
        if position.shape[-2:] != expected.shape or not torch.allclose(position[0].float(), expected, atol=1e-4):
            raise ValueError(
                "vis_embed.pos_embed differs from the 2-D sin-cos table of this configuration (image size or width)"
            )
    if model.encoder.embeddings.view_embeddings is not None:
        # The reference has no view embeddings: zeros reproduce it exactly.
        new_state["encoder.embeddings.view_embeddings.weight"] = torch.zeros_like(
            target["encoder.embeddings.view_embeddings.weight"]
        )
    if "lm_head.weight" in new_state:
        # Row 0 of the reference's output layer is its one special token: [EOS] keeps it, [PAD] and [BOS] (never
        # generated) get probability 0, so the softmax over the remaining rows is the reference's.
        never = [config.pad_token_id, config.bos_token_id]
        new_state["lm_head.weight"][never] = 0.0
        new_state["lm_head.bias"][never] = torch.finfo(new_state["lm_head.bias"].dtype).min
    missing = sorted(set(target) - set(new_state))
    if missing:
        raise ValueError(f"The official checkpoint lacks {len(missing)} tensors of this model, e.g. {missing[:5]}")
    report.fresh_tokens = [token_id for token_id, row in enumerate(rows) if row is None]
    model.load_state_dict(new_state, strict=True)
    return model, report


def read_vlci_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint file (a state dict, or a dict holding one under "state_dict"),
    without the `module.` prefix of DataParallel."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path}: expected a VLCI state dict (or a dict with one under 'state_dict')")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def checkpoint_geometry(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """The `CmcrlConfig` sizes an official state dict fixes: the encoder and decoder depths and the LDM's FFN width
    (the released checkpoints use the width of the model there, the current reference code 4 times it)."""
    geometry = {}
    for stack, field_name in (("encoder", "encoder_layers"), ("decoder", "decoder_layers")):
        layers = {int(match.group(1)) for key in state_dict if (match := re.match(rf"{stack}\.layers\.(\d+)\.", key))}
        if layers:
            geometry[field_name] = max(layers) + 1
    ldm_ffn = state_dict.get("decoder.do.fuse_t.feed_forward.w_1.weight")
    if ldm_ffn is not None:
        geometry["ldm_intermediate_size"] = ldm_ffn.shape[0]
    return geometry


def convert_vlci_checkpoint(
    path: str | os.PathLike,
    config: CmcrlConfig,
    reference_vocab: list[str],
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[CmcrlForConditionalGeneration, VlciConversionReport]:
    """Read an official checkpoint file (see `read_vlci_checkpoint`) and convert it."""
    return convert_vlci_state_dict(read_vlci_checkpoint(path), config, token_rows(reference_vocab, tokenizer))


__all__ = [
    "VlciConversionReport",
    "checkpoint_geometry",
    "convert_vlci_checkpoint",
    "convert_vlci_state_dict",
    "read_vlci_checkpoint",
    "reference_config",
    "token_rows",
]
