"""Publishing a saved cxrgen model folder to the Hugging Face Hub, after checking it is complete and pickle-free."""

import json
import os
from pathlib import Path

import yaml
from huggingface_hub import CommitInfo, HfApi, ModelCard
from transformers.dynamic_module_utils import get_imports, get_relative_imports

# Weight or state files that unpickle on load: refused so that users never run pickled code from the Hub.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Bytecode caches next to copied remote code are build leftovers, not part of the model.
IGNORE_PATTERNS = ["*.pyc", "*__pycache__/*"]  # fnmatch: "*" also matches "/"
# Config files whose auto_map names remote-code modules that must travel with the folder.
AUTO_MAP_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


class ModelFolderError(ValueError):
    """A model folder is not complete enough to publish; the message lists every problem found."""


def validate_model_folder(
    folder: str | os.PathLike, *, card: bool = True, processor: bool = False, training_state: bool = False
) -> None:
    """Check that ``folder`` is a complete, pickle-free model folder with its card and remote code; raise if not.

    The options serve the folders a training run writes: ``card=False`` checks a folder before its card is written,
    ``processor=True`` also requires the processor (``processor_config.json``), and ``training_state=True`` accepts
    the pickled training state (optimizer, scheduler, RNG, training arguments) that a run's ``checkpoint-<step>``
    folders keep for ``--resume`` (in the run folder, they lie inside the final model folder); a folder to publish
    must hold none of it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"Model folder not found: {folder}")
    problems = []
    files = [
        path
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.relative_to(folder).parts and path.suffix != ".pyc"
    ]

    pickles = sorted(str(path.relative_to(folder)) for path in files if path.suffix.lower() in PICKLE_SUFFIXES)
    if pickles and not training_state:
        problems.append(
            f"pickle files found ({', '.join(pickles)}): weights must be *.safetensors and training state "
            "(optimizer, scheduler, RNG) must not be published; push the final model folder"
        )
    if not any(path.suffix == ".safetensors" for path in files):
        problems.append("no model weights: expected *.safetensors")
    if processor and not (folder / "processor_config.json").is_file():
        problems.append("processor_config.json (the processor) is missing: save the processor with the model")
    problems.extend(_check_shards(folder))
    if card:
        problems.extend(_check_card(folder))
    problems.extend(_check_remote_code(folder))

    if problems:
        raise ModelFolderError(f"{folder} is not a complete model folder:\n- " + "\n- ".join(problems))


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload cxrgen model",
) -> CommitInfo:
    """Validate a saved model folder, create `repo_id` if needed and upload the folder; return the CommitInfo."""
    validate_model_folder(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=folder,
        commit_message=commit_message,
        ignore_patterns=IGNORE_PATTERNS,
    )


def _check_shards(folder):
    """Every shard named by a safetensors index must be present."""
    index_path = folder / "model.safetensors.index.json"
    if not index_path.is_file():
        return []
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        return [f"{index_path.name} is not a safetensors index with a weight_map ({error})"]
    missing = sorted({shard for shard in weight_map.values() if not (folder / shard).is_file()})
    return [f"weight shards listed in {index_path.name} are missing: {', '.join(missing)}"] if missing else []


def _check_card(folder):
    """README.md must be a model card whose metadata parses."""
    card_path = folder / "README.md"
    if not card_path.is_file():
        return ["README.md (the model card) is missing: build it with cxrgen.hub_cards.build_model_card"]
    try:
        card = ModelCard.load(card_path)
    except (ValueError, yaml.YAMLError) as error:
        return [f"README.md metadata does not parse: {error}"]
    if not card.data.to_dict():
        return ["README.md has no metadata header: build it with cxrgen.hub_cards.build_model_card"]
    return []


def _check_remote_code(folder):
    """config.json must map AutoModel to remote code; every referenced module and its imports must be present."""
    problems, modules = [], {}
    for name in AUTO_MAP_FILES:
        path = folder / name
        if not path.is_file():
            if name == "config.json":
                problems.append("config.json is missing")
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            problems.append(f"{name} is not valid JSON ({error.msg})")
            continue
        auto_map = config.get("auto_map") or {}
        if name == "config.json" and "AutoModel" not in auto_map:
            problems.append(
                "config.json has no auto_map entry for AutoModel: save the model after register_for_auto_class"
            )
        references = []
        for value in auto_map.values():
            # A tokenizer's auto_map is a [slow, fast] pair with None for a missing variant.
            references.extend(item for item in (value if isinstance(value, list) else [value]) if item is not None)
        for task, spec in (config.get("custom_pipelines") or {}).items():
            if not (isinstance(spec, dict) and isinstance(spec.get("impl"), str)):
                problems.append(f"{name}: custom_pipelines[{task!r}] has no 'impl' module.Class entry")
            else:
                references.append(spec["impl"])
        for reference in references:
            if "--" in reference:
                problems.append(f"{name} refers to code in another repository ({reference}); ship the code instead")
            else:
                modules.setdefault(reference.rsplit(".", 1)[0] + ".py", name)

    checked = set()
    for module, referrer in sorted(modules.items()):
        if not (folder / module).is_file():
            problems.append(f"remote code file {module} referenced by {referrer} is missing")
            continue
        pending = [folder / module]
        while pending:
            path = pending.pop()
            if path in checked:
                continue
            checked.add(path)
            if "cxrgen" in get_imports(path):
                problems.append(
                    f"{path.name} imports the cxrgen package, which Hub users do not have; "
                    "remote code may only import torch, transformers and sibling files"
                )
            for imported in get_relative_imports(path):
                imported_path = folder / f"{imported}.py"
                if imported_path.is_file():
                    pending.append(imported_path)
                else:
                    problems.append(f"remote code file {imported_path.name}, imported by {path.name}, is missing")
    return problems
