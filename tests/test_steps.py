import jax
import jax.numpy as jnp
import numpy as np

from convjax.config import ModelConfig, OptimConfig
from helpers import tiny_arrays, tiny_setup


def _batch(n=16):
    data = tiny_arrays(n)
    return {"image": jnp.asarray(data.images), "label": jnp.asarray(data.labels)}


def test_step_changes_params_and_increments_step():
    state, train_step, _, _ = tiny_setup()
    before = jax.device_get(state.params)
    new, metrics = jax.jit(train_step)(state, _batch())
    assert int(new.step) == 1
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, new.params)
    assert all(jax.tree.leaves(changed))
    assert float(metrics["count"]) == 16 and float(metrics["nonfinite"]) == 0
    assert 0 <= float(metrics["correct"]) <= 16
    np.testing.assert_allclose(float(new.learning_rate), 1e-3, rtol=1e-6)


def test_step_is_deterministic_and_jit_matches_eager():
    state, train_step, _, _ = tiny_setup()
    a, _ = train_step(state, _batch())
    b, _ = jax.jit(train_step)(state, _batch())
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_dropout_key_changes_with_step():
    # Same batch, consecutive steps: dropout masks differ because the step is folded in.
    state, train_step, _, _ = tiny_setup()
    s1, m1 = train_step(state, _batch())
    s1 = s1.replace(params=state.params, opt_state=state.opt_state)  # only step differs
    _, m2 = train_step(s1, _batch())
    assert float(m1["loss_sum"]) != float(m2["loss_sum"])


def test_lr_scale_scales_the_update():
    state, train_step, _, _ = tiny_setup(model_cfg=ModelConfig(
        conv_filters=(4,), convs_per_block=1, dropout=0.0, dense=(), num_classes=3))
    half = state.replace(lr_scale=jnp.asarray(0.5))
    full, _ = train_step(state, _batch())
    halved, _ = train_step(half, _batch())
    np.testing.assert_allclose(float(halved.learning_rate), 5e-4, rtol=1e-6)
    d_full = jax.tree.map(lambda a, b: a - b, full.params, state.params)
    d_half = jax.tree.map(lambda a, b: a - b, halved.params, state.params)
    # Adam's first step moves each weight by ~lr*sign(g): halving lr halves the move.
    for f, h in zip(jax.tree.leaves(d_full), jax.tree.leaves(d_half)):
        np.testing.assert_allclose(h, f / 2, rtol=1e-3, atol=1e-7)


def test_nonfinite_loss_keeps_the_last_good_state():
    state, train_step, _, _ = tiny_setup()
    bad = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
    new, metrics = train_step(bad, _batch())
    assert float(metrics["nonfinite"]) == 1.0
    assert int(new.step) == 0  # no update applied
    assert np.isnan(float(metrics["loss_sum"]))


def test_ema_follows_params():
    state, train_step, _, _ = tiny_setup(ema=0.5)
    new, _ = train_step(state, _batch())
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, state.ema_params, new.params)
    for e, x in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(e, x, rtol=1e-6, atol=1e-7)


def test_l2_is_keras_kernel_regularizer():
    # With plain SGD the extra update is exactly lr * d(l2 * w**2)/dw = lr * 2 * l2 * w, on
    # kernels only; the reported loss metric excludes the penalty (as Keras's "loss" does not).
    sgd = OptimConfig(name="sgd", momentum=0.0, learning_rate=0.1)
    state, plain_step, _, _ = tiny_setup(optim_cfg=sgd)
    _, l2_step, _, _ = tiny_setup(optim_cfg=sgd, l2=0.01)
    a, ma = plain_step(state, _batch())
    b, mb = l2_step(state, _batch())
    np.testing.assert_allclose(float(ma["loss_sum"]), float(mb["loss_sum"]), rtol=1e-6)
    k0 = state.params["dense0"]["kernel"]
    np.testing.assert_allclose(b.params["dense0"]["kernel"] - a.params["dense0"]["kernel"],
                               -0.1 * 2 * 0.01 * k0, atol=1e-6)
    np.testing.assert_allclose(b.params["dense0"]["bias"], a.params["dense0"]["bias"], atol=1e-7)


def test_eval_step_masks_padding():
    state, _, eval_step, _ = tiny_setup()
    batch = _batch(8)
    full = eval_step(state.params, state.batch_stats, batch)
    mask = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32)
    half = eval_step(state.params, state.batch_stats, {**batch, "mask": mask})
    first = eval_step(state.params, state.batch_stats,
                      {"image": batch["image"][:4], "label": batch["label"][:4]})
    assert float(half["count"]) == 4 and float(full["count"]) == 8
    np.testing.assert_allclose(float(half["loss_sum"]), float(first["loss_sum"]), rtol=1e-5)
