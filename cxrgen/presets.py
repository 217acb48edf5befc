"""The presets of each method: one YAML file per preset in its model folder's ``presets/`` (e.g.
``cxrgen/modeling/cmcrl/presets/tiny.yaml``), shipped as package data.

A preset file holds a one-line ``description`` and, each optional:

- ``models``: per model type, the config fields that ``<Config>.from_preset`` sets (``cmcrl``; ``trrg`` and
  ``trrg_contrastive``);
- ``stages``: per training stage, what ``cxrgen train <stage>`` adds to them (the sections of
  :attr:`cxrgen.methods.Stage.preset_sections`: stage-only model options, processor options, training defaults);
- ``demo``: in the method's demo preset (:attr:`cxrgen.methods.Method.demo_preset`), the ``cxrgen demo`` recipe:
  ``image_size``, ``num_beams`` and ``stages``, a list of stage configs (``stage``, ``title``, ``folder`` for all
  but the last, and ``model`` / ``processor`` / ``data`` / ``training`` sections) run in order (see
  :func:`cxrgen.demo.run_demo`);
- ``benchmark``: beside ``demo``, what ``cxrgen benchmark`` (:mod:`cxrgen.benchmark`) adds: ``perception_stage``
  (the stage whose folder is the method's classifier), ``swap_clues`` (whether the reports are conditioned on clues
  that can be swapped), ``ablations`` (name -> model overrides of the report generator) and ``profiles`` (name ->
  a recipe like ``demo``; ``full`` is the longer profile).

Unknown keys are an error naming the file. The model folder's configuration module reads the files (so
``from_preset`` needs nothing of this package) and checks ``models``; this module checks ``stages``, ``demo`` and
``benchmark`` against the method registry.
"""

import copy
import importlib
import os
from pathlib import Path
from types import ModuleType

from cxrgen.methods import METHODS, find_stage, get_method

DEMO_KEYS = ("image_size", "num_beams", "stages")
DEMO_STAGE_KEYS = ("stage", "title", "folder", "model", "processor", "data", "training")
BENCHMARK_KEYS = ("perception_stage", "swap_clues", "ablations", "profiles")


def _reader(method: str) -> ModuleType:
    # The configuration module of the method's model folder, which holds the files and their reader.
    return importlib.import_module(get_method(method).config.partition(":")[0])


def list_presets(method: str | None = None) -> list[str] | dict[str, list[str]]:
    """The preset names of ``method``, or of every method as ``{method: names}`` when it is None."""
    if method is None:
        return {name: list_presets(name) for name in METHODS}
    return _reader(method).preset_names()


def load_preset(method: str, name_or_path: str | os.PathLike) -> dict:
    """The checked content of a preset of ``method``: a name of :func:`list_presets` or a YAML file's path.

    Raises:
        ValueError: an unknown name (the message lists the names), or a file that does not follow the schema of
            this module's docstring (the message names the file and the key).
    """
    return _read_checked(method, name_or_path)[1]


def stage_preset(stage: str, name_or_path: str | os.PathLike, config_class: type | None = None) -> dict:
    """What a preset gives training stage ``stage``: ``{section: mapping}`` for each of its ``preset_sections``
    (empty where the preset sets none), a copy the caller may change.

    With ``config_class``, the result always has ``model``, ``processor`` and ``training``, and ``model`` starts from
    the preset's fields of that config (``models.<model_type>``), updated by the stage's own model options; the file
    is read once."""
    method, spec = find_stage(stage)
    path, document = _read_checked(method.name, name_or_path)
    settings = document.get("stages", {}).get(stage, {})
    sections = {section: copy.deepcopy(settings.get(section, {})) for section in spec.preset_sections}
    if config_class is None:
        return sections
    models = document.get("models", {})
    if config_class.model_type not in models:
        raise ValueError(
            f"{path}: the preset has no models.{config_class.model_type} ({config_class.__name__} fields)."
        )
    model = {**copy.deepcopy(models[config_class.model_type]), **sections.get("model", {})}
    return {"processor": {}, "training": {}, **sections, "model": model}


def _read_checked(method: str, name_or_path: str | os.PathLike) -> tuple[Path, dict]:
    """The file of a preset of ``method`` and its content, checked (see :func:`load_preset`)."""
    spec = get_method(method)
    path, document = _reader(method).read_preset(name_or_path)
    stages = {stage.name: stage for stage in spec.stages}
    settings = document.get("stages", {})
    if not isinstance(settings, dict) or set(settings) - set(stages):
        raise ValueError(f"{path}: 'stages' maps stages among {list(stages)} to their settings, got {settings!r}.")
    for name, sections in settings.items():
        _check_mapping(sections, stages[name].preset_sections, f"{path}: stages.{name}")
    if "demo" in document:
        _check_demo(document["demo"], stages, path, "demo")
    if "benchmark" in document:
        _check_benchmark(document["benchmark"], stages, path)
    return path, document


def _check_mapping(values: object, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping with keys among {list(allowed)}, got {values!r}.")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {list(allowed)}.")
    for key in set(values) & {"model", "processor", "data", "training"}:
        if not isinstance(values[key], dict):
            raise ValueError(f"{where}.{key} must be a mapping, got {values[key]!r}.")


def _check_demo(demo: object, stages: dict, path: Path, name: str) -> None:
    """Check a recipe (``demo`` or a benchmark profile, at ``name``)."""
    _check_mapping(demo, DEMO_KEYS, f"{path}: {name}")
    missing = [key for key in DEMO_KEYS if key not in demo]
    if missing:
        raise ValueError(f"{path}: {name} needs {missing}.")
    for key in ("image_size", "num_beams"):
        if isinstance(demo[key], bool) or not isinstance(demo[key], int) or demo[key] < 1:
            raise ValueError(f"{path}: {name}.{key} must be a positive integer, got {demo[key]!r}.")
    entries = demo["stages"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: {name}.stages must be a non-empty list of stage configs, got {entries!r}.")
    for index, entry in enumerate(entries):
        where = f"{path}: {name}.stages[{index}]"
        _check_mapping(entry, DEMO_STAGE_KEYS, where)
        if entry.get("stage") not in stages:
            raise ValueError(f"{where}.stage must be one of {list(stages)}, got {entry.get('stage')!r}.")
        if not isinstance(entry.get("title"), str):
            raise ValueError(f"{where}.title must say what the stage trains, got {entry.get('title')!r}.")
        # Every stage but the last writes a folder of its own; the last one writes the model folder.
        last = index == len(entries) - 1
        if last == ("folder" in entry) or not (last or isinstance(entry["folder"], str)):
            raise ValueError(f"{where}: every stage but the last needs a 'folder' name; the last writes 'model'.")


def _check_benchmark(benchmark: object, stages: dict, path: Path) -> None:
    where = f"{path}: benchmark"
    if not isinstance(benchmark, dict) or set(benchmark) - set(BENCHMARK_KEYS):
        raise ValueError(f"{where} must be a mapping with keys among {list(BENCHMARK_KEYS)}, got {benchmark!r}.")
    if benchmark.get("perception_stage") not in stages:
        raise ValueError(
            f"{where}.perception_stage must be one of {list(stages)}, got {benchmark.get('perception_stage')!r}."
        )
    if not isinstance(benchmark.get("swap_clues", False), bool):
        raise ValueError(f"{where}.swap_clues must be true or false, got {benchmark['swap_clues']!r}.")
    ablations = benchmark.get("ablations", {})
    if not isinstance(ablations, dict) or not all(isinstance(value, dict) for value in ablations.values()):
        raise ValueError(f"{where}.ablations maps a name to model overrides of the last stage, got {ablations!r}.")
    profiles = benchmark.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ValueError(f"{where}.profiles maps a profile name to a recipe like demo's, got {profiles!r}.")
    for name, recipe in profiles.items():
        _check_demo(recipe, stages, path, f"benchmark.profiles.{name}")


__all__ = ["list_presets", "load_preset", "stage_preset"]
