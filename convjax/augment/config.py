"""The augmentation configuration: one typed, frozen record, checked when it is built. Pure.

Field names and meanings follow Keras's `ImageDataGenerator`, so a course config ports by
copying its arguments. Every transform is off by default.
"""

import dataclasses
import math
from collections.abc import Sequence

FILL_MODES = ("constant", "nearest", "reflect", "wrap")

# A shift range as Keras accepts it: float (fraction of the size if < 1, else pixels),
# int (whole pixels), or a tuple of allowed values (fractions if all < 1, else pixels).
ShiftRange = float | int | tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What to do to each training image. Images are float, in pixel units (0..255)."""

    rotation_range: float = 0.0  # degrees; angle uniform in [-r, r], counter-clockwise positive
    width_shift_range: ShiftRange = 0.0  # horizontal shift (see ShiftRange), random sign
    height_shift_range: ShiftRange = 0.0  # vertical shift (see ShiftRange), random sign
    shear_range: float = 0.0  # degrees (as Keras: 0.2 here is a fifth of a degree)
    zoom_range: float | tuple[float, float] = 0.0  # z -> [1-z, 1+z]; x and y drawn apart
    brightness_range: tuple[float, float] | None = None  # multiplier uniform in [lo, hi]
    channel_shift_range: float = 0.0  # one offset in [-r, r] added to every channel
    horizontal_flip: bool = False  # mirror left-right with probability 1/2
    vertical_flip: bool = False  # mirror top-bottom with probability 1/2
    fill_mode: str = "nearest"  # how pixels from outside the image are filled (scipy modes)
    cval: float = 0.0  # fill value for fill_mode='constant' and cutout, in pixel units
    interpolation_order: int = 1  # 1 = bilinear (Keras default), 0 = nearest pixel
    rescale: float | None = None  # Keras's rescale: sets the step's normalisation (train+eval)
    crop_padding: int = 0  # random crop of the image padded by p: shift in [-p, p] pixels
    cutout_size: int = 0  # side of a square filled with cval at a random centre
    keras_compat_axes: bool = False  # reproduce Keras's swapped shift axes and off-centre pivot

    def __post_init__(self) -> None:
        # Lists become tuples so the config stays hashable (usable as a jit static argument).
        for name in ("width_shift_range", "height_shift_range", "zoom_range", "brightness_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("rotation_range", "shear_range", "channel_shift_range"):
            _check_number(name, getattr(self, name), minimum=0.0)
        for name in ("width_shift_range", "height_shift_range"):
            _check_shift_range(name, getattr(self, name))
        _check_zoom_range(self.zoom_range)
        _check_brightness_range(self.brightness_range)
        for name in ("horizontal_flip", "vertical_flip", "keras_compat_axes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}")
        _check_number("cval", self.cval)
        if self.interpolation_order not in (0, 1):
            raise ValueError(
                f"interpolation_order must be 0 or 1, got {self.interpolation_order!r}"
            )
        if self.rescale is not None:
            _check_number("rescale", self.rescale)
        for name in ("crop_padding", "cutout_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    @property
    def zoom_bounds(self) -> tuple[float, float]:
        """The zoom factors' interval, as Keras derives it from zoom_range."""
        if isinstance(self.zoom_range, tuple):
            return float(self.zoom_range[0]), float(self.zoom_range[1])
        return 1.0 - self.zoom_range, 1.0 + self.zoom_range

    @property
    def affine_enabled(self) -> bool:
        """Whether the (one) resampling pass of rotation/shift/shear/zoom is needed."""
        return bool(
            self.rotation_range
            or self.width_shift_range
            or self.height_shift_range
            or self.shear_range
            or self.zoom_bounds != (1.0, 1.0)
        )

    @property
    def brightness_enabled(self) -> bool:
        return self.brightness_range is not None and tuple(self.brightness_range) != (1, 1)

    @property
    def enabled(self) -> bool:
        """False when augment_batch would return the images unchanged."""
        return bool(
            self.affine_enabled
            or self.brightness_enabled
            or self.channel_shift_range
            or self.horizontal_flip
            or self.vertical_flip
            or self.crop_padding
            or self.cutout_size
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(name: str, value: object, minimum: float | None = None) -> None:
    if not _is_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_shift_range(name: str, value: object) -> None:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0 or not all(_is_number(v) and v >= 0 for v in value):
            raise ValueError(f"{name} must list numbers >= 0, got {value!r}")
        return
    _check_number(name, value, minimum=0.0)


def _check_zoom_range(value: object) -> None:
    if isinstance(value, tuple):
        if len(value) != 2 or not all(_is_number(v) for v in value):
            raise ValueError(f"zoom_range must be a number or two numbers [lo, hi], got {value!r}")
        lo, hi = value
    else:
        _check_number("zoom_range", value, minimum=0.0)
        lo, hi = 1.0 - value, 1.0 + value
    # A zoom factor <= 0 would collapse or mirror the image; Keras accepts it silently.
    if not 0 < lo <= hi:
        raise ValueError(f"zoom_range must give zoom factors 0 < lo <= hi, got {value!r}")


def _check_brightness_range(value: object) -> None:
    if value is None:
        return
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ValueError(
            f"brightness_range must be None or [lo, hi] with 0 <= lo <= hi, got {value!r}"
        )
