import json
import logging

import pytest
from PIL import Image

from cxrgen.data.annotation import AnnotationError, annotation_to_dataset_dict, read_annotation, write_annotation
from cxrgen.data.validation import ImageCheckError
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NEGATIVE, NOT_MENTIONED, POSITIVE


def make_images(root, *relative_paths):
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), 128).save(path)


def entry(entry_id, report="The heart is normal.", views=2, **extra):
    return {"id": entry_id, "report": report, "image_path": [f"{entry_id}/{v}.png" for v in range(views)], **extra}


def test_write_read_roundtrip_with_stable_order(tmp_path):
    annotation = {"test": [entry("b", extra_field="x")], "train": [entry("a", split="train")]}
    path = write_annotation(annotation, tmp_path / "sub" / "annotation.json")
    text = path.read_text(encoding="utf-8")
    assert read_annotation(path) == annotation
    assert text.index('"train"') < text.index('"test"')
    assert text.index('"id"') < text.index('"report"') < text.index('"image_path"') < text.index('"split"')
    write_annotation(read_annotation(path), path)
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in path.parent.iterdir()] == ["annotation.json"]  # no temporary file left


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "annotation.json"
    path.write_text('{"train": [\n  {"id": "a",, }\n]}', encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"annotation\.json: invalid JSON at line 2, column 14"):
        read_annotation(path)


@pytest.mark.parametrize(
    "annotation, message",
    [
        ([], "expected a JSON object"),
        ({}, "no split found"),
        ({"training": []}, "unknown top-level key"),
        ({"train": {}}, "split 'train' must be a list"),
        ({"train": ["x"]}, "split 'train', entry 0: expected an object"),
        (
            {"val": [{"id": 3, "report": "", "image_path": ["a"]}]},
            "split 'val', entry 0: field 'id' must be a non-empty string",
        ),
        (
            {"train": [entry("a"), {"id": "b", "report": None, "image_path": ["x"]}]},
            r"entry 1 \(id 'b'\): field 'report' must be a string",
        ),
        ({"train": [{"id": "a", "report": "", "image_path": []}]}, "field 'image_path' must be a non-empty list"),
        ({"train": [{"id": "a", "report": "", "image_path": "a.png"}]}, "field 'image_path' must be a non-empty list"),
        ({"test": [entry("a", split="train")]}, "field 'split' is 'train' but the entry is in the 'test' list"),
        ({"train": [entry("a", labels=[1] * 13)]}, "field 'labels': expected a list of 14"),
        ({"train": [entry("a", labels=[4] * 14)]}, "field 'labels': expected a list of 14"),
        ({"train": [entry("a", labels=[True] * 14)]}, "field 'labels': expected a list of 14"),
        ({"train": [entry("a"), entry("b"), entry("a")]}, "split 'train' has the id 'a' twice \\(entries 0 and 2\\)"),
    ],
)
def test_validation_errors_name_split_entry_and_field(tmp_path, annotation, message):
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(annotation), encoding="utf-8")
    with pytest.raises(AnnotationError, match=message):
        read_annotation(path)
    with pytest.raises(AnnotationError, match=message):
        write_annotation(annotation, tmp_path / "out.json")


def test_an_id_in_two_splits_is_leakage_and_an_error_naming_every_such_id(tmp_path):
    annotation = {"train": [entry("a"), entry("b"), entry("c")], "val": [entry("b")], "test": [entry("a"), entry("d")]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(annotation), encoding="utf-8")
    with pytest.raises(AnnotationError) as error:
        read_annotation(path)
    message = str(error.value)
    assert message.startswith(f"{path}: 2 id(s) appear in more than one split: ")
    assert "'a' in train and test" in message and "'b' in train and val" in message
    assert "'c'" not in message and "'d'" not in message


def test_dataset_dict_columns_images_and_labels(tmp_path):
    make_images(tmp_path / "images", "a/0.png", "a/1.png", "b/0.png", "b/1.png", "c/0.png")
    stored = [POSITIVE] + [NOT_MENTIONED] * 13
    annotation = {
        "train": [
            entry("a", labels=stored, split="train", study_id=1),
            entry("b", report="No pleural effusion.", study_id=2),
        ],
        "test": [entry("c", views=1)],
    }
    calls = []

    def labeler(text):
        calls.append(text)
        return [NEGATIVE] * 14

    dataset = annotation_to_dataset_dict(
        write_annotation(annotation, tmp_path / "a.json"), tmp_path / "images", labeler=labeler
    )
    assert set(dataset) == {"train", "test"}
    train = dataset["train"]
    assert train.column_names == ["id", "images", "report", "labels", "study_id"]
    assert str(train.features["labels"]) == "List(Value('int8'))"
    assert train["id"] == ["a", "b"] and train["study_id"] == [1, 2]
    assert train[0]["labels"] == stored and train[1]["labels"] == [NEGATIVE] * 14
    assert calls == ["No pleural effusion.", "The heart is normal."]
    images = train[0]["images"]
    assert len(images) == 2 and images[0].size == (16, 16)
    assert images[0].filename == str((tmp_path / "images" / "a" / "0.png").resolve())
    assert len(dataset["test"][0]["images"]) == 1


def test_default_labeler_is_the_project_labeler(tmp_path):
    make_images(tmp_path, "a/0.png")
    dataset = annotation_to_dataset_dict({"val": [entry("a", report="No pleural effusion.", views=1)]}, tmp_path)
    assert dataset["val"][0]["labels"][CHEXPERT_OBSERVATIONS.index("Pleural Effusion")] == NEGATIVE


def test_partial_extra_fields_are_left_out_with_a_warning(tmp_path, caplog):
    make_images(tmp_path, "a/0.png", "b/0.png")
    annotation = {"train": [entry("a", views=1, impression="x", mesh=["a"]), entry("b", views=1, mesh=[])]}
    with caplog.at_level(logging.WARNING):
        dataset = annotation_to_dataset_dict(annotation, tmp_path, labeler=lambda text: [0] * 14)
    assert dataset["train"].column_names == ["id", "images", "report", "labels", "mesh"]
    assert dataset["train"]["mesh"] == [["a"], []]
    assert "['impression']" in caplog.text


def test_inconsistent_extra_field_types(tmp_path):
    make_images(tmp_path, "a/0.png", "b/0.png")
    annotation = {"train": [entry("a", views=1, extra=1), entry("b", views=1, extra="x")]}
    with pytest.raises(AnnotationError, match="extra field 'extra'"):
        annotation_to_dataset_dict(annotation, tmp_path, labeler=lambda text: [0] * 14)


def test_missing_images_are_all_listed_before_raising(tmp_path):
    make_images(tmp_path, "a/0.png")
    annotation = {"train": [entry("a"), entry("b")], "test": [entry("c", views=1)]}
    with pytest.raises(ImageCheckError) as error:
        annotation_to_dataset_dict(annotation, tmp_path, labeler=lambda text: [0] * 14)
    message = str(error.value)
    assert message.startswith("4 of 5 image file(s) cannot be read")
    for split, entry_id, view in (("train", "a", 1), ("train", "b", 0), ("train", "b", 1), ("test", "c", 0)):
        assert (
            f"split '{split}', entry '{entry_id}': {tmp_path / entry_id / f'{view}.png'}: the file does not exist"
            in message
        )


def test_skipping_the_image_check_still_requires_the_files_and_is_logged(tmp_path, caplog):
    make_images(tmp_path, "a/0.png", "a/1.png")
    (tmp_path / "a" / "1.png").write_bytes(b"")  # unreadable, but not decoded when the check is skipped
    with caplog.at_level(logging.WARNING, logger="cxrgen.data.validation"):
        dataset = annotation_to_dataset_dict({"train": [entry("a")]}, tmp_path, skip_image_check=True)
    assert dataset["train"].num_rows == 1 and "Image check skipped" in caplog.text
    with pytest.raises(AnnotationError, match=r"entry 'b': image file .*b.0\.png' does not exist"):
        annotation_to_dataset_dict({"train": [entry("b")]}, tmp_path, skip_image_check=True)


def test_empty_report_is_an_error(tmp_path):
    make_images(tmp_path, "a/0.png")
    with pytest.raises(AnnotationError, match="entry 'a': the report is empty"):
        annotation_to_dataset_dict({"train": [entry("a", report="  ", views=1)]}, tmp_path)


def test_bad_labeler_output_is_an_error(tmp_path):
    make_images(tmp_path, "a/0.png")
    with pytest.raises(AnnotationError, match="labeler output for split 'train', id 'a'"):
        annotation_to_dataset_dict({"train": [entry("a", views=1)]}, tmp_path, labeler=lambda text: [1] * 3)
