"""The package's layering (ARCHITECTURE.md): imports only point down, model folders are self-contained, and the
light entry points (labels, labeler, metrics, ``cxrgen evaluate --predictions``) load neither torch nor transformers.
"""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cxrgen import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlProcessor, CxrImageProcessor
from cxrgen.processing.tokenization import build_report_tokenizer

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "cxrgen"

# Lowest first, as in ARCHITECTURE.md: a module may import its own layer and the layers before it. A name covers the
# module and everything under it; "cxrgen" itself is only the package's __init__ (the lazy public names).
LAYERS = (
    (
        "foundation",
        (
            "cxrgen.labels",
            "cxrgen.labeler",
            "cxrgen.compat",
            "cxrgen.methods",
            "cxrgen.parallel",
            "cxrgen.environment",
            "cxrgen.allocator",
        ),
    ),
    ("processing", ("cxrgen.processing",)),
    ("modeling", ("cxrgen.modeling", "cxrgen.presets")),
    ("data", ("cxrgen.data",)),
    ("inference", ("cxrgen.inference", "cxrgen.visualization")),
    ("evaluation", ("cxrgen.evaluation",)),
    ("hub_cards", ("cxrgen.hub_cards",)),
    ("trainers", ("cxrgen.trainers",)),
    ("application", ("cxrgen", "cxrgen.cli", "cxrgen.convert", "cxrgen.demo", "cxrgen.benchmark", "cxrgen.app")),
)
# Model folders may import these (yaml: PyYAML, which transformers depends on, reads the preset files), the standard
# library and single-dot sibling files. The processing files that travel
# with a saved model may also use the image libraries transformers' image processors need (numpy, PIL, pydicom).
MODEL_FOLDER_PACKAGES = {"torch", "transformers", "yaml"}
TRAVELLING_PROCESSING_FILES = ("cleaning.py", "image_processing_cxr.py", "processing_cmcrl.py", "processing_trrg.py")


def layer_of(module: str) -> int:
    """Index in LAYERS of a cxrgen module (the longest matching name wins)."""
    best = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            covers = module == name or (name != "cxrgen" and module.startswith(name + "."))
            if covers and (best is None or len(name) > len(best[1])):
                best = (index, name)
    if best is None:
        raise ValueError(f"{module} belongs to no layer: add it to ARCHITECTURE.md and LAYERS")
    return best[0]


def layering_violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (both dotted cxrgen module names), or None when it may."""
    source, target = layer_of(importer), layer_of(imported)
    if target <= source:
        return None
    return (
        f"{importer} (layer {LAYERS[source][0]}) imports {imported} (layer {LAYERS[target][0]}, above it): "
        "move the code to the lower layer or pass it in as an argument"
    )


def is_model_folder(path: Path, root: Path) -> bool:
    """Whether the file lies in a model folder ``cxrgen/modeling/<name>/``."""
    return path.parent.parent == root / "cxrgen" / "modeling"


def self_contained_violation(level: int, imported: str, model_folder: bool = True) -> str | None:
    """Why a file copied as remote code may not import ``imported`` (``level`` dots), or None when it may.

    ``model_folder=False`` is the rule of the travelling processing files: any package but cxrgen itself.
    """
    if level == 1:
        return None
    if level > 1:
        return f"a relative import with {level} dots leaves the folder, which Hub users do not have"
    top = imported.partition(".")[0]
    if top == "cxrgen":
        return "imports the cxrgen package, which Hub users do not have"
    if not model_folder or top in MODEL_FOLDER_PACKAGES or top in sys.stdlib_module_names:
        return None
    return f"{imported} is neither torch, transformers, the standard library nor a single-dot sibling file"


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of a file under ``root`` (the folder holding the ``cxrgen`` package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, int, str, str]]:
    """(line, dots, absolute target, source text) of every import of a file, module level and nested, by line."""
    module = module_name(path, root)
    package = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
    text = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        source = " ".join(ast.get_source_segment(text, node).split()) if isinstance(node, ast.stmt) else ""
        if isinstance(node, ast.Import):
            found += [(node.lineno, 0, alias.name, source) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, node.level, target, source))
    return sorted(found)


def find_violations(root: Path) -> list[str]:
    """Every import under ``root/cxrgen`` that breaks the layering or a folder's self-containment, as messages."""
    problems = []
    for path in sorted((root / "cxrgen").rglob("*.py")):
        module = module_name(path, root)
        where = path.relative_to(root)
        travels = module.startswith("cxrgen.processing.") and path.name in TRAVELLING_PROCESSING_FILES
        for line, level, target, source in imports_of(path, root):
            reasons = []
            if is_model_folder(path, root) or travels:
                reasons.append(self_contained_violation(level, target, model_folder=is_model_folder(path, root)))
            if target == "cxrgen" or target.startswith("cxrgen."):
                reasons.append(layering_violation(module, target))
            problems += [f"{where}:{line}: `{source}`: {reason}" for reason in reasons if reason]
    return problems


def test_every_import_follows_the_layering_and_model_folders_are_self_contained():
    problems = find_violations(PACKAGE_DIR.parent)
    assert not problems, "\n".join(problems)


def test_every_module_belongs_to_a_layer():
    for path in PACKAGE_DIR.rglob("*.py"):
        layer_of(module_name(path, PACKAGE_DIR.parent))


def test_single_imports_are_classified():
    assert layering_violation("cxrgen.data.annotation", "cxrgen.labeler") is None
    assert layering_violation("cxrgen.data.phantom", "cxrgen.data.annotation") is None
    assert layering_violation("cxrgen.trainers.vlci", "cxrgen.evaluation.report") is None
    assert layering_violation("cxrgen.cli", "cxrgen.trainers.stage") is None
    assert "above it" in layering_violation("cxrgen.data.annotation", "cxrgen.evaluation.metrics")
    assert "above it" in layering_violation("cxrgen.evaluation.report", "cxrgen.trainers.stage")
    assert "above it" in layering_violation("cxrgen.modeling.cmcrl", "cxrgen.data.collators")
    assert "above it" in layering_violation("cxrgen.labels", "cxrgen")
    with pytest.raises(ValueError, match="cxrgen.unplaced belongs to no layer"):
        layer_of("cxrgen.unplaced")

    assert self_contained_violation(1, "cxrgen.modeling.cmcrl.configuration_cmcrl") is None
    assert self_contained_violation(0, "torch.nn.functional") is None
    assert self_contained_violation(0, "dataclasses") is None
    assert "leaves the folder" in self_contained_violation(3, "cxrgen.processing.processing_cmcrl")
    assert "imports the cxrgen package" in self_contained_violation(0, "cxrgen.labels")
    assert "neither torch" in self_contained_violation(0, "numpy")
    assert self_contained_violation(0, "numpy", model_folder=False) is None
    assert "imports the cxrgen package" in self_contained_violation(0, "cxrgen.labels", model_folder=False)
    assert "leaves the folder" in self_contained_violation(2, "cxrgen.labels", model_folder=False)


def test_bad_imports_in_a_synthetic_package_are_reported_with_file_and_line(tmp_path):
    files = {
        "cxrgen/__init__.py": "",
        "cxrgen/labels.py": "import re\n",
        "cxrgen/data/__init__.py": "",
        "cxrgen/data/annotation.py": "from cxrgen.labels import POSITIVE\n\n\ndef f():\n    from ..trainers import common\n",
        "cxrgen/trainers/__init__.py": "from . import common\n",
        "cxrgen/trainers/common.py": "import cxrgen.data.annotation\n",
        "cxrgen/modeling/__init__.py": "",
        "cxrgen/modeling/toy/__init__.py": "from .modeling_toy import f\n",
        "cxrgen/modeling/toy/modeling_toy.py": "import torch\n\nfrom ...labels import POSITIVE\nimport numpy\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = find_violations(tmp_path)
    assert len(problems) == 3, problems
    assert problems[0].startswith(
        "cxrgen/data/annotation.py:5: `from ..trainers import common`: cxrgen.data.annotation"
    )
    assert "cxrgen.trainers (layer trainers, above it)" in problems[0]
    assert problems[1].startswith("cxrgen/modeling/toy/modeling_toy.py:3: `from ...labels import POSITIVE`: ")
    assert "3 dots leaves the folder" in problems[1]  # cxrgen.labels is below modeling: only self-containment fails
    assert problems[2].startswith("cxrgen/modeling/toy/modeling_toy.py:4: `import numpy`: numpy is neither torch")


def _run_python(code, *args):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "statement",
    ["import cxrgen", "import cxrgen.labels", "import cxrgen.labeler", "import cxrgen.evaluation.metrics"],
)
def test_light_modules_load_neither_torch_nor_transformers(statement):
    result = _run_python(f"""
        import sys
        {statement}
        heavy = sorted({{"torch", "transformers"}} & set(sys.modules))
        assert not heavy, heavy
    """)
    assert result.returncode == 0, result.stderr


def test_evaluate_predictions_command_loads_neither_torch_nor_transformers(tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    records = [
        {"id": "a", "prediction": "no pleural effusion .", "reference": "no pleural effusion ."},
        {"id": "b", "prediction": "mild cardiomegaly .", "reference": "the heart is enlarged ."},
    ]
    predictions.write_text("".join(json.dumps(record) + "\n" for record in records))
    result = _run_python(
        """
        import sys
        from cxrgen.cli import main
        assert main(["evaluate", "--predictions", sys.argv[1], "--output", sys.argv[2]]) == 0
        heavy = sorted({"torch", "transformers"} & set(sys.modules))
        assert not heavy, heavy
        """,
        predictions,
        tmp_path / "metrics.json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["ce"]["num_reports"] == 2


def test_importing_a_model_folder_registers_both_families_with_the_auto_classes():
    result = _run_python("""
        from transformers import AutoConfig
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

        from cxrgen.modeling.trrg.configuration_trrg import TrrgConfig

        cmcrl = type(AutoConfig.for_model("cmcrl"))
        assert type(AutoConfig.for_model("trrg")) is TrrgConfig
        assert AutoConfig.for_model("trrg_contrastive").model_type == "trrg_contrastive"
        assert [PROCESSOR_MAPPING[config].__name__ for config in (cmcrl, TrrgConfig)] == ["CmcrlProcessor", "TrrgProcessor"]
    """)
    assert result.returncode == 0, result.stderr


def test_a_saved_cmcrl_folder_loads_through_the_auto_classes_after_a_top_level_import(tmp_path):
    reports = ["the heart is normal .", "no pleural effusion .", "mild cardiomegaly ."]
    tokenizer = build_report_tokenizer(reports, min_frequency=1, model_max_length=16)
    torch.manual_seed(0)
    CmcrlForConditionalGeneration(CmcrlConfig.from_preset("tiny", vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    CmcrlProcessor(CxrImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(tmp_path)

    result = _run_python(
        """
        import sys
        from cxrgen import CmcrlForConditionalGeneration, CmcrlProcessor
        from transformers import AutoModel, AutoProcessor

        assert type(AutoModel.from_pretrained(sys.argv[1])) is CmcrlForConditionalGeneration
        assert type(AutoProcessor.from_pretrained(sys.argv[1])) is CmcrlProcessor
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
