import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.models.shifted_conv import DKERNEL, DX, conv_shifted, make_conv_shifted


def lax_conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def value_and_grads(conv, x, kernel, padding):
    """conv's output and the gradients w.r.t. x and kernel of a scalar that weighs every
    output differently (a plain sum would hide a misplaced term)."""
    weights = jax.random.normal(jax.random.key(2), lax_conv(x, kernel, padding).shape)
    loss = lambda x, kernel: (conv(x, kernel, padding) * weights).sum()  # noqa: E731
    return conv(x, kernel, padding), *jax.grad(loss, argnums=(0, 1))(x, kernel)


def assert_same_function(conv, padding, kernel_size, dtype=jnp.float32, tol=1e-5):
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3), dtype)  # non-square: rows vs cols
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 3, 4), dtype)
    expected = value_and_grads(lax_conv, x.astype(jnp.float32), kernel.astype(jnp.float32),
                               padding)
    actual = value_and_grads(conv, x, kernel, padding)
    for name, a, e in zip(("output", "dx", "dkernel"), actual, expected):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a.astype(jnp.float32), e, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
def test_shifted_conv_is_lax_conv(padding, kernel_size):
    assert_same_function(conv_shifted, padding, kernel_size)


@pytest.mark.parametrize("dkernel", sorted(DKERNEL))
@pytest.mark.parametrize("dx", sorted(DX))
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_every_backward_variant_is_the_same_gradient(dkernel, dx, padding):
    assert_same_function(make_conv_shifted(dkernel, dx), padding, 3)


def test_bfloat16_stays_bfloat16():
    # bfloat16 keeps ~3 significant digits; the sums are accumulated in float32.
    assert_same_function(conv_shifted, "SAME", 3, jnp.bfloat16, tol=0.1)


def test_no_patch_tensor_is_made():
    """The point of the formulation: nothing kh*kw times the input's size, forward or back."""
    x, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    grads = jax.make_jaxpr(jax.grad(lambda x, k: conv_shifted(x, k).sum(), (0, 1)))(x, kernel)
    biggest = max(np.prod(v.aval.shape) for eqn in grads.jaxpr.eqns for v in eqn.outvars)
    assert biggest < 9 * x.size
