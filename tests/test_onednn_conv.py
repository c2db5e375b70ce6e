import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from convjax.loop import fit
from convjax.models import layers, onednn_conv
from convjax.models.cnn import CNN, ModelConfig, resolved_impls
from convjax.models.onednn_conv import OneDnnUnavailable, conv_onednn
from convjax.optim import OptimConfig
from convjax.sharding import make_mesh
from helpers import (
    TINY_MODEL,
    array_batches,
    assert_same_function,
    lax_conv,
    require_onednn,
    tiny_arrays,
    tiny_setup,
    value_and_grads,
)


@pytest.fixture(autouse=True)
def _onednn():
    require_onednn()


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
def test_onednn_conv_is_lax_conv(padding, kernel_size):
    assert_same_function(conv_onednn, padding, kernel_size)


@pytest.mark.parametrize("kernel_hw", [(3, 1), (2, 3)])
def test_non_square_kernels(kernel_hw):
    """Rows and columns of the kernel kept apart (a square kernel would hide a swap)."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
    kernel = jax.random.normal(jax.random.key(1), (*kernel_hw, 3, 4))
    for a, e in zip(value_and_grads(conv_onednn, x, kernel, "SAME"),
                    value_and_grads(lax_conv, x, kernel, "SAME")):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_course_cnn_shapes_under_jit():
    """The second conv block of the course CNN (64 channels, 16x16) at batch 4, jitted."""
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 32))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 32, 64)) * 0.1
    dy = jax.random.normal(jax.random.key(2), (4, 16, 16, 64))

    def out_and_grads(conv, x, kernel):
        y, vjp = jax.vjp(lambda x, k: conv(x, k, "SAME"), x, kernel)
        return (y, *vjp(dy))

    got = jax.jit(out_and_grads, static_argnums=0)(conv_onednn, x, kernel)
    for a, e in zip(got, out_and_grads(lax_conv, x, kernel)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


def test_unused_input_gradient_is_not_computed():
    """A first layer's input gradient is never used; no side effects, so XLA drops it."""
    x, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    dkernel = jax.jit(jax.grad(lambda k: conv_onednn(x, k).sum()))
    hlo = dkernel.lower(kernel).compile().as_text()
    assert "convjax_onednn_ConvKernelGrad" in hlo
    assert "convjax_onednn_ConvInputGrad" not in hlo


def test_batch_sharded_over_devices_gives_the_same_values():
    """No partitioning rule: XLA gathers the batch for the call; the values stay right."""
    mesh = make_mesh()
    x = jax.device_put(jax.random.normal(jax.random.key(0), (8, 6, 6, 3)),
                       NamedSharding(mesh, P(mesh.axis_names[0])))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    loss = lambda conv: lambda k, x: (conv(x, k, "SAME") ** 2).sum()  # noqa: E731
    got = jax.jit(jax.grad(loss(conv_onednn)))(kernel, x)
    np.testing.assert_allclose(got, jax.grad(loss(lax_conv))(kernel, x), rtol=1e-4)


def test_other_dtypes_are_refused_by_name():
    x, kernel = jnp.ones((1, 4, 4, 3), jnp.bfloat16), jnp.ones((3, 3, 3, 2), jnp.bfloat16)
    with pytest.raises(ValueError, match="conv_impl='onednn' computes in float32"):
        conv_onednn(x, kernel)


def test_missing_onednn_package_names_the_install(monkeypatch):
    monkeypatch.setattr(onednn_conv, "ONEDNN_HEADERS", "no-such-onednn-headers")
    with pytest.raises(OneDnnUnavailable, match="no-such-onednn-headers.*pip install"):
        onednn_conv.build()


@pytest.mark.parametrize("compiler, message", [("no-such-compiler", "was not found"),
                                               ("false", "compiling onednn_conv.cc failed")])
def test_compiler_problems_are_one_clear_error(tmp_path, monkeypatch, compiler, message):
    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", compiler)
    with pytest.raises(OneDnnUnavailable, match=message):
        onednn_conv.build()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing half-written


def test_an_unwritable_cache_is_named(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(OneDnnUnavailable, match="cannot write the kernel cache .*a-file"):
        onednn_conv.build()


def test_build_is_cached_by_source_and_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path))
    first = onednn_conv.build()
    kernels = tmp_path / "kernels"
    assert first.parent == kernels and [p.name for p in kernels.iterdir()] == [first.name]
    monkeypatch.setenv("CXX", "no-such-compiler")  # a second build would fail
    assert onednn_conv.build() == first
    monkeypatch.setattr(onednn_conv, "SOURCE", tmp_path / "edited.cc")
    (tmp_path / "edited.cc").write_text("// an edited source\n")
    with pytest.raises(OneDnnUnavailable, match="was not found"):  # new source: new build
        onednn_conv.build()


def test_unavailable_says_why_in_a_warning(monkeypatch):
    def fail():
        raise OneDnnUnavailable("'g++' was not found (set CXX)")

    monkeypatch.setattr(onednn_conv, "register", fail)
    with pytest.warns(RuntimeWarning, match="runs XLA's: 'g\\+\\+' was not found"):
        assert onednn_conv.available.__wrapped__() is False


def test_auto_takes_onednn_on_one_cpu_device_only(monkeypatch):
    assert jax.device_count() == 4  # conftest's fake devices: the batch may be sharded
    assert layers.resolve_impl("conv", "auto") == "xla"
    monkeypatch.setattr(layers.jax, "device_count", lambda: 1)
    assert layers.resolve_impl("conv", "auto") == "onednn"
    assert layers.resolve_impl("conv", "auto", "gpu") == "xla"
    # oneDNN's conv computes in float32 only; mixed precision keeps XLA's.
    assert layers.resolve_impl("conv", "auto", dtype="bfloat16") == "xla"
    assert resolved_impls(ModelConfig(dtype="bfloat16"))["conv_impl"] == "xla"
    assert resolved_impls(ModelConfig())["conv_impl"] == "onednn"
    tiny_bf16 = ModelConfig(conv_filters=(4,), convs_per_block=1, dense=(), num_classes=3,
                            dtype="bfloat16")
    x = jnp.ones((2, 8, 8, 3))
    CNN(tiny_bf16).init_with_output(jax.random.key(0), x)  # would be refused by oneDNN
    monkeypatch.setattr(onednn_conv, "available", lambda: False)
    assert layers.resolve_impl("conv", "auto") == "xla"


def test_fit_with_onednn_trains_like_xla():
    """Through the whole loop (jit, donation, a sharded batch, evaluation): three epochs with
    oneDNN's conv end where XLA's do, to float32 rounding carried through the updates. SGD,
    because Adam would hide a gradient off by a constant factor."""
    cfg = dataclasses.replace(TINY_MODEL, conv_filters=(4, 6), dropout=0.0, dense_dropout=0.0)
    finals = {}
    for impl in ("xla", "onednn"):
        state, steps = tiny_setup(dataclasses.replace(cfg, conv_impl=impl),
                                  OptimConfig(name="sgd", learning_rate=0.05))
        state, history = fit(state, array_batches(tiny_arrays(), 8), steps=steps, epochs=3,
                             validation=array_batches(tiny_arrays(seed=1), 8), verbose=0)
        finals[impl] = (jax.device_get(state.params), history)
    for a, b in zip(jax.tree.leaves(finals["xla"][0]), jax.tree.leaves(finals["onednn"][0])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(finals["xla"][1].history["val_loss"],
                               finals["onednn"][1].history["val_loss"],
                               rtol=1e-4)
