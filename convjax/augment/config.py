"""The augmentation configuration: one typed, frozen record, checked when it is built. Pure.

Field names and meanings follow Keras's `ImageDataGenerator`, so a course config ports by
copying its arguments. Every transform is off by default.
"""

import dataclasses
import typing
from typing import ClassVar, Literal

from convjax.config_fields import check_fields, require

FillMode = Literal["constant", "nearest", "reflect", "wrap"]
FILL_MODES = typing.get_args(FillMode)

# A shift range as Keras accepts it: float (fraction of the size if < 1, else pixels),
# int (whole pixels), or a tuple of allowed values (fractions if all < 1, else pixels).
ShiftRange = float | int | tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What to do to each training image. Images are float, in pixel units (0..255)."""

    config_key: ClassVar[str] = "augment"
    rotation_range: float = 0.0  # degrees; angle uniform in [-r, r], counter-clockwise positive
    width_shift_range: ShiftRange = 0.0  # horizontal shift (see ShiftRange), random sign
    height_shift_range: ShiftRange = 0.0  # vertical shift (see ShiftRange), random sign
    shear_range: float = 0.0  # degrees (as Keras: 0.2 here is a fifth of a degree)
    zoom_range: float | tuple[float, float] = 0.0  # z -> [1-z, 1+z]; x and y drawn apart
    brightness_range: tuple[float, float] | None = None  # multiplier uniform in [lo, hi]
    channel_shift_range: float = 0.0  # one offset in [-r, r] added to every channel
    horizontal_flip: bool = False  # mirror left-right with probability 1/2
    vertical_flip: bool = False  # mirror top-bottom with probability 1/2
    fill_mode: FillMode = "nearest"  # how pixels from outside the image are filled (scipy modes)
    cval: float = 0.0  # fill value for fill_mode='constant' and cutout, in pixel units
    interpolation_order: Literal[0, 1] = 1  # 1 = bilinear (Keras default), 0 = nearest pixel
    rescale: float | None = None  # Keras's rescale: sets the step's normalisation (train+eval)
    crop_padding: int = 0  # random crop of the image padded by p: shift in [-p, p] pixels
    cutout_size: int = 0  # side of a square filled with cval at a random centre
    keras_compat_axes: bool = False  # reproduce Keras's swapped shift axes and off-centre pivot

    def __post_init__(self) -> None:
        # Types and choices first; lists become tuples, so the config stays hashable (usable
        # as a jit static argument).
        check_fields(self)
        for name in ("rotation_range", "shear_range", "channel_shift_range"):
            require(getattr(self, name) >= 0, self, name, ">= 0")
        for name in ("width_shift_range", "height_shift_range"):
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            require(len(values) > 0 and min(values) >= 0, self, name,
                    "a number >= 0 or a non-empty list of them")
        lo, hi = self.zoom_bounds
        # A zoom factor <= 0 would collapse or mirror the image; Keras accepts it silently.
        require((isinstance(self.zoom_range, tuple) or self.zoom_range >= 0) and 0 < lo <= hi,
                self, "zoom_range", "a number in [0, 1) or [lo, hi] with 0 < lo <= hi")
        if self.brightness_range is not None:
            lo, hi = self.brightness_range
            require(0 <= lo <= hi, self, "brightness_range", "None or [lo, hi] with 0 <= lo <= hi")
        require(self.crop_padding >= 0, self, "crop_padding", ">= 0")
        require(self.cutout_size >= 0, self, "cutout_size", ">= 0")

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
