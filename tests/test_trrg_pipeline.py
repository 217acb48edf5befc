"""TRRG "image-to-text" pipeline: batched calls give the one-by-one reports; the vision side runs once a forward."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_trrg_common import IMAGE_SIZE, build_tokenizer, trrg_config

from cxrgen.modeling.trrg.modeling_trrg import TrrgForConditionalGeneration
from cxrgen.modeling.trrg.pipeline_trrg import TrrgReportPipeline
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_trrg import TrrgProcessor

pytestmark = pytest.mark.transformers_compat

PROMPT = "generate a report for this x-ray"
SAME_VIEWS = [(0, 1), (2, 3), (4, 5)]
MIXED_VIEWS = [(0, 1), (2,), (3, 4), (5,), (6,)]


def image(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48), dtype=np.uint8))


def studies(seeds):
    return [[image(seed) for seed in study] for study in seeds]


@pytest.fixture(scope="module")
def report_pipeline():
    config = trrg_config(clue_selection="topk", clue_top_k=3)
    torch.manual_seed(0)
    model = TrrgForConditionalGeneration(config).eval()
    image_processor = CxrImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = TrrgProcessor.for_model(config, image_processor, build_tokenizer(), prompt=PROMPT)
    return TrrgReportPipeline(model=model, processor=processor)


def assert_same_reports(actual, expected):
    assert [out["generated_text"] for out in actual] == [out["generated_text"] for out in expected]
    assert all(out["generated_text"] for out in expected)
    for got, want in zip(actual, expected):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
        assert [(c["observation"], c["polarity"]) for c in got["clues"]] == [
            (c["observation"], c["polarity"]) for c in want["clues"]
        ]
        assert [c["probability"] for c in got["clues"]] == pytest.approx(
            [c["probability"] for c in want["clues"]], abs=1e-5
        )


@pytest.mark.parametrize("seeds", [SAME_VIEWS, MIXED_VIEWS], ids=["same-view-count", "mixed-view-counts"])
@pytest.mark.parametrize(
    "call", [{}, {"num_beams": 2}, {"prompt": "generate a report"}], ids=["greedy", "beams", "prompt"]
)
def test_batched_calls_give_the_one_by_one_reports(report_pipeline, seeds, call):
    inputs = studies(seeds)
    one_by_one = report_pipeline(inputs, batch_size=1, max_new_tokens=6, **call)
    for batch_size in (2, len(inputs)):
        assert_same_reports(report_pipeline(inputs, batch_size=batch_size, max_new_tokens=6, **call), one_by_one)


def test_pipeline_reports_match_generate_and_structured_findings(report_pipeline):
    model, processor = report_pipeline.model, report_pipeline.processor
    inputs = studies(MIXED_VIEWS)
    batch = processor(images=inputs)
    expected_text = processor.post_process_generation(model.generate(**batch, max_new_tokens=6))
    expected_findings = model.structured_findings(batch["pixel_values"], batch["pixel_mask"])
    outputs = report_pipeline(inputs, batch_size=2, max_new_tokens=6)
    assert [out["generated_text"] for out in outputs] == expected_text
    assert_same_reports(outputs, [{"generated_text": t, **f} for t, f in zip(expected_text, expected_findings)])
    single = report_pipeline(tuple(inputs[0]), max_new_tokens=6)  # a tuple is one study, not a list of studies
    assert single["generated_text"] == expected_text[0]


def test_vision_tower_runs_once_per_forward(report_pipeline):
    studies_seen = []
    hook = report_pipeline.model.model.vision_tower.register_forward_hook(
        lambda module, args, kwargs_or_output: studies_seen.append(1)
    )
    try:
        inputs = studies(MIXED_VIEWS)
        report_pipeline(inputs, batch_size=1, max_new_tokens=6)
        assert len(studies_seen) == len(inputs)
        studies_seen.clear()
        report_pipeline(inputs, batch_size=2, max_new_tokens=6)
        assert len(studies_seen) == 3  # 5 studies in batches of 2
        studies_seen.clear()
        # Without a KV cache each generation step re-reads the whole prompt, so the vision side runs once per step.
        uncached = report_pipeline(inputs[:2], batch_size=2, max_new_tokens=6, use_cache=False)
        assert len(studies_seen) > 1
    finally:
        hook.remove()
    assert_same_reports(uncached, report_pipeline(inputs[:2], batch_size=1, max_new_tokens=6))
