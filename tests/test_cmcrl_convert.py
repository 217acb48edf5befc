"""Converting the official VLCI checkpoint layout (a state dict generated here, key names of WissingChen/VLCI), the
switch that computes what the reference computes, and `cxrgen convert vlci`."""

import json
import logging
import math

import pytest
import torch

from cxrgen.cli import main
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.modeling.cmcrl.convert_vlci_checkpoint import (
    checkpoint_geometry,
    convert_vlci_checkpoint,
    convert_vlci_state_dict,
    reference_config,
    token_rows,
)
from cxrgen.processing.processing_cmcrl import CmcrlProcessor
from cxrgen.processing.tokenization import build_report_tokenizer, report_tokenizer_from_vocab

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
            # Used only with causal_proj=true: otherwise they never get a gradient and keep their zero biases.
            for proj in ("q", "out"):
                linear(f"{module}.intervene.{af}.{proj}", d, d)
                state[f"{module}.intervene.{af}.{proj}.bias"].zero_()
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
    assert torch.equal(embeddings[tokenizer.bos_token_id], official["text_embed.embed.lut.weight"][0])
    assert torch.equal(logits[tokenizer.eos_token_id], official["logit.weight"][0])
    bias = model.state_dict()["lm_head.bias"]
    for never_generated in (tokenizer.pad_token_id, tokenizer.bos_token_id):
        assert logits[never_generated].abs().max() == 0 and bias[never_generated] == torch.finfo(bias.dtype).min
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


# The reference's formulas, written from its code (modules4transformer.py, modules4vlci.py) with the official names.
def ref_norm(official, name, x):
    mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)  # Bessel's correction; eps added to the std
    return official[f"{name}.gamma"] * (x - mean) / (std + 1e-6) + official[f"{name}.beta"]


def ref_linear(official, name, x):
    return x @ official[f"{name}.weight"].T + official[f"{name}.bias"]


def ref_attention(official, name, query, key_value, heads):
    def split(x, index):
        x = ref_linear(official, f"{name}.linears.{index}", x)
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(query, 0), split(key_value, 1), split(key_value, 2)
    out = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1) @ v
    return ref_linear(official, f"{name}.linears.3", out.transpose(1, 2).flatten(2))


def ref_cross_layer(official, name, x, y, heads):  # CrossLayer: pre-LN on the query only, then the FFN
    x = x + ref_attention(official, f"{name}.attn", ref_norm(official, f"{name}.sublayer_attn.norm", x), y, heads)
    hidden = ref_linear(official, f"{name}.feed_forward.w_1", ref_norm(official, f"{name}.sublayer_ff.norm", x))
    return x + ref_linear(official, f"{name}.feed_forward.w_2", hidden.relu())


def ref_ldm(official, text, local, heads):  # LDM with mode "y", causal_proj off: x + FDI(x, M) over all positions
    d = text.shape[-1]
    dictionary = ref_norm(official, "z_norm", official["text_embed.embed.lut.weight"] * math.sqrt(d))[None]
    local = ref_norm(official, "fl_norm", local)
    mediator = ref_cross_layer(official, "decoder.do.fuse_t", local, dictionary.expand(len(local), -1, -1), heads)
    mediator = ref_cross_layer(official, "decoder.do.fuse_v", mediator, local, heads) + mediator
    mediator = ref_norm(official, "decoder.do.norm", mediator)
    sampled = (mediator @ text.transpose(1, 2)).softmax(-1) @ text
    return text + (text @ mediator.transpose(1, 2)).softmax(-1) @ sampled


@pytest.fixture(scope="module")
def reference_tokenizer():
    return report_tokenizer_from_vocab([token for token in REFERENCE_VOCAB if token != "<unk>"])


@pytest.fixture(scope="module")
def converted(config, reference_tokenizer):
    """(model, official state dict, rows): the reference computation on every row of the reference vocabulary."""
    official = official_state_dict(config)
    rows = token_rows(REFERENCE_VOCAB, reference_tokenizer)
    assert None not in rows
    reference = reference_config("tiny", vocab_size=len(reference_tokenizer))
    model, report = convert_vlci_state_dict(official, reference, rows)
    assert not report.fresh_tokens
    return model.eval(), official, rows


def test_reference_switch_reproduces_the_reference_formulas(converted):
    model, official, rows = converted
    d, heads = model.config.hidden_size, model.config.num_attention_heads
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        x = torch.randn(2, 5, d, generator=generator) * 3 + 1
        torch.testing.assert_close(model.decoder.layer_norm(x), ref_norm(official, "decoder.norm", x))
        torch.testing.assert_close(
            model.encoder.layers[0].final_layer_norm(x), ref_norm(official, "encoder.layers.0.sublayer_ff.norm", x)
        )

        ids = torch.tensor([[1, 8, 5, 9, 2, 0], [1, 6, 4, 2, 0, 0]])  # [BOS] ... [EOS] [PAD]: rows 0 ... 0 0
        position = torch.zeros(ids.shape[1], d)
        angles = torch.arange(ids.shape[1])[:, None] * torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        position[:, 0::2], position[:, 1::2] = angles.sin(), angles.cos()
        reference_ids = torch.tensor(rows)[ids]
        embedded = ref_norm(
            official,
            "text_embed.norm",
            official["text_embed.embed.lut.weight"][reference_ids] * math.sqrt(d) + position,
        )
        text = model.decoder.embeddings(ids)
        torch.testing.assert_close(text, embedded)

        local = torch.randn(2, model.config.local_top_k * heads, d, generator=generator)
        word_embeddings = model.decoder.embeddings.word_embeddings.weight
        torch.testing.assert_close(
            model.decoder.ldm(text, local, word_embeddings), ref_ldm(official, text, local, heads)
        )

        hidden = torch.randn(2, 5, d, generator=generator)
        ours = model.lm_head(hidden).log_softmax(-1)
        reference = ref_linear(official, "logit", hidden).log_softmax(-1)
        special = [model.config.pad_token_id, model.config.bos_token_id]
        assert ours[..., special].exp().max() == 0
        for token_id, row in enumerate(rows):
            if token_id not in special:
                torch.testing.assert_close(ours[..., token_id], reference[..., row])


def test_reference_ldm_sees_future_tokens_and_says_so(config, reference_tokenizer, converted, caplog):
    model, _, _ = converted
    with caplog.at_level(logging.WARNING):
        CmcrlForConditionalGeneration(reference_config("tiny", vocab_size=len(reference_tokenizer)))
    assert "sees future tokens" in caplog.text
    pixel_values = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        first = model(pixel_values=pixel_values, decoder_input_ids=torch.tensor([[1, 8, 5, 9]])).logits
        changed = model(pixel_values=pixel_values, decoder_input_ids=torch.tensor([[1, 8, 5, 6]])).logits
    assert not torch.allclose(first[:, 0], changed[:, 0])  # the reference's leak, reproduced on purpose
    with pytest.raises(ValueError, match="use_cache=False"):
        model(pixel_values=pixel_values, decoder_input_ids=torch.tensor([[1]]), use_cache=True)
    assert model.generation_config.use_cache is False
    generated = model.generate(pixel_values=pixel_values, max_length=6, num_beams=2)
    assert generated.shape[0] == 1 and generated[0, 0] == model.config.bos_token_id


def test_trained_causal_proj_projections_are_an_error(config, tokenizer):
    official = official_state_dict(config)
    rows = token_rows(REFERENCE_VOCAB, tokenizer)
    _, report = convert_vlci_state_dict(official, config, rows)
    assert "encoder.do.intervene.af_2.q.weight" in report.dropped
    official["decoder.do.intervene.af_1.out.bias"][0] = 0.5
    with pytest.raises(ValueError, match="causal_proj"):
        convert_vlci_state_dict(official, config, rows)


def test_geometry_is_read_from_the_checkpoint(config):
    official = official_state_dict(config)
    assert checkpoint_geometry(official) == {"encoder_layers": 2, "decoder_layers": 2, "ldm_intermediate_size": 64}
    # The released checkpoints' LDM feed-forward is as wide as the model (the current reference code: 4 times).
    narrow = official_state_dict(CmcrlConfig.from_preset("tiny", ldm_intermediate_size=32, decoder_layers=3))
    assert checkpoint_geometry(narrow) == {"encoder_layers": 2, "decoder_layers": 3, "ldm_intermediate_size": 32}


def test_convert_command_writes_a_complete_model_folder(config, converted, tmp_path):
    model, official, _ = converted
    official = {f"module.{key}": value for key, value in official.items()}
    checkpoint, vocab, output = tmp_path / "model_best.pth", tmp_path / "idx2token.json", tmp_path / "vlci-iu"
    torch.save({"state_dict": official}, checkpoint)
    vocab.write_text(json.dumps({str(index + 1): token for index, token in enumerate(REFERENCE_VOCAB)}))
    assert (
        main(["convert", "vlci", str(checkpoint), "--vocab", str(vocab), "--output", str(output), "--preset", "tiny"])
        == 0
    )
    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "README.md"):
        assert (output / name).is_file(), name
    saved = json.loads((output / "config.json").read_text())
    assert (saved["ldm_variant"], saved["layer_norm_variant"]) == ("reference", "reference")
    processor = CmcrlProcessor.from_pretrained(output)
    words = processor.tokenizer.convert_ids_to_tokens(list(range(4, len(processor.tokenizer))))
    assert words == [token for token in REFERENCE_VOCAB if token != "<unk>"]
    loaded = CmcrlForConditionalGeneration.from_pretrained(output).eval()
    generation = loaded.generation_config
    assert (generation.num_beams, generation.length_penalty, generation.no_repeat_ngram_size) == (3, 0.0, 0)
    assert generation.use_cache is False
    assert all(torch.equal(tensor, loaded.state_dict()[name]) for name, tensor in model.state_dict().items())
    assert "research" in (output / "README.md").read_text().lower()
    vocab.write_text(json.dumps({"heart": 1, "lungs": 3}))
    assert (
        main(["convert", "vlci", str(checkpoint), "--vocab", str(vocab), "--output", str(output), "--preset", "tiny"])
        == 2
    )
