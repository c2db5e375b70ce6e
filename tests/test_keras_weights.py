"""The Keras weight-file readers and the download helper (convjax.models.keras_weights).

Fast tests on small hand-made files and a faked network; loading real Keras-written files is
tested against Keras itself in test_inception_v3.py.
"""

import hashlib
import io
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest

from convjax.models import keras_weights as kw
from convjax.models.inception_v3 import InceptionV3

# ---------------------------------------------------------------- hand-made files (no Keras)


def _write_legacy(path: Path, layers: dict[str, dict[str, np.ndarray]]) -> Path:
    """A minimal file in the layout Keras publishes (names like 'conv2d_1/kernel:0')."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name in layers]
        for name, weights in layers.items():
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w in weights]
            for w, value in weights.items():
                group.create_dataset(f"{name}/{w}:0", data=value)
    return path


def _conv_bn(i: int, kernel_shape: tuple[int, ...]) -> dict[str, dict[str, np.ndarray]]:
    c = kernel_shape[-1]
    stats = {"beta": np.zeros(c), "moving_mean": np.zeros(c), "moving_variance": np.ones(c)}
    return {f"conv2d_{i}": {"kernel": np.zeros(kernel_shape)}, f"batch_normalization_{i}": stats}


def test_wrong_shape_names_layer_and_file(tmp_path):
    path = _write_legacy(tmp_path / "bad.h5", _conv_bn(1, (3, 3, 3, 31)))
    with pytest.raises(kw.KerasWeightsError, match=r"bad\.h5: layer 'conv2d_1' kernel has shape"):
        kw.load_inception_v3_weights(path, InceptionV3(include_top=False))


def test_missing_layer_names_layer_and_file(tmp_path):
    shapes = [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64), (1, 1, 64, 80), (3, 3, 80, 192)]
    layers = {k: v for i, s in enumerate(shapes, 1) for k, v in _conv_bn(i, s).items()}
    path = _write_legacy(tmp_path / "stem_only.h5", layers)
    pattern = r"stem_only\.h5: no layers conv2d_6 .* for mixed0/branch1x1"
    with pytest.raises(kw.KerasWeightsError, match=pattern):
        kw.load_inception_v3_weights(path, InceptionV3(include_top=False))


def test_unknown_file_layout_is_an_error(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(kw.KerasWeightsError, match=r"other\.h5: neither"):
        kw.read_keras_weights(tmp_path / "other.h5")


# ---------------------------------------------------------------- download helper (offline)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """CONVJAX_CACHE in tmp_path and no network: every urlopen fails."""

    def no_network(url, timeout=None):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path))
    monkeypatch.setattr(kw.urllib.request, "urlopen", no_network)
    return tmp_path / "weights"


def _serve(monkeypatch, payload: bytes) -> None:
    monkeypatch.setattr(kw.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))


def test_offline_without_file_says_what_to_download_and_where(offline_cache):
    with pytest.raises(FileNotFoundError) as error:
        kw.imagenet_weights_path(include_top=False)
    message = str(error.value)
    name = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert (
        f"https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/{name}"
        in message
    )
    assert str(offline_cache / name) in message
    assert not offline_cache.exists() or not any(offline_cache.iterdir())


def test_download_is_md5_checked_then_used_offline(offline_cache, monkeypatch):
    payload = b"pretend weights"
    name = kw.IMAGENET_FILES[True].filename
    monkeypatch.setitem(
        kw.IMAGENET_FILES, True, kw.WeightFile(name, hashlib.md5(payload).hexdigest())
    )
    _serve(monkeypatch, payload)
    path = kw.imagenet_weights_path(include_top=True)
    assert path == offline_cache / name and path.read_bytes() == payload
    monkeypatch.setattr(kw.urllib.request, "urlopen", None)  # offline again: any use would fail
    assert kw.imagenet_weights_path(include_top=True) == path


def test_wrong_md5_is_an_error_and_leaves_no_file(offline_cache, monkeypatch):
    _serve(monkeypatch, b"truncated download")
    with pytest.raises(kw.KerasWeightsError, match="md5"):
        kw.imagenet_weights_path(include_top=True)
    assert list(offline_cache.iterdir()) == []


def test_local_file_with_wrong_md5_is_an_error(offline_cache):
    offline_cache.mkdir(parents=True)
    (offline_cache / kw.IMAGENET_FILES[False].filename).write_bytes(b"not the weights")
    with pytest.raises(kw.KerasWeightsError, match="expected bcbd6486424b2319ff4ef7d526e38f63"):
        kw.imagenet_weights_path(include_top=False)
