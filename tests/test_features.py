import jax
import jax.numpy as jnp
import numpy as np

from convjax.features import cached_features, extract_features, fingerprint
from convjax.steps import rescale
from helpers import TinyBackbone, tiny_arrays


def _backbone(seed=0):
    model = TinyBackbone()
    return model, model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))


def test_features_match_a_direct_forward_pass_including_the_padded_last_batch():
    model, variables = _backbone()
    data = tiny_arrays(10)
    feats = extract_features(model, variables, data.images, rescale, batch_size=4)
    direct = model.apply(variables, rescale(jnp.asarray(data.images)), train=False)
    assert feats.shape == (10, 6) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)


def test_cache_is_reused_and_never_stale(tmp_path):
    model, variables = _backbone()
    data = tiny_arrays(10)
    first, hit1 = cached_features(data, model, variables, rescale, tmp_path, batch_size=4)
    again, hit2 = cached_features(data, model, variables, rescale, tmp_path, batch_size=4)
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(first.images, again.images)
    _, other_weights = _backbone(seed=1)
    _, hit3 = cached_features(data, model, other_weights, rescale, tmp_path, batch_size=4)
    _, hit4 = cached_features(tiny_arrays(10, seed=5), model, variables, rescale, tmp_path)
    assert not hit3 and not hit4  # other weights, other images: recomputed
    assert len(list(tmp_path.glob("features-*.npy"))) == 3


def test_fingerprint_depends_on_values_and_shapes():
    a = fingerprint({"w": np.zeros(3)}, "x")
    assert a == fingerprint({"w": np.zeros(3)}, "x")
    assert a != fingerprint({"w": np.ones(3)}, "x")
    assert a != fingerprint({"w": np.zeros((3, 1))}, "x")
    assert a != fingerprint({"w": np.zeros(3)}, "y")
