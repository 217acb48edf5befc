"""IU-Xray and MIMIC-CXR pre-trained together (the reference's RadCARE): `cxrgen prepare mixed`, one vocabulary over
both with the radcare-mixed preset's threshold of 10, and VLCI on one dataset from the mixed RadCARE folder."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cxrgen.cli import main
from cxrgen.data.annotation import AnnotationError, annotation_to_dataset_dict, read_annotation, write_annotation
from cxrgen.data.mixed import mix_annotations
from cxrgen.modeling.cmcrl import CmcrlConfig
from cxrgen.trainers import radcare, vlci
from cxrgen.trainers.processors import cmcrl_config_and_processor
from cxrgen.trainers.stage_config import load_stage_config

torch.set_num_threads(1)

TRAINING = {
    "per_device_train_batch_size": 4,
    "max_steps": 2,
    "save_strategy": "no",
    "eval_strategy": "no",
    "load_best_model_at_end": False,
    "use_cpu": True,
    "report_to": "none",
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}


def report(index, *words):
    # Words counted over the train splits: "iuword" 10 times (IU only), "mimicword" 10 (MIMIC only), "splitword"
    # 5 + 5 (only both together reach 10), "rareword" 5 + 4 (9: below the threshold in both together).
    return f"The heart is normal. The lungs are clear. {' '.join(words)} finding {index}."


def write_dataset(root, name, views, words):
    """A small dataset: 10 train and 2 val studies with `views` 32 px PNG views each, under `root/images`."""
    rng = np.random.default_rng(len(name))
    images = root / "images"
    annotation = {}
    for split, count in (("train", 10), ("val", 2)):
        entries = []
        for index in range(count):
            study = f"{name}-{split}-{index}"
            paths = []
            for view in range(views):
                path = images / study / f"{view}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
                paths.append(f"{study}/{view}.png")
            chosen = [word for word, times in words.items() if index < times] if split == "train" else []
            entries.append({"id": study, "report": report(index, *chosen), "image_path": paths})
        annotation[split] = entries
    return write_annotation(annotation, root / "annotation.json"), images


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    iu = write_dataset(root / "iu", "iu", 2, {"iuword": 10, "splitword": 5, "rareword": 5})
    mimic = write_dataset(root / "mimic", "mimic", 1, {"mimicword": 10, "splitword": 5, "rareword": 4})
    return iu, mimic


@pytest.fixture(scope="module")
def mixed(datasets, tmp_path_factory):
    (iu_annotation, iu_images), (mimic_annotation, mimic_images) = datasets
    output = tmp_path_factory.mktemp("mixed")
    argv = ["prepare", "mixed", "--iu-annotation", str(iu_annotation), "--iu-images", str(iu_images)]
    argv += ["--mimic-annotation", str(mimic_annotation), "--mimic-images", str(mimic_images)]
    assert main([*argv, "--output", str(output)]) == 0
    assert main([*argv, "--output", str(output)]) == 0  # again: the links to the same folders are kept
    return output / "annotation.json", output / "images"


def test_prepare_mixed_puts_each_dataset_under_its_folder_of_one_image_root(mixed, datasets):
    annotation = read_annotation(mixed[0])
    assert [len(annotation[split]) for split in ("train", "val")] == [20, 4]
    first, last = annotation["train"][0], annotation["train"][-1]
    assert first["dataset"] == "iu-xray" and first["image_path"] == [
        "iu-xray/iu-train-0/0.png",
        "iu-xray/iu-train-0/1.png",
    ]
    assert last["dataset"] == "mimic-cxr" and last["image_path"] == ["mimic-cxr/mimic-train-9/0.png"]
    assert first["report"] == read_annotation(datasets[0][0])["train"][0]["report"]
    train = annotation_to_dataset_dict(annotation, mixed[1])["train"]
    assert train[0]["images"][0].size == (32, 32) and train["dataset"][-1] == "mimic-cxr"
    # No path of this machine in the annotation: the links hold the image roots.
    assert str(datasets[0][1]) not in mixed[0].read_text()


def test_mixing_refuses_id_collisions_and_mixed_input(datasets, tmp_path, capsys):
    iu = read_annotation(datasets[0][0])
    clash = {"train": [{**iu["train"][3], "image_path": ["elsewhere.png"]}]}
    with pytest.raises(AnnotationError, match="id 'iu-train-3' is in both iu-xray and mimic-cxr"):
        mix_annotations({"iu-xray": iu, "mimic-cxr": clash})
    with pytest.raises(AnnotationError, match="already has a 'dataset' field"):
        mix_annotations({"mixed": mix_annotations({"a": iu, "b": read_annotation(datasets[1][0])}), "c": clash})
    with pytest.raises(ValueError, match="at least two datasets"):
        mix_annotations({"iu-xray": iu})
    (tmp_path / "images" / "iu-xray").mkdir(parents=True)
    argv = ["prepare", "mixed", "--iu-annotation", str(datasets[0][0]), "--iu-images", str(datasets[0][1])]
    argv += ["--mimic-annotation", str(datasets[1][0]), "--mimic-images", str(datasets[1][1])]
    assert main([*argv, "--output", str(tmp_path)]) == 2
    assert "images/iu-xray already exists and is not a link to" in capsys.readouterr().err
    assert not (tmp_path / "annotation.json").exists()


def test_the_mixed_vocabulary_counts_both_datasets_with_the_preset_threshold(mixed):
    annotation = read_annotation(mixed[0])
    config, processor = cmcrl_config_and_processor(
        load_stage_config("radcare-mixed"), "radcare", "iu-xray", [entry["report"] for entry in annotation["train"]]
    )
    vocabulary = processor.tokenizer.get_vocab()
    assert {"iuword", "mimicword", "splitword"} <= set(vocabulary) and "rareword" not in vocabulary
    assert "finding" in vocabulary and "0" not in vocabulary  # 20 times / twice
    assert processor.cleaning_style == "mimic" and config.vocab_size == len(processor.tokenizer)
    assert (config.dropout, config.attention_dropout, config.pretraining_max_length) == (0.0, 0.0, 100)
    assert (config.encoder_layers, config.decoder_layers) == (3, 3)
    assert CmcrlConfig.from_preset("radcare-mixed").max_report_length == 100


def test_radcare_on_the_mixed_data_then_vlci_on_mimic_with_the_mixed_vocabulary(mixed, datasets, tmp_path):
    config = tmp_path / "radcare.yaml"
    sections = {"preset": "tiny", "processor": {"min_frequency": 10, "cleaning_style": "mimic"}, "training": TRAINING}
    config.write_text(yaml.safe_dump(sections))
    folder = radcare.run(config, *mixed, tmp_path / "radcare")
    vocabulary = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert {"iuword", "mimicword", "splitword"} <= set(vocabulary) and "rareword" not in vocabulary

    # The reference fine-tunes one-view MIMIC-CXR (its own preset's report length) from the two-view mixed RadCARE.
    vlci_config = tmp_path / "vlci.yaml"
    vlci_config.write_text(
        yaml.safe_dump({"preset": "tiny", "model": {"num_views": 1, "max_report_length": 12}, "training": TRAINING})
    )
    trainer, _, info = vlci.build_trainer(vlci_config, *datasets[1], tmp_path / "vlci", init=folder)
    tokenizer = trainer.processing_class.tokenizer
    assert tokenizer.get_vocab() == vocabulary and tokenizer.model_max_length == 12
    assert "rows 0-0 of RadCARE's 2 copied" in info.initialization
