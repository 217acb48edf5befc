"""VLCI (CmcrlForConditionalGeneration): overfitting, save/load, KV cache, causality, token counts, missing views."""

import copy

import pytest
import torch

from cxrgen.compat import enable_checkpointing
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining
from cxrgen.modeling.cmcrl.modeling_cmcrl import (
    CmcrlAttention,
    CmcrlDropout,
    causal_front_door_intervention,
    front_door_intervention,
)

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)


def tiny_config(**overrides):
    return CmcrlConfig.from_preset("tiny", **overrides)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CmcrlForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="module")
def studies():
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(3, 2, 3, 32, 32, generator=generator)
    pixel_mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    return pixel_values * pixel_mask[:, :, None, None, None], pixel_mask


def test_overfit_two_reports():
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(tiny_config(dropout=0.0, attention_dropout=0.0))
    generator = torch.Generator().manual_seed(2)
    pixel_values = torch.randn(2, 2, 3, 32, 32, generator=generator)
    labels = torch.tensor([[1, 5, 6, 7, 8, 9, 2], [1, 10, 11, 12, 2, -100, -100]])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    generated = model.generate(pixel_values=pixel_values, num_beams=1, do_sample=False, max_length=10)
    assert generated[0, :7].tolist() == labels[0].tolist()
    assert generated[1, :5].tolist() == labels[1, :5].tolist()


def test_save_and_load_give_identical_outputs(model, studies, tmp_path):
    pixel_values, pixel_mask = studies
    model.save_pretrained(tmp_path)
    loaded = CmcrlForConditionalGeneration.from_pretrained(tmp_path).eval()
    labels = torch.tensor([[1, 5, 6, 2], [1, 7, 2, -100], [1, 8, 9, 2]])
    expected = model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
    actual = loaded(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)
    kwargs = dict(pixel_values=pixel_values, pixel_mask=pixel_mask, max_length=8, num_beams=2)
    assert torch.equal(model.generate(**kwargs), loaded.generate(**kwargs))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cache_and_no_cache_generate_identical_tokens(model, studies, num_beams):
    pixel_values, pixel_mask = studies
    kwargs = dict(
        pixel_values=pixel_values, pixel_mask=pixel_mask, num_beams=num_beams, do_sample=False, max_length=12
    )
    cached = model.generate(**kwargs, use_cache=True)
    uncached = model.generate(**kwargs, use_cache=False)
    assert cached.shape[1] > 4
    assert torch.equal(cached, uncached)


def test_beam_search_without_reordering_the_cross_attention_cache_gives_the_same_beams(model, studies, monkeypatch):
    pixel_values, pixel_mask = studies
    kwargs = dict(pixel_values=pixel_values, pixel_mask=pixel_mask, num_beams=3, num_return_sequences=3)
    kwargs.update(min_length=12, max_length=12, output_scores=True, return_dict_in_generate=True)
    fast = model.generate(**kwargs)

    def reorder_everything(cache, beam_idx):
        cache.reorder_cache(beam_idx)
        return cache

    monkeypatch.setattr(CmcrlForConditionalGeneration, "_reorder_cache", staticmethod(reorder_everything))
    full = model.generate(**kwargs)
    assert torch.equal(fast.sequences, full.sequences)
    torch.testing.assert_close(fast.sequences_scores, full.sequences_scores, rtol=0, atol=0)


def test_sampling_is_reproducible_with_a_seed(model, studies):
    pixel_values, pixel_mask = studies
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(
            model.generate(pixel_values=pixel_values, pixel_mask=pixel_mask, do_sample=True, top_k=5, max_length=8)
        )
    assert torch.equal(*runs)


def test_future_tokens_never_change_earlier_logits(model, studies):
    pixel_values, pixel_mask = studies
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11]] * 3)
    base = model(pixel_values=pixel_values, pixel_mask=pixel_mask, decoder_input_ids=ids).logits
    for t in range(ids.shape[1] - 1):
        changed = ids.clone()
        changed[:, t + 1 :] = torch.randint(4, 40, changed[:, t + 1 :].shape)
        logits = model(pixel_values=pixel_values, pixel_mask=pixel_mask, decoder_input_ids=changed).logits
        torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(logits[:, t + 1 :], base[:, t + 1 :])


def test_causal_front_door_matches_the_intervention_on_each_prefix():
    generator = torch.Generator().manual_seed(4)
    x, mediator = torch.randn(2, 6, 8, generator=generator), torch.randn(2, 3, 8, generator=generator)
    causal = causal_front_door_intervention(x, x, mediator)
    for t in range(6):
        prefix = front_door_intervention(x[:, : t + 1], mediator)
        torch.testing.assert_close(causal[:, t], prefix[:, t])
    # the last query alone over the whole prefix: the incremental (cached) step
    torch.testing.assert_close(causal_front_door_intervention(x[:, -1:], x, mediator)[:, 0], causal[:, -1])


def test_attention_to_one_shared_dictionary_matches_the_dictionary_repeated_per_sample():
    # The LDM's vocabulary is one key/value set for the whole batch; its folded attention must equal the ordinary one.
    torch.manual_seed(0)
    attention = CmcrlAttention(32, 4, dropout=0.0)
    queries, dictionary = torch.randn(3, 5, 32), torch.randn(1, 7, 32)
    mask = torch.rand(3, 1, 5, 7) > 0.3
    mask[..., 0] = True
    for attention_mask in (None, mask):
        shared, shared_probs = attention(queries, dictionary, attention_mask=attention_mask)
        repeated, repeated_probs = attention(queries, dictionary.expand(3, -1, -1), attention_mask=attention_mask)
        torch.testing.assert_close(shared, repeated)
        torch.testing.assert_close(shared_probs, repeated_probs)
    assert (shared_probs[~mask.expand_as(shared_probs)] == 0).all()


def test_in_place_backbone_relus_give_the_same_features_and_gradients(studies):
    pixel_values, _ = studies
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(tiny_config()).train()
    relus = [module for module in model.encoder.embeddings.backbone.modules() if isinstance(module, torch.nn.ReLU)]
    assert relus and all(relu.inplace for relu in relus)
    images = pixel_values.flatten(0, 1)

    def features_and_gradients(inplace):
        for relu in relus:
            relu.inplace = inplace
        model.zero_grad()
        state = copy.deepcopy(model.state_dict())  # the batch-norm statistics of training mode
        features = model.encoder.embeddings.backbone(images).feature_maps[-1]
        features.square().mean().backward()
        model.load_state_dict(state)
        return features.detach(), [p.grad.clone() for p in model.encoder.embeddings.backbone.parameters()]

    features, gradients = features_and_gradients(True)
    reference_features, reference_gradients = features_and_gradients(False)
    assert torch.equal(features, reference_features)
    assert all(torch.equal(a, b) for a, b in zip(gradients, reference_gradients))


def test_dropout_draws_as_torch_does_and_keeps_a_boolean_mask():
    inputs = torch.randn(4, 6, 8, requires_grad=True)

    def run(dropout):
        saved = []
        torch.manual_seed(0)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
            outputs = dropout(inputs)
        (gradient,) = torch.autograd.grad(outputs.square().sum(), inputs)
        return outputs, gradient, saved

    torch_outputs, torch_gradient, torch_saved = run(torch.nn.Dropout(0.3))
    outputs, gradient, saved = run(CmcrlDropout(0.3))
    assert torch.equal(outputs, torch_outputs) and torch.equal(gradient, torch_gradient)
    assert torch_saved == [torch.float32] and saved == [torch.bool]
    assert CmcrlDropout(0.3).eval()(inputs) is inputs


def test_local_and_global_token_counts(model, studies):
    pixel_values, pixel_mask = studies
    config = model.config
    captured = {}
    hook = model.encoder.global_sampler.register_forward_hook(lambda module, args, output: captured.update(out=output))
    encoded = model.get_encoder()(pixel_values, pixel_mask)
    hook.remove()
    heads, views, grid = config.num_attention_heads, pixel_values.shape[1], config.grid_size
    assert encoded.local_features.shape == (3, config.local_top_k * heads, config.hidden_size)
    assert encoded.local_patch_indices.shape == (3, config.local_top_k * heads)
    assert captured["out"].shape == (3, (grid // 2) ** 2 * views, config.hidden_size)
    assert encoded.attention_rollout.shape == (3, heads, views * grid * grid)
    # the missing second view of study 1 is never selected and has no rollout mass
    assert (encoded.local_patch_indices[1] < grid * grid).all()
    assert encoded.attention_rollout[1, :, grid * grid :].abs().max() == 0
    top = encoded.attention_rollout.topk(config.local_top_k, dim=-1).indices.flatten(1)
    assert torch.equal(top, encoded.local_patch_indices)


def test_padded_missing_view_does_not_change_a_study(model, studies):
    pixel_values, pixel_mask = studies
    alone = pixel_values[1:2, :1]
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    batch_logits = model(pixel_values=pixel_values, pixel_mask=pixel_mask, decoder_input_ids=ids.repeat(3, 1)).logits[
        1
    ]
    alone_logits = model(pixel_values=alone, decoder_input_ids=ids).logits[0]
    torch.testing.assert_close(batch_logits, alone_logits, rtol=1e-4, atol=1e-5)
    # the padding's content is irrelevant too
    noisy = pixel_values.clone()
    noisy[1, 1] = torch.randn(3, 32, 32)
    noisy_logits = model(pixel_values=noisy, pixel_mask=pixel_mask, decoder_input_ids=ids.repeat(3, 1)).logits[1]
    torch.testing.assert_close(noisy_logits, batch_logits, rtol=0, atol=1e-6)
    generated = model.generate(pixel_values=pixel_values, pixel_mask=pixel_mask, max_length=10, num_beams=3)
    assert torch.equal(
        generated[1:2], model.generate(pixel_values=alone, max_length=10, num_beams=3)[:, : generated.shape[1]]
    )


def test_labels_must_start_with_bos_and_loss_ignores_padding(model, studies):
    pixel_values, pixel_mask = studies
    with pytest.raises(ValueError, match="BOS"):
        model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=torch.tensor([[5, 6, 2]] * 3))
    labels = torch.tensor([[1, 5, 6, 2, -100]] * 3)
    out = model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
    manual = torch.nn.functional.cross_entropy(out.logits[:, :3].reshape(-1, 40), labels[:, 1:4].reshape(-1))
    torch.testing.assert_close(out.loss, manual)


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="32x32"):
        model(pixel_values=torch.zeros(1, 1, 3, 64, 64), decoder_input_ids=torch.tensor([[1]]))
    with pytest.raises(ValueError, match="num_views=2"):
        model(pixel_values=torch.zeros(1, 3, 3, 32, 32), decoder_input_ids=torch.tensor([[1]]))
    with pytest.raises(ValueError, match="at least one real view"):
        model(
            pixel_values=torch.zeros(1, 2, 3, 32, 32),
            pixel_mask=torch.zeros(1, 2),
            decoder_input_ids=torch.tensor([[1]]),
        )


def test_presets_build_the_paper_geometry():
    config = CmcrlConfig.from_preset("iu-xray", vocab_size=4350)
    assert (config.encoder_layers, config.decoder_layers, config.num_views, config.grid_size) == (3, 3, 2, 14)
    assert config.backbone_config.depths == [3, 4, 23] and config.backbone_config.out_features == ["stage3"]
    mimic = CmcrlConfig.from_preset("mimic-cxr")
    assert (mimic.encoder_layers, mimic.num_views, mimic.max_report_length) == (6, 1, 80)
    with pytest.raises(ValueError, match="preset"):
        CmcrlConfig.from_preset("chexpert")
    with pytest.raises(ValueError, match="local_top_k"):
        CmcrlConfig.from_preset("tiny", local_top_k=17)


def test_paper_presets_decode_as_the_reference_with_trigram_blocking_and_summed_scores(studies, tmp_path):
    for name in ("iu-xray", "mimic-cxr"):
        config = CmcrlConfig.from_preset(name)
        assert (config.generation_num_beams, config.generation_no_repeat_ngram_size) == (3, 3)
        assert config.generation_length_penalty == 0.0
    assert tiny_config().generation_no_repeat_ngram_size == 0 and tiny_config().generation_length_penalty == 1.0
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(
        tiny_config(generation_no_repeat_ngram_size=3, generation_length_penalty=0.0)
    ).eval()
    generation = model.generation_config
    assert (generation.num_beams, generation.no_repeat_ngram_size, generation.length_penalty) == (3, 3, 0.0)
    model.save_pretrained(tmp_path)
    assert CmcrlForConditionalGeneration.from_pretrained(tmp_path).generation_config.no_repeat_ngram_size == 3
    with torch.no_grad():  # an untrained model repeats itself: the blocking must show
        model.lm_head.bias[5] = 50.0
        generated = model.generate(pixel_values=studies[0], pixel_mask=studies[1], max_length=16)
    for row in generated.tolist():
        trigrams = [
            tuple(row[i : i + 3]) for i in range(len(row) - 2) if model.config.pad_token_id not in row[i : i + 3]
        ]
        assert len(trigrams) == len(set(trigrams))


@pytest.mark.parametrize("layout", ["ResNetBackbone", "ResNetModel", "ResNetForImageClassification"])
def test_backbone_loads_from_a_local_checkpoint_into_every_cmcrl_model(layout, tmp_path):
    import transformers

    config = tiny_config()
    # A deeper checkpoint than the config's backbone, as microsoft/resnet-101 has stage 4 beyond C4.
    deeper = dict(embedding_size=8, hidden_sizes=[16, 32, 48], depths=[1, 1, 1], layer_type="basic")
    torch.manual_seed(5)
    saved = getattr(transformers, layout)(transformers.ResNetConfig(**deeper))
    saved.save_pretrained(tmp_path)
    state = saved.state_dict()
    prefix = "resnet." if layout == "ResNetForImageClassification" else ""
    for model in (CmcrlForConditionalGeneration(config), CmcrlForPreTraining(config)):
        names = model.load_backbone_weights(tmp_path)
        loaded = model.encoder.embeddings.backbone.state_dict()
        assert names == list(loaded) and any("stages.1" in name for name in names)
        assert all(torch.equal(tensor, state[prefix + name]) for name, tensor in loaded.items())
    narrow = transformers.ResNetBackbone(transformers.ResNetConfig(**{**deeper, "embedding_size": 4}))
    narrow.save_pretrained(tmp_path / "narrow")
    with pytest.raises(ValueError, match="shape"):
        CmcrlForConditionalGeneration(config).load_backbone_weights(tmp_path / "narrow")


def test_frozen_backbone_stays_as_loaded_through_training_and_reloading(studies, tmp_path):
    labels = torch.tensor([[1, 5, 6, 2]] * 3)

    def train_step(model):
        model.train()
        backbone = model.encoder.embeddings.backbone
        assert not backbone.training and model.encoder.training  # BatchNorm keeps its running statistics
        before = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
        # All parameters, as a plain optimizer would take them: the backbone must get no gradient.
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model(pixel_values=studies[0], pixel_mask=studies[1], labels=labels).loss.backward()
        optimizer.step()
        assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
        assert all(torch.equal(before[name], tensor) for name, tensor in backbone.state_dict().items())
        assert model.lm_head.weight.grad is not None

    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(tiny_config(freeze_backbone=True))
    train_step(model)
    model.save_pretrained(tmp_path)
    train_step(CmcrlForConditionalGeneration.from_pretrained(tmp_path))


@pytest.mark.parametrize("model_class", [CmcrlForConditionalGeneration, CmcrlForPreTraining])
def test_gradient_checkpointing_gives_the_same_loss_gradients_and_batch_norm_statistics(model_class, studies):
    torch.manual_seed(0)
    plain = model_class(tiny_config()).train()
    checkpointed = copy.deepcopy(plain)
    enable_checkpointing(checkpointed)
    assert checkpointed.encoder.embeddings.gradient_checkpointing
    assert all(layer.gradient_checkpointing for layer in [*checkpointed.encoder.layers, *checkpointed.decoder.layers])
    assert len(checkpointed.encoder.embeddings._checkpoint_segments()) > 1  # the ResNet stem and stages one by one
    pixel_values, pixel_mask = studies
    if model_class is CmcrlForPreTraining:
        ids = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 9, 10, 11, 2, 0], [1, 12, 13, 14, 15, 2]])
        inputs = {"pixel_values": pixel_values[:, 0], "input_ids": ids, "task": "vt2t"}
    else:
        inputs = {
            "pixel_values": pixel_values,
            "pixel_mask": pixel_mask,
            "labels": torch.tensor([[1, 5, 6, 7, 2]] * 3),
        }
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(3)  # the same dropout masks and text cuts; the replay must reproduce them
        losses.append(model(**inputs).loss)
        losses[-1].backward()
    torch.testing.assert_close(losses[1], losses[0])
    checked = 0
    for (name, expected), (_, parameter) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if expected.grad is not None:
            torch.testing.assert_close(parameter.grad, expected.grad, msg=name)
            checked += 1
    assert checked > 50
    # The backward replay of the backbone must not update its batch-norm running statistics a second time.
    for (name, expected), (_, buffer) in zip(plain.named_buffers(), checkpointed.named_buffers()):
        torch.testing.assert_close(buffer, expected, msg=name)
