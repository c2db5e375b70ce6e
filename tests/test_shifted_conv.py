import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.models.shifted_conv import DKERNEL, DX, conv_shifted, make_conv_shifted
from helpers import assert_same_function


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
