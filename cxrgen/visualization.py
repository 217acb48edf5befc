"""Figures of what a model saw in a study, as PIL images: for the app (``cxrgen app``) and evaluation reports.

- Methods with an attention rollout in the registry (CMCRL): each view with the encoder's CLS attention rollout
  (averaged over heads) as a heat-map, and the local patches the Visual Deconfounding Module selected from it
  outlined. The rollout is one value per cell of the backbone's ``grid_size`` x ``grid_size`` feature grid, and the
  image processor resizes each whole view to the model's input size (no crop), so cell (row, col) covers the same
  fraction of the uploaded view.
- Methods with structured findings (TRRG): a bar chart of the zero-shot probability of each observation, the bars of
  the observations injected as clues coloured by their polarity.

The heat-map shows where the encoder's attention went, not why the model wrote what it wrote; for a research model
on phantom data it is a debugging aid, never clinical evidence.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cxrgen.inference import ReportGenerator, generate_reports
from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS, MENTION_NAMES
from cxrgen.methods import get_method
from cxrgen.processing.image_processing_cxr import load_image

# Control points of matplotlib's "inferno" colour map (dark purple -> yellow), linearly interpolated: readable on a
# gray radiograph and in grayscale print, without making matplotlib a dependency.
_INFERNO = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float32,
)
HEATMAP_OPACITY = 0.6
SELECTED_PATCH_COLOR = (0, 255, 255)
POLARITY_COLORS = {"positive": (200, 40, 40), "negative": (40, 90, 200)}
OTHER_BAR_COLOR = (150, 150, 150)
DISPLAY_SIZE = 512


@dataclass
class ViewAttention:
    """One view's attention: ``heat`` (grid, grid) in [0, 1] (0 and 1 = the study's least and most attended cells)
    and the ``selected`` (row, col) cells of the local patches."""

    image: Image.Image
    heat: np.ndarray
    selected: list[tuple[int, int]]


@dataclass
class StudyVisualization:
    """A generated report with what the app shows beside it.

    ``result`` is the :func:`cxrgen.inference.generate_reports` result (report, and TRRG's probabilities and clues);
    ``observations`` the labeler's reading of the report ({observation: "positive" | "negative" | "uncertain" |
    "not mentioned"}); ``figures`` (image, caption) pairs from :func:`study_figures`.
    """

    result: dict
    observations: dict[str, str]
    figures: list[tuple[Image.Image, str]] = field(default_factory=list)

    @property
    def report(self) -> str:
        return self.result["report"]


def colorize(heat: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB uint8 colours of the inferno colour map (shape + (3,))."""
    position = np.clip(heat, 0.0, 1.0) * (len(_INFERNO) - 1)
    low = np.floor(position).astype(int).clip(0, len(_INFERNO) - 2)
    fraction = (position - low)[..., None]
    return (_INFERNO[low] * (1 - fraction) + _INFERNO[low + 1] * fraction).round().astype(np.uint8)


def overlay_attention(
    image: Image.Image,
    heat: np.ndarray,
    selected: list[tuple[int, int]] = (),
    display_size: int | None = DISPLAY_SIZE,
) -> Image.Image:
    """Draw a (grid, grid) heat-map in [0, 1] over ``image`` and outline the ``selected`` (row, col) cells.

    The heat-map is interpolated bilinearly over the whole image, and its opacity grows with the value, so the
    least attended regions show the radiograph unchanged. ``display_size`` is the longer side of the result, so
    that small phantoms and full-size radiographs show alike (None keeps the image's size).
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat: expected a (rows, cols) array, got shape {heat.shape}.")
    image = image.convert("RGB")
    if display_size is not None and max(image.size) != display_size:
        scale = display_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    width, height = image.size
    resized = np.asarray(Image.fromarray(heat, mode="F").resize((width, height), Image.BILINEAR)).clip(0, 1)
    alpha = (HEATMAP_OPACITY * resized)[..., None]
    pixels = np.asarray(image, dtype=np.float32)
    blended = Image.fromarray((pixels * (1 - alpha) + colorize(resized) * alpha).round().astype(np.uint8))

    rows, cols = heat.shape
    draw = ImageDraw.Draw(blended)
    line = max(1, round(min(width, height) / 128))
    for row, col in selected:
        box = (col * width / cols, row * height / rows, (col + 1) * width / cols - 1, (row + 1) * height / rows - 1)
        draw.rectangle(box, outline=SELECTED_PATCH_COLOR, width=line)
    return blended


def attention_maps(generator: ReportGenerator, study: list) -> list[ViewAttention]:
    """The attention rollout and the selected local patches of each view of ``study`` (frontal first).

    Raises:
        ValueError: the method has no attention rollout, or this model computes none (neither VDM nor LDM).
    """
    method = get_method(generator.method)
    if not method.attention_rollout:
        raise ValueError(f"{method.display_name} models have no attention rollout to draw.")
    model, config = generator.model, generator.model.config
    inputs = generator.processor(images=[list(study)], return_tensors="pt").to(model.device)
    with torch.inference_mode():
        encoded = model.get_encoder()(inputs["pixel_values"], inputs.get("pixel_mask"))
    if encoded.attention_rollout is None:
        raise ValueError(
            f"{generator.folder}: this model computes no attention rollout (it uses neither VDM nor LDM)."
        )
    grid = config.grid_size
    rollout = encoded.attention_rollout[0].float().mean(0).view(-1, grid, grid)[: len(study)].cpu().numpy()
    # One scale for the whole study, so a view the model hardly looked at stays dark beside the other; from the
    # least attended cell, because a rollout is close to uniform and only its differences say where the model looked.
    low, high = float(rollout.min()), float(rollout.max())
    rollout = (rollout - low) / (high - low) if high > low else np.zeros_like(rollout)
    selected = [[] for _ in study]
    for index in encoded.local_patch_indices[0].tolist():
        view, cell = divmod(index, grid * grid)
        if view < len(study) and divmod(cell, grid) not in selected[view]:
            selected[view].append(divmod(cell, grid))
    return [ViewAttention(load_image(view), heat, cells) for view, heat, cells in zip(study, rollout, selected)]


def probability_chart(
    probabilities: dict[str, float], clues: list[dict] = (), width: int = 640, row_height: int = 24
) -> Image.Image:
    """A horizontal bar chart of per-observation probabilities; the observations given as ``clues`` (dicts with
    ``observation`` and ``polarity``, as TRRG's structured findings) have bars coloured by polarity."""
    polarity = {clue["observation"]: clue["polarity"] for clue in clues}
    font = ImageFont.load_default(size=round(row_height * 0.6))
    label_width = round(width * 0.4)
    bar_left, bar_right = label_width, width - round(width * 0.12)
    legend_height = row_height * 2
    height = row_height * len(probabilities) + legend_height
    chart = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(chart)
    for row, (name, probability) in enumerate(probabilities.items()):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probabilities[{name!r}] = {probability}: expected a probability in [0, 1].")
        top = row * row_height
        draw.text((4, top + row_height / 2), name, fill="black", font=font, anchor="lm")
        draw.rectangle((bar_left, top + 3, bar_right, top + row_height - 4), outline=(220, 220, 220))
        color = POLARITY_COLORS.get(polarity.get(name), OTHER_BAR_COLOR)
        bar_end = bar_left + probability * (bar_right - bar_left)
        if bar_end > bar_left:
            draw.rectangle((bar_left, top + 3, bar_end, top + row_height - 4), fill=color)
        draw.text((bar_right + 6, top + row_height / 2), f"{probability:.2f}", fill="black", font=font, anchor="lm")
    top = row_height * len(probabilities) + row_height / 2
    x = 4
    for label, color in (
        ("positive clue", POLARITY_COLORS["positive"]),
        ("negative clue", POLARITY_COLORS["negative"]),
        ("not a clue", OTHER_BAR_COLOR),
    ):
        draw.rectangle((x, top, x + row_height * 0.6, top + row_height * 0.6), fill=color)
        draw.text((x + row_height, top + row_height * 0.3), label, fill="black", font=font, anchor="lm")
        x += round(width / 3)
    return chart


def computes_attention_rollout(generator: ReportGenerator) -> bool:
    """Whether the loaded model has an attention rollout to draw (a CMCRL model without VDM and LDM has none)."""
    config = generator.model.config
    return get_method(generator.method).attention_rollout and (config.use_vdm or config.use_ldm)


def study_figures(
    generator: ReportGenerator, study: list, result: dict | None = None
) -> list[tuple[Image.Image, str]]:
    """The figures of one study: (image, caption) pairs.

    Args:
        generator: a loaded model folder (:func:`cxrgen.inference.load_generator`).
        study: the study's views (paths, PIL images or arrays), frontal first.
        result: its :func:`cxrgen.inference.generate_reports` result, which holds TRRG's probabilities and clues
            (needed for methods with structured findings).
    """
    method = get_method(generator.method)
    figures = []
    if computes_attention_rollout(generator):
        for index, view in enumerate(attention_maps(generator, study)):
            caption = f"View {index + 1}: attention rollout; outlined: the {len(view.selected)} local patches selected"
            figures.append((overlay_attention(view.image, view.heat, view.selected), caption))
    if method.structured_findings:
        if result is None or "probabilities" not in result:
            raise ValueError(f"{method.display_name}: pass the generate_reports result, which holds the findings.")
        clues = ", ".join(f"{c['observation']} ({c['polarity']})" for c in result["clues"]) or "none"
        caption = f"Zero-shot probability per observation; clues injected: {clues}"
        figures.append((probability_chart(result["probabilities"], result["clues"]), caption))
    return figures


def labeled_observations(report: str) -> dict[str, str]:
    """The labeler's reading of a report: each of the 14 observations -> its mention name."""
    return {name: MENTION_NAMES[code] for name, code in zip(CHEXPERT_OBSERVATIONS, label_report(report))}


def visualize_study(
    generator: ReportGenerator, study: list, num_beams: int | None = None, max_new_tokens: int | None = None
) -> StudyVisualization:
    """Generate the report of one study, label it, and draw its figures (see :func:`study_figures`)."""
    result = generate_reports(generator, [list(study)], num_beams=num_beams, max_new_tokens=max_new_tokens)[0]
    return StudyVisualization(
        result=result,
        observations=labeled_observations(result["report"]),
        figures=study_figures(generator, study, result),
    )
