import numpy as np
import pytest

from cxrgen.data.annotation import annotation_to_dataset_dict, read_annotation
from cxrgen.data.iu_xray import find_nlm_reports_archive
from cxrgen.data.phantom import render_study
from cxrgen.data.phantom_benchmark import (
    TEMPLATES,
    build_phantom_benchmark,
    sample_labels,
    study_seed,
    subsample,
    synthetic_annotation,
    templated_report,
)
from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NEGATIVE, NOT_MENTIONED, POSITIVE, UNCERTAIN

SIZE = 128
SEEDS = (0, 1, 2, 3)
_COORDS = (np.arange(SIZE) + 0.5) / SIZE
X, Y = np.meshgrid(_COORDS, _COORDS)
LEFT, RIGHT = X < 0.5, X >= 0.5  # image halves (patient right / patient left)


def labels_with(name=None, code=POSITIVE):
    labels = [NOT_MENTIONED] * len(CHEXPERT_OBSERVATIONS)
    if name is not None:
        labels[CHEXPERT_OBSERVATIONS.index(name)] = code
    return labels


def frontal(labels, seed, size=SIZE):
    return np.asarray(render_study(labels, seed, image_size=size, views=("frontal",))[0], dtype=np.float64)


def finding_diff(name, seed, code=POSITIVE):
    """Frontal image with the finding minus the same patient without it (gray levels)."""
    return frontal(labels_with(name, code), seed) - frontal(labels_with(), seed)


def share(diff, region):
    """Fraction of the total absolute change that lies inside ``region``."""
    magnitude = np.abs(diff)
    return magnitude[region].sum() / magnitude.sum()


def one_side_share(diff):
    return max(share(diff, LEFT), share(diff, RIGHT))


def test_output_format_and_views():
    images = render_study(labels_with(), 5, image_size=48)
    assert len(images) == 2
    assert all(image.mode == "L" and image.size == (48, 48) for image in images)
    lateral_only = render_study(labels_with(), 5, image_size=48, views=("lateral",))
    assert lateral_only[0].tobytes() == images[1].tobytes()


def test_deterministic_and_seed_dependent():
    labels = labels_with("Cardiomegaly")
    first = [image.tobytes() for image in render_study(labels, 11, image_size=64)]
    again = [image.tobytes() for image in render_study(labels, 11, image_size=64)]
    other = [image.tobytes() for image in render_study(labels, 12, image_size=64)]
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


def test_anatomy_varies_between_patients():
    normals = [frontal(labels_with(), seed, 64) for seed in range(6)]
    # Not just different noise: the lung fields (dark pixels) differ in extent between patients.
    dark_fractions = {round(float((image < 70).mean()), 3) for image in normals}
    assert len(dark_fractions) >= 4


def test_no_finding_and_negative_codes_draw_nothing():
    normal = frontal(labels_with(), 3)
    assert np.array_equal(frontal(labels_with("No Finding"), 3), normal)
    all_negative = [NEGATIVE] * len(CHEXPERT_OBSERVATIONS)
    assert np.array_equal(frontal(all_negative, 3), normal)


@pytest.mark.parametrize("seed", SEEDS)
def test_cardiomegaly_widens_the_cardiac_silhouette(seed):
    diff = finding_diff("Cardiomegaly", seed)
    cardiac_region = (Y > 0.35) & (Y < 0.95) & (X > 0.2) & (X < 0.9)
    assert share(diff, cardiac_region) > 0.95
    assert diff[cardiac_region].mean() > 2 and diff.min() > -30
    assert np.all(diff[Y < 0.3] == 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_enlarged_cardiomediastinum_widens_the_upper_mediastinum(seed):
    diff = finding_diff("Enlarged Cardiomediastinum", seed)
    upper_mediastinum = (Y < 0.55) & (np.abs(X - 0.5) < 0.2)
    assert share(diff, upper_mediastinum) > 0.95
    assert diff[upper_mediastinum].mean() > 2 and diff.min() >= 0
    assert np.all(diff[Y > 0.6] == 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_pleural_effusion_fills_a_costophrenic_angle(seed):
    diff = finding_diff("Pleural Effusion", seed)
    assert share(diff, Y > 0.5) > 0.98
    assert diff.min() >= 0
    # Denser at the lateral costophrenic angle than medially: the meniscus climbs the lateral wall.
    lower = (Y > 0.6) & (Y < 0.9)
    for side in (LEFT, RIGHT):
        if share(diff, side) > 0.3:
            lateral = diff[lower & side & (np.abs(X - 0.5) > 0.25)].mean()
            medial = diff[lower & side & (np.abs(X - 0.5) < 0.18) & (np.abs(X - 0.5) > 0.08)].mean()
            assert lateral > 4 and lateral > 1.5 * medial


@pytest.mark.parametrize("seed", SEEDS)
def test_pneumothorax_lucent_rim_without_markings_and_pleural_line(seed):
    diff = finding_diff("Pneumothorax", seed)
    darker, brighter = np.clip(-diff, 0, None), np.clip(diff, 0, None)
    assert darker.sum() > 2 * brighter.sum()  # mostly more lucent
    assert one_side_share(diff) > 0.98
    periphery = (Y < 0.75) & (np.abs(X - 0.5) > 0.1)
    assert darker[periphery].sum() / darker.sum() > 0.8
    assert brighter.max() > 20  # the pleural line


@pytest.mark.parametrize("name", ["Lung Opacity", "Consolidation", "Pneumonia"])
@pytest.mark.parametrize("seed", SEEDS)
def test_airspace_findings_add_density_in_one_lung(name, seed):
    diff = finding_diff(name, seed)
    assert diff.min() >= 0 and diff.max() > 20
    assert one_side_share(diff) > 0.98
    lung_band = (Y > 0.08) & (Y < 0.85) & (np.abs(X - 0.5) > 0.04)
    assert share(diff, lung_band) > 0.98


def test_consolidation_is_denser_than_opacity():
    peaks = {
        name: np.mean([finding_diff(name, seed).max() for seed in SEEDS]) for name in ("Lung Opacity", "Consolidation")
    }
    assert peaks["Consolidation"] > peaks["Lung Opacity"] + 20


@pytest.mark.parametrize("seed", SEEDS)
def test_edema_is_bilateral_and_perihilar(seed):
    diff = finding_diff("Edema", seed)
    assert diff.min() >= 0
    assert min(share(diff, LEFT), share(diff, RIGHT)) > 0.35
    perihilar = (Y > 0.25) & (Y < 0.75) & (np.abs(X - 0.5) < 0.3)
    assert share(diff, perihilar) > 0.75


@pytest.mark.parametrize("seed", SEEDS)
def test_atelectasis_band_and_volume_loss_on_one_side(seed):
    diff = finding_diff("Atelectasis", seed)
    assert share(diff, Y > 0.45) > 0.95
    assert one_side_share(diff) > 0.95
    assert diff.sum() > 0  # the band and the risen diaphragm both add density


@pytest.mark.parametrize("seed", SEEDS)
def test_lung_lesion_is_a_compact_round_density(seed):
    diff = finding_diff("Lung Lesion", seed)
    assert diff.min() >= 0 and diff.max() > 40
    rows, cols = np.nonzero(diff > 5)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert height * width < 0.04 * SIZE * SIZE
    assert 0.6 < height / width < 1.6  # round, not a band


@pytest.mark.parametrize("seed", SEEDS)
def test_fracture_changes_only_a_small_rib_region(seed):
    diff = finding_diff("Fracture", seed)
    rows, cols = np.nonzero(diff)
    assert len(rows) > 0 and diff.min() < -15  # part of the rib is missing (the break)
    assert (np.ptp(rows) + 1) * (np.ptp(cols) + 1) < 0.01 * SIZE * SIZE


@pytest.mark.parametrize("seed", SEEDS)
def test_support_devices_are_bright_lines_or_pacemaker(seed):
    diff = finding_diff("Support Devices", seed)
    assert diff.min() >= 0 and diff.max() > 45
    assert (diff > 20).sum() > SIZE // 4  # elongated, not a speck


@pytest.mark.parametrize("seed", SEEDS)
def test_pleural_other_thickens_a_lateral_pleura(seed):
    diff = finding_diff("Pleural Other", seed)
    assert diff.min() >= 0 and diff.max() > 20
    assert one_side_share(diff) > 0.98
    assert share(diff, np.abs(X - 0.5) > 0.2) > 0.9


@pytest.mark.parametrize("name", [name for name in CHEXPERT_OBSERVATIONS if name != "No Finding"])
def test_uncertain_is_a_fainter_version_and_lateral_view_shows_the_finding(name):
    seed = 7
    positive = np.abs(finding_diff(name, seed, POSITIVE)).sum()
    uncertain = np.abs(finding_diff(name, seed, UNCERTAIN)).sum()
    assert 0 < uncertain < positive
    normal_lateral = render_study(labels_with(), seed, image_size=64, views=("lateral",))[0].tobytes()
    with_finding = render_study(labels_with(name), seed, image_size=64, views=("lateral",))[0].tobytes()
    assert with_finding != normal_lateral


def test_findings_do_not_move_each_other():
    """Adding a second finding leaves the first one's drawing where it was."""
    lesion_alone = finding_diff("Lung Lesion", 2)
    both = labels_with("Lung Lesion")
    both[CHEXPERT_OBSERVATIONS.index("Fracture")] = POSITIVE
    lesion_with_fracture = frontal(both, 2) - frontal(labels_with("Fracture"), 2)

    def centroid(diff):
        weights = np.abs(diff)
        return np.array([(weights * Y).sum(), (weights * X).sum()]) / weights.sum()

    assert np.abs(centroid(lesion_with_fracture) - centroid(lesion_alone)).max() < 0.5 / SIZE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": [POSITIVE] * 13, "seed": 0}, "14"),
        ({"labels": [7] * 14, "seed": 0}, "0..3"),
        ({"labels": [0] * 14, "seed": -1}, "seed"),
        ({"labels": [0] * 14, "seed": 0, "image_size": 8}, "image_size"),
        ({"labels": [0] * 14, "seed": 0, "views": ("oblique",)}, "views"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_study(**kwargs)


# ------------------------------------------------------------------------------------------ phantom benchmark


def test_templates_are_labeled_as_keyed():
    for name, by_code in TEMPLATES.items():
        for code, sentences in by_code.items():
            for sentence in sentences:
                assert label_report(sentence)[CHEXPERT_OBSERVATIONS.index(name)] == code, sentence


def test_labeler_recovers_sampled_labels_of_templated_reports():
    import random

    rng = random.Random(3)
    for _ in range(300):
        labels = sample_labels(rng)
        report = templated_report(labels, rng)
        assert label_report(report) == labels, report


def test_synthetic_annotation_split_and_subsample():
    annotation = synthetic_annotation(200, seed=1)
    assert [len(annotation[split]) for split in ("train", "val", "test")] == [140, 20, 40]
    assert annotation == synthetic_annotation(200, seed=1)
    small = subsample(annotation, 20, seed=1)
    assert [len(small[split]) for split in ("train", "val", "test")] == [14, 2, 4]
    assert small == subsample(annotation, 20, seed=1)
    assert {entry["id"] for entry in small["train"]} <= {entry["id"] for entry in annotation["train"]}


def test_small_synthetic_build_is_readable_and_convertible(tmp_path):
    path = build_phantom_benchmark(
        tmp_path / "bench", source="synthetic", image_size=32, max_studies=10, seed=4, synthetic_studies=40
    )
    annotation = read_annotation(path)
    assert sum(len(entries) for entries in annotation.values()) == 10
    dataset = annotation_to_dataset_dict(path, tmp_path / "bench" / "images")
    entry = annotation["train"][0]
    row = dataset["train"][0]
    assert row["id"] == entry["id"] and row["labels"] == entry["labels"]
    assert [image.size for image in row["images"]] == [(32, 32), (32, 32)]
    # The PNGs are the phantoms of the entry's labels.
    expected = render_study(entry["labels"], study_seed(4, entry["id"]), image_size=32)
    assert [image.tobytes() for image in row["images"]] == [image.tobytes() for image in expected]


def test_build_in_worker_processes_writes_the_same_files(tmp_path):
    for processes in (1, 2):
        build_phantom_benchmark(
            tmp_path / str(processes),
            source="synthetic",
            image_size=32,
            seed=2,
            synthetic_studies=12,
            processes=processes,
        )
    files = sorted(path.relative_to(tmp_path / "1") for path in (tmp_path / "1").rglob("*") if path.is_file())
    assert len(files) == 1 + 2 * 12
    assert all((tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes() for name in files)


@pytest.mark.skipif(find_nlm_reports_archive() is None, reason="NLMCXR_reports.tgz (torchxrayvision) not installed")
def test_small_phantom_iu_build(tmp_path):
    path = build_phantom_benchmark(tmp_path, source="auto", image_size=32, max_studies=10, seed=0)
    annotation = read_annotation(path)
    assert [len(annotation[split]) for split in ("train", "val", "test")] == [7, 1, 2]
    for entries in annotation.values():
        for entry in entries:
            assert entry["id"].startswith("CXR") and "impression" in entry and "image_ids" not in entry
            assert entry["labels"] == label_report(entry["report"])
            assert (tmp_path / "images" / entry["image_path"][1]).is_file()


def test_bad_benchmark_arguments(tmp_path):
    with pytest.raises(ValueError, match="source"):
        build_phantom_benchmark(tmp_path, source="mimic")
    with pytest.raises(ValueError, match="max_studies"):
        build_phantom_benchmark(tmp_path, source="synthetic", max_studies=0)
