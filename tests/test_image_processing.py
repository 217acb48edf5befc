import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgen.processing.image_processing_cxr import CxrImageProcessor, ImageLoadError, load_image

pytestmark = pytest.mark.transformers_compat


SIZE = {"height": 32, "width": 32}
MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)


def pixels(image):
    assert image.mode == "RGB"
    return np.asarray(image)


def mode_of(path):
    with Image.open(path) as image:
        return image.mode


def gray(value, size=(40, 48)):
    return Image.new("L", size, value)


def noise(seed, shape=(48, 40)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- load_image ----------------------------------------------------------------------------------------------


def test_8bit_grayscale_png(tmp_path):
    path = tmp_path / "gray.png"
    gray(100).save(path)
    assert (pixels(load_image(path)) == 100).all()
    assert (pixels(load_image(str(path))) == 100).all()


def test_16bit_png_uses_the_full_16bit_range(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert mode_of(path) == "I;16"
    expected = np.array([[0, 100, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(pixels(load_image(path))[..., 0], expected)
    np.testing.assert_array_equal(pixels(load_image(values))[..., 0], expected)
    # Older Pillow opens 16-bit PNGs as 32-bit mode "I": same scaling.
    np.testing.assert_array_equal(pixels(load_image(Image.fromarray(values.astype(np.int32))))[..., 0], expected)


def test_32bit_integer_image_outside_16bit_range_is_rejected():
    with pytest.raises(ImageLoadError, match=r"\[0, 65535\]"):
        load_image(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))


def test_rgb_png(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(path)
    assert (pixels(load_image(path)) == [10, 20, 30]).all()


def test_alpha_is_dropped_not_composited(tmp_path):
    rgba, la = tmp_path / "rgba.png", tmp_path / "la.png"
    Image.new("RGBA", (8, 6), (10, 20, 30, 0)).save(rgba)
    Image.new("LA", (8, 6), (100, 0)).save(la)
    assert (pixels(load_image(rgba)) == [10, 20, 30]).all()
    assert (pixels(load_image(la)) == 100).all()


@pytest.mark.filterwarnings("error")  # Pillow warns when a palette with transparency goes straight to RGB
@pytest.mark.parametrize("transparency", [None, bytes([0, 255])])
def test_palette_png(tmp_path, transparency):
    image = Image.new("P", (8, 6), 1)
    image.putpalette([0, 0, 0, 200, 150, 100])
    path = tmp_path / "palette.png"
    image.save(path, **({} if transparency is None else {"transparency": transparency}))
    assert mode_of(path) == "P"
    assert (pixels(load_image(path)) == [200, 150, 100]).all()


def test_jpeg(tmp_path):
    path = tmp_path / "gray.jpg"
    gray(100).save(path, quality=95)
    assert np.abs(pixels(load_image(path)).astype(int) - 100).max() <= 1


def test_exif_orientation_is_applied_the_same_way_for_training_and_inference(tmp_path):
    from cxrgen.data.annotation import annotation_to_dataset_dict

    stored = np.zeros((20, 40), dtype=np.uint8)
    stored[:, :10] = 255  # bright band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer turns the stored pixels 90 degrees clockwise
    path = tmp_path / "study" / "0.jpg"
    path.parent.mkdir()
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    upright = np.asarray(load_image(path))[..., 0]
    assert upright.shape == (40, 20) and upright[:10].mean() > 200 and upright[-10:].mean() < 50
    assert np.array_equal(np.asarray(load_image(Image.open(path))), np.asarray(load_image(path)))

    annotation = {"train": [{"id": "s1", "report": "The lungs are clear.", "image_path": ["study/0.jpg"]}]}
    training = annotation_to_dataset_dict(annotation, tmp_path)["train"][0]["images"][0]
    processor = CxrImageProcessor(size={"height": 32, "width": 16})
    torch.testing.assert_close(
        processor(images=[[training]], return_tensors="pt")["pixel_values"],
        processor(images=[[str(path)]], return_tensors="pt")["pixel_values"],
    )


def dataset_and_file_pixel_values(tmp_path, names, size=(16, 16)):
    """``pixel_values`` of each file read through the training path (the dataset builder's decoded image, then the
    processor) and through the inference path (the processor given the path)."""
    from cxrgen.data.annotation import annotation_to_dataset_dict

    annotation = {"train": [{"id": name, "report": "The lungs are clear.", "image_path": [name]} for name in names]}
    rows = annotation_to_dataset_dict(annotation, tmp_path, labeler=lambda text: [0] * 14)["train"]
    processor = CxrImageProcessor(size={"height": size[0], "width": size[1]})
    training = processor(images=[list(row["images"]) for row in rows], return_tensors="pt")["pixel_values"]
    inference = processor(images=[[str(tmp_path / name)] for name in names], return_tensors="pt")["pixel_values"]
    return training, inference


def blocks(shape=(32, 48), seed=0):
    """8x8 blocks of one value each: JPEG stores them without loss, in any orientation."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (shape[0] // 8, shape[1] // 8)), np.ones((8, 8))).astype(np.uint8)


def test_exif_rotated_jpeg_gives_the_pixel_values_of_the_upright_image_in_training_and_inference(tmp_path):
    upright = blocks()
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns the stored pixels 90 degrees clockwise
    Image.fromarray(np.rot90(upright, k=1)).save(tmp_path / "rotated.jpg", quality=100, subsampling=0, exif=exif)
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=100, subsampling=0)
    training, inference = dataset_and_file_pixel_values(tmp_path, ["rotated.jpg", "upright.jpg"], size=(32, 48))
    torch.testing.assert_close(training, inference, rtol=0, atol=0)
    torch.testing.assert_close(inference[0], inference[1], rtol=0, atol=0)


def test_cmyk_jpeg_la_png_and_narrow_16bit_png_read_the_same_in_training_and_inference(tmp_path):
    Image.fromarray(np.stack([blocks(seed=1)] * 4, axis=-1), mode="CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    Image.merge("LA", [Image.fromarray(blocks(seed=2)), Image.new("L", (48, 32), 7)]).save(tmp_path / "la.png")
    narrow = np.linspace(100, 900, 32 * 48).reshape(32, 48).astype(np.uint16)
    Image.fromarray(narrow).save(tmp_path / "narrow16.png")
    assert (mode_of(tmp_path / "cmyk.jpg"), mode_of(tmp_path / "la.png")) == ("CMYK", "LA")
    assert mode_of(tmp_path / "narrow16.png").startswith("I")

    names = ["cmyk.jpg", "la.png", "narrow16.png"]
    training, inference = dataset_and_file_pixel_values(tmp_path, names, size=(32, 48))
    torch.testing.assert_close(training, inference, rtol=0, atol=0)
    # What each view is read as: alpha dropped, 16-bit scaled by 255 / 65535 (100..900 -> 0..4), never clipped.
    assert np.array_equal(pixels(load_image(tmp_path / "la.png"))[..., 0], blocks(seed=2))
    expected = np.round(narrow * (255 / 65535)).astype(np.uint8)
    assert np.array_equal(pixels(load_image(tmp_path / "narrow16.png"))[..., 0], expected)
    assert expected.min() == 0 and expected.max() == 4
    assert pixels(load_image(tmp_path / "cmyk.jpg")).shape == (32, 48, 3)


def test_numpy_arrays():
    assert (pixels(load_image(np.full((4, 5), 0.5))) == 128).all()
    assert (pixels(load_image(np.ones((4, 5, 1), dtype=bool))) == 255).all()
    assert (pixels(load_image(np.full((4, 5, 3), 7, dtype=np.uint8))) == 7).all()
    with pytest.raises(ImageLoadError, match="int64"):
        load_image(np.zeros((4, 5), dtype=np.int64))
    with pytest.raises(ImageLoadError, match=r"shape \(4, 5, 2\)"):
        load_image(np.zeros((4, 5, 2), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(np.full((4, 5), 2.0))
    with pytest.raises(TypeError, match="dict"):
        load_image({"bytes": b""})


def write_dicom(path, values, photometric="MONOCHROME2", slope=1.0, intercept=0.0):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = values.shape[-2:]
    if values.ndim == 3:
        dataset.NumberOfFrames = values.shape[0]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    dataset.PixelData = values.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    "photometric, slope, inverted",
    [
        ("MONOCHROME2", 1.0, False),
        ("MONOCHROME1", 1.0, True),
        ("MONOCHROME2", -2.0, True),
        ("MONOCHROME1", -2.0, False),
    ],
)
def test_dicom_rescale_window_and_inversion(tmp_path, photometric, slope, inverted):
    path = tmp_path / "study.dcm"
    # 12-bit values that do not reach 4095: windowing to min/max stretches them to the full range.
    write_dicom(path, np.array([[100, 1100], [2100, 3100]]), photometric, slope, intercept=-1024.0)
    expected = np.array([[0, 85], [170, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(pixels(load_image(path))[..., 0], 255 - expected if inverted else expected)


def test_multiframe_dicom_is_rejected(tmp_path):
    path = tmp_path / "frames.dcm"
    write_dicom(path, np.zeros((2, 3, 4)))
    with pytest.raises(ImageLoadError, match=r"single frame, got pixel data of shape \(2, 3, 4\)") as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_dicom_without_pydicom_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "study.dcm"
    write_dicom(path, np.zeros((2, 2)))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r'pip install "cxrgen\[dicom\]"'):
        load_image(path)


@pytest.mark.parametrize("name", ["corrupt.png", "corrupt.jpg", "corrupt.dcm"])
def test_corrupt_file_names_the_path(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(ImageLoadError, match="Cannot read") as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_truncated_png_names_the_path(tmp_path):
    path = tmp_path / "truncated.png"
    Image.fromarray(noise(0)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageLoadError) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(ImageLoadError, match="does not exist") as error:
        load_image(path)
    assert str(path) in str(error.value)
    processor = CxrImageProcessor(size=SIZE)
    with pytest.raises(ImageLoadError, match="missing.png"):
        processor([[gray(0), os.fspath(path)]])


# --- CxrImageProcessor ---------------------------------------------------------------------------------------


def test_shapes_and_masks():
    processor = CxrImageProcessor(size=SIZE)
    a, b, c = gray(10), gray(20, size=(64, 30)), Image.fromarray(noise(1))

    single = processor(a)
    assert single.pixel_values.shape == (1, 1, 3, 32, 32) and single.pixel_values.dtype == torch.float32
    assert single.pixel_mask.tolist() == [[1]] and single.pixel_mask.dtype == torch.long

    flat = processor([a, b, c])
    assert flat.pixel_values.shape == (3, 1, 3, 32, 32)
    assert flat.pixel_mask.tolist() == [[1], [1], [1]]

    nested = processor([[a, b], [c, a]])
    assert nested.pixel_values.shape == (2, 2, 3, 32, 32)
    assert nested.pixel_mask.tolist() == [[1, 1], [1, 1]]
    torch.testing.assert_close(nested.pixel_values[1, 0], flat.pixel_values[2, 0])

    ragged = processor([[a], [b, c]])
    assert ragged.pixel_values.shape == (2, 2, 3, 32, 32)
    assert ragged.pixel_mask.tolist() == [[1, 0], [1, 1]]
    assert not ragged.pixel_values[0, 1].any()

    padded = processor([[a], [b, c]], num_views=3)
    assert padded.pixel_values.shape == (2, 3, 3, 32, 32)
    assert padded.pixel_mask.tolist() == [[1, 0, 0], [1, 1, 0]]
    assert not padded.pixel_values[:, 2].any()
    torch.testing.assert_close(padded.pixel_values[:, :2], ragged.pixel_values)


@pytest.mark.parametrize("resample", [0, 2, 3])
def test_views_at_the_target_size_skip_the_resize_that_would_return_their_pixels(resample):
    from cxrgen.processing.image_processing_cxr import _INTERPOLATION_MODES, _resize

    processor = CxrImageProcessor(size=SIZE, resample=resample)
    at_size, larger = noise(5, (32, 32)), noise(6, (40, 36))
    view = torch.from_numpy(np.stack([at_size] * 3)).float()
    assert torch.equal(_resize(view, 32, 32, _INTERPOLATION_MODES[resample]), view)

    batch = processor([[at_size, larger], [larger]], num_views=3)
    alone = [processor(image).pixel_values[0, 0] for image in (at_size, larger)]
    assert torch.equal(batch.pixel_values[0, 0], alone[0]) and torch.equal(batch.pixel_values[0, 1], alone[1])
    assert torch.equal(batch.pixel_values[1, 0], alone[1]) and not batch.pixel_values[1, 1:].any()
    expected = (view / 255 - MEAN) / STD
    torch.testing.assert_close(alone[0], expected, rtol=0, atol=1e-6)


def test_bad_batches():
    processor = CxrImageProcessor(size=SIZE, num_views=2)
    image = gray(0)
    with pytest.raises(ValueError, match="Study 1 has 3 views, more than num_views=2"):
        processor([[image], [image, image, image]])
    with pytest.raises(ValueError, match="Study 0 has no views"):
        processor([[], [image]])
    with pytest.raises(ValueError, match="empty list"):
        processor([])
    with pytest.raises(ValueError, match="not a mix"):
        processor([image, [image]])
    with pytest.raises(ValueError, match=r"same size, got \(C, H, W\) \[\(3, 8, 8\), \(3, 9, 8\)\]"):
        processor([[gray(0, (8, 8)), gray(0, (8, 9))]], do_resize=False)
    with pytest.raises(ValueError, match="resample"):
        processor(image, resample=4)


def test_normalisation_of_a_constant_image():
    processor = CxrImageProcessor(size=SIZE)
    value = 128 / 255
    out = processor(gray(128)).pixel_values[0, 0]
    torch.testing.assert_close(out, ((value - MEAN) / STD).expand(3, 32, 32))
    unnormalised = processor(gray(128), do_normalize=False).pixel_values[0, 0]
    torch.testing.assert_close(unnormalised, torch.full((3, 32, 32), value))
    raw = processor(gray(128, (8, 8)), do_resize=False, do_rescale=False, do_normalize=False).pixel_values
    assert raw.shape == (1, 1, 3, 8, 8) and (raw == 128).all()


def test_augmentation_is_reproducible_with_a_generator():
    processor = CxrImageProcessor(size=SIZE)
    studies = [[noise(2), noise(3)], [noise(4)]]

    def augment(seed):
        return processor(studies, do_augment=True, generator=torch.Generator().manual_seed(seed)).pixel_values

    first = augment(0)
    assert first.shape == (2, 2, 3, 32, 32)
    torch.testing.assert_close(augment(0), first, rtol=0, atol=0)
    assert not torch.equal(augment(1), first)
    assert not torch.equal(first, processor(studies).pixel_values)
    assert not first[1, 1].any()


def test_augmentation_crops_and_flips_the_resized_image():
    # A horizontal ramp: random crops keep it monotone, a flip reverses its direction.
    ramp = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (48, 1))
    processor = CxrImageProcessor(size=SIZE, do_augment=True, do_normalize=False, do_rescale=False)
    generator = torch.Generator().manual_seed(0)
    directions = set()
    for _ in range(12):
        row = processor(ramp, generator=generator).pixel_values[0, 0, 0, 16]
        steps = row.diff()
        assert (steps >= 0).all() or (steps <= 0).all()
        directions.add(bool(steps.sum() > 0))
    assert directions == {True, False}


def test_save_and_load_round_trip(tmp_path):
    processor = CxrImageProcessor(
        size={"height": 24, "width": 40}, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25], num_views=2
    )
    processor.save_pretrained(tmp_path)
    loaded = CxrImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert (loaded.size.height, loaded.size.width, loaded.num_views) == (24, 40, 2)
    images = [[noise(5)], [noise(6), noise(7)]]
    torch.testing.assert_close(loaded(images).pixel_values, processor(images).pixel_values, rtol=0, atol=0)
    assert loaded(images).pixel_values.shape == (2, 2, 3, 24, 40)


def test_generator_is_not_saved(tmp_path):
    CxrImageProcessor(generator=torch.Generator().manual_seed(0), do_augment=True).save_pretrained(tmp_path)
    loaded = CxrImageProcessor.from_pretrained(tmp_path)
    assert loaded.do_augment is True
    assert getattr(loaded, "generator", None) is None
