import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.config import ModelConfig
from convjax.losses import l2_penalty
from convjax.models import CNN, count_params, layer_table, summary
from convjax.models.cnn import resolve_model_impls, resolved_impls
from convjax.models.efficientnet_lite import DepthwiseConv2D
from convjax.models.layers import extract_patches, pool2x2, resolve_impl
from helpers import require_onednn

# The course's Keras tables. Update only if the course's models change.
MNIST_MODEL = ModelConfig(
    conv_filters=(32,), convs_per_block=1, padding="SAME", pool="max", dropout=0.0,
    dense=(128,), dense_dropout=0.0, num_classes=10,
)


def test_single_conv_layer_golden():
    cfg = ModelConfig(conv_filters=(32,), convs_per_block=1, pool="none", dropout=0.0,
                      dense=(), num_classes=10)
    first = layer_table(CNN(cfg), (28, 28, 3))[0]
    assert first.name == "conv0_0"
    assert first.output_shape == (28, 28, 32)
    assert first.params == 896  # 3*3*3*32 + 32


def test_course_mnist_model_golden():
    rows = layer_table(CNN(MNIST_MODEL), (28, 28, 1))
    assert [(r.name, r.params) for r in rows] == [
        ("conv0_0", 320), ("dense0", 802_944), ("logits", 1_290)
    ]
    assert [r.output_shape for r in rows] == [(28, 28, 32), (128,), (10,)]
    text = summary(CNN(MNIST_MODEL), (28, 28, 1))
    assert "Total params: 804,554" in text


def test_batch_norm_counts_non_trainable():
    cfg = ModelConfig(conv_filters=(8,), convs_per_block=1, batch_norm=True, dense=(),
                      num_classes=10)
    rows = {r.name: r for r in layer_table(CNN(cfg), (8, 8, 3))}
    assert rows["bn0_0"].params == 16 and rows["bn0_0"].non_trainable == 16
    assert "Non-trainable params: 16" in summary(CNN(cfg), (8, 8, 3))


def test_valid_padding_shrinks():
    cfg = ModelConfig(conv_filters=(4,), convs_per_block=2, padding="VALID", pool="avg",
                      dropout=0.0, dense=(), num_classes=10)
    assert layer_table(CNN(cfg), (10, 10, 1))[1].output_shape == (6, 6, 4)


@pytest.mark.parametrize("impl", ["im2col", "shifted", "onednn"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
def test_fast_conv_is_the_same_function(impl, padding, kernel):
    if impl == "onednn":
        require_onednn()
    x = jax.random.normal(jax.random.key(0), (2, 12, 11, 3))
    # Two convs, so that the first one's input gradient is used too.
    base = ModelConfig(conv_filters=(5,), convs_per_block=2, kernel_size=kernel,
                       padding=padding, pool="none", dropout=0.0, dense=(),
                       num_classes=10, conv_impl="xla")  # the reference, whatever "auto" is
    fast = dataclasses.replace(base, conv_impl=impl)
    variables = CNN(base).init(jax.random.key(1), x)
    # One parameter tree serves both implementations.
    y_ref = CNN(base).apply(variables, x)
    y_fast = CNN(fast).apply(variables, x)
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    g_ref = jax.grad(lambda v: CNN(base).apply(v, x).sum())(variables)
    g_fast = jax.grad(lambda v: CNN(fast).apply(v, x).sum())(variables)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_fast)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_reshape_pool_is_the_same_function(kind):
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))  # odd height: last row dropped
    ref = pool2x2(x, kind, "xla")
    fast = pool2x2(x, kind, "reshape")
    assert fast.shape == ref.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(fast, ref, rtol=1e-6)
    # Without ties (random floats) the gradients agree too.
    g_ref = jax.grad(lambda v: (pool2x2(v, kind, "xla") ** 2).sum())(x)
    g_fast = jax.grad(lambda v: (pool2x2(v, kind, "reshape") ** 2).sum())(x)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-5, atol=1e-6)


def test_patches_order_matches_hwio_kernel():
    x = jnp.arange(1 * 3 * 3 * 2, dtype=jnp.float32).reshape(1, 3, 3, 2)
    patches = extract_patches(x, 3, "VALID")
    np.testing.assert_array_equal(patches.reshape(-1), x.reshape(-1))


def test_l2_penalty_counts_kernels_only():
    params = {"conv": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(3)},
              "bn": {"scale": jnp.ones(3)}}
    assert float(l2_penalty(params)) == 16.0
    assert count_params(params) == 10


def test_l2_on_dense_or_conv_layers_only():
    """The overfitting slide's "L2 on the dense layers": kernels chosen by rank."""
    params = {"conv0_0": {"kernel": jnp.full((3, 3, 1, 2), 1.0), "bias": jnp.ones(2)},
              "dense0": {"kernel": jnp.full((4, 2), 2.0)},
              "logits": {"kernel": jnp.full((2, 3), 3.0)}}
    assert float(l2_penalty(params, "conv")) == 18.0
    assert float(l2_penalty(params, "dense")) == 4 * 2 * 4 + 2 * 3 * 9
    assert float(l2_penalty(params, "all")) == 18.0 + 86.0


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="pool"):
        layer_table(CNN(ModelConfig(pool="median")), (8, 8, 3))
    with pytest.raises(ValueError, match="conv_impl"):
        layer_table(CNN(ModelConfig(conv_impl="fft")), (8, 8, 3))


def test_auto_resolves_to_the_fastest_formulation_of_the_backend():
    assert jax.default_backend() == "cpu"  # conftest
    assert resolved_impls(ModelConfig()) == {"conv_impl": "xla", "pool_impl": "reshape"}
    assert resolve_impl("depthwise", "auto") == "shifted"
    for backend in ("gpu", "tpu"):
        assert resolved_impls(ModelConfig(), backend) == {"conv_impl": "xla", "pool_impl": "xla"}
        assert resolve_impl("depthwise", "auto", backend) == "xla"
    assert resolved_impls(ModelConfig(conv_impl="im2col"), "cpu")["conv_impl"] == "im2col"
    assert resolve_model_impls(ModelConfig(), "gpu").conv_impl == "xla"


def _primitives(fn, *args) -> set[str]:
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_auto_runs_the_cpu_formulations_here():
    x = jnp.ones((2, 8, 8, 3))
    cfg = ModelConfig(conv_filters=(4,), convs_per_block=1, dense=(), num_classes=3)
    variables = CNN(cfg).init(jax.random.key(0), x)
    auto = _primitives(lambda v: CNN(cfg).apply(v, x), variables)
    assert "conv_general_dilated" in auto
    assert not auto & {"reduce_window_max", "reduce_window"}
    for conv in ("im2col", "shifted"):
        fast = dataclasses.replace(cfg, conv_impl=conv)
        assert "conv_general_dilated" not in _primitives(CNN(fast).apply, variables, x)
    layer = DepthwiseConv2D(3)
    params = layer.init(jax.random.key(0), x)
    assert "conv_general_dilated" not in _primitives(lambda v: layer.apply(v, x), params)


def test_mixed_precision_keeps_params_and_logits_float32():
    x = jnp.ones((2, 8, 8, 3))
    base = ModelConfig(conv_filters=(4,), convs_per_block=1, batch_norm=True, dense=(8,),
                       num_classes=3)
    mixed = CNN(dataclasses.replace(base, dtype="bfloat16"))
    variables = mixed.init(jax.random.key(0), x)
    floats = {leaf.dtype for leaf in jax.tree.leaves(variables)}
    assert floats == {jnp.dtype(jnp.float32)}  # params and batch statistics
    assert mixed.apply(variables, x).dtype == jnp.float32
    jaxpr = jax.make_jaxpr(lambda v: mixed.apply(v, x))(variables)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    half = CNN(dataclasses.replace(base, dtype="bfloat16", param_dtype="bfloat16"))
    assert {p.dtype for p in jax.tree.leaves(half.init(jax.random.key(0), x)["params"])} == {
        jnp.dtype(jnp.bfloat16)}
