import sys
import tarfile

import pytest

from cxrgen.data.annotation import validate_annotation
from cxrgen.data.iu_xray import (
    IUXrayError,
    assign_splits,
    convert_iu_xray,
    find_nlm_reports_archive,
    r2gen_split,
    r2gen_study_id,
    read_nlm_reports,
    split_sizes,
)

REPORT_TEMPLATE = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{uid}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">{comparison}</AbstractText>
            <AbstractText Label="INDICATION">Cough.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>{major}</major>
      <automatic>opacity</automatic>
   </MeSH>
   {images}
</eCitation>
"""
IMAGE_TEMPLATE = """<parentImage id="{image_id}">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single"><url>/hadoop/storage/radiology/extract/{image_id}.jpg</url></panel>
   </parentImage>"""


def report_xml(uid, findings="The lungs are clear.", images=("1001", "2001"), impression="Normal.", comparison=""):
    image_ids = [f"CXR{uid}_IM-{uid:04d}-{suffix}" for suffix in images]
    return REPORT_TEMPLATE.format(
        uid=uid,
        findings=findings,
        impression=impression,
        comparison=comparison,
        major="normal",
        images="\n".join(IMAGE_TEMPLATE.format(image_id=i) for i in image_ids),
    )


def write_folder(folder, reports):
    folder.mkdir(parents=True, exist_ok=True)
    for uid, text in reports.items():
        (folder / f"{uid}.xml").write_text(text, encoding="utf-8")
    return folder


FIXTURE = {
    1: report_xml(1, findings="Heart size normal.\n   No effusion.", comparison="None."),
    2: report_xml(2, findings=""),  # empty findings: excluded
    3: report_xml(3, findings="   "),  # whitespace only: excluded
    4: report_xml(4, images=("1001",)),  # one image: excluded
    5: report_xml(5, images=("3001", "4001", "1001")),  # three images: the first two in XML order
    6: report_xml(6, images=()),  # no image: excluded
}


def test_fixture_selection_ids_and_fields(tmp_path):
    annotation = convert_iu_xray(write_folder(tmp_path / "ecgen-radiology", FIXTURE), split="seeded", seed=0)
    validate_annotation(annotation)
    entries = {e["id"]: e for entries in annotation.values() for e in entries}
    assert sorted(entries) == ["CXR1_IM-0001", "CXR5_IM-0005"]
    first = entries["CXR1_IM-0001"]
    assert first["report"] == "Heart size normal. No effusion."
    assert first["image_path"] == ["CXR1_IM-0001/0.png", "CXR1_IM-0001/1.png"]
    assert first["impression"] == "Normal." and first["indication"] == "Cough." and first["comparison"] == "None."
    assert first["mesh_major"] == ["normal"] and first["mesh_automatic"] == ["opacity"]
    assert first["image_ids"] == ["CXR1_IM-0001-1001", "CXR1_IM-0001-2001"]
    assert entries["CXR5_IM-0005"]["image_ids"] == ["CXR5_IM-0005-3001", "CXR5_IM-0005-4001"]
    assert all(e["split"] == split for split, es in annotation.items() for e in es)


def test_archive_and_folder_give_the_same_annotation(tmp_path):
    folder = write_folder(tmp_path / "ecgen-radiology", FIXTURE)
    archive = tmp_path / "NLMCXR_reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="ecgen-radiology")
    assert convert_iu_xray(archive, split="seeded", seed=3) == convert_iu_xray(folder, split="seeded", seed=3)


def test_images_dir_points_at_nlm_pngs(tmp_path):
    folder = write_folder(tmp_path / "xml", {1: FIXTURE[1], 5: FIXTURE[5]})
    pngs = tmp_path / "png"
    pngs.mkdir()
    for name in ("CXR1_IM-0001-1001", "CXR1_IM-0001-2001", "CXR5_IM-0005-3001"):
        (pngs / f"{name}.png").write_bytes(b"")
    with pytest.raises(
        IUXrayError, match=r"Study 'CXR5_IM-0005': image .*CXR5_IM-0005-4001\.png' does not exist \(0 other"
    ):
        convert_iu_xray(folder, images_dir=pngs, split="seeded")
    (pngs / "CXR5_IM-0005-4001.png").write_bytes(b"")
    entries = {e["id"]: e for es in convert_iu_xray(folder, images_dir=pngs, split="seeded").values() for e in es}
    assert entries["CXR1_IM-0001"]["image_path"] == ["CXR1_IM-0001-1001.png", "CXR1_IM-0001-2001.png"]


def test_projections_put_the_frontal_view_first(tmp_path):
    folder = write_folder(tmp_path / "xml", {5: FIXTURE[5]})
    projections = {"CXR5_IM-0005-3001": "Lateral", "CXR5_IM-0005-4001": "lateral", "CXR5_IM-0005-1001": "Frontal"}
    entry = convert_iu_xray(folder, split="seeded", projections=projections)
    (only,) = [e for es in entry.values() for e in es]
    assert only["image_ids"] == ["CXR5_IM-0005-1001", "CXR5_IM-0005-3001"]
    with pytest.raises(IUXrayError, match="expected 'frontal' or 'lateral'"):
        convert_iu_xray(folder, split="seeded", projections={"CXR5_IM-0005-3001": "lateral"})


def test_split_is_deterministic_and_seeded():
    ids = [f"CXR{i}_IM-{i:04d}" for i in range(100)]
    first = assign_splits(ids, 7, (0.7, 0.1, 0.2))
    assert first == assign_splits(list(reversed(ids)), 7, (0.7, 0.1, 0.2))
    assert first != assign_splits(ids, 8, (0.7, 0.1, 0.2))
    assert [list(first.values()).count(s) for s in ("train", "val", "test")] == [70, 10, 20]
    assert split_sizes(2955, (0.7, 0.1, 0.2)) == (2069, 296, 590)
    with pytest.raises(ValueError, match="summing to 1"):
        split_sizes(10, (0.7, 0.2, 0.2))


def test_malformed_inputs(tmp_path):
    bad = write_folder(tmp_path / "bad", {1: "<eCitation><uId id='CXR1'/>"})
    with pytest.raises(IUXrayError, match=r"1\.xml: malformed XML at line 1"):
        read_nlm_reports(bad)
    no_uid = write_folder(tmp_path / "nouid", {1: FIXTURE[1].replace('<uId id="CXR1"/>', "")})
    with pytest.raises(IUXrayError, match="missing <uId"):
        read_nlm_reports(no_uid)
    with pytest.raises(IUXrayError, match="contains no report XML"):
        read_nlm_reports(write_folder(tmp_path / "empty", {}))
    with pytest.raises(IUXrayError, match="no such file or folder"):
        read_nlm_reports(tmp_path / "missing.tgz")


def test_archive_lookup_does_not_import_torchxrayvision():
    already = "torchxrayvision" in sys.modules
    find_nlm_reports_archive()
    assert already or "torchxrayvision" not in sys.modules


REAL_ARCHIVE = find_nlm_reports_archive()


def test_study_id_drops_the_last_part_of_the_first_image_id_as_r2gen_does(tmp_path):
    assert r2gen_study_id("CXR2384_IM-0942-1001") == "CXR2384_IM-0942"
    assert r2gen_study_id("CXR1032_IM-0026-1001-0001") == "CXR1032_IM-0026-1001"
    with pytest.raises(ValueError, match="does not look like"):
        r2gen_study_id("CXR2384_IM-0942")
    four_parts = report_xml(1032, images=("1001-0001", "1001-0002")).replace("IM-1032", "IM-0026")
    (entry,) = [e for es in convert_iu_xray(write_folder(tmp_path / "xml", {1032: four_parts})).values() for e in es]
    assert (entry["id"], entry["split"]) == ("CXR1032_IM-0026-1001", "train")
    assert entry["image_path"] == ["CXR1032_IM-0026-1001/0.png", "CXR1032_IM-0026-1001/1.png"]


def test_r2gen_split_is_the_shipped_file_and_refuses_other_studies(tmp_path):
    assignment = r2gen_split()
    assert [list(assignment.values()).count(s) for s in ("train", "val", "test")] == [2069, 296, 590]
    with pytest.raises(
        IUXrayError, match=r"2 selected studies are not in R2Gen's IU-Xray split \(e\.g\. CXR1_IM-0001"
    ):
        convert_iu_xray(write_folder(tmp_path / "xml", FIXTURE))
    with pytest.raises(ValueError, match="split must be one of"):
        convert_iu_xray(write_folder(tmp_path / "xml", FIXTURE), split="random")


@pytest.mark.skipif(REAL_ARCHIVE is None, reason="NLMCXR_reports.tgz (torchxrayvision) not installed")
def test_real_archive_gives_r2gen_ids_and_split():
    annotation = convert_iu_xray()
    assert [len(annotation[s]) for s in ("train", "val", "test")] == [2069, 296, 590]
    assert {e["id"]: split for split, es in annotation.items() for e in es} == r2gen_split()
    entries = {e["id"]: e for es in annotation.values() for e in es}
    example = entries["CXR2384_IM-0942"]
    assert example["image_path"] == ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"]
    assert example["report"].startswith("The heart size and pulmonary vascularity appear within normal limits.")
    assert entries["CXR1032_IM-0026-1001"]["image_ids"] == ["CXR1032_IM-0026-1001-0001", "CXR1032_IM-0026-1001-0002"]


@pytest.mark.skipif(REAL_ARCHIVE is None, reason="NLMCXR_reports.tgz (torchxrayvision) not installed")
def test_real_archive_seeded_split_keeps_the_studies_and_sizes():
    annotation = convert_iu_xray(split="seeded", seed=42)
    assert [len(annotation[s]) for s in ("train", "val", "test")] == [2069, 296, 590]
    assert {e["id"] for es in annotation.values() for e in es} == set(r2gen_split())
    assert convert_iu_xray(REAL_ARCHIVE, split="seeded", seed=42) == annotation
    other = convert_iu_xray(split="seeded", seed=43)
    assert {e["id"] for e in other["test"]} != {e["id"] for e in annotation["test"]}
