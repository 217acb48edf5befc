"""CmcrlProcessor, Auto-class registration, and loading a saved CMCRL folder as remote code without cxrgen."""

import copy
import json
import os
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    AutoProcessor,
    Trainer,
    TrainingArguments,
)
from without_cxrgen import run_without_cxrgen

from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining
from cxrgen.processing.cleaning import clean_report
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_cmcrl import CmcrlProcessor
from cxrgen.processing.tokenization import build_report_tokenizer

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)

REPORTS = ["The heart is normal in size. The lungs are clear.", "No pneumothorax. Mild cardiomegaly."] * 3
REMOTE_FILES = {"configuration_cmcrl.py", "modeling_cmcrl.py", "pipeline_cmcrl.py"}


@pytest.fixture(scope="module")
def processor():
    tokenizer = build_report_tokenizer([clean_report(r) for r in REPORTS], min_frequency=1, model_max_length=12)
    return CmcrlProcessor(CxrImageProcessor(size={"height": 32, "width": 32}), tokenizer)


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    return CmcrlForConditionalGeneration(CmcrlConfig.from_preset("tiny", vocab_size=len(processor.tokenizer))).eval()


def write_image(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 48), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return str(path)


def test_processor_builds_labels_and_decodes(processor):
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    batch = processor(images=[[image, image], [image]], text=REPORTS[:2])
    assert batch["pixel_values"].shape == (2, 2, 3, 32, 32) and batch["pixel_mask"].tolist() == [[1, 1], [1, 0]]
    labels = batch["labels"]
    assert labels[:, 0].tolist() == [1, 1] and (labels == -100).any()
    assert labels[0, -1] == processor.tokenizer.eos_token_id  # truncated to 12 tokens, EOS kept
    assert processor.post_process_generation(labels) == [
        "the heart is normal in size . the lungs are",
        "no pneumothorax . mild cardiomegaly .",
    ]
    assert processor.post_process_generation([[1, 3, 4, 2, 5]]) == ["[UNK] " + processor.tokenizer.decode([4])]
    with pytest.raises(ValueError, match="one report per study"):
        processor(images=[image], text=REPORTS[:2])
    with pytest.raises(ValueError, match="no words"):
        processor(text=["..."])
    mimic = CmcrlProcessor(processor.image_processor, processor.tokenizer, cleaning_style="mimic")
    assert mimic.cleaning_style == "mimic"
    with pytest.raises(ValueError, match="cleaning_style"):
        CmcrlProcessor(processor.image_processor, processor.tokenizer, cleaning_style="chexpert")


def test_labels_from_processor_train_the_model(processor, model):
    batch = processor(images=[np.zeros((40, 40), dtype=np.uint8)] * 2, text=REPORTS[:2], num_views=2)
    assert torch.isfinite(model(**batch).loss)


def test_auto_classes_resolve_in_package(processor, model, tmp_path):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert isinstance(AutoModel.from_pretrained(tmp_path), CmcrlForConditionalGeneration)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), CmcrlForConditionalGeneration)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, CmcrlProcessor) and loaded.cleaning_style == "iu"
    CmcrlForPreTraining(model.config).save_pretrained(tmp_path / "radcare")
    assert isinstance(AutoModelForPreTraining.from_pretrained(tmp_path / "radcare"), CmcrlForPreTraining)
    assert set(os.listdir(tmp_path / "radcare")) >= REMOTE_FILES


def test_trainer_checkpoints_carry_remote_code_and_pipeline(processor, model, tmp_path):
    image = np.zeros((40, 40), dtype=np.uint8)
    rows = [{"image": image, "report": report} for report in REPORTS[:2]]

    def collate(examples):
        return processor(images=[e["image"] for e in examples], text=[e["report"] for e in examples], num_views=2)

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="steps",
        save_steps=1,
    )
    Trainer(
        model=copy.deepcopy(model), args=args, train_dataset=rows, data_collator=collate, processing_class=processor
    ).train()
    checkpoint = tmp_path / "checkpoint-1"
    files = set(os.listdir(checkpoint))
    assert REMOTE_FILES | {"processing_cmcrl.py", "image_processing_cxr.py", "cleaning.py"} <= files
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["custom_pipelines"]["image-to-text"]["impl"] == "pipeline_cmcrl.RadiologyReportGenerationPipeline"
    assert config["auto_map"]["AutoModel"] == "modeling_cmcrl.CmcrlForConditionalGeneration"


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    folder, images = sys.argv[1], json.loads(sys.argv[2])
    import torch
    from transformers import AutoModel, AutoProcessor, pipeline

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    pipe = pipeline("image-to-text", model=folder, trust_remote_code=True)
    result = {
        "pipeline_class": type(pipe).__name__,
        "task": pipe.task,
        "single": pipe(images["frontal"], max_length=8),
        "study": pipe([[images["frontal"], images["lateral"]]], max_length=8),
        "batch": pipe([[images["frontal"], images["lateral"]], images["other"]], max_length=8),
    }
    model.save_pretrained(folder + "-resaved")
    print("RESULT" + json.dumps(result))
    """
)


def test_remote_code_without_cxrgen(processor, model, tmp_path):
    folder = tmp_path / "cmcrl"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    images = {
        name: write_image(tmp_path / f"{name}.png", seed) for seed, name in enumerate(("frontal", "lateral", "other"))
    }
    completed = run_without_cxrgen(REMOTE_SCRIPT, [str(folder), json.dumps(images)], tmp_path, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "deprecated" not in completed.stderr, completed.stderr[-3000:]
    result = json.loads(completed.stdout.split("RESULT", 1)[1])
    assert (result["pipeline_class"], result["task"]) == ("RadiologyReportGenerationPipeline", "image-to-text")

    def expected(study):
        inputs = processor(images=[study], return_tensors="pt")
        return {"generated_text": processor.post_process_generation(model.generate(**inputs, max_length=8))[0]}

    frontal, lateral, other = images["frontal"], images["lateral"], images["other"]
    assert result["single"] == expected([frontal])
    assert result["study"] == [expected([frontal, lateral])]
    assert result["batch"] == [expected([frontal, lateral]), expected([other])]
    resaved = tmp_path / "cmcrl-resaved"
    assert set(os.listdir(resaved)) >= REMOTE_FILES
    assert "image-to-text" in json.loads((resaved / "config.json").read_text())["custom_pipelines"]
