"""Image loading and the multi-view image processor for chest radiograph studies.

Self-contained (standard library, numpy, Pillow, torch and transformers only) so that ``save_pretrained`` can
copy it to the Hub as remote code. No torchvision: resizing and augmentation are torch operations.
"""

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack


class ImageLoadError(ValueError):
    """An image source that cannot be read; the message names the file (or input) and what was expected."""


_DICOM_SUFFIXES = (".dcm", ".dicom")
_ARRAY_SHAPES = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
_INTERPOLATION_MODES = {
    PILImageResampling.NEAREST: "nearest-exact",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}
# The reference's train transform resizes the shorter side to 256 before randomly cropping 224.
_AUGMENT_RESIZE_RATIO = 256 / 224


def load_image(source: str | os.PathLike | Image.Image | np.ndarray) -> Image.Image:
    """Read one radiograph as an 8-bit RGB PIL image.

    Args:
        source: a file path (``str`` or ``os.PathLike``) to any image Pillow reads (PNG, JPEG, ...) or to a
            DICOM file (suffix ``.dcm`` or ``.dicom``, needs ``pip install "cxrgen[dicom]"``); a PIL image; or a
            numpy array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) holding uint8, uint16, bool, or
            floats in [0, 1] (as must a Pillow "F" image).

    Conversions:
        * 16-bit grayscale (Pillow modes "I;16*", and "I", which older Pillow used for 16-bit PNGs and which
          must then hold values in [0, 65535]) and uint16 arrays are scaled by 255 / 65535, so the full 16-bit
          range maps onto the full 8-bit range. Pillow's own conversion would clip everything above 255.
        * Alpha channels (RGBA, LA, PA, palettes with transparency) are dropped and the stored colour is kept,
          not composited on a background; this is what the reference's ``convert("RGB")`` does.
        * Palette images are expanded through their palette; grayscale is repeated over the three channels.
        * An EXIF orientation (phone photos of films, some JPEG exports) is applied, for files and PIL images alike,
          as `datasets.Image` does when it decodes the training data, so training and inference see the same
          pixels; an image without the tag, or one already turned upright, is left as it is.
        * DICOM: the rescale slope and intercept are applied, the values are windowed to their own minimum and
          maximum (the VOI window tags are ignored), and MONOCHROME1 images are inverted so bone is bright.

    Raises:
        ImageLoadError: the file is missing, unreadable or corrupt, or the pixel data is not as described above.
        ImportError: a DICOM file is given and pydicom is not installed.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source), f"PIL image (mode {source.mode})")
    if isinstance(source, np.ndarray):
        return _to_rgb(_array_to_image(source, "numpy array"), "numpy array")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Expected an image path, a PIL image or a numpy array, got {type(source).__name__}.")
    path = Path(source)
    if not path.is_file():
        raise ImageLoadError(f"Image file {str(path)!r} does not exist or is not a file.")
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return _to_rgb(_read_dicom(path), str(path))
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image), str(path))
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ImageLoadError(
            f"Cannot read image file {str(path)!r}: expected a PNG, JPEG or other image Pillow can decode, "
            f"or a DICOM file with a .dcm suffix ({type(error).__name__}: {error})."
        ) from error


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        array = np.asarray(image)
        if image.mode == "I":
            if array.size and (array.min() < 0 or array.max() > 65535):
                raise ImageLoadError(
                    f"{name}: a 32-bit integer image is read as 16-bit grayscale and must hold values in "
                    f"[0, 65535], got [{array.min()}, {array.max()}]."
                )
            array = array.astype(np.uint16)
        image = Image.fromarray(_to_uint8(array, name))
    elif image.mode == "P" and "transparency" in image.info:
        # Pillow warns when a palette with transparency goes straight to RGB; the colours are the same.
        image = image.convert("RGBA")
    return image.convert("RGB")


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageLoadError(f"{name}: expected an array of shape {_ARRAY_SHAPES}, got shape {array.shape}.")
    return Image.fromarray(_to_uint8(array, name))


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return np.round(array.astype(np.float64) * (255 / 65535)).astype(np.uint8)
    if array.dtype.kind == "f":
        if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise ImageLoadError(f"{name}: float pixel values must lie in [0, 1].")
        return np.round(array * 255).astype(np.uint8)
    raise ImageLoadError(f"{name}: unsupported pixel type {array.dtype}; expected uint8, uint16, bool or float.")


def _read_dicom(path: Path) -> Image.Image:
    try:
        import pydicom
    except ImportError as error:
        raise ImportError(
            f'Reading the DICOM file {str(path)!r} needs pydicom: pip install "cxrgen[dicom]"'
        ) from error
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    # pydicom reports bad files, missing pixel data and missing codecs with many exception types.
    except Exception as error:
        raise ImageLoadError(
            f"Cannot read DICOM file {str(path)!r}: expected a DICOM image with pixel data "
            f"({type(error).__name__}: {error})."
        ) from error
    if pixels.ndim != (3 if int(dataset.get("SamplesPerPixel", 1)) > 1 else 2):
        raise ImageLoadError(
            f"DICOM file {str(path)!r}: expected a single frame, got pixel data of shape {pixels.shape}."
        )
    pixels = pixels * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))
    low, high = pixels.min(), pixels.max()
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = 1.0 - pixels
    return _array_to_image(pixels, str(path))


def _group_studies(images, num_views: int | None) -> list[list]:
    """One image -> one single-view study; a flat list -> one single-view study per image; a nested list ->
    one study per inner list."""
    if num_views is not None and num_views < 1:
        raise ValueError(f"num_views must be a positive integer or None, got {num_views}.")
    if not isinstance(images, (list, tuple)):
        return [[images]]
    if not images:
        raise ValueError("Expected an image, a list of images or a list of studies, got an empty list.")
    nested = [isinstance(item, (list, tuple)) for item in images]
    if all(nested):
        studies = [list(study) for study in images]
    elif not any(nested):
        studies = [[image] for image in images]
    else:
        raise ValueError("Expected a flat list of images or a list of studies (lists of views), not a mix of both.")
    for index, study in enumerate(studies):
        if not study:
            raise ValueError(f"Study {index} has no views.")
        if num_views is not None and len(study) > num_views:
            raise ValueError(f"Study {index} has {len(study)} views, more than num_views={num_views}.")
    return studies


def _resize(view: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    resized = F.interpolate(view[None], size=(height, width), mode=mode, antialias=mode != "nearest-exact")[0]
    return resized.clamp(0, 255)  # bicubic overshoots the 8-bit range


class CxrImageProcessorKwargs(ImagesKwargs, total=False):
    """
    do_augment (`bool`, *optional*, defaults to `False`):
        Apply the reference's train-time augmentation instead of the plain resize: resize the shorter side to
        256/224 of the target size (keeping the aspect ratio), crop a random `size` window, flip horizontally
        with probability 0.5. Each view is augmented independently.
    num_views (`int`, *optional*):
        Number of views every study is padded to; a study with more views is an error. `None` pads to the
        largest study in the batch.
    generator (`torch.Generator`, *optional*):
        Random number generator for the augmentation, for reproducible runs (not saved with the config).
    """

    do_augment: bool | None
    num_views: int | None
    generator: torch.Generator | None


class CxrImageProcessor(BaseImageProcessor):
    r"""
    Image processor for chest radiograph studies of one or more views.

    Every view is read with [`load_image`] (8- and 16-bit grayscale, RGB, RGBA, palette, JPEG, DICOM, ...) as a
    3-channel image, resized to `size` (bilinear with antialiasing by default, like the reference's PIL resize),
    rescaled to [0, 1] and normalised with `image_mean` / `image_std` (ImageNet by default). With
    `do_augment=True` the reference's train transform (resize 256, random crop 224, horizontal flip) is used.

    `images` is one image, a flat list of images (a batch of single-view studies) or a nested list (a batch of
    studies, each a list of views); images are paths, PIL images or numpy arrays. The output `pixel_values` has
    shape (batch, views, 3, height, width); `pixel_mask` (batch, views) is 1 for real views and 0 for the
    all-zero padding of studies with fewer views than the batch maximum (or than `num_views` when it is set).
    """

    valid_kwargs = CxrImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]

    size = {"height": 224, "width": 224}
    resample = PILImageResampling.BILINEAR
    do_resize = True
    do_rescale = True
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_augment = False
    num_views = None

    def __init__(self, **kwargs: Unpack[CxrImageProcessorKwargs]):
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("generator", None)  # random state of a run, not configuration
        return output

    def fetch_images(self, images: object) -> object:
        """`images` with every path read by [`load_image`] (nesting kept; PIL images and arrays pass through).

        `ProcessorMixin.__call__` (transformers 5.24 and later) fetches every image of the call before processing
        them; transformers' own loader would open a path without this processor's conversions, clipping 16-bit PNGs
        to white and failing on DICOM. Through a processor, then, all views of a batch are in memory at full size
        at once (about 0.75 GB for 32 MIMIC-CXR-size views); called directly, this processor reads one at a time.
        """
        if isinstance(images, (list, tuple)):
            return [self.fetch_images(image) for image in images]
        if isinstance(images, (str, os.PathLike)):
            return load_image(images)
        return images

    def process_image(self, image: str | os.PathLike | Image.Image | np.ndarray) -> torch.Tensor:
        """Load one view as a float32 (3, H, W) tensor with values in [0, 255]."""
        return torch.from_numpy(np.array(load_image(image), dtype=np.float32)).permute(2, 0, 1)

    def _preprocess_image_like_inputs(self, images, **kwargs) -> BatchFeature:
        return self._preprocess(_group_studies(images, kwargs["num_views"]), **kwargs)

    def _preprocess(
        self,
        studies: list[list],
        do_resize: bool,
        size,
        resample,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_augment: bool,
        num_views: int | None,
        generator: torch.Generator | None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        mode = None
        if do_resize or do_augment:
            if resample not in _INTERPOLATION_MODES:
                raise ValueError(f"resample must be NEAREST (0), BILINEAR (2) or BICUBIC (3), got {resample!r}.")
            mode = _INTERPOLATION_MODES[resample]
        mean = torch.tensor(image_mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.tensor(image_std, dtype=torch.float32).reshape(-1, 1, 1)

        # Each view is loaded and resized before the next is read, so one full-size radiograph is in memory.
        processed = []
        for study in studies:
            processed.append([])
            for image in study:
                view = self.process_image(image)
                if do_augment:
                    view = self._augment(view, size.height, size.width, mode, generator)
                elif do_resize and view.shape[1:] != (size.height, size.width):
                    # A view already at the target size would come back from _resize with the same pixels (tested).
                    view = _resize(view, size.height, size.width, mode)
                processed[-1].append(view)

        shapes = {tuple(view.shape) for study in processed for view in study}
        if len(shapes) > 1:
            raise ValueError(f"Without resizing every view must have the same size, got (C, H, W) {sorted(shapes)}.")
        views = num_views or max(len(study) for study in processed)
        pixel_values = torch.zeros(len(processed), views, *shapes.pop())
        pixel_mask = torch.zeros(len(processed), views, dtype=torch.long)
        for index, study in enumerate(processed):
            # Rescaled and normalised in place, a study at a time while its views are in cache: the same
            # operations on each pixel as view by view, so the same values, with one call per study, not per view.
            real = pixel_values[index, : len(study)]
            torch.stack(study, out=real)
            if do_rescale:
                real.mul_(rescale_factor)
            if do_normalize:
                real.sub_(mean).div_(std)
            pixel_mask[index, : len(study)] = 1
        return BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)

    @staticmethod
    def _augment(view: torch.Tensor, height: int, width: int, mode: str, generator) -> torch.Tensor:
        view_height, view_width = view.shape[1:]
        scale = round(max(height, width) * _AUGMENT_RESIZE_RATIO) / min(view_height, view_width)
        view = _resize(view, max(int(view_height * scale), height), max(int(view_width * scale), width), mode)
        top = int(torch.randint(0, view.shape[1] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, view.shape[2] - width + 1, (1,), generator=generator))
        view = view[:, top : top + height, left : left + width]
        if float(torch.rand(1, generator=generator)) < 0.5:
            view = view.flip(-1)
        return view
