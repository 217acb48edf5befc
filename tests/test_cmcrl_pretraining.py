"""RadCARE (CmcrlForPreTraining): the four tasks, masking, experts, EOS target, determinism, transfer to VLCI."""

import pytest
import torch
import torch.nn.functional as F

from cxrgen.modeling.cmcrl import PRETRAINING_TASKS, CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)

IDS = torch.tensor([[1, 5, 6, 7, 8, 2, 0], [1, 9, 10, 2, 0, 0, 0]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CmcrlForPreTraining(CmcrlConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def noise():
    return torch.rand(2, 16, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("task", PRETRAINING_TASKS)
def test_each_task_shapes_loss_and_determinism(model, images, task):
    kwargs = dict(
        pixel_values=images, input_ids=IDS, task=task, prefix_lengths=torch.tensor([2, 1]), mask_noise=noise()
    )
    out, again = model(**kwargs), model(**kwargs)
    assert torch.isfinite(out.loss) and out.loss > 0
    assert PRETRAINING_TASKS[int(out.task_index)] == task
    if task in ("vt2t", "t2t"):
        assert out.logits.shape == (2, 4, 40) and out.text_loss is out.loss and out.pred_patches is None
        assert torch.equal(out.logits, again.logits)
    else:
        assert out.pred_patches.shape == out.target_patches.shape == (2, 16, 3 * 8 * 8)
        assert out.mim_mask.sum(1).tolist() == [14, 14]  # 85 % of 16 hidden: int(16 * 0.15) = 2 kept
        assert torch.equal(out.pred_patches, again.pred_patches)


def test_text_split_keeps_eos_as_a_target(model, images):
    out = model(pixel_values=images, input_ids=IDS, task="vt2t", prefix_lengths=torch.tensor([2, 1]))
    assert out.text_labels.tolist() == [[6, 7, 8, 2], [9, 10, 2, -100]]
    with pytest.raises(ValueError, match="prefix_lengths"):
        model(pixel_values=images, input_ids=IDS, task="vt2t", prefix_lengths=torch.tensor([5, 1]))
    with pytest.raises(ValueError, match=r"\[EOS\]"):
        model(input_ids=torch.tensor([[1, 5, 6, 0]]), task="t2t")


def test_random_cut_keeps_one_prefix_word_and_two_postfix_words(model):
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 2], [1, 5, 6, 7, 2, 0, 0], [1, 5, 6, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0, 0]])
    seen = [set() for _ in ids]
    torch.manual_seed(0)
    for _ in range(60):
        prefix, prefix_mask, _, labels = model._split_text(ids, None, None)
        for row, (kept, targets) in enumerate(zip(prefix_mask.sum(1).tolist(), (labels >= 0).sum(1).tolist())):
            seen[row].add((kept - 1, targets - 1))  # (prefix words, postfix words), without [BOS] and [EOS]
    assert seen == [{(1, 4), (2, 3), (3, 2)}, {(1, 2)}, {(1, 1)}, {(0, 1)}]


def test_masked_patch_loss_counts_only_hidden_patches(model, images):
    out = model(pixel_values=images, task="v2v", mask_noise=noise())
    pred = out.pred_patches.detach().requires_grad_(True)
    loss = ((pred - out.target_patches) ** 2).mean(-1).mul(out.mim_mask).sum() / out.mim_mask.sum()
    torch.testing.assert_close(loss, out.image_loss)
    (grad,) = torch.autograd.grad(out.image_loss, out.pred_patches)
    assert grad[out.mim_mask == 0].abs().max() == 0
    assert (grad[out.mim_mask == 1].abs().sum(-1) > 0).all()


def test_targets_are_full_resolution_patches_of_the_undegraded_image(model, images):
    out = model(pixel_values=images, task="v2v", mask_noise=noise())
    torch.testing.assert_close(out.target_patches[:, 0], images[:, :, :8, :8].permute(0, 2, 3, 1).reshape(2, -1))
    reference = F.interpolate(F.max_pool2d(images, 3, stride=2, padding=1), scale_factor=2, mode="nearest")
    torch.testing.assert_close(model.degrade(images), reference)
    bilinear = CmcrlForPreTraining(CmcrlConfig.from_preset("tiny", degradation="bilinear", degradation_factor=4))
    assert bilinear.degrade(images).shape == images.shape
    assert not torch.allclose(bilinear.degrade(images), images)


def test_text_tokens_never_go_through_the_vision_expert(model, images):
    seen = {"vision": [], "text": []}
    hooks = []
    for layer in model.encoder.layers:
        hooks.append(layer.ffn.register_forward_hook(lambda m, args, out: seen["vision"].append(args[0].shape[1])))
        hooks.append(layer.text_ffn.register_forward_hook(lambda m, args, out: seen["text"].append(args[0].shape[1])))
    model(pixel_values=images, input_ids=IDS, task="vt2v", mask_noise=noise())
    assert seen == {"vision": [1 + 2] * 2, "text": [IDS.shape[1]] * 2}
    seen["vision"].clear(), seen["text"].clear()
    model(pixel_values=images, input_ids=IDS, task="t2t", prefix_lengths=torch.tensor([2, 1]))
    assert seen == {"vision": [], "text": [2, 2]}
    seen["text"].clear()
    model(pixel_values=images, task="v2v", mask_noise=noise())
    for hook in hooks:
        hook.remove()
    assert seen == {"vision": [3, 3], "text": []}


def test_task_sampling_follows_probabilities_and_inputs(images):
    model = CmcrlForPreTraining(CmcrlConfig.from_preset("tiny", pretraining_task_probs=[0, 0, 1, 0]))
    assert PRETRAINING_TASKS[int(model(pixel_values=images, input_ids=IDS).task_index)] == "v2v"
    with pytest.raises(ValueError, match="probability"):
        model(input_ids=IDS)  # the only task allowed, t2t, has probability 0
    text_only = CmcrlForPreTraining(CmcrlConfig.from_preset("tiny"))
    assert PRETRAINING_TASKS[int(text_only(input_ids=IDS).task_index)] == "t2t"


def test_loss_falls_when_training(images):
    torch.manual_seed(0)
    model = CmcrlForPreTraining(CmcrlConfig.from_preset("tiny", dropout=0.0, attention_dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = {}
    for _ in range(12):
        for task in ("vt2t", "v2v"):
            loss = model(
                pixel_values=images, input_ids=IDS, task=task, prefix_lengths=torch.tensor([2, 1]), mask_noise=noise()
            ).loss
            first.setdefault(task, loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # memorising white-noise pixels is slower than memorising two reports
    for task, factor in (("vt2t", 0.5), ("v2v", 0.85)):
        last = model(
            pixel_values=images, input_ids=IDS, task=task, prefix_lengths=torch.tensor([2, 1]), mask_noise=noise()
        ).loss
        assert last.item() < factor * first[task]


def test_vlci_from_pretraining_copies_vision_expert_and_text_path(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = CmcrlConfig.from_preset("tiny", decoder_layers=3)
    vlci, report = CmcrlForConditionalGeneration.from_pretraining(tmp_path, config=config)
    fresh_prefixes = (
        "encoder.local_sampler.",
        "encoder.global_sampler.",
        "encoder.mediator_fusion.",
        "decoder.ldm.",
        "decoder.layers.2.",
    )
    assert report.fresh and all(name.startswith(fresh_prefixes) for name in report.fresh)
    assert set(report.copied) | set(report.fresh) == set(vlci.state_dict())
    for prefix in (
        "encoder.embeddings.backbone.",
        "encoder.layers.1.self_attn.",
        "encoder.layers.1.ffn.",
        "decoder.layers.1.encoder_attn.",
        "decoder.layers.0.ffn.",
        "decoder.embeddings.word_embeddings.",
        "lm_head.",
    ):
        assert any(name.startswith(prefix) for name in report.copied), prefix
    unused_prefixes = (
        "encoder.layers.0.text_",
        "encoder.layers.1.text_",
        "decoder.layers.0.image_",
        "decoder.layers.1.image_",
        "decoder.mask_token",
        "decoder.image_layer_norm.",
        "patch_head.",
    )
    assert report.unused and all(name.startswith(unused_prefixes) for name in report.unused)
    source, target = model.state_dict(), vlci.state_dict()
    assert all(torch.equal(source[name], target[name]) for name in report.copied)
    with pytest.raises(ValueError, match="vocab_size"):
        CmcrlForConditionalGeneration.from_pretraining(model, config=CmcrlConfig.from_preset("tiny", vocab_size=50))


def test_deeper_vlci_names_the_layers_that_start_fresh():
    """The reference pre-trains 3+3 layers and fine-tunes 6+6 on MIMIC-CXR; here 2+2 -> 4+4, one view -> two."""
    torch.manual_seed(0)
    radcare = CmcrlForPreTraining(CmcrlConfig.from_preset("tiny", num_views=1))
    config = CmcrlConfig.from_preset("tiny", encoder_layers=4, decoder_layers=4, num_views=2)
    vlci, report = CmcrlForConditionalGeneration.from_pretraining(radcare, config=config)
    assert report.fresh_layers == ["encoder.layers.2", "encoder.layers.3", "decoder.layers.2", "decoder.layers.3"]
    assert "layers beyond the pre-trained depth start fresh: encoder.layers.2" in report.summary()
    for layer in report.fresh_layers:
        names = [name for name in vlci.state_dict() if name.startswith(layer + ".")]
        assert names and set(names) <= set(report.fresh)
    source, target = radcare.state_dict(), vlci.state_dict()
    for name in ("encoder.layers.1.ffn.fc1.weight", "decoder.layers.1.encoder_attn.q_proj.weight"):
        assert name in report.copied and torch.equal(source[name], target[name])
    views = "encoder.embeddings.view_embeddings.weight"
    assert views in report.partial and torch.equal(target[views][:1], source[views])
    assert not torch.equal(target[views][1], source[views][0])
    _, report = CmcrlForConditionalGeneration.from_pretraining(
        radcare, config=CmcrlConfig.from_preset("tiny", encoder_layers=1, num_views=1)
    )
    assert not report.fresh_layers and any(name.startswith("encoder.layers.1.") for name in report.unused)


def test_one_view_vlci_from_a_two_view_radcare_copies_the_first_view_row():
    """The reference pre-trains on IU-Xray (two views) and MIMIC-CXR together, then fine-tunes one-view MIMIC-CXR."""
    torch.manual_seed(0)
    radcare = CmcrlForPreTraining(CmcrlConfig.from_preset("tiny", num_views=2))
    vlci, report = CmcrlForConditionalGeneration.from_pretraining(
        radcare, config=CmcrlConfig.from_preset("tiny", num_views=1)
    )
    views = "encoder.embeddings.view_embeddings.weight"
    assert report.partial[views] == "rows 0-0 of RadCARE's 2 copied" and views in report.copied
    torch.testing.assert_close(vlci.state_dict()[views], radcare.state_dict()[views][:1], rtol=0, atol=0)
