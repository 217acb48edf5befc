"""Model cards and Hub publishing, with the round trip run against the in-process fake Hub (tests/fake_hub.py)."""

import importlib
import importlib.util
import inspect
import json
import shutil
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel, pipeline

from cxrgen.hub_cards import build_model_card, push_model_folder, save_model_card
from cxrgen.hub_cards.publish import ModelFolderError, validate_model_folder

torch.set_num_threads(1)

METRICS = {
    "BLEU-1": 0.412,
    "BLEU-4": 0.171,
    "METEOR": 0.19,
    "ROUGE-L": 0.37,
    "CIDEr": 0.55,
    "CE micro F1": 0.33,
    "CE macro P": 0.21,
    "CE example-based R": 0.4,
}
METRICS_SOURCE = "pycocoevalcap on cleaned reports, references not truncated; CE with the rule-based labeler."
REMOTE_CONFIG = {
    "model_type": "tiny-report",
    "architectures": ["TinyReportModel"],
    "auto_map": {"AutoModel": "modeling_tinyreport.TinyReportModel"},
    "custom_pipelines": {"image-to-text": {"impl": "pipeline_tinyreport.TinyReportPipeline", "pt": ["AutoModel"]}},
}


def card_kwargs(**overrides):
    kwargs = dict(
        model_name="cxrgen CMCRL (phantom IU-Xray)",
        repo_id="cxrgen-test/cmcrl-phantom",
        method="cmcrl",
        metrics=METRICS,
        dataset_name="cxrgen phantom IU-Xray",
        dataset_id="cxrgen-phantom-iu-xray",
        dataset_split="test",
        metrics_source_description=METRICS_SOURCE,
        is_phantom_data=True,
        training_setup={"stage": "vlci", "epochs": 3, "learning_rate": 1e-4, "views": ["frontal", "lateral"]},
        has_processor=True,
    )
    kwargs.update(overrides)
    return kwargs


def card_metadata(card):
    """The YAML header of a rendered card, parsed independently of huggingface_hub."""
    header = str(card).split("---\n")[1]
    return yaml.safe_load(header)


# ---------------------------------------------------------------------------------------------------- model card


def test_card_metadata_has_pipeline_tag_tags_and_model_index():
    card = build_model_card(REMOTE_CONFIG, **card_kwargs())
    metadata = card_metadata(card)
    assert metadata["pipeline_tag"] == "image-to-text"
    assert metadata["library_name"] == "transformers"
    assert metadata["language"] == "en"
    assert set(metadata["tags"]) >= {"radiology-report-generation", "chest-x-ray", "medical", "custom_code", "cmcrl"}
    assert metadata["datasets"] == ["cxrgen-phantom-iu-xray"]
    (result,) = metadata["model-index"][0]["results"]
    assert result["task"]["type"] == "image-to-text"
    assert result["dataset"] == {"name": "cxrgen phantom IU-Xray", "type": "cxrgen-phantom-iu-xray", "split": "test"}
    assert {metric["name"]: metric["value"] for metric in result["metrics"]} == METRICS
    types = {metric["name"]: metric["type"] for metric in result["metrics"]}
    assert (types["BLEU-4"], types["ROUGE-L"], types["CIDEr"]) == ("bleu", "rouge", "cider")
    assert (types["CE micro F1"], types["CE macro P"], types["CE example-based R"]) == ("f1", "precision", "recall")


def test_card_body_states_research_use_phantom_data_citation_and_usage():
    card = build_model_card(REMOTE_CONFIG, **card_kwargs())
    text = card.text
    assert "research only" in text.lower()
    assert "not for clinical use" in text.lower()
    assert "## Out-of-scope use" in text and "## Limitations and risks" in text
    assert "come from synthetic phantom images" in text and "pipeline check, not clinical performance" in text
    assert METRICS_SOURCE in text and "split `test`" in text
    assert "follows the CheXpert\n  labeler's mention, negation and uncertainty conventions" in text
    assert "| BLEU-4 | 0.1710 |" in text
    assert "| learning_rate | 0.0001 |" in text and '| views | ["frontal", "lateral"] |' in text
    assert "doi       = {10.1109/TIP.2025.3568746}" in text and "eprint    = {2303.09117}" in text
    repo = "cxrgen-test/cmcrl-phantom"
    assert f'AutoModel.from_pretrained("{repo}", trust_remote_code=True)' in text
    assert f'AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)' in text
    assert f'pipeline("image-to-text", model="{repo}", trust_remote_code=True)' in text
    assert '[["frontal.png", "lateral.png"]]' in text
    # Both processors drop what is not the report (TRRG's prompt, CMCRL's [BOS]); batch_decode would print the prompt.
    assert "print(processor.post_process_generation(generated)[0])" in text and "batch_decode" not in text


def test_card_for_real_data_trrg_without_metrics():
    config = {key: value for key, value in REMOTE_CONFIG.items() if key != "custom_pipelines"}
    card = build_model_card(
        config,
        **card_kwargs(
            method="trrg",
            model_name="cxrgen TRRG (IU-Xray)",
            repo_id="cxrgen-test/trrg-iu-xray",
            dataset_name="IU X-Ray",
            dataset_id="iu_xray",
            metrics=None,
            metrics_source_description=None,
            is_phantom_data=False,
            has_processor=False,
            training_setup="Two stages, see the recipe.",
            base_model="Qwen/Qwen2-0.5B",
        ),
    )
    metadata = card_metadata(card)
    assert "model-index" not in metadata
    assert metadata["base_model"] == "Qwen/Qwen2-0.5B" and "trrg" in metadata["tags"]
    assert "phantom" not in card.text.lower()
    assert "has not been evaluated" in card.text
    assert "eprint    = {2408.12141}" in card.text and "MICCAI 2025" in card.text
    # The snippet only shows what the folder supports: no processor, no custom pipeline here.
    assert "AutoProcessor" not in card.text and "pipeline(" not in card.text
    assert 'AutoModel.from_pretrained("cxrgen-test/trrg-iu-xray", trust_remote_code=True)' in card.text
    assert "Base model: [Qwen/Qwen2-0.5B]" in card.text


def test_card_reads_the_model_folder_and_saves_as_readme(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(REMOTE_CONFIG))
    (tmp_path / "processor_config.json").write_text("{}")
    card = build_model_card(tmp_path, **card_kwargs(has_processor=None))
    assert "AutoProcessor.from_pretrained" in card.text and "`tiny-report` (`TinyReportModel`)" in card.text
    path = save_model_card(card, tmp_path)
    assert path == tmp_path / "README.md"
    reloaded = ModelCard.load(path)
    assert reloaded.data.pipeline_tag == "image-to-text"
    assert [result.metric_value for result in reloaded.data.eval_results] == list(METRICS.values())


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        (REMOTE_CONFIG, {"method": "r2gen"}, "method must be one of"),
        (REMOTE_CONFIG, {"metrics": {"BLEU-4": float("nan")}}, "'BLEU-4' must be a finite number"),
        (REMOTE_CONFIG, {"metrics": {"CIDEr": "0.5"}}, "'CIDEr' must be a finite number"),
        (REMOTE_CONFIG, {"metrics_source_description": ""}, "how the metrics were computed"),
        (REMOTE_CONFIG, {"dataset_split": ""}, "dataset_split must be a non-empty string"),
        (REMOTE_CONFIG, {"training_setup": {}}, "training_setup must be"),
        (REMOTE_CONFIG, {"has_processor": None}, "has_processor must be given"),
        ({**REMOTE_CONFIG, "auto_map": {}}, {}, "no auto_map entry for AutoModel"),
    ],
)
def test_card_rejects_bad_input(source, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model_card(source, **card_kwargs(**overrides))


# ------------------------------------------------------------------------------------------ folder validation


def write_minimal_model_folder(folder):
    """The smallest folder push_model_folder accepts: config with auto_map, safetensors, card, remote code."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "tiny-report",
        "architectures": ["TinyReportModel"],
        "auto_map": {
            "AutoConfig": "configuration_tinyreport.TinyReportConfig",
            "AutoModel": "modeling_tinyreport.TinyReportModel",
        },
        "custom_pipelines": {"image-to-text": {"impl": "pipeline_tinyreport.TinyReportPipeline", "pt": ["AutoModel"]}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_tinyreport.py").write_text("from transformers import PreTrainedConfig\n")
    (folder / "modeling_tinyreport.py").write_text("import torch\nfrom .configuration_tinyreport import X\n")
    (folder / "pipeline_tinyreport.py").write_text("from transformers import Pipeline\n")
    save_file({"weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    save_model_card(build_model_card(folder, **card_kwargs()), folder)
    return folder


def test_minimal_folder_is_valid(tmp_path):
    validate_model_folder(write_minimal_model_folder(tmp_path / "model"))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda folder: (folder / "README.md").unlink(), r"README\.md \(the model card\) is missing"),
        (lambda folder: (folder / "README.md").write_text("---\n: [\n---\ntext"), "README.md metadata does not parse"),
        (
            lambda folder: (folder / "pytorch_model.bin").write_bytes(b"pickle"),
            r"pickle files found \(pytorch_model\.bin\)",
        ),
        (lambda folder: (folder / "model.safetensors").rename(folder / "model.pt"), r"model\.pt.*no model weights"),
        (
            lambda folder: (folder / "modeling_tinyreport.py").unlink(),
            "remote code file modeling_tinyreport.py referenced by config.json is missing",
        ),
        (
            lambda folder: (folder / "configuration_tinyreport.py").unlink(),
            "configuration_tinyreport.py, imported by modeling_tinyreport.py, is missing",
        ),
        (
            lambda folder: (folder / "pipeline_tinyreport.py").unlink(),
            "pipeline_tinyreport.py referenced by config.json",
        ),
        (
            lambda folder: (folder / "pipeline_tinyreport.py").write_text("from cxrgen.labels import POSITIVE\n"),
            "pipeline_tinyreport.py imports the cxrgen package",
        ),
        (
            lambda folder: (folder / "config.json").write_text(json.dumps({"model_type": "tiny-report"})),
            "config.json has no auto_map entry for AutoModel",
        ),
    ],
)
def test_incomplete_folder_is_refused_before_any_request(tmp_path, fake_hub, breakage, message):
    folder = write_minimal_model_folder(tmp_path / "model")
    breakage(folder)
    with pytest.raises(ModelFolderError, match=f"(?s){message}"):
        push_model_folder(folder, "cxrgen-test/broken")
    assert fake_hub.requests == []


def test_every_problem_is_listed_at_once(tmp_path):
    folder = write_minimal_model_folder(tmp_path / "model")
    (folder / "README.md").unlink()
    (folder / "training_args.bin").write_bytes(b"pickle")
    with pytest.raises(ModelFolderError) as error:
        validate_model_folder(folder)
    assert "README.md" in str(error.value) and "training_args.bin" in str(error.value)
    with pytest.raises(ModelFolderError, match="Model folder not found"):
        validate_model_folder(tmp_path / "absent")


# ------------------------------------------------------------------------------------- fake Hub round trip

TINY_MODEL_SOURCES = {
    "configuration_tinyreport.py": """
        from transformers import PreTrainedConfig


        class TinyReportConfig(PreTrainedConfig):
            model_type = "tiny-report"
            image_size: int = 8
            report_length: int = 4
            vocabulary: tuple | list = ("no", "acute", "cardiopulmonary", "abnormality", ".")
    """,
    "modeling_tinyreport.py": '''
        import torch
        from torch import nn
        from transformers import PreTrainedModel

        from .configuration_tinyreport import TinyReportConfig


        class TinyReportModel(PreTrainedModel):
            config_class = TinyReportConfig
            base_model_prefix = "tiny_report"

            def __init__(self, config):
                super().__init__(config)
                self.encoder = nn.Linear(config.image_size * config.image_size, 16)
                self.head = nn.Linear(16, config.report_length * len(config.vocabulary))
                self.post_init()

            def forward(self, pixel_values):
                """pixel_values (B, V, H, W) -> word logits (B, report_length, vocabulary)."""
                features = torch.tanh(self.encoder(pixel_values.flatten(2).mean(1)))
                return self.head(features).view(pixel_values.shape[0], self.config.report_length, -1)
    ''',
    "pipeline_tinyreport.py": """
        import numpy as np
        import torch
        from PIL import Image
        from transformers import Pipeline


        class TinyReportPipeline(Pipeline):
            _load_processor = False
            _load_image_processor = False
            _load_feature_extractor = False
            _load_tokenizer = False
            _load_video_processor = False

            def _sanitize_parameters(self, **kwargs):
                return {}, {}, {}

            def preprocess(self, study):
                size = self.model.config.image_size
                views = [Image.open(view).convert("L").resize((size, size)) for view in study]
                pixels = np.stack([np.asarray(view, dtype=np.float32) / 255.0 for view in views])
                return {"pixel_values": torch.from_numpy(pixels)[None]}

            def _forward(self, inputs):
                return {"logits": self.model(**inputs)}

            def postprocess(self, outputs):
                words = [self.model.config.vocabulary[index] for index in outputs["logits"][0].argmax(-1).tolist()]
                return [{"generated_text": " ".join(words)}]
    """,
}


@dataclass
class BuiltModelFolder:
    path: Path
    state_dict: dict  # parameter name -> tensor, as saved
    remote_code_files: tuple


def build_tiny_remote_code_folder(root):
    """Save a tiny remote-code model (config, model, custom image-to-text pipeline) with its card under root/model.

    The classes are imported from a package written under root/source, so save_pretrained copies their modules
    exactly as it copies cxrgen's model folders; the package leaves sys.modules afterwards.
    """
    source = root / "source"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("")
    for name, text in TINY_MODEL_SOURCES.items():
        (source / name).write_text(textwrap.dedent(text).lstrip())
    package = f"tiny_report_source_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(
        package, source / "__init__.py", submodule_search_locations=[str(source)]
    )
    sys.modules[package] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(sys.modules[package])
        config_class = importlib.import_module(f"{package}.configuration_tinyreport").TinyReportConfig
        model_class = importlib.import_module(f"{package}.modeling_tinyreport").TinyReportModel
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModel")
        torch.manual_seed(0)
        model = model_class(config_class())
        model.config.custom_pipelines = {
            "image-to-text": {
                "impl": "pipeline_tinyreport.TinyReportPipeline",
                "pt": ["AutoModel"],
                "tf": [],
                "type": "multimodal",
            }
        }
        folder = root / "model"
        model.save_pretrained(folder)
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == package]:
            del sys.modules[name]
    # A Pipeline is only copied by Pipeline.save_pretrained, which also registers it process-wide: copy the file.
    shutil.copy(source / "pipeline_tinyreport.py", folder)
    card = build_model_card(folder, **card_kwargs(repo_id="cxrgen-test/tiny-report", model_name="tiny report"))
    save_model_card(card, folder)
    state_dict = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return BuiltModelFolder(folder, state_dict, tuple(TINY_MODEL_SOURCES))


def write_study(folder):
    """A frontal and a lateral 8-bit test image, returned as paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for view, seed in (("frontal", 1), ("lateral", 2)):
        pixels = torch.randint(0, 256, (32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        path = folder / f"{view}.png"
        Image.fromarray(pixels.numpy(), mode="L").save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("build_folder", [build_tiny_remote_code_folder])
def test_push_then_load_back_through_the_hub_client(tmp_path, fake_hub, build_folder):
    built = build_folder(tmp_path / "build")
    repo_id = "cxrgen-test/round-trip"
    hf_home = tmp_path / "hf_home"

    commit = push_model_folder(built.path, repo_id, private=True, commit_message="Add tiny report model")
    assert commit.oid == fake_hub.repos[repo_id].head.oid
    assert commit.commit_url.endswith(f"/{repo_id}/commit/{commit.oid}")
    local_files = {str(p.relative_to(built.path)): p.read_bytes() for p in built.path.rglob("*") if p.is_file()}
    assert fake_hub.files(repo_id) == local_files
    assert {"README.md", "config.json", "model.safetensors", *built.remote_code_files} <= set(local_files)

    info = HfApi().model_info(repo_id)
    assert info.pipeline_tag == "image-to-text" and "radiology-report-generation" in info.tags
    with pytest.raises(RepositoryNotFoundError):  # the repo is private: no token, no access
        hf_hub_download(repo_id, "config.json", token=False)

    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    # The class came from the uploaded code, imported from the modules cache inside tmp_path.
    assert type(model).__module__.startswith("transformers_modules.")
    assert Path(inspect.getfile(type(model))).is_relative_to(hf_home / "modules")
    assert {"config.json", "model.safetensors", *built.remote_code_files} - {"pipeline_tinyreport.py"} <= set(
        fake_hub.downloaded(repo_id)
    )
    loaded = model.state_dict()
    assert loaded.keys() == built.state_dict.keys()
    for name, tensor in built.state_dict.items():
        assert torch.equal(loaded[name], tensor), name

    weights_path = hf_hub_download(repo_id, "model.safetensors")
    assert Path(weights_path).is_relative_to(hf_home / "hub")
    assert all(torch.equal(tensor, built.state_dict[name]) for name, tensor in load_file(weights_path).items())
    snapshot = Path(snapshot_download(repo_id))
    assert {str(p.relative_to(snapshot)): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == local_files

    study = write_study(tmp_path / "study")
    from_hub = pipeline("image-to-text", model=repo_id, trust_remote_code=True)
    from_folder = pipeline("image-to-text", model=str(built.path), trust_remote_code=True)
    assert type(from_hub).__module__.startswith("transformers_modules.")
    assert from_hub.task == "image-to-text"
    hub_report = from_hub([study])
    assert hub_report == from_folder([study])
    assert isinstance(hub_report[0][0]["generated_text"], str) and hub_report[0][0]["generated_text"]
    assert "pipeline_tinyreport.py" in fake_hub.downloaded(repo_id)
    assert fake_hub.unhandled == []


def test_pushing_again_updates_the_same_repo(tmp_path, fake_hub):
    folder = write_minimal_model_folder(tmp_path / "model")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_tinyreport.cpython-311.pyc").write_bytes(b"bytecode")
    first = push_model_folder(folder, "cxrgen-test/twice")
    assert not any("__pycache__" in path for path in fake_hub.files("cxrgen-test/twice"))
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), "note": 2}))
    second = push_model_folder(folder, "cxrgen-test/twice", commit_message="Update config")
    commits = fake_hub.repos["cxrgen-test/twice"].commits
    assert [c.oid for c in commits[1:]] == [first.oid, second.oid] and commits[-1].message == "Update config"
    assert json.loads(fake_hub.files("cxrgen-test/twice")["config.json"])["note"] == 2
    assert fake_hub.repos["cxrgen-test/twice"].private is False
    assert fake_hub.unhandled == []
