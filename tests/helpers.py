"""Small builders shared by the tests: a tiny CNN setup, a tiny image folder,
`require_module` for optional test dependencies and `assert_same_function` for the
formulations of a convolution."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from convjax.config import ModelConfig, OptimConfig
from convjax.data.arrays import ArraySource
from convjax.data.device_batches import DeviceArrays
from convjax.models import CNN
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import init_train_state


def require_module(name: str):
    """Imports an optional test dependency; its absence skips, except under CI (CI=true),
    where it fails: a CI run that silently skips its reference checks proves nothing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        skip_or_fail_under_ci(
            f"{name} not importable ({err}); pip install 'convjax[test]', see pyproject")


def skip_or_fail_under_ci(message: str):
    """Skip the test with `message`, or fail it under CI (CI=true)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " -- required under CI=true")
    pytest.skip(message)


TINY_MODEL = ModelConfig(conv_filters=(4,), convs_per_block=1, dropout=0.1, dense=(8,),
                         dense_dropout=0.1, num_classes=3)


def tiny_setup(model_cfg: ModelConfig = TINY_MODEL, optim_cfg: OptimConfig = OptimConfig(),
               image_shape=(8, 8, 3), seed: int = 0, ema: float = 0.0, **step_kwargs):
    """(initial state, Steps) of a tiny CNN; schedules see 10 steps per epoch, 100 in all."""
    model = CNN(model_cfg)
    tx = make_optimizer(optim_cfg, make_schedule(optim_cfg, 10, 100))
    state = init_train_state(model, tx, jax.random.key(seed), image_shape, ema=ema > 0)
    return state, make_steps(model=model, tx=tx, ema_momentum=ema, **step_kwargs)


def array_batches(source: ArraySource, batch_size: int, seed: int = 0, mesh=None):
    """The device-resident batch source over `source`."""
    return DeviceArrays(source, batch_size=batch_size, seed=seed, mesh=mesh or make_mesh())


def tiny_arrays(n: int = 48, shape=(8, 8, 3), classes: int = 3, seed: int = 0) -> ArraySource:
    """Learnable toy data: the class sets the mean brightness."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    base = (labels[:, None, None, None] * 90 + 20).astype(np.float32)
    images = np.clip(base + rng.normal(0, 20, (n, *shape)), 0, 255).astype(np.uint8)
    return ArraySource(images, labels, tuple(f"c{i}" for i in range(classes)))


def write_image_folder(root: Path, per_class: int = 6, size=(10, 12), classes=("cat", "dog"),
                       fmt: str = "png") -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 120 * c, 25, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.{fmt}")
    return root


class TinyBackbone(nn.Module):
    """Stands in for a pretrained network: two named blocks with batch norm, pooled output."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(
            nn.Conv(4, (3, 3), name="block1")(x)))
        x = nn.relu(nn.Conv(6, (3, 3), name="block2")(x))
        return x.mean(axis=(1, 2))


# --- convolutions: each formulation against lax.conv -------------------------------------

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


def require_onednn():
    """oneDNN's conv built and loaded here; like `require_module`, skips without it except
    under CI, where it fails (it is a dependency on x86-64 Linux, and CI runs there)."""
    from convjax.models import onednn_conv

    try:
        onednn_conv.register()
    except (onednn_conv.OneDnnUnavailable, OSError) as err:
        skip_or_fail_under_ci(f"oneDNN conv unavailable here ({err})")
