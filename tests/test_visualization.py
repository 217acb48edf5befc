"""cxrgen.visualization on tiny models: the attention overlay lies where the attention is, the probability chart
draws what it is given, and evaluation reports gain the figures of their example studies."""

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_folders import save_cmcrl_folder, save_trrg_folder

from cxrgen.data.phantom_benchmark import build_phantom_benchmark
from cxrgen.evaluation.report import evaluate_model
from cxrgen.inference import generate_reports, load_generator
from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS, MENTION_NAMES
from cxrgen.visualization import (
    DISPLAY_SIZE,
    OTHER_BAR_COLOR,
    POLARITY_COLORS,
    SELECTED_PATCH_COLOR,
    attention_maps,
    colorize,
    overlay_attention,
    probability_chart,
    study_figures,
    visualize_study,
)

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)

GRID = 4  # the tiny CMCRL preset: 32 px views, backbone stride 8
# The second view is 96 x 64 (not square, not the model's size): its bright patch fills grid cell (3, 0).
BRIGHT_VIEW, BRIGHT_CELL = 1, (3, 0)


@pytest.fixture(scope="module")
def cmcrl(tmp_path_factory):
    return load_generator(save_cmcrl_folder(tmp_path_factory.mktemp("cmcrl") / "model"))


@pytest.fixture(scope="module")
def trrg(tmp_path_factory):
    return load_generator(save_trrg_folder(tmp_path_factory.mktemp("trrg") / "model"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two views: a uniform dark frontal (64 x 64) and a dark lateral (96 x 64) with one bright grid cell."""
    folder = tmp_path_factory.mktemp("study")
    Image.fromarray(np.full((64, 64), 30, np.uint8)).save(folder / "frontal.png")
    lateral = np.full((64, 96), 30, np.uint8)
    row, col = BRIGHT_CELL
    lateral[row * 16 : (row + 1) * 16, col * 24 : (col + 1) * 24] = 230
    Image.fromarray(lateral).save(folder / "lateral.png")
    return [str(folder / "frontal.png"), str(folder / "lateral.png")]


@pytest.fixture
def attends_to_brightest_cell(cmcrl):
    """Make the encoder's attention follow the pixels: in the first layer the CLS token puts 90% of its attention
    on the brightest grid cell of the study (10% spread over every token); later layers attend to themselves, so
    the rollout is that row. Only the probabilities returned for the rollout change; the hidden states do not."""
    encoder = cmcrl.model.get_encoder()
    seen = {}

    def remember_pixels(module, args):
        seen["pixels"] = args[0]

    def attention_on_brightest(module, args, output):
        hidden, probs = output
        pixels = seen["pixels"]  # (B, V, 3, H, W)
        size = pixels.shape[-1] // GRID
        cells = F.avg_pool2d(pixels.mean(2), size).flatten(1)  # (B, V * G * G), view-major like the tokens
        tokens = probs.shape[-1]
        new = torch.eye(tokens).expand_as(probs).clone()
        if module is encoder.layers[0].self_attn:
            new[:, :, 0] = 0.1 / tokens
            new[torch.arange(len(probs)), :, 0, 1 + cells.argmax(1)] += 0.9
        return hidden, new

    handles = [encoder.register_forward_pre_hook(remember_pixels)]
    handles += [layer.self_attn.register_forward_hook(attention_on_brightest) for layer in encoder.layers]
    yield
    for handle in handles:
        handle.remove()


def plain(image, size):
    return np.asarray(image.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32)


def test_colorize_runs_from_dark_to_bright():
    colors = colorize(np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]]))
    assert colors.shape == (1, 5, 3) and colors.dtype == np.uint8
    brightness = colors.astype(int).sum(-1)[0]
    assert brightness[0] == brightness[1] < brightness[2] < brightness[3] == brightness[4]


def test_overlay_tints_the_hot_cell_and_outlines_the_selected_one():
    image = Image.fromarray(np.full((60, 90), 100, np.uint8))
    heat = np.zeros((3, 3), np.float32)
    heat[1, 2] = 1.0
    overlay = overlay_attention(image, heat, selected=[(0, 0)], display_size=None)
    assert overlay.size == image.size
    change = np.abs(np.asarray(overlay, np.float32) - plain(image, image.size)).sum(-1)
    cold = change[40:, :30]  # far from the hot cell and from the outline
    assert cold.max() <= 1
    ys, xs = np.nonzero(change[:, 30:] * (np.asarray(overlay)[:, 30:] != SELECTED_PATCH_COLOR).any(-1))
    weights = change[:, 30:][ys, xs]
    center = (np.average(xs + 30, weights=weights), np.average(ys, weights=weights))
    assert 60 <= center[0] < 90 and 20 <= center[1] < 40  # cell (1, 2) of a 3 x 3 grid over 90 x 60
    assert tuple(np.asarray(overlay)[0, 15]) == SELECTED_PATCH_COLOR  # the top edge of cell (0, 0)
    assert overlay_attention(image, heat).size == (DISPLAY_SIZE, DISPLAY_SIZE * 2 // 3)
    with pytest.raises(ValueError, match="expected a \\(rows, cols\\) array"):
        overlay_attention(image, np.zeros(9))


def test_attention_maps_follow_the_bright_patch(cmcrl, study, attends_to_brightest_cell):
    views = attention_maps(cmcrl, study)
    assert [view.heat.shape for view in views] == [(GRID, GRID)] * 2
    assert [view.image.size for view in views] == [(64, 64), (96, 64)]
    assert np.unravel_index(views[BRIGHT_VIEW].heat.argmax(), (GRID, GRID)) == BRIGHT_CELL
    assert views[BRIGHT_VIEW].heat.max() == 1.0 and views[0].heat.max() == 0.0
    assert BRIGHT_CELL in views[BRIGHT_VIEW].selected

    figures = study_figures(cmcrl, study)
    assert [figure.size for figure, _ in figures] == [(DISPLAY_SIZE, DISPLAY_SIZE), (DISPLAY_SIZE, 341)]
    assert "View 2" in figures[1][1] and "local patches" in figures[1][1]
    # Without outlines, the tint of the bright view lies on its bright patch: x < 1/4 and y > 3/4 of the view.
    view = views[BRIGHT_VIEW]
    overlay = overlay_attention(view.image, view.heat)
    change = np.abs(np.asarray(overlay, np.float32) - plain(view.image, overlay.size)).sum(-1)
    ys, xs = np.nonzero(change > 1)
    weights = change[ys, xs]
    assert np.average(xs, weights=weights) < overlay.width / 4
    assert np.average(ys, weights=weights) > overlay.height * 3 / 4


def test_cmcrl_figures_without_rollout_say_why(tmp_path, study):
    from cxrgen.modeling.cmcrl import CmcrlConfig

    folder = save_cmcrl_folder(tmp_path / "no_vdm")
    config = CmcrlConfig.from_pretrained(folder)
    config.use_vdm = config.use_ldm = False
    config.save_pretrained(folder)
    generator = load_generator(folder)
    with pytest.raises(ValueError, match="computes no attention rollout"):
        attention_maps(generator, study)


def test_probability_chart_bars_follow_the_probabilities():
    probabilities = {name: 0.0 for name in CHEXPERT_OBSERVATIONS}
    probabilities |= {"Cardiomegaly": 1.0, "Edema": 0.5, "Pneumothorax": 0.25}
    clues = [{"observation": "Cardiomegaly", "polarity": "positive"}, {"observation": "Edema", "polarity": "negative"}]
    chart = np.asarray(probability_chart(probabilities, clues, width=600, row_height=20))
    assert chart.shape == (20 * 14 + 40, 600, 3)

    def bar_length(name, color):
        row = list(probabilities).index(name) * 20 + 10
        return int((chart[row] == color).all(-1).sum())

    full = bar_length("Cardiomegaly", POLARITY_COLORS["positive"])
    assert full > 250
    assert abs(bar_length("Edema", POLARITY_COLORS["negative"]) - full / 2) <= 2
    assert abs(bar_length("Pneumothorax", OTHER_BAR_COLOR) - full / 4) <= 2
    assert bar_length("Fracture", OTHER_BAR_COLOR) == 0
    with pytest.raises(ValueError, match="expected a probability"):
        probability_chart({"Edema": 1.5})


def test_trrg_figures_are_the_chart_with_its_clues(trrg, study):
    result = generate_reports(trrg, [study], max_new_tokens=4)[0]
    [(chart, caption)] = study_figures(trrg, study, result)
    assert chart.size == (640, 24 * 14 + 48)
    assert all(f"{clue['observation']} ({clue['polarity']})" in caption for clue in result["clues"])
    assert len(result["clues"]) == 3
    with pytest.raises(ValueError, match="pass the generate_reports result"):
        study_figures(trrg, study)
    with pytest.raises(ValueError, match="TRRG models have no attention rollout"):
        attention_maps(trrg, study)


def test_visualize_study_is_the_report_its_labels_and_figures(cmcrl, study):
    shown = visualize_study(cmcrl, study, num_beams=1, max_new_tokens=6)
    assert shown.report == generate_reports(cmcrl, [study], num_beams=1, max_new_tokens=6)[0]["report"]
    expected = [MENTION_NAMES[code] for code in label_report(shown.report)]
    assert list(shown.observations) == list(CHEXPERT_OBSERVATIONS) and list(shown.observations.values()) == expected
    assert len(shown.figures) == 2


def test_evaluation_report_shows_the_figures_of_its_examples(cmcrl, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no java: METEOR unavailable, seconds saved
    annotation = build_phantom_benchmark(
        tmp_path / "phantom", source="synthetic", image_size=32, synthetic_studies=15, seed=3
    )
    result = evaluate_model(
        cmcrl.folder,
        annotation,
        tmp_path / "phantom" / "images",
        output_dir=tmp_path / "eval",
        num_beams=1,
        num_examples=2,
        generator=cmcrl,
    )
    figures = sorted(path.name for path in (tmp_path / "eval" / "figures").iterdir())
    assert len(figures) == 2 * 2  # two views per phantom study
    report = result["paths"]["report"].read_text()
    assert all(f"(figures/{name})" in report for name in figures)
    assert "attention rollout" in report
