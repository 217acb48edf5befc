"""The checks that run before work starts: every image decoded, studies with too many views."""

import io
import os

import pytest
from PIL import Image

from cxrgen.data.annotation import annotation_to_dataset_dict
from cxrgen.data.validation import ImageCheckError, check_images, check_views_per_study


def png_bytes(size=(16, 16)):
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).save(buffer, format="PNG")  # noise: the pixel data is most of the file
    return buffer.getvalue()


def study(study_id, *names):
    return {"id": study_id, "report": "The heart is normal.", "image_path": [f"{study_id}/{name}" for name in names]}


@pytest.fixture
def bad_data(tmp_path):
    """One good study and one of each kind of bad file, spread over two splits."""
    files = {
        "good/0.png": png_bytes(),
        "truncated/0.png": png_bytes((64, 64))[:2000],
        "empty/0.png": b"",
        "text/0.png": b"this is a text file, not a PNG\n",
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    annotation = {
        "train": [study("good", "0.png"), study("truncated", "0.png"), study("empty", "0.png")],
        "test": [study("text", "0.png"), study("missing", "0.png")],
    }
    return annotation, tmp_path


def test_every_bad_image_is_listed_in_one_error(bad_data):
    annotation, root = bad_data
    with pytest.raises(ImageCheckError) as error:
        check_images(annotation, root)
    message = str(error.value)
    assert message.startswith("4 of 5 image file(s) cannot be read")
    expected = {
        ("train", "truncated"): "not a readable image (OSError: image file is truncated",
        ("train", "empty"): "the file is empty (0 bytes)",
        ("test", "text"): "not a readable image (UnidentifiedImageError",
        ("test", "missing"): "the file does not exist",
    }
    for (split, entry_id), reason in expected.items():
        assert f"split '{split}', entry '{entry_id}': {root / entry_id / '0.png'}: {reason}" in message
    assert "'good'" not in message and "--skip-image-check" in message
    assert {(split, entry_id) for split, entry_id, _, _ in error.value.problems} == set(expected)


def test_the_check_covers_only_the_splits_asked_for(bad_data):
    annotation, root = bad_data
    with pytest.raises(ImageCheckError) as error:
        check_images(annotation, root, splits=["test"])
    assert str(error.value).startswith("2 of 2 image file(s)") and "'train'" not in str(error.value)


def test_the_dataset_builder_checks_the_images_before_building(bad_data):
    annotation, root = bad_data
    with pytest.raises(ImageCheckError, match="entry 'truncated'"):
        annotation_to_dataset_dict(annotation, root, labeler=lambda text: [0] * 14)


def test_the_cache_skips_unchanged_files_and_rechecks_changed_ones(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(png_bytes())
    annotation = {"train": [study("a", "0.png")]}
    cache = tmp_path / "cache" / "checked.json"
    assert check_images(annotation, tmp_path, cache=cache) == 1 and cache.is_file()

    read = []
    monkeypatch.setattr("cxrgen.data.validation.load_image", lambda path: read.append(path))
    check_images(annotation, tmp_path, cache=cache)
    assert read == []
    (tmp_path / "a" / "0.png").write_bytes(png_bytes((20, 20)))
    check_images(annotation, tmp_path, cache=cache)
    assert read == [os.path.abspath(tmp_path / "a" / "0.png")]


def test_a_study_with_too_many_views_is_named_by_id_and_files():
    annotation = {"train": [study("s1", "f.png"), study("s12", "f.png", "l.png", "x.png")]}
    check_views_per_study(annotation, max_views=3)
    with pytest.raises(ValueError) as error:
        check_views_per_study(annotation, max_views=2)
    message = str(error.value)
    assert "split 'train', study 's12' has 3 views (files s12/f.png, s12/l.png, s12/x.png)" in message
    assert "'s1'" not in message and "more than 2 view(s)" in message
