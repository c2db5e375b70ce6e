"""Which images an experiment reads: the `data` section of its config. Pure (no I/O).

Checked when built, so a bad value fails before any file is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from convjax.config_fields import check_fields, require


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split and sized."""

    config_key: ClassVar[str] = "data"
    source: Literal["tfds", "folder"] = "tfds"  # tensorflow-datasets or <root>/{train,test}/<cls>
    name: str = "cifar10"  # tfds dataset name (cifar10, cifar100)
    folder: str = ""  # image-folder root or .tar.gz archive; env CONVJAX_DATA overrides "tfds"
    tfds_dir: str = ""  # tfds data_dir; "" = tfds's default (~/tensorflow_datasets)
    image_size: tuple[int, int] = (32, 32)  # (height, width) images are resized to
    color_mode: Literal["rgb", "grayscale", "rgba"] = "rgb"  # channels: 3, 1 or 4
    validation_split: float = 0.1  # fraction of the training split held out for validation
    train_limit: int = 0  # use only the first N training examples (0 = all); for quick runs
    test_limit: int = 0  # likewise for the test split
    cache_dir: str = ""  # decoded-image cache; "" = $CONVJAX_CACHE or ~/.cache/convjax
    # A split larger than the budget is sharded over the devices if a share fits, else
    # streamed from the host batch by batch; automatic is a quarter of the smallest device's
    # memory (2 GiB where the backend does not say, e.g. CPU).
    device_memory_budget_mb: float = 0.0  # MiB a split may take per device, else streamed; 0=auto

    def __post_init__(self) -> None:
        check_fields(self)
        require(min(self.image_size) >= 1, self, "image_size", "two ints >= 1")
        require(0 <= self.validation_split < 1, self, "validation_split", "in [0, 1)")
        require(self.train_limit >= 0, self, "train_limit", ">= 0 (0: all)")
        require(self.test_limit >= 0, self, "test_limit", ">= 0 (0: all)")
        require(self.device_memory_budget_mb >= 0, self, "device_memory_budget_mb",
                ">= 0 (0: automatic)")
