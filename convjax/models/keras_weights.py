"""Keras weight files -> Flax variables for `InceptionV3`, read with h5py (no TensorFlow).

Does I/O: reads HDF5 files and downloads the published ImageNet weights into the cache
directory (`$CONVJAX_CACHE/weights`, else `~/.cache/convjax/weights`).

Two formats are read:
- legacy HDF5 (Keras 2's `save_weights("x.h5")`, the files Keras publishes): one group per
  layer, the root attribute `layer_names`, each group's attribute `weight_names`;
- Keras 3 `.weights.h5` (`model.save_weights("x.weights.h5")`): `layers/<key>/vars/0, 1, ...`,
  where the key counts layers of a class in graph order and the `vars` group's `name`
  attribute holds the layer's real name.

Mapping. Keras names unnamed layers by creation order: `conv2d_1, conv2d_2, ...` in the files
it publishes, `conv2d, conv2d_1, ...` (offset by any model built before) in Keras 3. Sorting
the names by their number therefore gives creation order, which `keras_conv_order` matches to
our modules. Within a layer, weights come in Keras's order: Conv2D [kernel],
BatchNormalization(scale=False) [beta, moving_mean, moving_variance], Dense [kernel, bias];
Keras's kernel layouts (kh, kw, in, out) and (in, out) are Flax's too, so nothing is transposed.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from convjax.cache import cache_root, file_digest
from convjax.models.inception_v3 import MIN_SIZE, InceptionV3, keras_conv_order

# Read from keras/src/applications/inception_v3.py (Keras 3.15), which downloads these files.
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"


@dataclass(frozen=True)
class WeightFile:
    filename: str
    md5: str  # the file_hash Keras checks after downloading

    @property
    def url(self) -> str:
        return BASE_URL + self.filename


# Keyed by include_top.
IMAGENET_FILES = {
    True: WeightFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "9a0d58056eeedaa3f26cb7ebd46da564"
    ),
    False: WeightFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
}


# Keras's BatchNormalization(scale=False) weights, in its order (with scale, "gamma" would
# come first), and where Flax keeps each: (collection, leaf).
BN_WEIGHTS = ("beta", "moving_mean", "moving_variance")
BN_LEAVES = (("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var"))


class KerasWeightsError(ValueError):
    """A Keras weight file does not fit the model (missing layer, wrong shape, bad format)."""


# ---------------------------------------------------------------- reading the two formats


def read_keras_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weights in Keras's order, for every layer with weights in the file."""
    with h5py.File(path, "r") as f:
        # model.save("x.h5") (a whole legacy model) nests the weights under model_weights.
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            return _read_legacy(root)
        if "layers" in f:
            return _read_keras3(f["layers"], path)
    raise KerasWeightsError(
        f"{path}: neither a legacy Keras HDF5 weight file (no 'layer_names' attribute) nor a "
        "Keras 3 .weights.h5 file (no 'layers' group)"
    )


def _text(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(root: h5py.Group) -> dict[str, list[np.ndarray]]:
    layers = {}
    for name in map(_text, root.attrs["layer_names"]):
        # weight_names are paths inside the layer's group, e.g. "conv2d_1/kernel:0".
        weight_names = [_text(w) for w in root[name].attrs.get("weight_names", [])]
        if weight_names:
            layers[name] = [np.asarray(root[name][w]) for w in weight_names]
    return layers


def _read_keras3(layers_group: h5py.Group, path: Any) -> dict[str, list[np.ndarray]]:
    layers = {}
    for key, group in layers_group.items():
        variables = group.get("vars")
        if variables is None or len(variables) == 0:
            continue
        if "name" not in variables.attrs:
            raise KerasWeightsError(
                f"{path}: layer group 'layers/{key}' has no 'name' attribute (written by a "
                "Keras 3 older than this reader supports); resave it with a recent Keras"
            )
        # Numbered "0", "1", ... in the layer's weight order; sort as numbers, not strings.
        layers[_text(variables.attrs["name"])] = [
            np.asarray(variables[str(i)]) for i in range(len(variables))
        ]
    return layers


# ---------------------------------------------------------------- mapping onto InceptionV3


def _in_creation_order(layers: dict[str, Any], prefix: str) -> list[str]:
    """Names `prefix`, `prefix_1`, `prefix_2`, ... sorted by their number (none counts as 0)."""
    pattern = re.compile(rf"{prefix}(?:_(\d+))?")
    numbered = []
    for name in layers:
        if match := pattern.fullmatch(name):
            numbered.append((int(match[1] or 0), name))
    return [name for _, name in sorted(numbered)]


def _put(out: dict, template: dict, path: tuple[str, ...], array: np.ndarray, where: str) -> None:
    """Stores `array` at `path` in `out` after checking it against the template's leaf."""
    expected = template
    for key in path:
        expected = expected[key]
    if tuple(array.shape) != tuple(expected.shape):
        raise KerasWeightsError(
            f"{where} has shape {tuple(array.shape)}, but InceptionV3's {'/'.join(path)} "
            f"needs {tuple(expected.shape)}"
        )
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = jnp.asarray(array, dtype=expected.dtype)


def _expect(layers: dict, name: str, leaves: tuple[str, ...], path: Any) -> list[np.ndarray]:
    weights = layers[name]
    if len(weights) != len(leaves):
        raise KerasWeightsError(
            f"{path}: layer '{name}' holds {len(weights)} weights, expected {len(leaves)}: "
            f"{', '.join(leaves)}"
        )
    return weights


@functools.lru_cache(maxsize=16)
def _variable_shapes(model: InceptionV3) -> dict[str, Any]:
    # Shapes and dtypes only (no FLOPs); cached because tracing the model takes about a second.
    images = jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), images)


def inception_v3_variables(
    layers: dict[str, list[np.ndarray]], model: InceptionV3, path: Any = "<weights>"
) -> dict[str, Any]:
    """Keras layers (from `read_keras_weights`) -> {'params', 'batch_stats'} for `model`.

    Layers the model does not build (after its `output_layer`, or `predictions` without the
    top) are ignored, so a full file also loads into a truncated model.
    """
    template = _variable_shapes(model)
    convs = _in_creation_order(layers, "conv2d")
    norms = _in_creation_order(layers, "batch_normalization")
    out: dict[str, dict] = {}
    for i, (block, unit) in enumerate(keras_conv_order(model)):
        if i >= min(len(convs), len(norms)):
            raise KerasWeightsError(
                f"{path}: no layers conv2d_{i + 1} / batch_normalization_{i + 1} (numbered as "
                f"in the published files) for {block}/{unit}: the file has {len(convs)} Conv2D "
                f"and {len(norms)} BatchNormalization layers"
            )
        (kernel,) = _expect(layers, convs[i], ("kernel",), path)
        where = f"{path}: layer '{convs[i]}' kernel"
        _put(out, template, ("params", block, unit, "conv", "kernel"), kernel, where)
        bn_weights = _expect(layers, norms[i], BN_WEIGHTS, path)
        for keras_name, (collection, leaf), array in zip(
            BN_WEIGHTS, BN_LEAVES, bn_weights, strict=True
        ):
            where = f"{path}: layer '{norms[i]}' {keras_name}"
            _put(out, template, (collection, block, unit, "bn", leaf), array, where)
    if model.include_top:
        _put_predictions(layers, template, out, path)
    return out


def _put_predictions(layers: dict, template: dict, out: dict, path: Any) -> None:
    if "predictions" not in layers:
        raise KerasWeightsError(
            f"{path}: no layer 'predictions' (the classifier); is it a notop file? Use "
            "InceptionV3(include_top=False) or the file with the top"
        )
    weights = _expect(layers, "predictions", ("kernel", "bias"), path)
    for leaf, array in zip(("kernel", "bias"), weights, strict=True):
        where = f"{path}: layer 'predictions' {leaf}"
        _put(out, template, ("params", "predictions", leaf), array, where)


def load_inception_v3_weights(path: str | os.PathLike, model: InceptionV3) -> dict[str, Any]:
    """{'params', 'batch_stats'} for `model` from a legacy .h5 or Keras 3 .weights.h5 file."""
    return inception_v3_variables(read_keras_weights(path), model, path=path)


# ---------------------------------------------------------------- download and cache


def default_cache_dir() -> Path:
    return cache_root() / "weights"


def file_md5(path: Path) -> str:
    return file_digest(path, "md5")  # Keras publishes md5 hashes of its weight files


def fetch_file(url: str, dest: Path, md5: str) -> Path:
    """`dest`, downloaded from `url` first if it is not there; its md5 must be `md5`."""
    dest = Path(dest)
    if not dest.is_file():
        _download(url, dest, md5)
    actual = file_md5(dest)
    if actual != md5:
        raise KerasWeightsError(
            f"{dest} has md5 {actual}, expected {md5}: a corrupt or different file. Delete it "
            f"and download {url} again"
        )
    return dest


def _download(url: str, dest: Path, md5: str) -> None:
    # Written beside `dest` and renamed only once complete and checked, so an interrupted or
    # corrupt download never leaves a file that a later run would take for the real one.
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
        actual = file_md5(partial)
        if actual != md5:
            raise KerasWeightsError(
                f"the download of {url} has md5 {actual}, expected {md5}; nothing was saved. "
                f"Try again, or download it yourself and save it as {dest}"
            )
        os.replace(partial, dest)
    except (urllib.error.URLError, OSError) as error:  # offline, timeout, refused, disk full
        raise FileNotFoundError(
            f"{dest.name} is not in {dest.parent} and downloading it failed ({error}). "
            f"Download {url} (md5 {md5}) and save it as {dest}"
        ) from error
    finally:
        partial.unlink(missing_ok=True)


def imagenet_weights_path(include_top: bool = True, cache_dir: Path | None = None) -> Path:
    """The published ImageNet weight file in the cache, downloaded (md5-checked) if absent."""
    file = IMAGENET_FILES[include_top]
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return fetch_file(file.url, cache_dir / file.filename, file.md5)


def load_inception_v3_imagenet(model: InceptionV3, cache_dir: Path | None = None) -> dict:
    """ImageNet variables for `model` (Keras's `weights="imagenet"`); classes must be 1000."""
    if model.include_top and model.classes != 1000:
        raise ValueError(f"the ImageNet top has 1000 classes; got classes={model.classes}")
    return load_inception_v3_weights(imagenet_weights_path(model.include_top, cache_dir), model)
