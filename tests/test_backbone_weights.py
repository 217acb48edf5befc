"""backbone_weights / --backbone-weights: every CMCRL stage starts its vision backbone from a local transformers ResNet
folder (here a tiny one saved in the test; `microsoft/resnet-101` on the Hub in the recipes), and bad values are one
short error naming the option and the value."""

import pytest
import torch
import yaml
from transformers import ResNetBackbone, ResNetConfig, ResNetForImageClassification, ResNetModel

from cxrgen.cli import main
from cxrgen.data.phantom_benchmark import build_phantom_benchmark
from cxrgen.modeling.cmcrl import CmcrlConfig
from cxrgen.trainers import backbone, radcare, trrg, trrg_contrastive, vlci

torch.set_num_threads(1)

TRAINING = {
    "per_device_train_batch_size": 4,
    "max_steps": 1,
    "save_strategy": "no",
    "eval_strategy": "no",
    "load_best_model_at_end": False,
    "learning_rate": 0.0,
    "use_cpu": True,
    "report_to": "none",
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    path = build_phantom_benchmark(root, source="synthetic", image_size=32, synthetic_studies=8, seed=3)
    return path, root / "images"


def resnet_config(**changes):
    """The tiny preset's backbone (ResNet of two basic-block stages) as a transformers ResNetConfig."""
    values = CmcrlConfig.from_preset("tiny").backbone_config.to_dict()
    return ResNetConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def resnet_folders(tmp_path_factory):
    """Random tiny ResNets saved as a base model, a backbone and a 1000-label classifier with an extra stage."""
    root = tmp_path_factory.mktemp("resnets")
    torch.manual_seed(11)
    ResNetModel(resnet_config()).save_pretrained(root / "resnet-model")
    torch.manual_seed(12)
    ResNetBackbone(resnet_config()).save_pretrained(root / "resnet-backbone")
    torch.manual_seed(13)
    deeper = resnet_config(hidden_sizes=[16, 32, 64], depths=[1, 1, 1], num_labels=1000)
    ResNetForImageClassification(deeper).save_pretrained(root / "resnet-classifier")
    return root


def reference_tensors(folder):
    """The backbone tensors of a saved ResNet folder, named as a ResNetBackbone names them."""
    return ResNetBackbone.from_pretrained(folder).state_dict()


def assert_same(module, folder):
    expected = reference_tensors(folder)
    actual = module.state_dict()
    assert actual and set(actual) <= set(expected)
    for name, tensor in actual.items():
        assert torch.equal(tensor, expected[name]), name


def write_config(folder, **sections):
    path = folder / "config.yaml"
    path.write_text(
        yaml.safe_dump({"preset": "tiny", "processor": {"min_frequency": 1}, "training": TRAINING, **sections})
    )
    return path


@pytest.mark.parametrize("layout", ["resnet-model", "resnet-backbone", "resnet-classifier"])
def test_radcare_and_vlci_start_their_backbone_from_the_folder(layout, resnet_folders, phantom, tmp_path):
    folder = resnet_folders / layout
    config = write_config(tmp_path)
    trainer, _, info = radcare.build_trainer(config, *phantom, tmp_path / "radcare", backbone_weights=folder)
    assert_same(trainer.model.encoder.embeddings.backbone, folder)
    assert info.training_setup["backbone weights"] == layout
    assert info.initialization == f"vision backbone from {layout}; the rest of the model starts fresh"

    trainer, _, info = vlci.build_trainer(config, *phantom, tmp_path / "vlci", backbone_weights=folder)
    assert_same(trainer.model.encoder.embeddings.backbone, folder)
    assert info.initialization == f"vision backbone from {layout}; the rest of the model starts fresh"


def test_backbone_stage_starts_from_the_folder_with_a_fresh_head(resnet_folders, phantom, tmp_path):
    folder = resnet_folders / "resnet-classifier"
    # From the YAML key this time; a classifier of 1000 labels and one more stage gives its first two stages.
    config = write_config(tmp_path, backbone_weights=str(folder))
    trainer, _, info = backbone.build_trainer(config, *phantom, tmp_path / "backbone")
    assert_same(trainer.model.resnet, folder)
    assert trainer.model.classifier[-1].out_features == 14 and info.training_setup["backbone weights"] == folder.name
    with pytest.raises(ValueError, match="backbone_weights .*resnet-too-wide: .*backbone tensors .*another shape"):
        ResNetModel(resnet_config(embedding_size=4)).save_pretrained(tmp_path / "resnet-too-wide")
        backbone.build_trainer(config, *phantom, tmp_path / "other", backbone_weights=tmp_path / "resnet-too-wide")


def test_vlci_from_a_radcare_folder_keeps_the_backbone_it_started_from(resnet_folders, phantom, tmp_path):
    folder = resnet_folders / "resnet-model"
    # Frozen with lr 0, so that training (BatchNorm statistics included) leaves the loaded backbone as it was.
    config = write_config(tmp_path, model={"freeze_backbone": True})
    output = radcare.run(config, *phantom, tmp_path / "radcare", backbone_weights=folder)
    card = (output / "README.md").read_text()
    assert "vision backbone from resnet-model" in card and str(tmp_path) not in card
    trainer, _, info = vlci.build_trainer(config, *phantom, tmp_path / "vlci", init=output)
    assert_same(trainer.model.encoder.embeddings.backbone, folder)
    assert info.initialization.startswith("RadCARE checkpoint radcare")


def test_bad_backbone_weights_are_one_line_errors(resnet_folders, phantom, tmp_path, capsys):
    missing = tmp_path / "no-such-resnet"
    capsys.readouterr()
    for stage in ("backbone", "radcare", "vlci"):
        argv = ["train", stage, "--config", "tiny", "--data", str(phantom[0]), "--images", str(phantom[1])]
        code = main([*argv, "--output", str(tmp_path / stage), "--backbone-weights", str(missing)])
        error = capsys.readouterr().err.strip()
        assert code == 2 and len(error.splitlines()) == 1, error
        assert f"backbone_weights {missing}: no such folder, and not a Hub model id" in error
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"backbone_weights .*empty: not a model folder \(no config.json\)"):
        radcare.build_trainer("tiny", *phantom, tmp_path / "out", backbone_weights=tmp_path / "empty")
    with pytest.raises(ValueError, match="--init .* already holds a vision backbone; backbone_weights"):
        vlci.build_trainer(
            "tiny", *phantom, tmp_path / "out", init=resnet_folders / "resnet-model", backbone_weights="org/resnet"
        )
    with pytest.raises(ValueError, match="trrg-contrastive: .*model.vision_encoder"):
        trrg_contrastive.build_trainer("tiny", *phantom, tmp_path / "out", backbone_weights="microsoft/resnet-101")
    with pytest.raises(ValueError, match="'backbone_weights' must be a non-empty name"):
        radcare.build_trainer({"backbone_weights": 3}, *phantom, tmp_path / "out")


def test_trrg_vision_tower_starts_from_a_local_swin_folder(phantom, tmp_path, capsys):
    """TRRG's counterpart of backbone_weights is `model.vision_encoder` (stage 1): any transformers vision folder."""
    from transformers import AutoModel

    from cxrgen.modeling.trrg import TrrgContrastiveConfig

    vision_config = TrrgContrastiveConfig.from_preset("tiny", vision_config={"image_size": 32, "window_size": 2})
    torch.manual_seed(21)
    swin = AutoModel.from_config(vision_config.vision_config)
    swin.save_pretrained(tmp_path / "swin")
    config = {"preset": "tiny", "model": {"vision_encoder": str(tmp_path / "swin")}}
    trainer, _, _ = trrg_contrastive.build_trainer(
        config, *phantom, tmp_path / "stage1", trainer_args=["--use_cpu", "true", "--report_to", "none"]
    )
    loaded, expected = trainer.model.vision_model.state_dict(), swin.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[name], expected[name]) for name in loaded)

    missing = tmp_path / "no-such-swin"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"preset": "tiny", "model": {"vision_encoder": str(missing)}}))
    argv = ["train", "trrg-contrastive", "--config", str(bad), "--data", str(phantom[0]), "--images", str(phantom[1])]
    capsys.readouterr()
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"model.vision_encoder {missing}: no such folder" in error
    with pytest.raises(ValueError, match=f"model.vision_encoder {missing}: no such folder"):
        trrg.build_trainer(bad, *phantom, tmp_path / "stage2")


def test_a_hub_id_is_loaded_from_the_hub_and_named_as_the_cards_base_model(phantom, tmp_path, fake_hub):
    """`--backbone-weights org/name` (as microsoft/resnet-101 in the recipes) on the in-process fake Hub: RadCARE's card
    has it as base_model, and the VLCI card started from that RadCARE folder says where its backbone came from."""
    from cxrgen.hub_cards.card import card_base_model

    torch.manual_seed(31)
    ResNetModel(resnet_config()).push_to_hub("cxrgen-test/tiny-resnet")
    ResNetModel.from_pretrained("cxrgen-test/tiny-resnet").save_pretrained(tmp_path / "pushed")
    config = write_config(tmp_path, model={"freeze_backbone": True})
    output = radcare.run(config, *phantom, tmp_path / "radcare", backbone_weights="cxrgen-test/tiny-resnet")
    assert card_base_model(output) == "cxrgen-test/tiny-resnet"
    assert "vision backbone from cxrgen-test/tiny-resnet" in (output / "README.md").read_text()
    trainer, _, info = vlci.build_trainer(config, *phantom, tmp_path / "vlci", init=output)
    assert_same(trainer.model.encoder.embeddings.backbone, tmp_path / "pushed")
    assert info.initialization.startswith("RadCARE checkpoint radcare (its vision backbone started from cxrgen-test/")
    assert fake_hub.unhandled == []
