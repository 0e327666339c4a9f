"""PNG reading and writing in the study's export format: grayscale images and masks of pixel values.

Both :mod:`lgeseg.data` (reading a dataset) and :mod:`lgeseg.phantom` (writing the synthetic one) use
this module, so neither imports the other for it. Every unreadable or unsuitable file raises a one-line
:class:`~lgeseg.errors.DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

#: Lower and upper percentile (of one image's pixels for a 16-bit PNG, of one volume's voxels in
#: ``import-nifti``) mapped to 0 and 1: a few hot pixels do not darken the rest.
DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)

#: How :func:`read_image` maps stored pixel values to [0, 1]; recorded in every run's ``run.json``.
IMAGE_SCALING: dict = {
    "8-bit": "value / 255",
    "16-bit": f"per image: percentiles {DEFAULT_PERCENTILES[0]}-{DEFAULT_PERCENTILES[1]} -> 0-1, clipped",
}

#: Class index of mask pixels without a label (the dataset's ``ignore`` value, pixels shifted in by the
#: translation, padding): left out of the loss, the accuracy and every metric.
IGNORE_INDEX = 255


def _open_png(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).replace(f" {str(path)!r}", "")  # the path already starts the message
        raise DataError(f"{path}: unreadable or truncated PNG ({reason})") from None
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read a grayscale PNG as float32 intensities in [0, 1].

    8-bit images are divided by 255. 16-bit images are scaled per image with the robust percentiles
    ``import-nifti`` uses (:data:`DEFAULT_PERCENTILES`, numpy's linear interpolation): the 0.5th percentile
    maps to 0, the 99.5th to 1, values outside are clipped. MRI exports typically use only 12 of the 16
    bits, so a fixed /65535 would squash them into [0, 0.06], and dividing by the image's own maximum
    let one hot pixel darken the whole slice. A flat 16-bit image (both percentiles equal) is divided by
    its maximum (all 0 when that is 0). The choice is recorded as :data:`IMAGE_SCALING`. Colour PNGs
    whose three channels are equal (grayscale saved as RGB or palette) are accepted.

    Args:
        path: the PNG file.

    Returns:
        float32 array of shape (H, W), values in [0, 1] (unitless intensity).

    Raises:
        DataError: the file is missing, unreadable or truncated, in colour, of an unsupported mode, or a
            16-bit image with negative values.
    """
    path = Path(path)
    img = _open_png(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.min() < 0:
            raise DataError(f"{path}: negative pixel values in a 16-bit image")
        lo, hi = np.percentile(arr, DEFAULT_PERCENTILES)
        if hi > lo:
            return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        top = max(float(arr.max()), 1.0)
    elif img.mode == "L":
        arr = np.asarray(img, dtype=np.float64)
        top = 255.0
    elif img.mode in ("RGB", "RGBA", "LA", "P"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(f"{path}: colour image ({img.mode}); expected a grayscale PNG")
        arr, top = rgb[..., 0], 255.0
    else:
        raise DataError(f"{path}: unsupported PNG mode {img.mode!r}; expected 8- or 16-bit grayscale")
    return (arr / top).astype(np.float32)


def read_mask(path: str | Path, labels: dict[str, int], ignore: int | None = None) -> np.ndarray:
    """Read a mask PNG and turn its pixel values into class indices in ``labels`` order.

    Args:
        path: the mask PNG (8/16-bit grayscale, 1-bit, or colour with three equal channels).
        labels: ordered region name -> pixel value; the position of a name is its class index.
        ignore: the pixel value of unlabelled pixels (the dataset's ``ignore``), or None for none.

    Returns:
        uint8 array of shape (H, W) with values in ``0 .. len(labels) - 1``, and :data:`IGNORE_INDEX`
        where the pixel value is ``ignore``.

    Raises:
        DataError: the file is missing or unreadable, a colour mask, of an unsupported mode, or holds
            pixel values outside the label map and ``ignore`` (listed with their pixel counts).
    """
    path = Path(path)
    img = _open_png(path)
    if img.mode in ("RGB", "RGBA", "P", "LA"):
        rgb = np.asarray(img.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(f"{path}: colour mask ({img.mode}); expected grayscale values {sorted(labels.values())}")
        arr = rgb[..., 0].astype(np.int64)
    elif img.mode in ("L", "I", "I;16", "I;16B", "I;16L", "1"):
        arr = np.asarray(img).astype(np.int64)
        if img.mode == "1":
            arr = arr * 255
    else:
        raise DataError(f"{path}: unsupported mask PNG mode {img.mode!r}")
    lut = np.full(max(int(arr.max()), max(labels.values())) + 1, -1, dtype=np.int16)
    for index, value in enumerate(labels.values()):
        lut[value] = index
    if ignore is not None and ignore < len(lut):
        lut[ignore] = IGNORE_INDEX
    out = lut[arr]
    if (out < 0).any():
        values, counts = np.unique(arr[out < 0], return_counts=True)
        listed = ", ".join(f"{v} ({c} px)" for v, c in zip(values.tolist(), counts.tolist()))
        allowed = f"{dict(labels)}" + ("" if ignore is None else f" and the ignore value {ignore}")
        raise DataError(f"{path}: mask values outside the label map {allowed}: {listed}")
    return out.astype(np.uint8)


def write_mask(path: str | Path, indices: np.ndarray, labels: dict[str, int]) -> None:
    """Write class indices as an 8-bit PNG in the dataset's pixel values (creating the folder).

    Args:
        path: the PNG file to write.
        indices: integer array of shape (H, W), class indices in ``labels`` order.
        labels: ordered region name -> pixel value 0-255.
    """
    values = np.asarray(list(labels.values()), dtype=np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values[np.asarray(indices)], mode="L").save(path)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a grayscale image as PNG (creating the folder): 16-bit for uint16, else 8-bit.

    Args:
        path: the PNG file to write.
        image: uint16 array of shape (H, W), or any array of shape (H, W) cast to uint8.
    """
    pixels = np.asarray(image)
    if pixels.dtype != np.uint16:
        pixels = pixels.astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # uint8 -> mode L, uint16 -> mode I;16
