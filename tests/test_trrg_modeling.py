"""TRRG stage 2: layout, losses, clue masking, placeholders, generation, save/load, overfitting."""

import pytest
import torch
from test_trrg_common import CLUE_ID, IMAGE_ID, pixels, prompt_ids, trrg_config

from cxrgen.compat import enable_checkpointing
from cxrgen.modeling.trrg.modeling_trrg import CACHE_FIELD, TrrgForConditionalGeneration

pytestmark = pytest.mark.transformers_compat

ARCHS = ["llama", "qwen2", "gpt2"]
TEXT = [10, 11, 12, 13, 14]


def make_model(arch="llama", seed=0, **overrides):
    torch.manual_seed(seed)
    return TrrgForConditionalGeneration(trrg_config(arch, **overrides)).eval()


def fixed_probabilities(model, monkeypatch, probs):
    """Make the zero-shot head return the given (B, 14) probabilities, to steer clue selection."""
    logits = torch.logit(torch.as_tensor(probs, dtype=torch.float32))
    monkeypatch.setattr(model.model.zero_shot_head, "forward", lambda glob, mask: logits[: glob.shape[0]])


def test_standard_vlm_layout():
    model = make_model()
    assert model.base_model is model.model
    assert model.get_output_embeddings() is model.lm_head
    assert model.get_input_embeddings() is model.model.language_model.get_input_embeddings()
    buffers = dict(model.named_buffers())
    assert buffers["model.zero_shot_head.prompt_embeds"].shape == (14, 2, 16)
    assert "model.zero_shot_head.prompt_embeds" in model.state_dict()
    assert not any(p.requires_grad for p in model.model.zero_shot_head.parameters())
    assert set(model.generation_config.suppress_tokens) >= {IMAGE_ID, CLUE_ID}


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_with_and_without_cache_is_identical(arch):
    model = make_model(arch)
    ids = prompt_ids(model.config, TEXT, batch=2)
    pv, pm = pixels(2), torch.tensor([[1, 1], [1, 0]])
    common = dict(input_ids=ids, pixel_values=pv, pixel_mask=pm, attention_mask=torch.ones_like(ids), max_new_tokens=6)
    for extra in ({"do_sample": False}, {"do_sample": False, "num_beams": 2}):
        cached = model.generate(**common, **extra, use_cache=True)
        uncached = model.generate(**common, **extra, use_cache=False)
        assert torch.equal(cached, uncached)
    new_tokens = cached[:, ids.shape[1] :]
    assert not torch.isin(new_tokens, torch.tensor([IMAGE_ID, CLUE_ID])).any()


def test_a_decoding_step_continues_the_prefill_and_carries_no_perception():
    model = make_model()
    ids = prompt_ids(model.config, TEXT)
    with torch.no_grad():
        prefill = model(input_ids=ids[:, :-1], pixel_values=pixels(), use_cache=True)
        # The cache goes in under its pre-5.24 name, which the forward takes on every release.
        step = model(input_ids=ids[:, -1:], use_cache=True, past_key_values=getattr(prefill, CACHE_FIELD))
        whole = model(input_ids=ids, pixel_values=pixels())
    assert prefill.disease_probs is not None and prefill.clue_mask is not None
    fields = ("disease_probs", "disease_logits", "clue_ids", "clue_polarity", "clue_mask")
    assert all(getattr(step, name) is None for name in fields)
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1])


@pytest.mark.parametrize("arch", ARCHS)
def test_future_tokens_never_change_earlier_logits(arch):
    model = make_model(arch)
    ids = prompt_ids(model.config, TEXT)
    changed = ids.clone()
    changed[0, -2:] = torch.tensor([20, 21])
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=pixels()).logits
        b = model(input_ids=changed, pixel_values=pixels()).logits
    cut = ids.shape[1] - 2
    torch.testing.assert_close(a[:, :cut], b[:, :cut])
    assert not torch.allclose(a[:, cut:], b[:, cut:])


def test_left_padding_matches_unpadded_generation():
    model = make_model()
    ids = prompt_ids(model.config, TEXT)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    plain = model.generate(input_ids=ids, pixel_values=pixels(), attention_mask=torch.ones_like(ids), max_new_tokens=5)
    left = model.generate(input_ids=padded, pixel_values=pixels(), attention_mask=mask, max_new_tokens=5)
    assert torch.equal(plain[:, ids.shape[1] :], left[:, padded.shape[1] :])


@pytest.mark.parametrize("selection", ["threshold", "all", "topk", "none"])
def test_zero_all_and_mixed_clue_counts_in_one_batch(selection, monkeypatch):
    model = make_model(clue_selection=selection, clue_top_k=5, clue_threshold=0.5)
    probs = torch.full((3, 14), 0.1)
    probs[1] = 0.9
    probs[2, [2, 5, 9]] = torch.tensor([0.7, 0.95, 0.6])
    fixed_probabilities(model, monkeypatch, probs)
    ids = prompt_ids(model.config, TEXT, batch=3)
    pv = pixels(3)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pv)
        perception = model.get_image_features(pv)
    slots = model.config.num_clue_tokens
    expected = {"threshold": [0, 14, 3], "all": [14, 14, 14], "topk": [5, 5, 5], "none": [0, 0, 0]}[selection]
    assert out.clue_mask.sum(1).tolist() == expected
    assert out.clue_ids.shape == (3, slots) and torch.isfinite(out.logits).all()
    if selection in ("threshold", "topk"):
        # most probable first: the mixed study's clues are Edema, Cardiomegaly, Pneumothorax
        assert out.clue_ids[2, :3].tolist() == [5, 2, 9]
    null = model.model.clue_injector.null_clue
    unused = ~perception.clue_mask
    assert torch.equal(perception.clue_embeds[unused], null.expand(int(unused.sum()), -1))
    with torch.no_grad():  # masking keeps studies independent: each row equals a batch of one
        for row in range(3):
            fixed_probabilities(model, monkeypatch, probs[row : row + 1])
            single = model(input_ids=ids[row : row + 1], pixel_values=pv[row : row + 1]).logits
            torch.testing.assert_close(single, out.logits[row : row + 1], atol=1e-5, rtol=1e-4)
    fixed_probabilities(model, monkeypatch, probs)
    findings = model.structured_findings(pv)
    assert len(findings[0]["clues"]) == expected[0]
    if selection == "threshold":
        assert [c["observation"] for c in findings[2]["clues"]] == ["Edema", "Cardiomegaly", "Pneumothorax"]
        assert all(c["polarity"] == "positive" for c in findings[2]["clues"])
    assert findings[1]["probabilities"]["Edema"] == pytest.approx(0.9)


def test_clue_probabilities_replace_the_zero_shot_head_in_forward_and_generate(monkeypatch):
    model = make_model(clue_selection="threshold", clue_threshold=0.5)
    own = torch.full((2, 14), 0.1)
    swapped = torch.full((2, 14), 0.1)
    swapped[:, [2, 9]] = 0.9
    fixed_probabilities(model, monkeypatch, own)
    ids = prompt_ids(model.config, TEXT, batch=2)
    pv = pixels(2)
    with torch.no_grad():
        plain = model(input_ids=ids, pixel_values=pv)
        given = model(input_ids=ids, pixel_values=pv, clue_probabilities=swapped)
    assert plain.clue_mask.sum().item() == 0 and given.clue_mask.sum(1).tolist() == [2, 2]
    torch.testing.assert_close(given.disease_probs, swapped)
    assert not torch.allclose(plain.logits, given.logits)
    # the swapped-in clues give what the zero-shot head gives when it sees those probabilities itself
    fixed_probabilities(model, monkeypatch, swapped)
    with torch.no_grad():
        steered = model(input_ids=ids, pixel_values=pv)
    torch.testing.assert_close(steered.logits, given.logits)
    kwargs = {"input_ids": ids, "pixel_values": pv, "attention_mask": torch.ones_like(ids), "max_new_tokens": 6}
    for num_beams in (1, 2):  # every study's rows are alike, so the stub serves the beam-expanded batch as well
        fixed_probabilities(model, monkeypatch, swapped.repeat(num_beams, 1))
        expected = model.generate(**kwargs, num_beams=num_beams)
        fixed_probabilities(model, monkeypatch, own.repeat(num_beams, 1))
        assert torch.equal(model.generate(**kwargs, num_beams=num_beams, clue_probabilities=swapped), expected)
    with pytest.raises(ValueError, match=r"clue_probabilities must have shape \(2, 14\)"):
        model(input_ids=ids, pixel_values=pv, clue_probabilities=swapped[:, :3])


def test_label_clues_replace_the_zero_shot_clues_in_training_only(monkeypatch):
    model = make_model(clue_selection="threshold", clue_threshold=0.5, label_clue_rate=1.0)
    fixed_probabilities(model, monkeypatch, torch.full((2, 14), 0.1))
    codes = torch.full((2, 14), 2)  # negative everywhere ...
    codes[0, [2, 9]] = 1  # ... but Cardiomegaly and Pneumothorax positive in study 0
    codes[1, 5] = 3  # and Edema uncertain in study 1 (not a positive clue)
    ids = prompt_ids(model.config, TEXT, batch=2)
    batch = {"input_ids": ids, "pixel_values": pixels(2), "labels": ids, "disease_labels": codes}
    positives = (codes == 1).float()
    with torch.no_grad():
        evaluated = model(**batch)
        model.train()
        torch.manual_seed(0)
        trained = model(**batch)
        torch.manual_seed(0)  # the same vision-tower drop-path draws
        steered = model(input_ids=ids, pixel_values=batch["pixel_values"], clue_probabilities=positives)
    assert evaluated.clue_mask.sum().item() == 0  # eval: the zero-shot head's clues, whatever the labels
    assert trained.clue_mask.sum(1).tolist() == [2, 0]
    assert trained.clue_ids[0, :2].tolist() == [2, 9]
    torch.testing.assert_close(trained.disease_probs, positives)
    torch.testing.assert_close(trained.logits, steered.logits)  # the label clues act as given probabilities would

    model = make_model(label_clue_rate=0.5).train()
    fixed_probabilities(model, monkeypatch, torch.full((400, 14), 0.1))
    taken = model.model.get_image_features(pixels(400), label_clue_targets=torch.ones(400, 14)).clue_mask.any(1)
    assert 140 < int(taken.sum()) < 260  # about half of the studies take the label clues
    with pytest.raises(ValueError, match=r"label_clue_rate must lie in \[0, 1\]"):
        trrg_config("llama", label_clue_rate=1.5)


def test_placeholder_count_mismatch_raises():
    model = make_model()
    ids = prompt_ids(model.config, TEXT)
    too_few_images = torch.cat([ids[:, :1], ids[:, 2:]], dim=1)
    with pytest.raises(ValueError, match=r"exactly 4 <image> placeholder tokens .* found \[3\]"):
        model(input_ids=too_few_images, pixel_values=pixels())
    extra_clue = torch.cat([ids, torch.tensor([[CLUE_ID]])], dim=1)
    with pytest.raises(ValueError, match=r"exactly 14 <clue> placeholder tokens .* found \[15\]"):
        model(input_ids=extra_clue, pixel_values=pixels())
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="no real view"):
        model(input_ids=ids, pixel_values=pixels(), pixel_mask=torch.tensor([[0, 0]]))


@pytest.mark.parametrize("fusion", ["concat", "mean"])
def test_padded_view_equals_single_view(fusion):
    model = make_model(multi_view_fusion=fusion)
    ids = prompt_ids(model.config, TEXT)
    two = pixels(1, views=2)
    with torch.no_grad():
        single = model(input_ids=ids, pixel_values=two[:, :1]).logits
        padded = model(input_ids=ids, pixel_values=two, pixel_mask=torch.tensor([[1, 0]])).logits
        both = model(input_ids=ids, pixel_values=two).logits
    torch.testing.assert_close(single, padded)
    assert not torch.allclose(single, both)


def test_zero_shot_probabilities_follow_the_real_views():
    model = make_model()
    views = pixels(3)
    with torch.no_grad():
        probs = model.get_image_features(views, torch.tensor([[1, 1], [1, 0], [0, 1]])).disease_probs
        first_view_only = model.get_image_features(views[1:2, :1]).disease_probs
        swapped = model.get_image_features(views.flip(0)).disease_probs
    assert probs.shape == (3, 14)
    torch.testing.assert_close(probs[1:2], first_view_only)  # the padded view is not read
    assert not torch.allclose(probs[0], probs[2])  # other images, other probabilities
    torch.testing.assert_close(swapped[2], model.get_image_features(views[:1]).disease_probs[0])


def test_disease_consistency_loss_is_added_with_its_weight():
    model = make_model(disease_loss_weight=0.5)
    ids = prompt_ids(model.config, TEXT, batch=2)
    labels = ids.masked_fill((ids == IMAGE_ID) | (ids == CLUE_ID), -100)
    codes = torch.zeros(2, 14, dtype=torch.long)
    codes[0, 2] = 1
    out = model(input_ids=ids, pixel_values=pixels(2), labels=labels, disease_labels=codes)
    torch.testing.assert_close(out.loss, out.lm_loss + 0.5 * out.disease_loss)
    targets = torch.zeros(2, 14)
    targets[0, 2] = 1.0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.disease_logits, targets)
    torch.testing.assert_close(out.disease_loss, expected)
    out.loss.backward()
    assert model.model.disease_head.weight.grad.abs().sum() > 0
    assert model.model.clue_injector.fc1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="four-way codes"):
        model(input_ids=ids, pixel_values=pixels(2), disease_labels=codes + 4)


def test_save_and_load_give_identical_outputs(tmp_path):
    model = make_model("gpt2")
    with torch.no_grad():
        model.model.zero_shot_head.prompt_embeds.mul_(-1)  # a buffer value init would not reproduce
    ids = prompt_ids(model.config, TEXT)
    model.save_pretrained(tmp_path)
    loaded = TrrgForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.model.zero_shot_head.prompt_embeds, model.model.zero_shot_head.prompt_embeds)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, pixel_values=pixels()).logits, model(input_ids=ids, pixel_values=pixels()).logits
        )
    kwargs = dict(input_ids=ids, pixel_values=pixels(), attention_mask=torch.ones_like(ids), max_new_tokens=6)
    assert torch.equal(loaded.generate(**kwargs), model.generate(**kwargs))
    assert set(loaded.generation_config.suppress_tokens) >= {IMAGE_ID, CLUE_ID}


@pytest.mark.parametrize("arch", ARCHS)
def test_overfits_one_report_and_generates_it_back(arch):
    model = make_model(arch, seed=1)
    report = [10, 11, 12, 13, 14, 15, 16, 2]  # ends with </s>
    prompt = prompt_ids(model.config, [30, 31])
    ids = torch.cat([prompt, torch.tensor([report])], dim=1)
    labels = ids.clone()
    labels[:, : prompt.shape[1]] = -100
    pv = pixels()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(50):
        loss = model(input_ids=ids, pixel_values=pv, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < 0.1 * losses[0]
    generated = model.generate(
        input_ids=prompt, pixel_values=pv, attention_mask=torch.ones_like(prompt), max_new_tokens=12
    )
    assert generated[0, prompt.shape[1] :].tolist() == report


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = make_model("qwen2")
    model.train()
    ids = prompt_ids(model.config, TEXT, batch=2)
    labels = ids.masked_fill((ids == IMAGE_ID) | (ids == CLUE_ID), -100)
    plain = model(input_ids=ids, pixel_values=pixels(2), labels=labels).loss
    plain.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    enable_checkpointing(model)
    assert model.model.language_model.gradient_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.model.interaction.layers)
    checkpointed = model(input_ids=ids, pixel_values=pixels(2), labels=labels).loss
    checkpointed.backward()
    torch.testing.assert_close(checkpointed, plain)
    assert any(".interaction.layers." in name for name in expected)
    for name, parameter in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(parameter.grad, expected[name], msg=name)


def test_zero_shot_head_stays_frozen_after_reloading(tmp_path):
    model = make_model()
    assert model.config.freeze_zero_shot_head
    model.save_pretrained(tmp_path)
    reloaded = TrrgForConditionalGeneration.from_pretrained(tmp_path)
    for candidate in (model, reloaded, reloaded.train()):
        head = candidate.model.zero_shot_head
        assert not any(p.requires_grad for p in head.parameters())
        assert any(p.requires_grad for p in candidate.model.projector.parameters())


def train_one_step(tmp_path, data, batch_size, accumulation):
    """One optimizer step of a plain HF Trainer (SGD, lr 1) from the same seed: the update and the logged loss."""
    from transformers import Trainer, TrainingArguments

    config = trrg_config(disease_loss_weight=1.0)
    config.vision_config.drop_path_rate = 0.0  # the two runs draw random numbers in different orders
    torch.manual_seed(0)
    model = TrrgForConditionalGeneration(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path / f"ga{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    update = {name: p.detach() - before[name] for name, p in model.named_parameters() if name in before}
    return update, trainer.state.log_history[0]["loss"]


def test_trainer_gradient_accumulation_scales_lm_and_disease_loss_alike(tmp_path):
    config = trrg_config()
    generator = torch.Generator().manual_seed(0)
    data = []
    for row in range(4):  # as many report tokens in every study: then 4 accumulated steps equal one batch of 4
        report = torch.randint(6, 40, (6,), generator=generator)
        ids = torch.cat([prompt_ids(config, [])[0], report])
        labels = ids.masked_fill(torch.arange(len(ids)) < len(ids) - len(report), -100)
        codes = torch.zeros(14, dtype=torch.long)
        codes[row + 1] = 1
        data.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "labels": labels,
                "pixel_values": pixels(1, seed=row)[0],
                "pixel_mask": torch.tensor([1, row % 2]),
                "disease_labels": codes,
            }
        )
    large_batch, large_loss = train_one_step(tmp_path, data, batch_size=4, accumulation=1)
    accumulated, accumulated_loss = train_one_step(tmp_path, data, batch_size=1, accumulation=4)
    assert accumulated_loss == pytest.approx(large_loss, rel=1e-5)
    assert large_batch["model.disease_head.weight"].abs().sum() > 0 and large_batch["lm_head.weight"].abs().sum() > 0
    for name, update in large_batch.items():
        torch.testing.assert_close(accumulated[name], update, rtol=1e-4, atol=1e-6, msg=name)


def test_explicit_num_items_in_batch_is_refused():
    model = make_model()
    ids = prompt_ids(model.config, TEXT)
    labels = ids.masked_fill((ids == IMAGE_ID) | (ids == CLUE_ID), -100)
    assert TrrgForConditionalGeneration.accepts_loss_kwargs is False
    with pytest.raises(ValueError, match="num_items_in_batch"):
        model(input_ids=ids, pixel_values=pixels(), labels=labels, num_items_in_batch=torch.tensor(5))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # input embeddings named embed_tokens / wte
def test_tie_word_embeddings_shares_one_tensor_after_init_and_reload(arch, tmp_path):
    untied = make_model(arch)
    assert untied.lm_head.weight is not untied.get_input_embeddings().weight
    model = make_model(arch, tie_word_embeddings=True)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    loaded = TrrgForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
    ids = prompt_ids(model.config, TEXT)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, pixel_values=pixels()).logits, model(input_ids=ids, pixel_values=pixels()).logits
        )


def test_image_features_and_placeholder_masks_follow_the_transformers_vlm_api():
    model = make_model()
    ids = prompt_ids(model.config, TEXT, batch=2)
    pv, pm = pixels(2), torch.tensor([[1, 1], [1, 0]])
    with torch.no_grad():
        features = model.get_image_features(pv, pm)
        assert features.image_embeds.shape == (2, 4, 32) and features.clue_embeds.shape == (2, 14, 32)
        embeds = model.get_input_embeddings()(ids)
        image_mask, clue_mask = model.get_placeholder_mask(ids, embeds, features)
        assert image_mask.shape == clue_mask.shape == (2, ids.shape[1], 1)
        assert torch.equal(image_mask[..., 0], ids == IMAGE_ID) and torch.equal(clue_mask[..., 0], ids == CLUE_ID)
        # without input_ids the placeholders are found by their embedding, as in llava
        by_embedding = model.get_placeholder_mask(None, embeds, features)
        assert all(torch.equal(a, b) for a, b in zip(by_embedding, (image_mask, clue_mask)))
        merged = model.scatter_image_features(ids, embeds, features)
        assert torch.equal(merged[image_mask[..., 0]], features.image_embeds.flatten(0, 1))
        from_ids = model(input_ids=ids, pixel_values=pv, pixel_mask=pm).logits
        from_embeds = model(inputs_embeds=embeds, pixel_values=pv, pixel_mask=pm).logits
        torch.testing.assert_close(from_embeds, from_ids)
        with pytest.raises(ValueError, match="image features of 1 studies for 2 sequences"):
            model.get_placeholder_mask(ids, embeds, model.get_image_features(pv[:1], pm[:1]))


def test_return_dict_false_gives_tuples():
    model = make_model()
    ids = prompt_ids(model.config, TEXT)
    labels = ids.masked_fill((ids == IMAGE_ID) | (ids == CLUE_ID), -100)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels(), labels=labels)
        as_tuple = model(input_ids=ids, pixel_values=pixels(), labels=labels, return_dict=False)
        backbone = model.model(input_ids=ids, pixel_values=pixels())
        backbone_tuple = model.model(input_ids=ids, pixel_values=pixels(), return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(backbone_tuple, tuple)
    assert len(as_tuple) == len(out.to_tuple())
    assert all(torch.equal(a, b) for a, b in zip(as_tuple, out.to_tuple()) if isinstance(a, torch.Tensor))
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(backbone_tuple[0], backbone.last_hidden_state)


def test_init_leaves_the_callers_config_untouched():
    config = trrg_config()
    before = config.to_dict()
    model = TrrgForConditionalGeneration(config)
    assert config.to_dict() == before
    assert getattr(config, "auto_map", None) is None and getattr(config, "custom_pipelines", None) is None
    assert model.config.auto_map["AutoModel"] == "modeling_trrg.TrrgForConditionalGeneration"
    assert "image-to-text" in model.config.custom_pipelines
