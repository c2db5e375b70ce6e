"""InceptionV3 (convjax.models.inception_v3) and its Keras weight loader (keras_weights).

The reference is Keras 3 itself, on the JAX backend: build `keras.applications.InceptionV3`
with random weights (batch-norm statistics randomised too, so that loading them wrongly shows),
save them in both Keras formats, load them here and compare outputs on the same images.
"""

import os
from pathlib import Path
from types import SimpleNamespace

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported anywhere

import h5py  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

from convjax.models import keras_weights as kw  # noqa: E402
from convjax.models.inception_v3 import (  # noqa: E402
    InceptionV3,
    apply_with_endpoints,
    keras_conv_order,
    preprocess_input,
)
from convjax.models.inception_v3_blocks import ConvBN  # noqa: E402

# Keras's model.summary() totals (trainable + non-trainable, i.e. with BN moving mean/var).
# Update only if keras.applications.InceptionV3 itself changes.
PARAMS_WITH_TOP = 23_851_784
PARAMS_NO_TOP = 21_802_784
NON_TRAINABLE = 34_432  # BN moving means and variances: 2 x 17,216 channels
IMAGE_HW = (75, 91)  # the minimum height, and a different width to catch H/W mix-ups


# Keras 3.15 on NumPy 2 warns about __array__(copy=...) on every variable it converts.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def abstract_variables(model: InceptionV3, hw: tuple[int, int] = IMAGE_HW):
    images = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), images)


# ---------------------------------------------------------------- the Keras reference


def _numpy_he_uniform(rng):
    # Stands in for Keras's glorot_uniform while the reference is built, for two reasons.
    # Keras draws each kernel with a jitted JAX op compiled once per shape (about a minute on
    # a small CPU); NumPy takes no time. And He scaling (variance 2 / fan_in) keeps the signal
    # alive through 94 random conv+ReLU layers, so the outputs depend on the image: with
    # Glorot they are almost constant, and a wiring mistake could hide behind the biases.
    def call(self, shape, dtype=None):
        limit = np.sqrt(6.0 / np.prod(shape[:-1]))
        return rng.uniform(-limit, limit, shape).astype("float32")

    return call


def _randomise_batch_norm(model, rng) -> None:
    # Keras initialises beta=0, mean=0, var=1 everywhere: swapped layers would go unnoticed.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.beta.shape[0]
            beta, mean, var = rng.normal(0, 0.2, c), rng.normal(0, 0.5, c), rng.uniform(0.5, 2, c)
            layer.set_weights([beta, mean, var])


def _centre_classifier(model, pooled, rng) -> None:
    # A random classifier whose logits average to zero over the images: with two images they
    # are opposite, so the images get different classes and the argmax check means something.
    dense = model.get_layer("predictions")
    kernel = rng.normal(0, 0.3, dense.kernel.shape)
    dense.set_weights([kernel, -pooled.mean(axis=0) @ kernel])


def _save_both_formats(model, folder: Path, stem: str) -> tuple[Path, Path]:
    legacy, keras3 = folder / f"{stem}.h5", folder / f"{stem}.weights.h5"
    # Keras 3's save_weights only writes .weights.h5; the legacy (Keras 2, published) layout
    # is still written by this function.
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    model.save_weights(keras3)
    return legacy, keras3


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Keras InceptionV3 with random weights, its outputs on two images, and its weight files."""
    assert keras.backend.backend() == "jax", "keras was imported before KERAS_BACKEND=jax"
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.initializers.GlorotUniform, "__call__", _numpy_he_uniform(rng))
        model = keras.applications.InceptionV3(weights=None, input_shape=(*IMAGE_HW, 3))
    _randomise_batch_norm(model, rng)
    # Keras's notop model is the same layers up to mixed10.
    notop = keras.Model(model.input, model.get_layer("mixed10").output)
    mixed7 = model.get_layer("mixed7").output
    probe = keras.Model(model.input, [mixed7, model.get_layer("avg_pool").output, model.output])
    images = rng.uniform(-1, 1, (2, *IMAGE_HW, 3)).astype("float32")
    mixed7_out, pooled, _ = probe.predict(images, verbose=0)
    _centre_classifier(model, pooled, rng)
    _, _, probs = probe.predict(images, verbose=0)
    folder = tmp_path_factory.mktemp("keras_weights")
    top_h5, top_keras3 = _save_both_formats(model, folder, "top")
    notop_h5, notop_keras3 = _save_both_formats(notop, folder, "notop")
    return SimpleNamespace(
        images=images, mixed7=mixed7_out, pooled=pooled, probs=probs,
        mixed7_shape=tuple(mixed7.shape), count_top=model.count_params(),
        count_notop=notop.count_params(),
        count_mixed7=keras.Model(model.input, mixed7).count_params(),
        top_h5=top_h5, top_keras3=top_keras3, notop_h5=notop_h5, notop_keras3=notop_keras3,
    )  # fmt: skip


# ---------------------------------------------------------------- architecture (no Keras)


def test_parameter_counts_match_keras_summary():
    top = abstract_variables(InceptionV3())
    notop = abstract_variables(InceptionV3(include_top=False))
    assert count(top) == PARAMS_WITH_TOP
    assert count(notop) == PARAMS_NO_TOP
    assert count(top["batch_stats"]) == NON_TRAINABLE


def test_input_smaller_than_75_pixels_is_rejected():
    model = InceptionV3(include_top=False)
    with pytest.raises(ValueError, match=r"images_bhwc of at least 75x75.*got 75x74"):
        abstract_variables(model, hw=(75, 74))
    assert count(abstract_variables(model, hw=(75, 75))) == PARAMS_NO_TOP


def test_contradictory_options_are_rejected():
    with pytest.raises(ValueError, match="output_layer='mixed7' needs include_top=False"):
        abstract_variables(InceptionV3(output_layer="mixed7"))
    with pytest.raises(ValueError, match="output_layer must be"):
        abstract_variables(InceptionV3(include_top=False, output_layer="mixed11"))
    with pytest.raises(ValueError, match="pooling"):
        abstract_variables(InceptionV3(include_top=False, pooling="mean"))


def test_keras_order_names_every_conv_bn_unit_once():
    for model in [InceptionV3(), InceptionV3(include_top=False, output_layer="mixed7")]:
        params = abstract_variables(model)["params"]
        units = {(b, u) for b in params if b != "predictions" for u in params[b]}
        order = keras_conv_order(model)
        assert len(order) == len(set(order)) == len(units)
        assert set(order) == units
    assert len(keras_conv_order(InceptionV3())) == 94  # conv2d_1 .. conv2d_94


def test_batch_norm_uses_keras_momentum_and_epsilon():
    unit = ConvBN(4, (1, 1))
    x = np.random.default_rng(0).normal(size=(8, 5, 5, 3)).astype("float32")
    # Jitted: run eagerly, each of the ~30 small ops would compile on its own (seconds).
    variables = jax.jit(unit.init, static_argnames="train")(jax.random.key(0), x, train=False)
    train_step = jax.jit(lambda v: unit.apply(v, x, train=True, mutable=["batch_stats"]))
    _, updated = train_step(variables)
    conv_out = x @ np.asarray(variables["params"]["conv"]["kernel"][0, 0])
    # Keras: moving = 0.99 * moving + 0.01 * batch, from mean 0 and variance 1 at init.
    new_mean = updated["batch_stats"]["bn"]["mean"]
    np.testing.assert_allclose(new_mean, 0.01 * conv_out.mean(axis=(0, 1, 2)), atol=1e-6)
    assert "scale" not in variables["params"]["bn"]  # Keras: scale=False
    out = jax.jit(lambda v: unit.apply(v, x, train=False))(variables)
    np.testing.assert_allclose(out, np.maximum(conv_out / np.sqrt(1 + 1e-3), 0), atol=1e-5)


def test_preprocess_input_matches_keras():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.inception_v3.preprocess_input(pixels.copy())
    np.testing.assert_allclose(preprocess_input(pixels), expected, atol=1e-6)
    np.testing.assert_allclose(preprocess_input(np.array([0, 255], np.uint8)), [-1, 1])


# ---------------------------------------------------------------- parity with Keras


@pytest.mark.slow
def test_legacy_h5_with_top_matches_keras(ref):
    model = InceptionV3()
    variables = kw.load_inception_v3_weights(ref.top_h5, model)
    probs, blocks = jax.jit(lambda v, x: apply_with_endpoints(model, v, x))(variables, ref.images)
    diffs = {
        "probs": np.abs(probs - ref.probs).max(),
        "pooled": np.abs(blocks["mixed10"].mean(axis=(1, 2)) - ref.pooled).max(),
        "mixed7": np.abs(blocks["mixed7"] - ref.mixed7).max(),
    }
    print("max abs diff vs Keras:", diffs, "classes:", np.argmax(probs, 1), np.argmax(ref.probs, 1))
    assert diffs["probs"] < 1e-5 and diffs["pooled"] < 1e-4 and diffs["mixed7"] < 1e-4
    assert list(np.argmax(probs, 1)) == list(np.argmax(ref.probs, 1))
    assert len(set(np.argmax(ref.probs, 1))) == 2  # the images differ, so must their classes
    assert count(variables) == ref.count_top == PARAMS_WITH_TOP


@pytest.mark.slow
def test_keras3_notop_file_gives_keras_pooled_features(ref):
    model = InceptionV3(include_top=False, pooling="avg")
    variables = kw.load_inception_v3_weights(ref.notop_keras3, model)
    pooled = jax.jit(model.apply)(variables, ref.images)
    print("max abs diff of pooled features vs Keras:", np.abs(pooled - ref.pooled).max())
    assert np.abs(pooled - ref.pooled).max() < 1e-4
    assert count(variables) == ref.count_notop == PARAMS_NO_TOP


@pytest.mark.slow
def test_mixed7_endpoint_loads_from_full_file_and_matches_keras(ref):
    model = InceptionV3(include_top=False, output_layer="mixed7", pooling="max")
    variables = kw.load_inception_v3_weights(ref.top_keras3, model)
    assert count(variables) == ref.count_mixed7
    feature_map = jax.eval_shape(model.clone(pooling=None).apply, variables, ref.images)
    assert feature_map.shape[1:] == ref.mixed7_shape[1:]  # Keras: (None, 3, 4, 768)
    pooled = jax.jit(model.apply)(variables, ref.images)
    diff = np.abs(pooled - ref.mixed7.max(axis=(1, 2))).max()
    print("max abs diff of max-pooled mixed7 vs Keras:", diff)
    assert diff < 1e-4


@pytest.mark.slow  # needs the Keras reference (about 20 s to build once per module)
def test_both_file_formats_give_identical_variables(ref):
    top = kw.load_inception_v3_weights(ref.top_keras3, InceptionV3())
    notop = kw.load_inception_v3_weights(ref.notop_h5, InceptionV3(include_top=False))
    top_legacy = kw.load_inception_v3_weights(ref.top_h5, InceptionV3())
    assert jax.tree.all(jax.tree.map(np.array_equal, top, top_legacy))
    del top["params"]["predictions"]
    assert jax.tree.all(jax.tree.map(np.array_equal, top, notop))


@pytest.mark.slow
def test_loading_errors_name_the_layer_and_the_file(ref):
    with pytest.raises(kw.KerasWeightsError, match=r"notop\.h5: no layer 'predictions'"):
        kw.load_inception_v3_weights(ref.notop_h5, InceptionV3())
    pattern = r"top\.weights\.h5: layer 'predictions' kernel has shape \(2048, 1000\)"
    with pytest.raises(kw.KerasWeightsError, match=pattern):
        kw.load_inception_v3_weights(ref.top_keras3, InceptionV3(classes=10))


@pytest.mark.slow
def test_imagenet_loader_uses_the_cached_file_offline(ref, tmp_path, monkeypatch):
    # Stand-in for the published notop file: our Keras-written one, under its name and md5.
    name = kw.IMAGENET_FILES[False].filename
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / name).write_bytes(ref.notop_h5.read_bytes())
    monkeypatch.setitem(kw.IMAGENET_FILES, False, kw.WeightFile(name, kw.file_md5(ref.notop_h5)))
    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path))
    monkeypatch.setattr(kw.urllib.request, "urlopen", None)  # offline: any use would fail
    model = InceptionV3(include_top=False, output_layer="mixed7")
    variables = kw.load_inception_v3_imagenet(model)
    assert count(variables) == ref.count_mixed7
    with pytest.raises(ValueError, match="classes=10"):
        kw.load_inception_v3_imagenet(InceptionV3(classes=10))
