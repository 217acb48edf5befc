"""TRRG training stages: collators, stage 1 -> stage 2 hand-off, full / LoRA / 4-bit runs, resume, the TRL SFT recipe
and a two-process torchrun run, all on tiny configs and a tiny synthetic phantom benchmark."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, TrainerCallback
from two_process import TORCHRUN, launch

from cxrgen.data.phantom_benchmark import build_phantom_benchmark
from cxrgen.data.trrg_collators import TrrgCollator, TrrgContrastiveCollator, report_sentences
from cxrgen.evaluation.perception import f1_thresholds, positive_matrix, study_probabilities
from cxrgen.hub_cards.publish import validate_model_folder
from cxrgen.labeler import label_report
from cxrgen.modeling.loading import ModelFolderError
from cxrgen.modeling.trrg import TrrgForConditionalGeneration, TrrgForContrastivePretraining
from cxrgen.trainers import trrg, trrg_contrastive
from cxrgen.trainers.stage_config import load_stage_config

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
VISION = {"image_size": 32, "window_size": 2}
STAGE1_CONFIG = {"preset": "tiny", "model": {"vision_config": VISION}}
STAGE2_CONFIG = {"preset": "tiny", "model": {"vision_config": VISION, "num_query_tokens": 4}}
QUICK = [
    "--per_device_train_batch_size",
    "4",
    "--use_cpu",
    "true",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--logging_steps",
    "1",
    "--dataloader_num_workers",
    "0",
]
NO_EVAL = ["--eval_strategy", "no", "--load_best_model_at_end", "false"]


def trainer_args(steps, save_steps=None, *extra):
    save = ["--save_strategy", "steps", "--save_steps", str(save_steps)] if save_steps else ["--save_strategy", "no"]
    return [*QUICK, "--max_steps", str(steps), *save, *extra]


def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A 20-study synthetic phantom benchmark at 32 px and a stage-1 folder trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("trrg_bench")
    annotation = build_phantom_benchmark(
        root / "data", source="synthetic", image_size=32, synthetic_studies=20, seed=3
    )
    images = annotation.parent / "images"
    stage1 = trrg_contrastive.run(
        STAGE1_CONFIG, annotation, images, root / "stage1", trainer_args=trainer_args(2, None, *NO_EVAL)
    )
    return annotation, images, stage1


@pytest.fixture
def no_java(monkeypatch, tmp_path):
    # METEOR runs a Java process per evaluation (~10 s); without java on PATH it is reported unavailable instead.
    monkeypatch.setenv("PATH", str(tmp_path))


# ------------------------------------------------------------------------------------------------------ collators
def test_contrastive_collator_favours_finding_sentences_and_labels_each_sentence():
    from cxrgen.processing.image_processing_cxr import CxrImageProcessor
    from cxrgen.processing.tokenization import build_report_tokenizer

    report = "The lungs are clear. There is cardiomegaly. No pneumothorax. The mediastinum is normal."
    tokenizer = build_report_tokenizer(report_sentences(report), min_frequency=1)
    image = torch.zeros(3, 32, 32).numpy().transpose(1, 2, 0).astype("uint8")
    row = {"id": "s1", "images": [image, image], "report": report, "labels": [0] * 14}
    processor = CxrImageProcessor(size={"height": 32, "width": 32})
    collator = TrrgContrastiveCollator(processor, tokenizer, finding_sentence_weight=1e6)
    torch.manual_seed(0)
    picks = [collator.sample(row)[0] for _ in range(20)]
    assert set(picks) == {"there is cardiomegaly"}
    batch = collator([row, {**row, "id": "s2", "images": [image]}])
    assert batch["pixel_values"].shape == (2, 2, 3, 32, 32) and batch["pixel_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["finding_labels"].tolist() == [label_report("there is cardiomegaly")] * 2
    assert tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True) == "there is cardiomegaly"
    # a seeded collator draws the same sentence for a study every time, whatever the global random state
    seeded = TrrgContrastiveCollator(processor, tokenizer, finding_sentence_weight=1.0, seed=7)
    draws = set()
    for seed in range(5):
        torch.manual_seed(seed)
        draws.add(seeded.sample(row)[0])
    assert len(draws) == 1
    with pytest.raises(ValueError, match="'s3'"):
        collator.sample({**row, "id": "s3", "report": " . . "})
    # with the disease prompts (the prompt loss), every batch carries them tokenised and the studies' report codes
    prompts = ["cardiomegaly", "no cardiomegaly"]
    with_prompts = TrrgContrastiveCollator(processor, tokenizer, disease_prompts=prompts)
    codes = [1] + [0] * 13
    batch = with_prompts([{**row, "labels": codes}, {**row, "id": "s2"}])
    assert batch["disease_labels"].tolist() == [codes, [0] * 14]
    assert tokenizer.batch_decode(batch["prompt_input_ids"], skip_special_tokens=True) == prompts
    assert batch["prompt_attention_mask"].shape == batch["prompt_input_ids"].shape


def test_prompt_positive_weights_are_capped_negative_to_positive_ratios():
    from cxrgen.trainers.trrg_contrastive import PROMPT_POSITIVE_WEIGHT_CAP, prompt_positive_weights

    labels = [[1, 1] + [0] * 12, [1, 0] + [2] * 12, [0, 0] + [3] * 12, [1, 0] + [0] * 12]
    weights = prompt_positive_weights(labels)
    # observation 0: 3 of 4 positive -> ratio 1/3, raised to 1; observation 1: 1 of 4 -> 3; none positive counts as
    # one (its weight multiplies no term)
    assert weights == pytest.approx([1.0, 3.0] + [3.0] * 12)
    rare = [[1] + [0] * 13] + [[0] * 14] * 99
    assert prompt_positive_weights(rare)[0] == PROMPT_POSITIVE_WEIGHT_CAP


def test_stage2_collator_masks_the_prompt_and_adds_disease_labels(bench):
    annotation, images, _ = bench
    from cxrgen.trainers.training_data import load_split

    train = load_split(annotation, images, "train")
    model, processor, _ = trrg.build_model_and_processor(load_stage_config(STAGE2_CONFIG), train["report"])
    rows = [train[0], train[1]]
    batch = TrrgCollator(processor, max_length=60)(rows)
    assert batch["disease_labels"].tolist() == [list(row["labels"]) for row in rows]
    prompt_ids, prompt_mask = trrg.split_prompts(
        batch["input_ids"], batch["attention_mask"], batch["labels"], processor.tokenizer.pad_token_id
    )
    expected = processor(images=[row["images"] for row in rows])
    assert torch.equal(prompt_ids, expected["input_ids"]) and torch.equal(prompt_mask, expected["attention_mask"])
    first_label = (batch["labels"][0] != -100).nonzero()[0, 0]
    assert batch["input_ids"][0, first_label - 1] != processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="no report tokens"):
        trrg.split_prompts(batch["input_ids"], batch["attention_mask"], torch.full_like(batch["labels"], -100), 0)


# ------------------------------------------------------------------------------------------------ stage 1 -> 2
def test_stage1_folder_is_complete_and_stores_the_prompt_embeddings(bench):
    _, _, stage1 = bench
    validate_model_folder(stage1, processor=True, training_state=True)
    assert (stage1 / "README.md").is_file()
    model = TrrgForContrastivePretraining.from_pretrained(stage1).eval()
    stored = load_file(stage1 / trrg_contrastive.PROMPT_EMBEDS_NAME)["prompt_embeds"]
    assert stored.shape == (14, 2, model.config.projection_dim)
    torch.testing.assert_close(stored, model.encode_disease_prompts(AutoTokenizer.from_pretrained(stage1)))


def test_init_hands_over_vision_tower_and_prompt_embeddings_then_trains_and_evaluates(bench, tmp_path, no_java):
    annotation, images, stage1 = bench
    stage1_model = TrrgForContrastivePretraining.from_pretrained(stage1)
    stored = load_file(stage1 / trrg_contrastive.PROMPT_EMBEDS_NAME)["prompt_embeds"]

    model, processor, transferred = trrg.build_model_and_processor(load_stage_config(STAGE2_CONFIG), ["a b ."], stage1)
    assert "vision tower" in transferred and "prompt embeddings" in transferred
    for name, tensor in stage1_model.vision_model.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor), name
    head = model.model.zero_shot_head
    torch.testing.assert_close(head.prompt_embeds, stored)
    assert torch.equal(head.visual_projection.weight, stage1_model.visual_projection.weight)
    assert processor.image_processor.size == {"height": 32, "width": 32}

    output = trrg.run(
        STAGE2_CONFIG,
        annotation,
        images,
        tmp_path / "run",
        init=stage1,
        trainer_args=trainer_args(
            2, 2, "--eval_strategy", "steps", "--eval_steps", "2", "--generation_max_length", "4"
        ),
    )
    validate_model_folder(output, processor=True, training_state=True)
    card = (output / "README.md").read_text()
    assert "prompt embeddings" in card and "BLEU-4" in card
    state = json.loads((output / "trainer_state.json").read_text())
    assert any("eval_ce_macro_f1" in entry and "eval_bleu_4" in entry for entry in state["log_history"])
    final = AutoModel.from_pretrained(output)
    # the saved model decodes as the run evaluated it
    assert final.generation_config.max_new_tokens == 4 and final.generation_config.num_beams == 1
    # the zero-shot head is frozen and its prompt embeddings are a buffer: stage-1 perception survives fine-tuning
    torch.testing.assert_close(final.model.zero_shot_head.prompt_embeds, stored)
    assert torch.equal(final.model.zero_shot_head.visual_projection.weight, stage1_model.visual_projection.weight)


def test_clue_thresholds_are_calibrated_on_the_training_split_when_asked(bench, tmp_path):
    annotation, images, stage1 = bench
    train = json.loads(Path(annotation).read_text())["train"]
    probabilities = study_probabilities(stage1, [[images / path for path in entry["image_path"]] for entry in train])
    expected = f1_thresholds(probabilities, positive_matrix([entry["labels"] for entry in train]))
    assert expected != [0.5] * 14
    config = {"preset": "tiny", "model": {**STAGE2_CONFIG["model"], "freeze_vision_tower": True}}
    config["model"]["clue_threshold_calibration"] = "train_f1"

    output = trrg.run(
        config, annotation, images, tmp_path / "run", init=stage1, trainer_args=trainer_args(1, None, *NO_EVAL)
    )

    model = AutoModel.from_pretrained(output)
    assert model.config.clue_threshold == expected
    assert model.model.clue_injector.thresholds == expected
    assert "F1-optimal on the training split" in (output / "README.md").read_text()


@pytest.mark.parametrize(
    ("model_options", "init", "message"),
    [
        ({"freeze_vision_tower": True}, False, "needs --init"),
        ({}, True, "needs freeze_vision_tower: true"),
        ({"freeze_vision_tower": True, "freeze_zero_shot_head": False}, True, "freeze_zero_shot_head: true"),
    ],
)
def test_clue_threshold_calibration_needs_a_frozen_stage1_perception(bench, tmp_path, model_options, init, message):
    annotation, images, stage1 = bench
    config = {"preset": "tiny", "model": {**STAGE2_CONFIG["model"], **model_options}}
    config["model"]["clue_threshold_calibration"] = "train_f1"
    with pytest.raises(ValueError, match=message):
        trrg.run(
            config, annotation, images, tmp_path / "run", init=stage1 if init else None, trainer_args=trainer_args(1)
        )
    assert not (tmp_path / "run").exists()


def test_an_unknown_clue_threshold_calibration_is_refused():
    config = {"preset": "tiny", "model": {"clue_threshold_calibration": "val"}}
    with pytest.raises(ValueError, match="clue_threshold_calibration must be null or train_f1, got 'val'"):
        trrg.model_options(load_stage_config(config))


def test_a_clue_threshold_beside_its_calibration_is_refused():
    config = {"preset": "tiny", "model": {"clue_threshold": 0.3, "clue_threshold_calibration": "train_f1"}}
    with pytest.raises(ValueError, match="clue_threshold and model.clue_threshold_calibration exclude each other"):
        trrg.model_options(load_stage_config(config))


def test_an_init_folder_whose_config_does_not_fit_its_weights_is_one_short_error(bench, tmp_path):
    annotation, images, stage1 = bench
    mismatched = tmp_path / "mismatched"
    shutil.copytree(stage1, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["projection_dim"] += 8
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"mismatched.*projection") as error:
        trrg.build_model_and_processor(load_stage_config(STAGE2_CONFIG), ["a b ."], mismatched)
    assert len(str(error.value).splitlines()) < 10


# ------------------------------------------------------------------------------------------------ resume
class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_after_interruption_gives_the_uninterrupted_weights(bench, tmp_path):
    annotation, images, _ = bench
    arguments = trainer_args(4, 2, *NO_EVAL)
    trainer, _, _ = trrg.build_trainer(
        STAGE2_CONFIG, annotation, images, tmp_path / "straight", trainer_args=arguments
    )
    trainer.train()
    expected = weights(trainer.model)

    trainer, _, _ = trrg.build_trainer(STAGE2_CONFIG, annotation, images, tmp_path / "cut", trainer_args=arguments)
    trainer.add_callback(StopAt(2))
    trainer.train()
    assert trainer.state.global_step == 2
    validate_model_folder(tmp_path / "cut" / "checkpoint-2", processor=True, training_state=True)
    trainer, checkpoint, _ = trrg.build_trainer(
        STAGE2_CONFIG, annotation, images, tmp_path / "cut", resume=True, trainer_args=arguments
    )
    assert Path(checkpoint).name == "checkpoint-2"
    trainer.train(resume_from_checkpoint=checkpoint)
    resumed = weights(trainer.model)
    assert resumed.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], msg=name)


# ------------------------------------------------------------------------------------------------ LoRA / 4-bit
def test_4bit_lora_run_saves_adapter_merges_loads_and_resumes(bench, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel

    annotation, images, _ = bench
    config = {**STAGE2_CONFIG, "model": {**STAGE2_CONFIG["model"], "lora": {"r": 4}, "load_in_4bit": True}}
    output = tmp_path / "lora"
    trainer, _, _ = trrg.build_trainer(config, annotation, images, output, trainer_args=trainer_args(2, 2, *NO_EVAL))
    assert isinstance(trainer.model, PeftModel)
    llm = trainer.model.base_model.model.model.language_model
    assert isinstance(llm.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    trainer.train()
    checkpoint = output / "checkpoint-2"
    assert {"adapter_model.safetensors", "adapter_config.json", "processor_config.json"} <= set(os.listdir(checkpoint))

    # the adapter checkpoint resumes (to step 3) and the run ends with a merged, complete model folder
    final = trrg.run(config, annotation, images, output, resume=True, trainer_args=trainer_args(3, 2, *NO_EVAL))
    validate_model_folder(final, processor=True, training_state=True)
    adapter = json.loads((final / trrg.ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] and set(adapter["modules_to_save"]) == set(
        TrrgForConditionalGeneration.lora_trainable_modules
    )
    loaded = AutoModel.from_pretrained(final).eval()
    assert isinstance(loaded, TrrgForConditionalGeneration)
    assert loaded.generation_config.max_new_tokens == 60  # the tiny preset's generation_max_length
    assert not any("lora_" in name for name, _ in loaded.named_parameters())
    expected = trrg.merged_model(output / trrg.BASE_MODEL_DIR, final / trrg.ADAPTER_DIR)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    base = TrrgForConditionalGeneration.from_pretrained(output / trrg.BASE_MODEL_DIR)
    assert not torch.equal(base.model.projector.fc1.weight, loaded.model.projector.fc1.weight)
    inputs = loaded_inputs(final, annotation, images)
    assert loaded.generate(**inputs, max_new_tokens=3).shape[0] == 2


def loaded_inputs(folder, annotation, images):
    from transformers import AutoProcessor

    from cxrgen.trainers.training_data import load_split

    test = load_split(annotation, images, "test")
    return AutoProcessor.from_pretrained(folder)(images=[test[0]["images"], test[1]["images"]])


def test_lora_config_errors_name_the_field(bench, tmp_path):
    annotation, images, _ = bench
    bad = {**STAGE2_CONFIG, "model": {**STAGE2_CONFIG["model"], "load_in_4bit": True}}
    with pytest.raises(ValueError, match="model.lora"):
        trrg.build_trainer(bad, annotation, images, tmp_path / "bad", trainer_args=trainer_args(1))
    with pytest.raises(ValueError, match="unknown key"):
        trrg.build_trainer({"preset": "tiny", "model": {"lora_rank": 4}}, annotation, images, tmp_path / "bad2")


# ------------------------------------------------------------------------------------------------ TRL recipe
def test_trl_sft_recipe_trains_a_few_steps_and_saves_a_loadable_model(bench, tmp_path):
    annotation, images, _ = bench
    spec = importlib.util.spec_from_file_location("trrg_sft_recipe", REPO / "scripts" / "trrg_sft_recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(STAGE2_CONFIG))  # JSON is YAML
    output = recipe.main(
        [
            "--config",
            str(config),
            "--data",
            str(annotation),
            "--images",
            str(images),
            "--output",
            str(tmp_path / "sft"),
            "--lora-r",
            "4",
            "--max_steps",
            "3",
            "--use_cpu",
            "true",
            "--per_device_train_batch_size",
            "4",
            "--logging_steps",
            "1",
            "--learning_rate",
            "1e-2",
        ]
    )
    state = json.loads((output / trrg.ADAPTER_DIR / "adapter_config.json").read_text())
    assert state["r"] == 4
    base = TrrgForConditionalGeneration.from_pretrained(output / trrg.BASE_MODEL_DIR)
    tuned = AutoModel.from_pretrained(output)
    assert not torch.equal(base.model.projector.fc1.weight, tuned.model.projector.fc1.weight)
    attention = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[attention], tuned.state_dict()[attention])


# ------------------------------------------------------------------------------------------------ torchrun
def test_torchrun_two_processes_end_with_identical_weights(bench, tmp_path):
    annotation, images, _ = bench
    arguments = [*trainer_args(2, 2, *NO_EVAL), "--per_device_train_batch_size", "2"]
    output = tmp_path / "run"
    ranks = launch(TORCHRUN, "trrg", STAGE2_CONFIG, annotation, images, output, tmp_path, arguments)
    for rank, record in enumerate(ranks):
        assert (record["rank"], record["world_size"], record["backend"]) == (rank, 2, "gloo")
        assert record["ddp"] == "DistributedDataParallel" and record["steps"] == 2
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    validate_model_folder(output / "checkpoint-2", processor=True, training_state=True)
