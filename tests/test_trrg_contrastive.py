"""TRRG stage 1: disease-aware contrastive pre-training, zero-shot perception, export into stage 2."""

import pytest
import torch
from test_trrg_common import (
    IMAGE_ID,
    build_tokenizer,
    contrastive_config,
    pixels,
    prompt_ids,
    text_config,
    vision_config,
)
from transformers import AutoModel, AutoModelForCausalLM

from cxrgen.modeling.trrg.modeling_trrg import (
    TrrgForConditionalGeneration,
    TrrgForContrastivePretraining,
    contrastive_soft_targets,
    sample_report_sentences,
    soft_contrastive_loss,
)

pytestmark = pytest.mark.transformers_compat

SENTENCES = ["mild cardiomegaly .", "no pleural effusion .", "lungs are clear .", "small left pleural effusion ."]


def make_model(seed=0):
    torch.manual_seed(seed)
    return TrrgForContrastivePretraining(contrastive_config())


def encode(tokenizer, sentences):
    return tokenizer(sentences, padding=True, return_tensors="pt")


def test_loss_is_symmetric_in_images_and_texts():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [5, 6], [7, 8]])  # rows 0 and 1 are the same sentence
    targets = contrastive_soft_targets(ids)
    assert torch.equal(targets > 0, targets.t() > 0)
    forward = soft_contrastive_loss(10 * images @ texts.t(), targets)
    swapped = soft_contrastive_loss(10 * texts @ images.t(), targets)
    torch.testing.assert_close(forward, swapped)


def test_soft_targets_group_identical_sentences_and_shared_findings():
    ids = torch.tensor([[5, 6, 0], [5, 6, 0], [7, 8, 9], [10, 11, 0]])
    mask = (ids != 0).long()
    labels = torch.zeros(4, 14, dtype=torch.long)
    labels[2, 2] = labels[3, 2] = 1  # same positive cardiomegaly mention
    targets = contrastive_soft_targets(ids, mask, labels)
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    torch.testing.assert_close(targets, expected)
    # sentences with no mention at all are not "the same findings"
    torch.testing.assert_close(contrastive_soft_targets(ids[2:], mask[2:], torch.zeros(2, 14)), torch.eye(2))


def test_sampling_favours_sentences_with_findings():
    codes = [[0] * 14 for _ in range(4)]
    codes[0][2] = 1  # cardiomegaly positive
    codes[1][10] = 2  # pleural effusion negative: not a finding
    codes[3][10] = 3  # uncertain effusion
    generator = torch.Generator().manual_seed(0)
    draws = [sample_report_sentences(SENTENCES, codes, 8.0, generator=generator)[0] for _ in range(600)]
    counts = [draws.count(i) for i in range(4)]
    assert counts[0] > 3 * counts[1] and counts[3] > 3 * counts[2]
    assert sorted(sample_report_sentences(SENTENCES, codes, 8.0, num_samples=4)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="label rows"):
        sample_report_sentences(SENTENCES, codes[:2], 8.0)


def test_contrastive_loss_falls_on_a_toy_set():
    model = make_model()
    tokenizer = build_tokenizer()
    batch = encode(tokenizer, SENTENCES)
    pv = pixels(4, views=2, seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    pixel_mask = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 1]])
    for _ in range(25):
        loss = model(pixel_values=pv, pixel_mask=pixel_mask, **batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        logits = model(pixel_values=pv, pixel_mask=pixel_mask, **batch)
    assert torch.equal(logits.logits_per_image.argmax(-1), torch.arange(4))
    model.eval()  # dropout off, so that the two calls below see the same network
    with torch.no_grad():
        as_output = model(pixel_values=pv, pixel_mask=pixel_mask, **batch)
        as_tuple = model(pixel_values=pv, pixel_mask=pixel_mask, **batch, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_output.to_tuple())
    assert all(torch.equal(a, b) for a, b in zip(as_tuple, as_output.to_tuple()))


def test_zero_shot_probabilities_for_images_and_studies():
    model = make_model().eval()
    tokenizer = build_tokenizer()
    prompts = model.encode_disease_prompts(tokenizer)
    assert prompts.shape == (14, 2, 16)
    torch.testing.assert_close(prompts.norm(dim=-1), torch.ones(14, 2))
    views, mask = pixels(3), torch.tensor([[1, 1], [1, 0], [0, 1]])
    with torch.no_grad():
        study = model.zero_shot(views, pixel_mask=mask, prompt_embeds=prompts)
        # p = softmax(scale * [cos(v, t+), cos(v, t-)])[0], with v the study embedding (see the module docstring)
        embeds = model.get_image_features(views, mask)
        cosines = torch.stack([embeds @ prompts[:, 0].T, embeds @ prompts[:, 1].T], dim=-1)
        expected = torch.softmax(model.logit_scale.exp() * cosines, dim=-1)[..., 0]
        # a study whose second view is padding reads only its first view; the tokenizer path embeds the same prompts
        single = model.zero_shot(views[1:2, 0], tokenizer=tokenizer)
    torch.testing.assert_close(study, expected)
    torch.testing.assert_close(single, study[1:2])


def test_prompt_embeds_group_the_flat_prompts_per_observation_and_polarity():
    model = make_model().eval()
    tokenizer = build_tokenizer()
    with torch.no_grad():
        grouped = []
        for positives, negatives in model.config.disease_prompts():
            pair = [
                torch.nn.functional.normalize(model.get_text_features(**encode(tokenizer, prompts)).mean(0), dim=-1)
                for prompts in (positives, negatives)
            ]
            grouped.append(torch.stack(pair))
    torch.testing.assert_close(model.encode_disease_prompts(tokenizer), torch.stack(grouped), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prompt sentences given"):
        model.prompt_embeds(torch.zeros(3, 16))


def prompt_loss_batch(model, tokenizer, codes, sentences=SENTENCES):
    prompts = tokenizer(model.config.flat_disease_prompts(), padding=True, return_tensors="pt")
    return {
        **encode(tokenizer, sentences),
        "prompt_input_ids": prompts["input_ids"],
        "prompt_attention_mask": prompts["attention_mask"],
        "disease_labels": codes,
    }


def test_prompt_loss_is_the_weighted_bce_of_the_zero_shot_logits():
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    weights = [float(1 + index % 3) for index in range(14)]
    config = contrastive_config(prompt_loss_weight=2.0, prompt_positive_weights=weights)
    model = TrrgForContrastivePretraining(config).eval()
    codes = torch.zeros(4, 14, dtype=torch.long)
    codes[0, 2], codes[1, 10], codes[2, 10], codes[3, 0] = 1, 1, 3, 1  # uncertain (3) counts as not positive
    batch = prompt_loss_batch(model, tokenizer, codes)
    pv = pixels(4, views=2, seed=3)
    with torch.no_grad():
        total = model(pixel_values=pv, **batch).loss
        model.config.prompt_loss_weight = 0.0
        contrastive = model(pixel_values=pv, **batch).loss
        study = model.get_image_features(pv)
        prompts = model.encode_disease_prompts(tokenizer)
    scale = model.logit_scale.exp()
    logits = scale * (study @ prompts[:, 0].T - study @ prompts[:, 1].T)
    targets = (codes == 1).float()
    pos_weight = torch.tensor(weights)
    bce = -(pos_weight * targets * torch.nn.functional.logsigmoid(logits))
    bce = bce - (1 - targets) * torch.nn.functional.logsigmoid(-logits)
    torch.testing.assert_close(total, contrastive + 2.0 * bce.mean(), atol=1e-5, rtol=1e-5)


def test_prompt_loss_needs_the_prompts_and_labels():
    model = TrrgForContrastivePretraining(contrastive_config(prompt_loss_weight=1.0))
    with pytest.raises(ValueError, match="prompt_input_ids"):
        model(pixel_values=pixels(4, views=2), **encode(build_tokenizer(), SENTENCES))
    with pytest.raises(ValueError, match="prompt_positive_weights"):
        contrastive_config(prompt_positive_weights=[1.0, 2.0])


def test_prompt_loss_teaches_the_zero_shot_head_the_labels():
    """Two kinds of study (one bright in the centre = cardiomegaly), every one paired with the same sentence, so
    the sentence contrast alone carries nothing: after training with the prompt loss, every cardiomegaly study
    reads as more likely cardiomegaly than every other study."""
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = TrrgForContrastivePretraining(contrastive_config(prompt_loss_weight=5.0))
    pv = pixels(4, views=2, seed=3)
    pv[0::2, :, :, 8:24, 8:24] += 2.0
    codes = torch.zeros(4, 14, dtype=torch.long)
    codes[0::2, 2] = 1
    batch = prompt_loss_batch(model, tokenizer, codes, sentences=[SENTENCES[2]] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        model(pixel_values=pv, **batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    probs = model.zero_shot(pv, tokenizer=tokenizer)[:, 2]
    assert probs[0::2].min() > probs[1::2].max()


def test_stage2_built_from_parts_carries_stage1_perception(tmp_path):
    stage1 = make_model().eval()
    tokenizer = build_tokenizer()
    stage1.save_pretrained(tmp_path / "stage1")
    tokenizer.save_pretrained(tmp_path / "stage1")
    torch.manual_seed(1)
    causal_lm = AutoModelForCausalLM.from_config(text_config("qwen2"))
    causal_lm.save_pretrained(tmp_path / "lm")
    model = TrrgForConditionalGeneration.from_parts(
        tmp_path / "lm",
        contrastive_model=tmp_path / "stage1",
        image_token_id=IMAGE_ID,
        clue_token_id=5,
        num_query_tokens=4,
        interaction_heads=4,
        interaction_hidden_size=32,
    ).eval()
    torch.testing.assert_close(model.lm_head.weight, causal_lm.lm_head.weight)
    torch.testing.assert_close(
        model.model.language_model.layers[0].mlp.up_proj.weight, causal_lm.model.layers[0].mlp.up_proj.weight
    )
    pv = pixels(2)
    expected = stage1.zero_shot(pv, tokenizer=tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model.get_image_features(pv).disease_probs, expected)
    ids = prompt_ids(model.config, [10, 11])
    assert model(input_ids=ids, pixel_values=pv[:1]).logits.shape[-1] == causal_lm.config.vocab_size
    tied = TrrgForConditionalGeneration.from_parts(
        tmp_path / "lm",
        vision_encoder=vision_config(),
        tie_word_embeddings=True,  # the LLM's own lm_head is dropped, not copied over its input embeddings
        image_token_id=IMAGE_ID,
        clue_token_id=5,
        interaction_heads=4,
        interaction_hidden_size=32,
    )
    assert tied.lm_head.weight is tied.get_input_embeddings().weight
    torch.testing.assert_close(tied.lm_head.weight, causal_lm.get_input_embeddings().weight)

    vision = AutoModel.from_config(vision_config())
    vision.save_pretrained(tmp_path / "vision")
    parts = TrrgForConditionalGeneration.from_parts(
        text_config("gpt2"),
        vision_encoder=tmp_path / "vision",
        image_token_id=4,
        clue_token_id=5,
        interaction_heads=4,
        interaction_hidden_size=32,
    )
    torch.testing.assert_close(
        parts.model.vision_tower.embeddings.patch_embeddings.projection.weight,
        vision.embeddings.patch_embeddings.projection.weight,
    )
    with pytest.raises(ValueError, match="either vision_encoder or contrastive_model"):
        TrrgForConditionalGeneration.from_parts(
            text_config(),
            vision_encoder=vision_config(),
            contrastive_model=stage1,
            contrastive_tokenizer=tokenizer,
            image_token_id=4,
            clue_token_id=5,
        )
