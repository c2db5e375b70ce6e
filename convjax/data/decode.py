"""One image file to a uint8 (H, W, C) array, the way Keras's image loaders do it, with PIL.

I/O (reads one file); everything after the read is a pure function of the pixels. The
colour conversion handles what real folders contain: CMYK JPEGs, palette images (with
transparency), 16-bit PNGs (which PIL's own `convert` would clip to white) and alpha
channels. The resize follows Keras: a plain resize that may distort the aspect ratio, or
`crop_to_aspect_ratio` (centre crop, Keras `smart_resize` arithmetic), or
`pad_to_aspect_ratio` (zero padding, as `keras.ops.image.resize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

R = Image.Resampling
# Keras names (tf.image.resize and legacy PIL ones) -> PIL filters. "area" is box averaging;
# PIL's LANCZOS is the 3-lobe kernel, so "lanczos3" is an alias. Keras's "lanczos5",
# "gaussian" and "mitchellcubic" have no PIL equivalent and are rejected.
INTERPOLATIONS = {
    "nearest": R.NEAREST, "bilinear": R.BILINEAR, "bicubic": R.BICUBIC, "area": R.BOX,
    "box": R.BOX, "hamming": R.HAMMING, "lanczos": R.LANCZOS, "lanczos3": R.LANCZOS,
}
COLOR_MODES = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class BadImageError(ValueError):
    """A file that cannot be decoded; the message starts with its path."""


@dataclass(frozen=True)
class DecodeSpec:
    """How every file of a dataset becomes an array (part of the cache key)."""

    image_size: tuple[int, int]  # (height, width)
    color_mode: str = "rgb"  # "rgb", "grayscale" or "rgba"
    interpolation: str = "bilinear"  # a key of INTERPOLATIONS
    crop_to_aspect_ratio: bool = False  # centre-crop to the target aspect, then resize
    pad_to_aspect_ratio: bool = False  # zero-pad to the target aspect, then resize
    # Let libjpeg decode big JPEGs at 1/2, 1/4 or 1/8 scale (never below the target size)
    # before the resize, as PIL's `thumbnail` does: about 2x faster on photos, with pixels
    # within a few levels of a full decode. Off for "nearest", which must pick source pixels.
    jpeg_draft: bool = True

    def __post_init__(self):
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be (height, width), got {self.image_size}")
        object.__setattr__(self, "image_size", size)
        if self.color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be one of {list(COLOR_MODES)}, "
                             f"got {self.color_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            raise ValueError("only one of crop_to_aspect_ratio and pad_to_aspect_ratio "
                             "can be True")

    @property
    def channels(self) -> int:
        return len(COLOR_MODES[self.color_mode])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """`img` converted to PIL mode "L", "RGB" or "RGBA", whatever it was stored as."""
    if img.mode in SIXTEEN_BIT_MODES:
        # PIL's convert clips 16-bit values at 255; scale 0..65535 to 0..255 instead.
        wide = np.clip(np.asarray(img, np.int64), 0, 65535)
        img = Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
    elif img.mode in ("P", "PA"):
        # Through RGBA so that palette transparency is kept (and PIL does not warn).
        img = img.convert("RGBA")
    return img if img.mode == mode else img.convert(mode)


def crop_box(width: int, height: int, target_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred window with the target aspect ratio (Keras `smart_resize`)."""
    th, tw = target_hw
    crop_h = max(min(height, int(width * th / tw)), 1)
    crop_w = max(min(width, int(height * tw / th)), 1)
    top, left = int((height - crop_h) / 2), int((width - crop_w) / 2)
    return left, top, left + crop_w, top + crop_h


def pad_to_aspect(img: Image.Image, target_hw: tuple[int, int]) -> Image.Image:
    """`img` centred on a zero canvas with the target aspect ratio (keras.ops.image.resize)."""
    th, tw = target_hw
    width, height = img.size
    pad_h = max(height, int(width * th / tw))
    pad_w = max(width, int(height * tw / th))
    if (pad_w, pad_h) == (width, height):
        return img
    canvas = Image.new(img.mode, (pad_w, pad_h))  # zeros, alpha included
    canvas.paste(img, (int((pad_w - width) / 2), int((pad_h - height) / 2)))
    return canvas


def resize(img: Image.Image, spec: DecodeSpec) -> Image.Image:
    """`img` (already in the target mode) resized to `spec.image_size` Keras's way."""
    th, tw = spec.image_size
    resample = INTERPOLATIONS[spec.interpolation]
    if spec.pad_to_aspect_ratio:
        img = pad_to_aspect(img, spec.image_size)
    box = crop_box(*img.size, spec.image_size) if spec.crop_to_aspect_ratio else None
    if img.size == (tw, th) and box in (None, (0, 0, tw, th)):
        return img
    return img.resize((tw, th), resample, box=box)


def image_to_array(img: Image.Image, spec: DecodeSpec) -> np.ndarray:
    """A PIL image (any mode, any size) to the uint8 (H, W, C) array `spec` asks for."""
    img = resize(to_mode(img, COLOR_MODES[spec.color_mode]), spec)
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_image(path: str | Path, spec: DecodeSpec) -> np.ndarray:
    """One file to a uint8 (H, W, C) array; `BadImageError` (naming the file) if it can't."""
    try:
        with Image.open(path) as img:
            if spec.jpeg_draft and spec.interpolation != "nearest":
                draft_mode = "L" if spec.color_mode == "grayscale" else None
                img.draft(draft_mode, (spec.image_size[1], spec.image_size[0]))
            return image_to_array(img, spec)  # the first frame of an animated GIF
    # PIL reports bad input with many types (OSError for truncation and unknown formats,
    # SyntaxError, ValueError, EOFError, zlib and struct errors, DecompressionBombError):
    # whatever a decoder raises, the file is unreadable, and the caller decides what to do.
    except Exception as err:  # noqa: BLE001
        raise BadImageError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err
