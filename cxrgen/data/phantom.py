"""Seeded synthetic chest radiographs ("phantoms") whose visible findings follow a study's 14 CheXpert labels.

There are no real images in this project, so the phantoms let the whole pipeline be trained and scored end to end:
a model can only describe a finding correctly by looking at the image. They are pipeline checks, not anatomy.

Rendering works on a density map (soft tissue, air in the lungs, bone, metal) that is turned into brightness with
``1 - exp(-k * density)`` plus film noise, so bones, mediastinum and devices are bright and the lungs dark.

- The **anatomy** of a "patient" (thorax width, lung height, diaphragm level, heart size, mediastinum, rib spacing,
  vessels, exposure, noise) depends only on ``seed``.
- Each **finding** draws its side, size, position and severity from its own seeded stream, so adding or removing
  one finding never moves another, and the image with a finding differs from the one without it (same seed) only
  where the finding is drawn.
- Label codes: POSITIVE draws the finding; UNCERTAIN draws the same finding at :data:`UNCERTAIN_STRENGTH` of its
  density / enlargement / collapse (a faint version); NEGATIVE and NOT_MENTIONED draw nothing. "No Finding" has no
  drawing of its own: a study with no other finding renders as a normal chest.

What each finding looks like (frontal view; the lateral view shows the same finding where it projects):

- Enlarged Cardiomediastinum: the upper mediastinum widens.
- Cardiomegaly: the cardiac silhouette widens (cardiothoracic ratio 0.56-0.66 instead of 0.40-0.48).
- Lung Opacity: ill-defined hazy density in one lobe.
- Lung Lesion: a round, slightly lobulated nodule (small) or mass (large).
- Edema: bilateral perihilar ("bat-wing") haze with septal lines at the lung bases.
- Consolidation: dense, confluent density in one lobe with air bronchograms.
- Pneumonia: patchy multifocal airspace density in one lobe.
- Atelectasis: a band-like (plate) density in a lower zone and volume loss (the hemidiaphragm rises).
- Pneumothorax: an apico-lateral lucent rim without lung markings, bounded by a thin pleural line.
- Pleural Effusion: fluid filling the costophrenic angle with a meniscus climbing the lateral wall (one side or both).
- Pleural Other: smooth pleural thickening along the lateral chest wall, sometimes with a calcified plaque.
- Fracture: a break (gap and step-off) in one rib.
- Support Devices: one or more of an endotracheal tube, a central venous line, a pacemaker with leads, and a
  nasogastric tube.
"""

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from cxrgen.data.annotation import check_labels
from cxrgen.labels import CHEXPERT_OBSERVATIONS, POSITIVE, UNCERTAIN

VIEWS = ("frontal", "lateral")
UNCERTAIN_STRENGTH = 0.4
MIN_IMAGE_SIZE = 16
LOBES = ("right upper", "right middle", "right lower", "left upper", "left lower")
DEVICES = ("endotracheal tube", "central line", "pacemaker", "nasogastric tube")

# Density units (brightness is 1 - exp(-exposure * density)): soft tissue 0.55, lung ~0.13, mediastinum ~1,
# metal +1.5 (saturates to white).
_SOFT_TISSUE = 0.55
_LUNG_AIR = 0.42
_METAL = 1.5
# Where each lobe's lesions sit in lung-relative coordinates: (u: medial 0 -> lateral 1, v: apex 0 -> base 1) ranges.
_LOBE_BOXES = {
    "right upper": ((0.25, 0.75), (0.12, 0.35)),
    "right middle": ((0.15, 0.5), (0.52, 0.7)),
    "right lower": ((0.35, 0.8), (0.68, 0.85)),
    "left upper": ((0.25, 0.75), (0.12, 0.4)),
    "left lower": ((0.45, 0.8), (0.68, 0.85)),
}
# Lateral view: (depth: anterior 0 -> posterior 1) range per lobe.
_LOBE_DEPTH = {
    "right upper": (0.35, 0.6),
    "right middle": (0.1, 0.35),
    "right lower": (0.6, 0.85),
    "left upper": (0.3, 0.55),
    "left lower": (0.6, 0.85),
}


@dataclass(frozen=True)
class Anatomy:
    """A patient's geometry in normalised image coordinates (x: image left -> right, y: top -> bottom)."""

    cx: float
    thorax_half_width: float
    apex_y: float
    dome_y: dict  # side (-1 patient right / image left, +1 patient left) -> dome top
    sulcus_depth: float
    mediastinum_half_width: float
    heart_ratio: float  # cardiothoracic ratio
    heart_right_fraction: float
    heart_half_height: float
    heart_floor: float  # where the heart rests on the diaphragm (kept when a hemidiaphragm rises)
    hilum_y: float
    rib_count: int
    exposure: float
    noise: float
    gastric_bubble: bool
    vessel_seed: int
    texture_seed: int
    extras: dict = field(default_factory=dict)

    def lung_bottom(self, side: int) -> float:
        """Lowest point of a lung (its costophrenic sulcus); ``side`` is -1 (patient right) or +1 (patient left)."""
        return self.dome_y[side] + self.sulcus_depth

    def lateral_x(self, side: int, y: float | np.ndarray) -> float | np.ndarray:
        """Lateral lung edge at height ``y`` (rounded apex, widest at the costophrenic angle)."""
        # The chest wall stays put when a hemidiaphragm rises, so its shape uses the unmoved left base.
        t = np.clip((y - self.apex_y) / (self.heart_floor + self.sulcus_depth - self.apex_y), 0.0, 1.0)
        return self.cx + side * self.thorax_half_width * (0.3 + 0.7 * (1 - (1 - t) ** 2.5))

    def medial_x(self, side: int, y: float | np.ndarray) -> float | np.ndarray:
        """Medial lung edge (the mediastinum) at height ``y``, widening below the hila."""
        return self.cx + side * self.mediastinum_half_width * (1.0 + 0.25 * np.clip((y - self.hilum_y) / 0.3, 0, 1))

    def lung_point(self, side: int, u: float, v: float) -> tuple[float, float]:
        """Image point at lung-relative (u: medial -> lateral, v: apex -> dome) coordinates."""
        y = self.apex_y + v * (self.dome_y[side] - self.apex_y)
        medial, lateral = self.medial_x(side, y), self.lateral_x(side, y)
        return float(medial + u * (lateral - medial)), float(y)

    def heart_box(self) -> tuple[float, float, float, float]:
        """(center x, center y, half width, half height) of the cardiac ellipse."""
        width = self.heart_ratio * 2 * self.thorax_half_width
        right = self.cx - self.heart_right_fraction * width
        half_height = self.heart_half_height
        return right + width / 2, self.heart_floor - 0.6 * half_height, width / 2, half_height


def render_study(
    labels: Sequence[int], seed: int, image_size: int = 256, views: Sequence[str] = VIEWS
) -> list[Image.Image]:
    """Render one study: a grayscale ("L") PIL image per requested view, deterministic in ``(labels, seed)``."""
    check_labels(list(labels), "render_study labels")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}.")
    unknown = [view for view in views if view not in VIEWS]
    if unknown or not views:
        raise ValueError(f"views must be a non-empty sequence of {VIEWS}, got {views!r}.")
    strengths = {}
    for name, code in zip(CHEXPERT_OBSERVATIONS, labels):
        if code == POSITIVE:
            strengths[name] = 1.0
        elif code == UNCERTAIN:
            strengths[name] = UNCERTAIN_STRENGTH
    anatomy = _sample_anatomy(_rng(seed, "anatomy"))
    findings = {
        name: _FINDING_SAMPLERS[name](_rng(seed, name), s)
        for name, s in strengths.items()
        if name in _FINDING_SAMPLERS
    }
    anatomy = _apply_geometry(anatomy, findings)
    renderers = {"frontal": _render_frontal, "lateral": _render_lateral}
    return [renderers[view](anatomy, findings, int(image_size), _rng(seed, f"noise {view}")) for view in views]


def _rng(seed, stream):
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


# ----------------------------------------------------------------------------------------------------- sampling


def _sample_anatomy(rng):
    dome_right = rng.uniform(0.66, 0.71)
    dome_left = dome_right + rng.uniform(0.01, 0.035)
    return Anatomy(
        cx=0.5 + rng.normal(0, 0.008),
        thorax_half_width=rng.uniform(0.34, 0.40),
        apex_y=rng.uniform(0.12, 0.16),
        dome_y={-1: dome_right, 1: dome_left},
        sulcus_depth=rng.uniform(0.06, 0.085),
        mediastinum_half_width=rng.uniform(0.06, 0.072),
        heart_ratio=rng.uniform(0.40, 0.48),
        heart_right_fraction=rng.uniform(0.28, 0.36),
        heart_half_height=rng.uniform(0.12, 0.14),
        heart_floor=dome_left,
        hilum_y=rng.uniform(0.40, 0.44),
        rib_count=int(rng.integers(9, 11)),
        exposure=rng.uniform(1.4, 1.8),
        noise=rng.uniform(0.012, 0.025),
        gastric_bubble=bool(rng.random() < 0.7),
        vessel_seed=int(rng.integers(2**31)),
        texture_seed=int(rng.integers(2**31)),
    )


def _side(rng, both_probability=0.0):
    draw = rng.random()
    if draw < both_probability:
        return (-1, 1)
    return (-1,) if draw < both_probability + (1 - both_probability) / 2 else (1,)


def _lobe_finding(rng, strength):
    lobe = LOBES[rng.integers(len(LOBES))]
    (u0, u1), (v0, v1) = _LOBE_BOXES[lobe]
    return {
        "strength": strength,
        "side": -1 if lobe.startswith("right") else 1,
        "lobe": lobe,
        "centre": (rng.uniform(u0, u1), rng.uniform(v0, v1)),
        "depth": rng.uniform(*_LOBE_DEPTH[lobe]),
        "size": rng.uniform(0.7, 1.3),
        "blobs": rng.uniform(-1, 1, size=(8, 3)),
        "texture_seed": int(rng.integers(2**31)),
    }


def _sample_effusion(rng, strength):
    return {"strength": strength, "sides": _side(rng, 0.25), "height": rng.uniform(0.05, 0.16)}


def _sample_pneumothorax(rng, strength):
    return {"strength": strength, "side": _side(rng)[0], "collapse": rng.uniform(0.12, 0.35)}


def _sample_edema(rng, strength):
    return {"strength": strength, "spread": rng.uniform(0.8, 1.2), "septal": rng.uniform(-1, 1, size=(10, 3))}


def _sample_atelectasis(rng, strength):
    return {
        "strength": strength,
        "side": _side(rng)[0],
        "v": rng.uniform(0.6, 0.8),
        "tilt": rng.uniform(-0.04, 0.04),
        "length": rng.uniform(0.45, 0.75),
        "thickness": rng.uniform(0.012, 0.02),
        "elevation": rng.uniform(0.03, 0.05),
        "depth": rng.uniform(0.45, 0.8),
    }


def _sample_lesion(rng, strength):
    mass = rng.random() < 0.4
    return {
        "strength": strength,
        "side": _side(rng)[0],
        "u": rng.uniform(0.3, 0.75),
        "v": rng.uniform(0.2, 0.6),
        "depth": rng.uniform(0.3, 0.7),
        "radius": rng.uniform(0.035, 0.055) if mass else rng.uniform(0.014, 0.024),
        "lobulation": rng.uniform(0, 0.12, size=3),
        "phase": rng.uniform(0, 2 * np.pi, size=3),
    }


def _sample_fracture(rng, strength):
    return {
        "strength": strength,
        "side": _side(rng)[0],
        "rib": int(rng.integers(2, 7)),
        "position": rng.uniform(0.45, 0.8),
        "gap": rng.uniform(0.025, 0.04),
        "step": rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 0.9),
    }


def _sample_devices(rng, strength):
    present = [device for device in DEVICES if rng.random() < 0.45]
    if not present:
        present = [DEVICES[rng.integers(len(DEVICES))]]
    return {
        "strength": strength,
        "devices": present,
        "line_side": _side(rng)[0],
        "tube_tip": rng.uniform(0.03, 0.06),
        "bend": rng.uniform(-0.02, 0.02, size=4),
    }


def _sample_pleural_other(rng, strength):
    return {
        "strength": strength,
        "side": _side(rng)[0],
        "thickness": rng.uniform(0.012, 0.022),
        "span": (rng.uniform(0.25, 0.4), rng.uniform(0.8, 0.95)),
        "plaque": rng.uniform(0.4, 0.7) if rng.random() < 0.5 else None,
    }


def _sample_cardiomegaly(rng, strength):
    return {"strength": strength, "ratio": rng.uniform(0.56, 0.66), "height": rng.uniform(1.08, 1.18)}


def _sample_mediastinum(rng, strength):
    return {"strength": strength, "widening": rng.uniform(0.03, 0.05)}


_FINDING_SAMPLERS = {
    "Enlarged Cardiomediastinum": _sample_mediastinum,
    "Cardiomegaly": _sample_cardiomegaly,
    "Lung Opacity": _lobe_finding,
    "Lung Lesion": _sample_lesion,
    "Edema": _sample_edema,
    "Consolidation": _lobe_finding,
    "Pneumonia": _lobe_finding,
    "Atelectasis": _sample_atelectasis,
    "Pneumothorax": _sample_pneumothorax,
    "Pleural Effusion": _sample_effusion,
    "Pleural Other": _sample_pleural_other,
    "Fracture": _sample_fracture,
    "Support Devices": _sample_devices,
}


def _apply_geometry(anatomy, findings):
    """Findings that change the anatomy's shape rather than adding density."""
    changes = {}
    if "Cardiomegaly" in findings:
        f = findings["Cardiomegaly"]
        ratio = max(anatomy.heart_ratio, f["ratio"])
        changes["heart_ratio"] = anatomy.heart_ratio + f["strength"] * (ratio - anatomy.heart_ratio)
        changes["heart_half_height"] = anatomy.heart_half_height * (1 + f["strength"] * (f["height"] - 1))
    if "Enlarged Cardiomediastinum" in findings:
        f = findings["Enlarged Cardiomediastinum"]
        changes["extras"] = {"upper_widening": f["strength"] * f["widening"]}
    if "Atelectasis" in findings:
        f = findings["Atelectasis"]
        dome = dict(anatomy.dome_y)
        dome[f["side"]] -= f["strength"] * f["elevation"]
        changes["dome_y"] = dome
    return replace(anatomy, **changes) if changes else anatomy


# ---------------------------------------------------------------------------------------------------- drawing


class _Layer:
    """An 8-bit drawing surface addressed in normalised coordinates; ``array()`` gives floats in 0..1."""

    def __init__(self, size):
        self.size = size
        self.image = Image.new("L", (size, size), 0)
        self.draw = ImageDraw.Draw(self.image)

    def _px(self, points):
        return [(x * self.size - 0.5, y * self.size - 0.5) for x, y in points]

    def width(self, normalised):
        return max(1, int(round(normalised * self.size)))

    def polygon(self, points, value=255):
        self.draw.polygon(self._px(points), fill=value)

    def line(self, points, width, value=255):
        self.draw.line(self._px(points), fill=value, width=self.width(width), joint="curve")

    def ellipse(self, cx, cy, rx, ry, value=255):
        self.draw.ellipse(self._px([(cx - rx, cy - ry), (cx + rx, cy + ry)]), fill=value)

    def rounded_rectangle(self, x0, y0, x1, y1, radius, value=255):
        (a, b), (c, d) = self._px([(x0, y0), (x1, y1)])
        self.draw.rounded_rectangle((a, b, c, d), radius=radius * self.size, fill=value)

    def array(self, blur=0.0):
        values = np.asarray(self.image, dtype=np.float32) / 255.0
        return _blur(values, blur * self.size) if blur else values


def _blur(values, sigma_px):
    """Separable Gaussian blur (edge-padded) of a float array; PIL cannot blur float images."""
    if sigma_px < 0.3:
        return values
    radius = int(np.ceil(2.5 * sigma_px))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_px) ** 2).astype(np.float32)
    kernel /= kernel.sum()
    for axis in (0, 1):
        padded = np.pad(values, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        length = values.shape[axis]
        values = sum(
            weight * (padded[offset : offset + length] if axis == 0 else padded[:, offset : offset + length])
            for offset, weight in enumerate(kernel)
        )
    return values.astype(np.float32)


def _grid(size):
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords)


def _smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gaussian(X, Y, x, y, sx, sy):
    return np.exp(-0.5 * (((X - x) / sx) ** 2 + ((Y - y) / sy) ** 2))


def _smooth_noise(seed, size, cells):
    """Low-frequency texture in -1..1: a small random grid upsampled bicubically."""
    grid = np.random.default_rng(seed).uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float32)


def _to_image(density, anatomy, noise_rng):
    brightness = 1.0 - np.exp(-anatomy.exposure * np.maximum(density, 0.0))
    brightness = brightness + noise_rng.normal(0.0, anatomy.noise, size=density.shape).astype(np.float32)
    return Image.fromarray(np.round(np.clip(brightness, 0.0, 1.0) * 255).astype(np.uint8), mode="L")


def _blob_field(X, Y, centre, radius, blobs, spread):
    """Sum of Gaussian blobs around ``centre`` (offsets and sizes from ``blobs`` rows in -1..1)."""
    field = np.zeros_like(X)
    for dx, dy, ds in blobs:
        sigma = radius * (0.55 + 0.25 * ds)
        field += _gaussian(X, Y, centre[0] + spread * dx * radius, centre[1] + spread * dy * radius, sigma, sigma)
    return field


# -------------------------------------------------------------------------------------------------- frontal view


def _lung_outline(anatomy, side, collapse=0.0):
    """Polygon of one lung; ``collapse`` shrinks it towards its medial base (pneumothorax)."""
    a = anatomy
    bottom = a.lung_bottom(side)
    t = np.linspace(0, 1, 24)
    lateral_y = a.apex_y + t * (bottom - a.apex_y)
    lateral = list(zip(a.lateral_x(side, lateral_y), lateral_y))
    q = np.linspace(0, 1, 20)  # diaphragm: 0 at the costophrenic angle -> 1 at the cardiophrenic angle
    medial_bottom_x = a.medial_x(side, a.dome_y[side])
    diaphragm_x = lateral[-1][0] + q * (medial_bottom_x - lateral[-1][0])
    peak = 0.55
    diaphragm_y = a.dome_y[side] + np.where(
        q < peak, a.sulcus_depth * ((peak - q) / peak) ** 2, 0.03 * ((q - peak) / (1 - peak)) ** 2
    )
    diaphragm = list(zip(diaphragm_x, diaphragm_y))
    r = np.linspace(0, 1, 16)  # medial border from the base up to the apex
    medial_y = diaphragm_y[-1] + r * (a.apex_y + 0.035 - diaphragm_y[-1])
    medial = list(zip(a.medial_x(side, medial_y), medial_y))
    points = np.array(lateral + diaphragm[1:] + medial[1:], dtype=np.float64)
    if collapse:
        anchor = np.array([medial_bottom_x, diaphragm_y[-1]])
        points = anchor + (points - anchor) * (1 - collapse)
    return [tuple(p) for p in points]


def _mediastinum_half_width(anatomy, y):
    widening = anatomy.extras.get("upper_widening", 0.0)
    upper = 1.0 - _smoothstep(anatomy.hilum_y, anatomy.hilum_y + 0.08, y)
    return anatomy.mediastinum_half_width + widening * upper


def _rib_curve(anatomy, side, index, samples=32):
    a = anatomy
    spacing = (a.heart_floor + a.sulcus_depth - a.apex_y) / (a.rib_count - 0.3)
    y0 = a.apex_y + 0.01 + index * spacing
    u = np.linspace(0, 1, samples)
    x = a.cx + side * (0.035 + u * (a.thorax_half_width + 0.02))
    y = y0 - 0.02 * np.sin(np.pi * u) + 0.09 * u**2.5
    return u, x, y


def _draw_ribs(anatomy, size, fracture, view_scale=1.0):
    layer = _Layer(size)
    width = 0.017 * view_scale
    for side in (-1, 1):
        for index in range(anatomy.rib_count):
            u, x, y = _rib_curve(anatomy, side, index)
            if fracture and fracture["side"] == side and fracture["rib"] == index:
                _draw_fractured_rib(layer, u, x, y, width, fracture)
            else:
                layer.line(list(zip(x, y)), width)
    return layer.array(blur=0.002)


def _draw_fractured_rib(layer, u, x, y, width, fracture):
    centre, gap = fracture["position"], fracture["gap"] * (0.6 + 0.4 * fracture["strength"])
    start, end = centre - gap / 2, centre + gap / 2
    near = [(np.interp(start, u, x), np.interp(start, u, y))]
    layer.line([(a, b) for ua, a, b in zip(u, x, y) if ua < start] + near, width)
    # Step-off: the far fragment is displaced near the break, fading back onto the rib's course.
    step = fracture["step"] * width * fracture["strength"]
    far_u = np.concatenate([[end], u[u > end]])
    fade = np.clip(1 - (far_u - end) / 0.12, 0, 1)
    far_x, far_y = np.interp(far_u, u, x), np.interp(far_u, u, y) + step * fade
    layer.line(list(zip(far_x, far_y)), width)


def _draw_vessels(anatomy, size, lung_side_masks):
    rng = np.random.default_rng(anatomy.vessel_seed)
    layer = _Layer(size)
    for side in (-1, 1):
        hilum = (anatomy.medial_x(side, anatomy.hilum_y) + side * 0.025, anatomy.hilum_y + 0.02)
        for angle in np.radians([-60, -25, 10, 40, 75]) + rng.uniform(-0.15, 0.15, size=5):
            _branch(layer, rng, hilum, angle, side, length=0.09, width=0.009, depth=0)
    vessels = layer.array(blur=0.0025)
    return vessels * (lung_side_masks[-1] + lung_side_masks[1])


def _branch(layer, rng, start, angle, side, length, width, depth):
    end = (start[0] + side * np.cos(angle) * length, start[1] - np.sin(angle) * length)
    layer.line([start, end], width, value=int(255 * (1 - 0.15 * depth)))
    if depth < 3:
        for turn in (-0.35, 0.35):
            _branch(
                layer, rng, end, angle + turn + rng.uniform(-0.2, 0.2), side, length * 0.72, width * 0.65, depth + 1
            )


def _render_frontal(anatomy, findings, size, noise_rng):
    a = anatomy
    X, Y = _grid(size)
    body_half = 0.13 + (a.thorax_half_width + 0.09 - 0.13) * _smoothstep(a.apex_y - 0.1, a.apex_y + 0.04, Y)
    body = _smoothstep(0.0, 0.015, body_half - np.abs(X - a.cx))

    heart_x, heart_y, heart_w, heart_h = a.heart_box()
    heart_layer = _Layer(size)
    heart_layer.ellipse(heart_x, heart_y, heart_w, heart_h)
    heart = heart_layer.array(blur=0.004)
    mediastinum = _smoothstep(0.0, 0.01, _mediastinum_half_width(a, Y) - np.abs(X - a.cx)) * (a.heart_floor > Y)
    knob = _Layer(size)
    knob.ellipse(a.cx + _mediastinum_half_width(a, a.hilum_y - 0.09), a.hilum_y - 0.09, 0.025, 0.022)
    mediastinum = np.maximum(mediastinum, knob.array(blur=0.004))

    lungs = {}
    for side in (-1, 1):
        layer = _Layer(size)
        layer.polygon(_lung_outline(a, side))
        lungs[side] = layer.array(blur=0.004) * (1 - heart) * (1 - mediastinum)

    density = _SOFT_TISSUE * body
    dome = np.where(a.cx > X, a.dome_y[-1], a.dome_y[1])
    lung_total = lungs[-1] + lungs[1]
    density += 0.45 * body * _smoothstep(dome, dome + 0.06, Y) * (1 - lung_total)
    density += 0.45 * body * np.maximum(heart, mediastinum)
    spine = _smoothstep(0.0, 0.006, 0.035 - np.abs(X - a.cx)) * (0.7 + 0.3 * np.cos(Y * np.pi / 0.0225) ** 2)
    density += 0.12 * spine
    if a.gastric_bubble:
        density -= 0.3 * _gaussian(X, Y, a.cx + 0.14, a.dome_y[1] + 0.06, 0.05, 0.025)
    trachea = _smoothstep(0.0, 0.006, 0.016 - np.abs(X - a.cx)) * (
        1 - _smoothstep(a.hilum_y - 0.06, a.hilum_y - 0.03, Y)
    )
    density -= 0.25 * trachea

    pneumothorax = findings.get("Pneumothorax")
    rim = np.zeros_like(X)
    collapsed = {side: np.ones_like(X) for side in (-1, 1)}
    if pneumothorax:
        side = pneumothorax["side"]
        layer = _Layer(size)
        layer.polygon(_lung_outline(a, side, pneumothorax["collapse"] * pneumothorax["strength"]))
        collapsed[side] = layer.array(blur=0.002)
        rim = lungs[side] * (1 - collapsed[side])

    texture = 0.03 * _smooth_noise(a.texture_seed, size, 14)
    density -= _LUNG_AIR * lung_total
    inflated = lungs[-1] * collapsed[-1] + lungs[1] * collapsed[1]
    density += inflated * (texture + 0.14 * _draw_vessels(a, size, lungs))
    density += 0.22 * body * _draw_ribs(a, size, findings.get("Fracture"))
    clavicles = _Layer(size)
    for side in (-1, 1):
        start = (a.cx + side * 0.04, a.apex_y + 0.02)
        clavicles.line([start, (a.cx + side * 0.17, a.apex_y - 0.005), (a.cx + side * 0.33, a.apex_y - 0.04)], 0.02)
    density += 0.3 * clavicles.array(blur=0.003)

    if pneumothorax:
        s = pneumothorax["strength"]
        density -= 0.08 * s * rim
        line = _Layer(size)
        outline = _lung_outline(a, pneumothorax["side"], pneumothorax["collapse"] * s)
        line.line(outline + outline[:1], 0.004)
        near_rim = np.clip(_blur(rim, 0.01 * size) * 4, 0, 1)
        density += 0.25 * s * line.array(blur=0.0015) * near_rim * lungs[pneumothorax["side"]]

    for name in ("Lung Opacity", "Consolidation", "Pneumonia"):
        if name in findings:
            density += _frontal_lobe_density(name, findings[name], a, X, Y, lungs, size)
    if "Edema" in findings:
        density += _frontal_edema(findings["Edema"], a, X, Y, lungs, size)
    if "Atelectasis" in findings:
        f = findings["Atelectasis"]
        layer = _Layer(size)
        start = a.lung_point(f["side"], 0.12, f["v"])
        end = a.lung_point(f["side"], 0.12 + f["length"], f["v"] + f["tilt"])
        layer.line([start, end], f["thickness"])
        density += 0.3 * f["strength"] * layer.array(blur=0.004) * lungs[f["side"]]
    if "Lung Lesion" in findings:
        f = findings["Lung Lesion"]
        x, y = a.lung_point(f["side"], f["u"], f["v"])
        density += 0.4 * f["strength"] * _lesion(X, Y, x, y, f) * body
    if "Pleural Effusion" in findings:
        f = findings["Pleural Effusion"]
        for side in f["sides"]:
            density += 0.45 * f["strength"] * _effusion(a, side, f["height"], X, Y, size) * body
    if "Pleural Other" in findings:
        density += _frontal_pleural_thickening(findings["Pleural Other"], a, X, Y, lungs)
    if "Support Devices" in findings:
        density += (
            _METAL * findings["Support Devices"]["strength"] * _frontal_devices(findings["Support Devices"], a, size)
        )
    return _to_image(density, a, noise_rng)


def _frontal_lobe_density(name, f, a, X, Y, lungs, size):
    s, side = f["strength"], f["side"]
    centre = a.lung_point(side, *f["centre"])
    texture = _smooth_noise(f["texture_seed"], size, 20)
    lung = lungs[side]
    if name == "Lung Opacity":  # ill-defined haze
        field = _blob_field(X, Y, centre, 0.06 * f["size"], f["blobs"][:3], 0.8)
        return 0.2 * s * np.clip(field, 0, 1) * (0.8 + 0.2 * texture) * lung
    if name == "Consolidation":  # dense and confluent, with air bronchograms
        field = _blob_field(X, Y, centre, 0.05 * f["size"], f["blobs"][:4], 0.7)
        dense = _smoothstep(0.35, 0.6, field)
        bronchi = _Layer(size)
        for dx, dy, _ in f["blobs"][4:7]:
            bronchi.line([centre, (centre[0] + side * 0.06 * (0.5 + abs(dx)), centre[1] + 0.05 * dy)], 0.006)
        return s * dense * (0.4 - 0.2 * bronchi.array(blur=0.002)) * lung
    field = _blob_field(X, Y, centre, 0.02 * f["size"], f["blobs"], 2.2)  # pneumonia: patchy, multifocal
    return 0.3 * s * np.clip(field, 0, 1) * (0.75 + 0.25 * texture) * lung


def _frontal_edema(f, a, X, Y, lungs, size):
    s, spread = f["strength"], f["spread"]
    haze = np.zeros_like(X)
    septal = _Layer(size)
    for side in (-1, 1):
        x = a.medial_x(side, a.hilum_y) + side * 0.07 * spread
        haze += _gaussian(X, Y, x, a.hilum_y + 0.03, 0.07 * spread, 0.1 * spread) * lungs[side]
        for offset, length, _ in f["septal"][(side + 1) // 2 * 5 : (side + 1) // 2 * 5 + 5]:
            y = a.dome_y[side] - 0.05 + 0.03 * offset
            x_edge = a.lateral_x(side, y) - side * 0.01
            septal.line([(x_edge, y), (x_edge - side * (0.025 + 0.01 * length), y)], 0.003)
    septal_lines = septal.array(blur=0.0015) * (lungs[-1] + lungs[1])
    return s * (0.22 * haze + 0.15 * septal_lines)


def _lesion(X, Y, x, y, f):
    angle = np.arctan2(Y - y, X - x)
    wobble = 1 + sum(
        amp * np.cos((k + 2) * angle + ph) for k, (amp, ph) in enumerate(zip(f["lobulation"], f["phase"]))
    )
    distance = np.hypot(X - x, Y - y) / (f["radius"] * wobble)
    return 1 - _smoothstep(0.85, 1.1, distance)


def _effusion(a, side, height, X, Y, size):
    """Fluid in the costophrenic angle: fills the lung below a meniscus that climbs the lateral wall."""
    layer = _Layer(size)
    layer.polygon(_lung_outline(a, side))
    lung = layer.array(blur=0.003)
    medial, lateral = a.medial_x(side, Y), a.lateral_x(side, Y)
    lateralness = np.clip((X - medial) / (lateral - medial), 0, 1)
    surface = a.lung_bottom(side) - height * (0.45 + 0.75 * lateralness**2)
    return _smoothstep(surface - 0.006, surface + 0.012, Y) * lung


def _frontal_pleural_thickening(f, a, X, Y, lungs):
    side, s = f["side"], f["strength"]
    top, bottom = (a.apex_y + v * (a.lung_bottom(side) - a.apex_y) for v in f["span"])
    lateral = a.lateral_x(side, Y)
    band = _smoothstep(0, 0.004, f["thickness"] - side * (lateral - X)) * _smoothstep(top, top + 0.03, Y)
    band *= 1 - _smoothstep(bottom - 0.03, bottom, Y)
    band *= lungs[side] > 0.05
    result = 0.35 * s * band
    if f["plaque"] is not None:
        y = a.apex_y + f["plaque"] * (a.lung_bottom(side) - a.apex_y)
        result += 0.5 * s * _gaussian(X, Y, float(a.lateral_x(side, y)) - side * 0.008, y, 0.006, 0.02) * lungs[side]
    return result


def _frontal_devices(f, a, size):
    layer = _Layer(size)
    bend = f["bend"]
    carina = a.hilum_y - 0.03
    if "endotracheal tube" in f["devices"]:
        tip = carina - f["tube_tip"]
        layer.line([(a.cx + bend[0], 0.0), (a.cx + bend[1] * 0.5, a.apex_y), (a.cx, tip)], 0.008)
    if "nasogastric tube" in f["devices"]:
        stomach = (a.cx + 0.13, a.dome_y[1] + 0.08)
        layer.line(
            [(a.cx + 0.01, 0.0), (a.cx + 0.015 + bend[2], a.hilum_y), (a.cx + 0.03, a.dome_y[1]), stomach], 0.005
        )
    if "central line" in f["devices"]:
        side = f["line_side"]
        layer.line(
            [
                (a.cx + side * 0.3, a.apex_y - 0.01),
                (a.cx + side * 0.12, a.apex_y + 0.03 + bend[3]),
                (a.cx - 0.035, a.apex_y + 0.1),
                (a.cx - 0.03, a.hilum_y + 0.03),
            ],
            0.004,
        )
    if "pacemaker" in f["devices"]:
        gx, gy = a.cx + 0.24, a.apex_y + 0.05
        layer.rounded_rectangle(gx - 0.045, gy - 0.03, gx + 0.045, gy + 0.03, 0.012)
        heart_x, heart_y, heart_w, heart_h = a.heart_box()
        atrium, ventricle = (
            (heart_x - 0.5 * heart_w, heart_y - 0.3 * heart_h),
            (heart_x + 0.1 * heart_w, heart_y + 0.5 * heart_h),
        )
        for target in (atrium, ventricle):
            layer.line([(gx, gy), (a.cx + 0.08, a.apex_y + 0.06), (a.cx - 0.03, a.hilum_y), target], 0.004)
    return layer.array(blur=0.0015)


# -------------------------------------------------------------------------------------------------- lateral view
# x is depth (anterior chest wall on the image left, spine on the right), y the same height as the frontal view.


def _lateral_lung_outline(a, collapse=0.0):
    front, back = 0.2, 0.72
    top = np.linspace(0, 1, 16)
    apex = list(zip(0.3 + 0.38 * top, a.apex_y + 0.06 * (2 * top - 1) ** 2))
    back_y = np.linspace(apex[-1][1], a.lung_bottom(1) + 0.03, 14)
    posterior = list(zip(back - 0.04 * (1 - (back_y - back_y[0]) / (back_y[-1] - back_y[0])) ** 2, back_y))
    q = np.linspace(0, 1, 18)  # diaphragm from the posterior sulcus to the anterior costophrenic angle
    dome = min(a.dome_y.values())
    diaphragm = list(zip(back - q * (back - front), dome + 0.1 * (1 - q) ** 3 + 0.02 * q))
    anterior_y = np.linspace(diaphragm[-1][1], a.apex_y + 0.06, 12)
    anterior = list(
        zip(front + 0.08 * ((diaphragm[-1][1] - anterior_y) / (diaphragm[-1][1] - a.apex_y)) ** 2, anterior_y)
    )
    points = np.array(apex + posterior[1:] + diaphragm[1:] + anterior[1:])
    if collapse:
        anchor = np.array([0.45, dome])
        points = anchor + (points - anchor) * (1 - collapse)
    return [tuple(p) for p in points]


def _lateral_point(a, depth, v):
    y = a.apex_y + v * (min(a.dome_y.values()) - a.apex_y)
    return 0.24 + depth * 0.44, y


def _render_lateral(anatomy, findings, size, noise_rng):
    a = anatomy
    X, Y = _grid(size)
    shoulders = _smoothstep(0.02, 0.22, Y)
    front, back = 0.24 - 0.1 * shoulders, 0.8 + 0.1 * shoulders
    body = _smoothstep(0.0, 0.02, X - front) * _smoothstep(0.0, 0.02, back - X)
    heart_ratio = a.heart_ratio / 0.44
    heart_layer = _Layer(size)
    heart_layer.ellipse(
        0.34 + 0.05 * (heart_ratio - 1), a.heart_floor - 0.05, 0.14 * heart_ratio, a.heart_half_height * 1.1
    )
    heart = heart_layer.array(blur=0.005)
    widening = a.extras.get("upper_widening", 0.0)
    lung_layer = _Layer(size)
    lung_layer.polygon(_lateral_lung_outline(a))
    lung = lung_layer.array(blur=0.004) * (1 - 0.6 * heart)

    density = 1.4 * _SOFT_TISSUE * body
    dome = min(a.dome_y.values())
    density += 0.3 * body * _smoothstep(dome, dome + 0.06, Y)
    density += 0.25 * heart
    spine_layer = _Layer(size)
    vertebra = 0.045
    for y in np.arange(0.0, 1.0, vertebra):
        shift = 0.02 * np.sin(np.pi * y)
        spine_layer.rounded_rectangle(0.72 + shift, y + 0.004, 0.8 + shift, y + vertebra - 0.004, 0.004)
    density += 0.25 * spine_layer.array(blur=0.002)
    sternum = (
        _smoothstep(0, 0.005, 0.012 - np.abs(X - 0.18)) * _smoothstep(0.18, 0.22, Y) * (1 - _smoothstep(0.55, 0.6, Y))
    )
    density += 0.25 * sternum
    trachea = _smoothstep(0, 0.005, 0.016 - np.abs(X - (0.46 + 0.08 * Y))) * (
        1 - _smoothstep(a.hilum_y - 0.04, a.hilum_y, Y)
    )
    density -= 0.2 * trachea
    if widening:
        density += 0.3 * _gaussian(X, Y, 0.27, a.hilum_y - 0.1, 0.02 + 1.2 * widening, 0.09) * lung

    pneumothorax = findings.get("Pneumothorax")
    inflated = lung
    if pneumothorax:
        s = pneumothorax["strength"]
        layer = _Layer(size)
        outline = _lateral_lung_outline(a, 0.5 * pneumothorax["collapse"] * s)
        layer.polygon(outline)
        inflated = lung * layer.array(blur=0.002)
        line = _Layer(size)
        line.line(outline[:16], 0.004)
        density += 0.25 * s * line.array(blur=0.0015) * lung
        density -= 0.08 * s * (lung - inflated)

    density -= _LUNG_AIR * lung
    density += inflated * (0.03 * _smooth_noise(a.texture_seed + 1, size, 14))
    density += 0.15 * _gaussian(X, Y, 0.5, a.hilum_y + 0.02, 0.05, 0.05) * inflated
    density += 0.12 * body * _draw_lateral_ribs(a, size, findings.get("Fracture"))

    for name in ("Lung Opacity", "Consolidation", "Pneumonia"):
        if name in findings:
            f = findings[name]
            x, y = _lateral_point(a, f["depth"], f["centre"][1])
            field = _blob_field(X, Y, (x, y), 0.05 * f["size"], f["blobs"][:4], 0.8)
            amplitude = {"Lung Opacity": 0.2, "Consolidation": 0.4, "Pneumonia": 0.3}[name]
            density += amplitude * f["strength"] * np.clip(field, 0, 1) * lung
    if "Edema" in findings:
        f = findings["Edema"]
        density += (
            0.22 * f["strength"] * _gaussian(X, Y, 0.5, a.hilum_y + 0.03, 0.1 * f["spread"], 0.1 * f["spread"]) * lung
        )
    if "Atelectasis" in findings:
        f = findings["Atelectasis"]
        layer = _Layer(size)
        x, y = _lateral_point(a, f["depth"], f["v"])
        layer.line([(x - 0.12, y - 0.02), (x + 0.12, y + 0.02 + f["tilt"])], f["thickness"])
        density += 0.3 * f["strength"] * layer.array(blur=0.004) * lung
    if "Lung Lesion" in findings:
        f = findings["Lung Lesion"]
        x, y = _lateral_point(a, f["depth"], f["v"])
        density += 0.4 * f["strength"] * _lesion(X, Y, x, y, f) * body
    if "Pleural Effusion" in findings:
        f = findings["Pleural Effusion"]
        surface = a.lung_bottom(1) + 0.03 - f["height"] * (0.3 + 1.2 * np.clip((X - 0.4) / 0.32, 0, 1) ** 2)
        density += 0.45 * f["strength"] * _smoothstep(surface - 0.006, surface + 0.012, Y) * lung
    if "Pleural Other" in findings:
        f = findings["Pleural Other"]
        band = _smoothstep(0, 0.004, f["thickness"] - np.abs(X - 0.71)) * _smoothstep(0.3, 0.35, Y) * lung
        density += 0.35 * f["strength"] * band
    if "Support Devices" in findings:
        density += (
            _METAL * findings["Support Devices"]["strength"] * _lateral_devices(findings["Support Devices"], a, size)
        )
    return _to_image(density, a, noise_rng)


def _draw_lateral_ribs(a, size, fracture):
    layer = _Layer(size)
    spacing = (a.heart_floor + a.sulcus_depth - a.apex_y) / (a.rib_count - 0.3)
    for side in (-1, 1):
        for index in range(a.rib_count):
            y0 = a.apex_y + 0.02 + index * spacing + 0.008 * side
            u = np.linspace(0, 1, 24)
            x, y = 0.76 - 0.5 * u, y0 + 0.12 * u**1.5
            if fracture and fracture["side"] == side and fracture["rib"] == index:
                _draw_fractured_rib(layer, u, x, y, 0.014, fracture)
            else:
                layer.line(list(zip(x, y)), 0.014)
    return layer.array(blur=0.002)


def _lateral_devices(f, a, size):
    layer = _Layer(size)
    carina_y = a.hilum_y - 0.03
    if "endotracheal tube" in f["devices"]:
        layer.line([(0.4, 0.0), (0.46 + 0.08 * (carina_y - f["tube_tip"]), carina_y - f["tube_tip"])], 0.008)
    if "nasogastric tube" in f["devices"]:
        layer.line([(0.5, 0.0), (0.58, a.hilum_y), (0.6, a.dome_y[1]), (0.45, a.dome_y[1] + 0.08)], 0.005)
    if "central line" in f["devices"]:
        layer.line([(0.35, a.apex_y - 0.01), (0.38, a.apex_y + 0.1), (0.4, a.hilum_y + 0.03)], 0.004)
    if "pacemaker" in f["devices"]:
        layer.rounded_rectangle(0.12, a.apex_y + 0.03, 0.17, a.apex_y + 0.09, 0.01)
        layer.line([(0.15, a.apex_y + 0.06), (0.35, a.hilum_y), (0.3, a.dome_y[1] - 0.05)], 0.004)
    return layer.array(blur=0.0015)
