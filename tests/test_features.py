import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import features
from convjax.features import cached_features, extract_features, fingerprint
from convjax.models.efficientnet_lite import EfficientNetLite0
from convjax.models.inception_v3 import InceptionV3
from convjax.normalize import INCEPTION, RESCALE, Normalization
from helpers import TinyBackbone, tiny_arrays


def _backbone(seed=0, model=None):
    model = model or TinyBackbone()
    return model, model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))


class PoolingBackbone(nn.Module):
    """Same parameters whatever `pooling` is; only the outputs change with it."""

    pooling: str = "mean"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(5, (3, 3), name="conv")(x)
        return x.mean(axis=(1, 2)) if self.pooling == "mean" else x.max(axis=(1, 2))


TRACES = []  # one entry per trace of CountingBackbone: its Python body runs only when traced


class CountingBackbone(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        TRACES.append(x.shape)
        return nn.Dense(3, name="dense")(x.mean(axis=(1, 2)))


def _scale_by(constant):
    def preprocess(images):  # every closure made here has the same __module__ and __name__
        return images * constant

    return preprocess


def test_features_match_a_direct_forward_pass_including_the_padded_last_batch():
    model, variables = _backbone()
    data = tiny_arrays(10)
    feats = extract_features(model, variables, data.images, RESCALE, batch_size=4)
    direct = model.apply(variables, RESCALE(jnp.asarray(data.images)), train=False)
    assert feats.shape == (10, 6) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)


def test_extraction_compiles_once_across_calls_and_for_the_padded_last_batch():
    data = tiny_arrays(10)
    model, variables = _backbone(model=CountingBackbone())
    TRACES.clear()
    first = extract_features(model, variables, data.images, RESCALE, batch_size=4)
    # A new but equal module and spec: static arguments compare by value, so no retrace.
    again = extract_features(CountingBackbone(), variables, data.images, Normalization(1 / 255),
                             batch_size=4)
    assert TRACES == [(4, 8, 8, 3)]  # 3 batches x 2 calls, one trace
    np.testing.assert_array_equal(first, again)


def test_cache_is_reused_and_never_stale(tmp_path):
    model, variables = _backbone()
    data = tiny_arrays(10)
    first, hit1 = cached_features(data, model, variables, RESCALE, tmp_path, batch_size=4)
    again, hit2 = cached_features(data, model, variables, RESCALE, tmp_path, batch_size=4)
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(first.images, again.images)
    _, other_weights = _backbone(seed=1)
    _, hit3 = cached_features(data, model, other_weights, RESCALE, tmp_path, batch_size=4)
    _, hit4 = cached_features(tiny_arrays(10, seed=5), model, variables, RESCALE, tmp_path)
    assert not hit3 and not hit4  # other weights, other images: recomputed
    assert len(list(tmp_path.glob("features-*.npy"))) == 3


def test_the_same_spec_built_twice_hits_the_cache(tmp_path):
    model, variables = _backbone()
    data = tiny_arrays(6)
    first, hit1 = cached_features(data, model, variables, Normalization((2 / 255,), (-1.0,)),
                                  tmp_path)
    again, hit2 = cached_features(data, model, variables, Normalization(2 / 255, -1.0), tmp_path)
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(first.images, again.images)


def test_specs_with_different_constants_never_share_features(tmp_path):
    model, variables = _backbone()
    data = tiny_arrays(6)
    rescaled, _ = cached_features(data, model, variables, RESCALE, tmp_path)
    inception, hit = cached_features(data, model, variables, INCEPTION, tmp_path)
    assert not hit
    direct = model.apply(variables, INCEPTION(jnp.asarray(data.images)), train=False)
    np.testing.assert_allclose(inception.images, direct, rtol=1e-5, atol=1e-6)
    assert not np.allclose(rescaled.images, inception.images)


@pytest.mark.parametrize(
    "preprocess, shown",
    [
        # Two closures with different constants: today they share __module__ and __name__.
        (_scale_by(1 / 255), "preprocess"),
        (_scale_by(2 / 255), "preprocess"),
        (lambda x: x / 255.0, "lambda"),  # every lambda in a module is named "<lambda>"
        (functools.partial(jnp.multiply, 1 / 255), "partial"),  # has no __name__ at all
    ],
    ids=["closure-1", "closure-2", "lambda", "partial"],
)
def test_preprocessing_functions_are_refused_naming_what_was_given(tmp_path, preprocess, shown):
    model, variables = _backbone()
    data = tiny_arrays(4)
    with pytest.raises(TypeError, match=rf"Normalization.*{shown}"):
        cached_features(data, model, variables, preprocess, tmp_path)
    with pytest.raises(TypeError, match=rf"Normalization.*{shown}"):
        extract_features(model, variables, data.images, preprocess)
    assert not list(tmp_path.iterdir())  # refused before anything was computed or written


def test_a_backbone_field_that_changes_outputs_changes_the_cache(tmp_path):
    data = tiny_arrays(6)
    mean_model, variables = _backbone(model=PoolingBackbone("mean"))
    mean, _ = cached_features(data, mean_model, variables, RESCALE, tmp_path)
    peak, hit = cached_features(data, PoolingBackbone("max"), variables, RESCALE, tmp_path)
    assert not hit and not np.allclose(mean.images, peak.images)


@pytest.mark.parametrize(
    "a, b",
    [
        (EfficientNetLite0(include_top=False, pooling="avg"),
         EfficientNetLite0(include_top=False, pooling="max")),
        (InceptionV3(include_top=False, output_layer="mixed7"),
         InceptionV3(include_top=False, output_layer="mixed6")),
    ],
)
def test_cache_key_sees_each_config_field_of_the_real_backbones(a, b):
    data = tiny_arrays(2)
    assert features.cache_key(data, a, {}, RESCALE) != features.cache_key(data, b, {}, RESCALE)
    assert features.cache_key(data, a, {}, RESCALE) == features.cache_key(data, a.clone(), {},
                                                                          RESCALE)


class ActivatedBackbone(nn.Module):
    act: Callable = jax.nn.relu

    @nn.compact
    def __call__(self, x, train: bool = False):
        return self.act(nn.Conv(4, (3, 3), name="conv")(x)).mean(axis=(1, 2))


def relu(x):  # not jax.nn.relu, though Flax prints both as "relu"
    return 2.0 * jnp.maximum(x, 0.0)


def test_backbones_that_flax_prints_alike_but_compute_differently_get_different_keys():
    a, b = ActivatedBackbone(jax.nn.relu), ActivatedBackbone(relu)
    assert repr(a) == repr(b)  # why the key is not built from repr(backbone)
    data = tiny_arrays(2)
    assert features.cache_key(data, a, {}, RESCALE) != features.cache_key(data, b, {}, RESCALE)


def test_a_backbone_with_a_lambda_field_is_refused():
    with pytest.raises(TypeError, match="cannot fingerprint function"):
        features.cache_key(tiny_arrays(2), ActivatedBackbone(lambda x: x), {}, RESCALE)


def test_fingerprint_depends_on_values_and_shapes():
    a = fingerprint({"w": np.zeros(3)}, "x")
    assert a == fingerprint({"w": np.zeros(3)}, "x")
    assert a != fingerprint({"w": np.ones(3)}, "x")
    assert a != fingerprint({"w": np.zeros((3, 1))}, "x")
    assert a != fingerprint({"w": np.zeros(3)}, "y")
