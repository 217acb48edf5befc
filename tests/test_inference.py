"""generate_reports runs TRRG's vision tower once per batch and gives the reports and findings of the two-pass path."""

import pytest
import torch
from PIL import Image
from tiny_folders import save_trrg_folder

from cxrgen.inference import generate_reports, load_generator

pytestmark = pytest.mark.transformers_compat


@pytest.mark.parametrize("num_beams", [1, 2])
def test_trrg_reports_and_findings_equal_generate_then_findings(tmp_path, num_beams):
    generator = load_generator(save_trrg_folder(tmp_path / "trrg"))
    studies = [[Image.new("L", (40, 40), value), Image.new("L", (40, 40), 255 - value)] for value in (30, 200, 90)]
    calls = []
    hook = generator.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    results = generate_reports(generator, studies, batch_size=2, num_beams=num_beams, max_new_tokens=6)
    hook.remove()
    assert len(calls) == 2
    model, processor = generator.model, generator.processor
    for start in (0, 2):
        inputs = processor(images=studies[start : start + 2], return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(**inputs, num_beams=num_beams, max_new_tokens=6)
        expected = processor.post_process_generation(generated, inputs["input_ids"].shape[1])
        findings = model.structured_findings(inputs["pixel_values"], inputs.get("pixel_mask"))
        assert [result["report"] for result in results[start : start + 2]] == expected
        assert [{key: r[key] for key in ("probabilities", "clues")} for r in results[start : start + 2]] == findings


def test_study_inputs_reach_generate_batch_by_batch(tmp_path):
    generator = load_generator(save_trrg_folder(tmp_path / "trrg"))
    studies = [[Image.new("L", (40, 40), value), Image.new("L", (40, 40), 255 - value)] for value in (30, 200, 90)]
    given = torch.rand(3, len(generator.model.config.observation_names))
    results = generate_reports(
        generator, studies, batch_size=2, max_new_tokens=6, study_inputs={"clue_probabilities": given}
    )
    model, processor = generator.model, generator.processor
    for index, result in enumerate(results):
        assert list(result["probabilities"].values()) == pytest.approx(given[index].tolist())
        inputs = processor(images=studies[index : index + 1], return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=6, clue_probabilities=given[index : index + 1])
        assert result["report"] == processor.post_process_generation(generated, inputs["input_ids"].shape[1])[0]
    with pytest.raises(ValueError, match=r"study_inputs\['clue_probabilities'\] has 2 rows for 3 studies"):
        generate_reports(generator, studies, study_inputs={"clue_probabilities": given[:2]})
