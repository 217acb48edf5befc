"""Collator errors name the study (its id and files), never its position in the batch."""

from types import SimpleNamespace

import pytest
from PIL import Image

from cxrgen.data.annotation import annotation_to_dataset_dict
from cxrgen.data.collators import ObservationCollator, StudyCollator, study_views
from cxrgen.data.trrg_collators import TrrgCollator, TrrgContrastiveCollator
from cxrgen.labels import NEGATIVE
from cxrgen.processing.image_processing_cxr import CxrImageProcessor


@pytest.fixture
def rows(tmp_path):
    """Dataset rows of a 1-view study and a 3-view study 's12', the second in the batch."""
    annotation = {"train": []}
    for study_id, views in (("s1", 1), ("s12", 3)):
        paths = [f"{study_id}/{view}.png" for view in range(views)]
        for path in paths:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), 100).save(tmp_path / path)
        annotation["train"].append({"id": study_id, "report": "The heart is normal.", "image_path": paths})
    dataset = annotation_to_dataset_dict(annotation, tmp_path, labeler=lambda text: [NEGATIVE] * 14)["train"]
    files = ", ".join(str(tmp_path / "s12" / f"{view}.png") for view in range(3))
    return [dataset[0], dataset[1]], f"Study 's12' (files {files}) has 3 views"


def processor(num_views=None):
    # The view count is checked before anything is processed, so only the image processor's setting matters.
    return SimpleNamespace(image_processor=CxrImageProcessor(num_views=num_views))


@pytest.mark.parametrize(
    "collator",
    [
        StudyCollator(processor(), num_views=2),
        StudyCollator(processor(num_views=2)),
        TrrgCollator(processor(num_views=2)),
        TrrgContrastiveCollator(CxrImageProcessor(), tokenizer=None, num_views=2),
    ],
    ids=["study-collator", "study-collator-processor-setting", "trrg", "trrg-contrastive"],
)
def test_a_study_with_too_many_views_is_named_by_id_and_files(rows, collator):
    batch, expected = rows
    with pytest.raises(ValueError) as error:
        collator(batch)
    message = str(error.value)
    assert message.startswith(expected) and "more than the 2 the model takes" in message
    assert "Study 1 " not in message and "row 1" not in message


def test_single_view_collators_name_the_study(rows):
    batch, expected = rows
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        ObservationCollator(CxrImageProcessor())(batch)


def test_a_row_without_a_field_is_named_by_its_id(rows):
    batch, _ = rows
    del batch[1]["report"]
    with pytest.raises(ValueError, match="^Study 's12': missing field 'report'"):
        StudyCollator(processor())(batch)


def test_undecoded_datasets_are_read_by_the_processor_as_at_inference(tmp_path):
    pytest.importorskip("pydicom")
    import io

    import numpy as np
    import torch
    from test_image_processing import write_dicom

    (tmp_path / "s1").mkdir()
    Image.new("L", (8, 8), 100).save(tmp_path / "s1" / "0.png")
    write_dicom(tmp_path / "s1" / "1.dcm", np.arange(64).reshape(8, 8) * 50)
    paths = [str(tmp_path / "s1" / "0.png"), str(tmp_path / "s1" / "1.dcm")]
    annotation = {"train": [{"id": "s1", "report": "The heart is normal.", "image_path": ["s1/0.png", "s1/1.dcm"]}]}
    row = annotation_to_dataset_dict(annotation, tmp_path, labeler=lambda text: [NEGATIVE] * 14, decode_images=False)[
        "train"
    ][0]
    # datasets.Image cannot decode the DICOM view; undecoded, the processor's own reader (load_image) reads both.
    assert study_views(row) == paths
    processor = CxrImageProcessor(size={"height": 8, "width": 8})
    expected = processor(images=[paths])["pixel_values"]
    torch.testing.assert_close(processor(images=[study_views(row)])["pixel_values"], expected, rtol=0, atol=0)

    # A dataset that carries the files' bytes (as one pushed to the Hub does) is read the same way.
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 100).save(buffer, format="PNG")
    embedded = {"id": "s1", "images": [{"path": None, "bytes": buffer.getvalue()}]}
    torch.testing.assert_close(
        processor(images=[study_views(embedded)])["pixel_values"], expected[:, :1], rtol=0, atol=0
    )
