import csv
import gzip

import pytest

from cxrgen.data.annotation import validate_annotation
from cxrgen.data.mimic_cxr import MimicCxrError, convert_mimic_cxr, extract_sections
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NEGATIVE, NOT_MENTIONED, POSITIVE, UNCERTAIN

CHEXPERT_COLUMNS = sorted(CHEXPERT_OBSERVATIONS)  # the official file lists them alphabetically
REPORT_WITH_FINDINGS = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
REPORT_WITHOUT_FINDINGS = """                                 FINAL REPORT
 INDICATION:  Line placement.

 IMPRESSION:  Right IJ line ends in the SVC.
"""
# study -> (subject, split, [(dicom, view)], report text or None, chexpert row or None)
STUDIES = {
    50000001: (
        10000001,
        "train",
        [("d1-lat", "LATERAL"), ("d1-pa", "PA")],
        REPORT_WITH_FINDINGS,
        {"Pleural Effusion": "0.0", "Cardiomegaly": "1.0", "Edema": "-1.0"},
    ),
    50000002: (10000001, "validate", [("d2-ap", "AP"), ("d2-pa", "PA"), ("d2-ap2", "AP")], REPORT_WITH_FINDINGS, None),
    50000003: (11000002, "test", [("d3-pa", "PA")], REPORT_WITHOUT_FINDINGS, {"Support Devices": "1.0"}),
    50000004: (11000002, "train", [("d4-ll", "LL")], REPORT_WITH_FINDINGS, {}),
}


def write_csv(path, header, rows, gz):
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wt", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)


def write_fixture(root, gz=True, studies=STUDIES, drop_column=None):
    root.mkdir(parents=True, exist_ok=True)
    split_rows, metadata_rows, chexpert_rows = [], [], []
    for study, (subject, split, dicoms, report, chexpert) in studies.items():
        for dicom, view in dicoms:
            split_rows.append([dicom, study, subject, split])
            metadata_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 3056, 2544])
        if report is not None:
            path = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report, encoding="utf-8")
        if chexpert is not None:
            chexpert_rows.append([subject, study] + [chexpert.get(name, "") for name in CHEXPERT_COLUMNS])
    split_header = ["dicom_id", "study_id", "subject_id", "split"]
    metadata_header = [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
    ]
    if drop_column == "ViewPosition":
        metadata_header[4] = "View"
    write_csv(root / "mimic-cxr-2.0.0-split.csv", split_header, split_rows, gz)
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv", metadata_header, metadata_rows, gz)
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id"] + CHEXPERT_COLUMNS, chexpert_rows, gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_conversion_one_frontal_image_per_study(tmp_path, gz):
    annotation = convert_mimic_cxr(write_fixture(tmp_path / "mimic", gz=gz))
    validate_annotation(annotation)
    assert {split: [e["id"] for e in entries] for split, entries in annotation.items()} == {
        "train": ["d1-pa"],  # study 4 has no frontal image
        "val": ["d2-pa"],  # PA preferred over AP
        "test": [],  # study 3 has no FINDINGS section
    }
    first = annotation["train"][0]
    assert first["image_path"] == ["files/p10/p10000001/s50000001/d1-pa.jpg"]
    assert first["report"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The cardiomediastinal silhouette is normal."
    )
    assert first["impression"] == "No acute cardiopulmonary process."
    assert (first["study_id"], first["subject_id"], first["split"], first["view_position"]) == (
        50000001,
        10000001,
        "train",
        "PA",
    )
    expected = [NOT_MENTIONED] * 14
    expected[CHEXPERT_OBSERVATIONS.index("Pleural Effusion")] = NEGATIVE
    expected[CHEXPERT_OBSERVATIONS.index("Cardiomegaly")] = POSITIVE
    expected[CHEXPERT_OBSERVATIONS.index("Edema")] = UNCERTAIN
    assert first["labels"] == expected
    assert "labels" not in annotation["val"][0]  # no CheXpert row: the labeler decides later


def test_all_frontal_images(tmp_path):
    annotation = convert_mimic_cxr(write_fixture(tmp_path), all_frontal_images=True)
    assert [e["id"] for e in annotation["val"]] == ["d2-pa", "d2-ap", "d2-ap2"]
    assert len({e["report"] for e in annotation["val"]}) == 1


def test_separate_reports_root(tmp_path):
    root = write_fixture(tmp_path / "jpg")
    reports = tmp_path / "reports"
    reports.mkdir()
    (root / "files").rename(reports / "files")
    with pytest.raises(MimicCxrError, match=r"s50000001\.txt' does not exist \(3 other report\(s\) missing"):
        convert_mimic_cxr(root)
    assert [e["id"] for e in convert_mimic_cxr(root, reports_root=reports)["train"]] == ["d1-pa"]


def test_missing_column_names_file_and_column(tmp_path):
    root = write_fixture(tmp_path, drop_column="ViewPosition")
    with pytest.raises(MimicCxrError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\.gz: missing column 'ViewPosition'"):
        convert_mimic_cxr(root)


def test_bad_values_and_missing_files(tmp_path):
    studies = dict(STUDIES)
    studies[50000005] = (12000003, "training", [("d5", "PA")], REPORT_WITH_FINDINGS, None)
    with pytest.raises(MimicCxrError, match=r"split\.csv\.gz, line 9: column 'split' is 'training'"):
        convert_mimic_cxr(write_fixture(tmp_path / "a", studies=studies))
    studies[50000005] = (12000003, "train", [("d5", "PA")], REPORT_WITH_FINDINGS, {"Edema": "2.0"})
    with pytest.raises(MimicCxrError, match="column 'Edema' is '2.0'; expected 1.0, 0.0, -1.0 or blank"):
        convert_mimic_cxr(write_fixture(tmp_path / "b", studies=studies))
    with pytest.raises(MimicCxrError, match="Neither mimic-cxr-2.0.0-split.csv.gz nor mimic-cxr-2.0.0-split.csv"):
        convert_mimic_cxr(tmp_path / "nothing")


def test_extract_sections():
    assert extract_sections(REPORT_WITHOUT_FINDINGS) == {
        "findings": "",
        "impression": "Right IJ line ends in the SVC.",
    }
    combined = " FINDINGS AND IMPRESSION:  Clear lungs.\n"
    assert extract_sections(combined) == {"findings": "", "impression": "Clear lungs."}
    repeated = " FINDINGS:\n\n FINDINGS:  Small left effusion.\n CONCLUSION: Effusion.\n"
    assert extract_sections(repeated) == {"findings": "Small left effusion.", "impression": "Effusion."}
    assert extract_sections("no headers at all") == {"findings": "", "impression": ""}


def test_prepare_checks_the_images_before_writing_the_annotation(tmp_path, capsys):
    from PIL import Image

    from cxrgen.cli import main

    root = write_fixture(tmp_path / "mimic")
    present = root / "files/p10/p10000001/s50000001/d1-pa.jpg"
    present.parent.mkdir()
    Image.new("L", (8, 8)).save(present)
    output = tmp_path / "annotation.json"
    argv = ["prepare", "mimic-cxr", "--root", str(root), "--output", str(output)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    missing = root / "files/p10/p10000001/s50000002/d2-pa.jpg"
    assert "1 of 2 image file(s) cannot be read" in err and f"split 'val', entry 'd2-pa': {missing}" in err
    assert "Traceback" not in err and not output.exists()
    assert main([*argv, "--skip-image-check"]) == 0 and output.is_file()
