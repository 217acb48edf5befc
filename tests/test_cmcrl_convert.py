"""Converting the official VLCI checkpoint layout (a state dict generated here, key names of WissingChen/VLCI)."""

import pytest
import torch

from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.modeling.cmcrl.convert_vlci_checkpoint import convert_vlci_checkpoint, convert_vlci_state_dict, token_rows
from cxrgen.processing.tokenization import build_report_tokenizer

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)

REFERENCE_VOCAB = [".", "<unk>", "are", "clear", "heart", "is", "lungs", "normal", "the"]  # R2Gen ids 1..9


def official_state_dict(config: CmcrlConfig) -> dict:
    """Random tensors under the official key names, shaped for `config` (tiny preset: basic-block 2-stage ResNet)."""
    generator = torch.Generator().manual_seed(0)
    d, f, g = config.hidden_size, config.intermediate_size, config.global_grid_size
    inner = config.global_num_heads * config.global_head_dim
    state = {}

    def tensor(name, *shape):
        state[name] = torch.randn(*shape, generator=generator)

    def linear(name, fan_in, fan_out, bias=True):
        tensor(f"{name}.weight", fan_out, fan_in)
        if bias:
            tensor(f"{name}.bias", fan_out)

    def norm(name, gamma="gamma", beta="beta"):
        tensor(f"{name}.{gamma}", d)
        tensor(f"{name}.{beta}", d)

    def batch_norm(name, channels):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            tensor(f"{name}.{suffix}", channels)
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    def attention(name):
        for index in range(4):
            linear(f"{name}.linears.{index}", d, d)

    def sublayer_block(name, ffn, norms=("sublayer_attn", "sublayer_ff")):
        attention(f"{name}.attn")
        linear(f"{name}.feed_forward.w_1", d, ffn)
        linear(f"{name}.feed_forward.w_2", ffn, d)
        for sub in norms:
            norm(f"{name}.{sub}.norm")

    backbone = "vis_embed.patch_embed.embed"
    tensor(f"{backbone}.0.weight", 8, 3, 7, 7)
    batch_norm(f"{backbone}.1", 8)
    for child, (fan_in, width) in zip((4, 5), ((8, 16), (16, 32))):
        tensor(f"{backbone}.{child}.0.conv1.weight", width, fan_in, 3, 3)
        batch_norm(f"{backbone}.{child}.0.bn1", width)
        tensor(f"{backbone}.{child}.0.conv2.weight", width, width, 3, 3)
        batch_norm(f"{backbone}.{child}.0.bn2", width)
        tensor(f"{backbone}.{child}.0.downsample.0.weight", width, fan_in, 1, 1)
        batch_norm(f"{backbone}.{child}.0.downsample.1", width)
    linear("vis_embed.proj", 32, d)
    norm("vis_embed.norm")
    grid = CmcrlForConditionalGeneration(config).encoder.embeddings.position_encoding(1, "cpu")
    state["vis_embed.pos_embed"] = grid[None]
    tensor("cls_token", 1, 1, d)
    tensor("text_embed.embed.lut.weight", len(REFERENCE_VOCAB) + 1, d)
    tensor("text_embed.pos_encode.pe", 1, 100, d)
    norm("text_embed.norm")
    for layer in range(config.encoder_layers):
        sublayer_block(f"encoder.layers.{layer}", f)
    norm("encoder.norm")
    sublayer_block("encoder.local_sample.causal_layer", f)
    glob = "encoder.global_sample.global_sample"
    tensor(f"{glob}.proj.weight", d, d, 1, 1)
    norm(f"{glob}.attn.1.norm", "weight", "bias")
    tensor(f"{glob}.attn.1.fn.relative_bias_table", (2 * g - 1) ** 2, config.global_num_heads)
    state[f"{glob}.attn.1.fn.relative_index"] = torch.zeros(g**4, 1, dtype=torch.long)
    linear(f"{glob}.attn.1.fn.to_qkv", d, 3 * inner, bias=False)
    linear(f"{glob}.attn.1.fn.to_out.0", inner, d)
    norm(f"{glob}.ff.1.norm", "weight", "bias")
    linear(f"{glob}.ff.1.fn.net.0", d, f)
    linear(f"{glob}.ff.1.fn.net.3", f, d)
    for name in ("norm_l", "norm_g", "norm"):
        norm(f"encoder.do.fuse.{name}")
    attention("encoder.do.fuse.llf")
    attention("encoder.do.fuse.lgf")
    linear("encoder.do.fuse.proj", 2 * d, d)
    linear("encoder.do.fuse.fc.0", d, f)
    linear("encoder.do.fuse.fc.1", f, d)
    for module in ("encoder.do", "decoder.do"):
        for af in ("af_1", "af_2"):
            linear(f"{module}.intervene.{af}.q", d, d)
            linear(f"{module}.intervene.{af}.out", d, d)
    for layer in range(config.decoder_layers):
        prefix = f"decoder.layers.{layer}"
        attention(f"{prefix}.self_attn")
        attention(f"{prefix}.cross_attn")
        linear(f"{prefix}.feed_forward.w_1", d, f)
        linear(f"{prefix}.feed_forward.w_2", f, d)
        for sub in ("sublayer_self", "sublayer_cross", "sublayer_ff"):
            norm(f"{prefix}.{sub}.norm")
    norm("decoder.norm")
    for fuse in ("fuse_t", "fuse_v"):
        sublayer_block(f"decoder.do.{fuse}", config.ldm_intermediate_size)
    norm("decoder.do.norm")
    norm("z_norm")
    norm("fl_norm")
    linear("logit", d, len(REFERENCE_VOCAB) + 1)
    return state


@pytest.fixture(scope="module")
def tokenizer():
    return build_report_tokenizer(["the heart is normal . the lungs are clear . no effusion ."], min_frequency=1)


@pytest.fixture(scope="module")
def config(tokenizer):
    return CmcrlConfig.from_preset("tiny", vocab_size=len(tokenizer))


def test_every_official_key_lands_in_the_right_place(config, tokenizer):
    official = official_state_dict(config)
    model, report = convert_vlci_state_dict(official, config, token_rows(REFERENCE_VOCAB, tokenizer))
    state = model.state_dict()
    assert set(report.converted) | set(report.dropped) == set(official)
    assert sorted(report.dropped)[:2] == ["decoder.do.intervene.af_1.out.bias", "decoder.do.intervene.af_1.out.weight"]
    expected_pairs = {
        "encoder.layers.1.attn.linears.1.weight": "encoder.layers.1.self_attn.k_proj.weight",
        "encoder.layers.0.sublayer_ff.norm.gamma": "encoder.layers.0.final_layer_norm.weight",
        "decoder.layers.1.cross_attn.linears.3.bias": "decoder.layers.1.encoder_attn.out_proj.bias",
        "decoder.layers.0.sublayer_cross.norm.beta": "decoder.layers.0.encoder_attn_layer_norm.bias",
        "decoder.do.fuse_t.attn.linears.0.weight": "decoder.ldm.text_cross_layer.attn.q_proj.weight",
        "decoder.do.fuse_v.feed_forward.w_2.weight": "decoder.ldm.visual_cross_layer.ffn.fc2.weight",
        "z_norm.gamma": "decoder.ldm.dictionary_layer_norm.weight",
        "encoder.do.fuse.lgf.linears.2.weight": "encoder.mediator_fusion.local_global_attn.v_proj.weight",
        "encoder.local_sample.causal_layer.sublayer_attn.norm.gamma": "encoder.local_sampler.block.layer_norm.weight",
        "encoder.global_sample.global_sample.ff.1.fn.net.3.weight": "encoder.global_sampler.ffn.fc2.weight",
        "vis_embed.patch_embed.embed.5.0.conv2.weight": "encoder.embeddings.backbone.encoder.stages.1.layers.0.layer.1.convolution.weight",
        "vis_embed.patch_embed.embed.4.0.downsample.1.running_var": "encoder.embeddings.backbone.encoder.stages.0.layers.0.shortcut.normalization.running_var",
        "vis_embed.patch_embed.embed.1.num_batches_tracked": "encoder.embeddings.backbone.embedder.embedder.normalization.num_batches_tracked",
    }
    for official_name, name in expected_pairs.items():
        assert report.converted[official_name] == name
        assert torch.equal(state[name], official[official_name].to(state[name].dtype))
    assert state["encoder.embeddings.view_embeddings.weight"].abs().max() == 0


def test_vocabulary_rows_follow_the_tokens(config, tokenizer):
    official = official_state_dict(config)
    model, report = convert_vlci_state_dict(official, config, token_rows(REFERENCE_VOCAB, tokenizer))
    embeddings, logits = (
        model.state_dict()["decoder.embeddings.word_embeddings.weight"],
        model.state_dict()["lm_head.weight"],
    )
    for token in ("heart", "clear", "."):
        row = REFERENCE_VOCAB.index(token) + 1
        assert torch.equal(
            embeddings[tokenizer.convert_tokens_to_ids(token)], official["text_embed.embed.lut.weight"][row]
        )
        assert torch.equal(logits[tokenizer.convert_tokens_to_ids(token)], official["logit.weight"][row])
    for special in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        assert torch.equal(logits[special], official["logit.weight"][0])
    assert torch.equal(logits[tokenizer.unk_token_id], official["logit.weight"][REFERENCE_VOCAB.index("<unk>") + 1])
    assert sorted(tokenizer.convert_ids_to_tokens(report.fresh_tokens)) == ["effusion", "no"]
    generated = model.eval().generate(pixel_values=torch.randn(1, 2, 3, 32, 32), max_length=6)
    assert generated.shape[0] == 1


def test_checkpoint_file_round_trip_and_errors(config, tokenizer, tmp_path):
    official = official_state_dict(config)
    path = tmp_path / "model_best.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
    model, _ = convert_vlci_checkpoint(path, config, REFERENCE_VOCAB, tokenizer)
    assert torch.equal(model.state_dict()["encoder.embeddings.cls_token"], official["cls_token"])
    rows = token_rows(REFERENCE_VOCAB, tokenizer)
    with pytest.raises(ValueError, match="no counterpart"):
        convert_vlci_state_dict({**official, "encoder.extra.weight": torch.zeros(1)}, config, rows)
    with pytest.raises(ValueError, match="lacks"):
        convert_vlci_state_dict(
            {k: v for k, v in official.items() if not k.startswith("decoder.do.fuse_v")}, config, rows
        )
    wide = {**official, "decoder.do.fuse_t.feed_forward.w_1.weight": torch.zeros(32 * 4, 32)}
    with pytest.raises(ValueError, match="shape"):
        convert_vlci_state_dict(wide, config, rows)
    torch.save({"state_dict": {"cls_token": "not a tensor"}}, path)
    with pytest.raises(ValueError, match="state dict"):
        convert_vlci_checkpoint(path, config, REFERENCE_VOCAB, tokenizer)
