"""The model folders run as remote code, so each holds its own copy of a few helpers (the preset reader, the
sub-config builder, the KV-cache name shim, the pipelines' generation arguments). This keeps the copies identical:
a fix made in one folder fails here until it is made in the other."""

import ast
from pathlib import Path

import pytest

MODELING_DIR = Path(__file__).resolve().parents[1] / "cxrgen" / "modeling"
FOLDERS = ("cmcrl", "trrg")
# (file name pattern, qualified name): "Class.method" for a method. The pattern's {} is the folder's name.
COPIES = (
    ("configuration_{}.py", "preset_names"),
    ("configuration_{}.py", "read_preset"),
    ("configuration_{}.py", "preset_model"),
    ("configuration_{}.py", "sub_config"),
    ("configuration_{}.py", "PRESETS_DIR"),
    ("configuration_{}.py", "PRESET_KEYS"),
    ("modeling_{}.py", "accepts_either_cache_name"),
    ("pipeline_{}.py", "*Pipeline._call_generate_kwargs"),
)


def definition_source(path: Path, qualified_name: str) -> str:
    """The source of a top-level function, class or assignment of ``path``, or of a method ("Class.method"; a
    class name ``*Pipeline`` matches the one class whose name ends so)."""
    source = path.read_text(encoding="utf-8")
    body = ast.parse(source).body
    owner, _, name = qualified_name.rpartition(".")
    if owner:
        classes = [node for node in body if isinstance(node, ast.ClassDef)]
        matches = [
            node for node in classes if node.name == owner or (owner[0] == "*" and node.name.endswith(owner[1:]))
        ]
        assert len(matches) == 1, f"{path.name}: expected one class {owner}, found {[node.name for node in matches]}"
        body = matches[0].body
    for node in body:
        targets = getattr(node, "targets", [getattr(node, "target", None)])
        names = [node.name] if hasattr(node, "name") else [getattr(target, "id", None) for target in targets]
        if name in names:
            return ast.get_source_segment(source, node)
    raise AssertionError(f"{path.name} has no {qualified_name}")


@pytest.mark.parametrize(("pattern", "qualified_name"), COPIES)
def test_model_folders_hold_identical_copies(pattern, qualified_name):
    first, *others = (
        definition_source(MODELING_DIR / name / pattern.format(name), qualified_name) for name in FOLDERS
    )
    for folder, other in zip(FOLDERS[1:], others):
        assert other == first, (
            f"{pattern.format(folder)}: {qualified_name} differs from the {FOLDERS[0]} folder's copy"
        )


def test_definition_source_finds_methods_and_reports_missing_names(tmp_path):
    path = tmp_path / "pipeline_toy.py"
    path.write_text("X = 1\n\nclass ToyPipeline:\n    def f(self):\n        return 2\n", encoding="utf-8")
    assert definition_source(path, "X") == "X = 1"
    assert definition_source(path, "*Pipeline.f") == "def f(self):\n        return 2"
    with pytest.raises(AssertionError, match="has no g"):
        definition_source(path, "g")
