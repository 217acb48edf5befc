"""A saved TRRG folder loads and generates through remote code in a process where cxrgen cannot be imported."""

import json
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from packaging.version import Version
from PIL import Image
from test_trrg_common import IMAGE_SIZE, build_tokenizer, trrg_config
from without_cxrgen import run_without_cxrgen

from cxrgen.hub_cards import build_model_card
from cxrgen.modeling.trrg.modeling_trrg import TrrgForConditionalGeneration
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_trrg import TrrgProcessor

pytestmark = pytest.mark.transformers_compat

PROMPT = "generate a report for this x-ray"

CHILD = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import torch
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline
    torch.set_num_threads(1)
    folder, expected = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)).__name__ == type(model).__name__
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    batch = processor(images=[expected["views"]])
    generated = model.generate(**batch, max_new_tokens=6)
    results = {"direct": processor.post_process_generation(generated)[0]}
    custom = pipeline("image-to-text", model=folder, trust_remote_code=True)
    out = custom([expected["views"]], max_new_tokens=6)[0]
    batched = custom([expected["views"], expected["views"][:1]], batch_size=2, max_new_tokens=6)
    results["batched"] = [study["generated_text"] for study in batched]
    results["custom"] = out["generated_text"]
    results["custom_task"] = custom.task
    results["num_probabilities"] = len(out["probabilities"])
    results["clues"] = out["clues"]
    builtin = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
    content = [{"type": "image", "path": path} for path in expected["views"]] + [{"type": "text", "text": expected["prompt"]}]
    chat = builtin(text=[{"role": "user", "content": content}], max_new_tokens=6, return_full_text=False)
    results["chat"] = chat[0]["generated_text"].strip()
    for name, code in expected["snippets"].items():  # the README's and the model card's usage, run as written
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(code, {})
        results[name] = printed.getvalue()
    print("RESULTS" + json.dumps(results))
    """
)


def usage_snippets(folder: Path) -> dict[str, str]:
    """The README's TRRG usage block and the model card's, pointed at `folder`."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (readme_code,) = [code for code in re.findall(r"```python\n(.*?)```", readme, re.S) if "path/or/org/trrg" in code]
    card = build_model_card(
        folder,
        model_name="tiny TRRG",
        repo_id="cxrgen-test/trrg-tiny",
        method="trrg",
        metrics=None,
        dataset_name="phantom",
        dataset_id="phantom",
        dataset_split="test",
        metrics_source_description=None,
        is_phantom_data=True,
        training_setup="A tiny untrained test model.",
    )
    (card_code,) = re.findall(r"```python\n(.*?)```", card.text, re.S)
    return {
        "readme": readme_code.replace("path/or/org/trrg", str(folder)),
        "card": card_code.replace("cxrgen-test/trrg-tiny", str(folder)),
    }


def test_saved_folder_works_without_the_package(tmp_path):
    torch.manual_seed(0)
    config = trrg_config("llama", clue_selection="topk", clue_top_k=3)
    model = TrrgForConditionalGeneration(config).eval()
    assert getattr(config, "auto_map", None) is None  # the model writes its remote-code entries on its own copy
    processor = TrrgProcessor.for_model(
        config, CxrImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), build_tokenizer(), prompt=PROMPT
    )
    folder = tmp_path / "trrg"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    files = set(os.listdir(folder))
    assert {
        "configuration_trrg.py",
        "modeling_trrg.py",
        "pipeline_trrg.py",
        "processing_trrg.py",
        "image_processing_cxr.py",
        "chat_template.jinja",
    } <= files
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"]["AutoModel"] == "modeling_trrg.TrrgForConditionalGeneration"
    assert saved["custom_pipelines"]["image-to-text"]["impl"] == "pipeline_trrg.TrrgReportPipeline"

    views = []
    for seed, name in enumerate(("frontal.png", "lateral.png")):  # the file names of the usage snippets
        path = tmp_path / name
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
        views.append(str(path))
    batch = processor(images=[views])
    generated = model.generate(**batch, max_new_tokens=6)
    expected_text = processor.post_process_generation(generated, batch["input_ids"].shape[1])[0]
    assert expected_text
    expected_clues = model.structured_findings(batch["pixel_values"], batch["pixel_mask"])[0]["clues"]
    mixed = processor(images=[views, views[:1]])
    expected_batched = processor.post_process_generation(model.generate(**mixed, max_new_tokens=6))
    long_report = processor.post_process_generation(model.generate(**batch, max_new_tokens=100))[0]

    payload = json.dumps({"views": views, "prompt": PROMPT, "snippets": usage_snippets(folder)})
    result = run_without_cxrgen(CHILD, [str(folder), payload], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    # Before 5.20 transformers' own image-text-to-text pipeline passes generation_config with loose arguments, which
    # its generate() calls deprecated; from 5.20 on nothing in this run may print a deprecation notice.
    if Version(transformers.__version__) >= Version("5.20"):
        assert "deprecated" not in result.stderr, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS"))
    results = json.loads(line[len("RESULTS") :])
    assert results["direct"] == expected_text
    assert results["custom"] == expected_text and results["custom_task"] == "image-to-text"
    assert results["chat"] == expected_text
    assert results["batched"] == expected_batched
    # Both snippets print the report alone first: no prompt, no placeholders.
    assert results["readme"].splitlines()[0] == str([long_report])
    assert results["card"].splitlines()[0] == long_report
    assert results["num_probabilities"] == 14
    assert [(c["observation"], c["polarity"]) for c in results["clues"]] == [
        (c["observation"], c["polarity"]) for c in expected_clues
    ]
    assert [c["probability"] for c in results["clues"]] == pytest.approx([c["probability"] for c in expected_clues])
