import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.augment import AugmentConfig
from convjax.config import ModelConfig, OptimConfig
from convjax.losses import l2_penalty
from convjax.normalize import Normalization
from convjax.optim import learning_rate, with_lr_scale
from convjax.steps import StepConfig, eval_step, predict_step, train_step
from helpers import tiny_arrays, tiny_setup

NO_DROPOUT = ModelConfig(conv_filters=(4,), convs_per_block=1, dropout=0.0, dense=(),
                         num_classes=3)


def _batch(n=16):
    data = tiny_arrays(n)
    return {"image": jnp.asarray(data.images), "label": jnp.asarray(data.labels)}


def _train(steps):
    """The pure (unjitted) train step of a `Steps`' configuration."""
    return functools.partial(train_step, steps.config)


def test_step_changes_params_and_increments_step():
    state, steps = tiny_setup()
    before = jax.device_get(state.params)
    new, metrics = jax.jit(_train(steps))(state, _batch())
    assert int(new.step) == 1
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, new.params)
    assert all(jax.tree.leaves(changed))
    assert float(metrics["count"]) == 16 and float(metrics["nonfinite"]) == 0
    np.testing.assert_allclose(float(metrics["learning_rate"]), 1e-3, rtol=1e-6)


def test_golden_one_step():
    """One update of the course CNN's shape at a tiny size, against stored values.

    Update these numbers only when a change is *meant* to alter the arithmetic of a step
    (initialisation, the loss, the optimizer, the order of operations, the RNG use); a
    refactoring that changes them has changed what training computes.
    """
    cfg = ModelConfig(conv_filters=(4, 8), convs_per_block=2, dropout=0.25, dense=(16,),
                      dense_dropout=0.5, num_classes=3)
    state, steps = tiny_setup(model_cfg=cfg, seed=42)
    new, metrics = _train(steps)(state, _batch())
    loss = float(metrics["loss_sum"] / metrics["count"])
    checksum = float(sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(new.params)))
    assert loss == pytest.approx(GOLDEN_LOSS, rel=1e-5), loss
    assert checksum == pytest.approx(GOLDEN_CHECKSUM, rel=1e-5), checksum


# Measured with tests/conftest.py's settings (CPU, jax_threefry_partitionable=False).
GOLDEN_LOSS = 1.1262214183807373
GOLDEN_CHECKSUM = 219.57012939453125


def test_step_is_deterministic_and_jit_matches_eager():
    state, steps = tiny_setup()
    a, _ = _train(steps)(state, _batch())
    b, _ = jax.jit(_train(steps))(state, _batch())
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_dropout_key_changes_with_step():
    # Same batch, consecutive steps: dropout masks differ because the step is folded in.
    state, steps = tiny_setup()
    s1, m1 = _train(steps)(state, _batch())
    s1 = s1.replace(params=state.params, opt_state=state.opt_state)  # only step differs
    _, m2 = _train(steps)(s1, _batch())
    assert float(m1["loss_sum"]) != float(m2["loss_sum"])


def test_lr_scale_scales_the_update():
    state, steps = tiny_setup(model_cfg=NO_DROPOUT)
    half = state.replace(opt_state=with_lr_scale(state.opt_state, 0.5))
    full, _ = _train(steps)(state, _batch())
    halved, metrics = _train(steps)(half, _batch())
    np.testing.assert_allclose(float(metrics["learning_rate"]), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(learning_rate(halved.opt_state)), 5e-4, rtol=1e-6)
    d_full = jax.tree.map(lambda a, b: a - b, full.params, state.params)
    d_half = jax.tree.map(lambda a, b: a - b, halved.params, state.params)
    # Adam's first step moves each weight by ~lr*sign(g): halving lr halves the move.
    for f, h in zip(jax.tree.leaves(d_full), jax.tree.leaves(d_half)):
        np.testing.assert_allclose(h, f / 2, rtol=1e-3, atol=1e-7)


def test_the_optimizer_moves_weights_by_the_schedules_rate():
    # Adam's first update is ~lr * sign(g) per weight: with lr 1e-3 no weight moves more.
    # (An optimizer built with 1.0 whose injected rate the step overwrote would show 1.0.)
    state, steps = tiny_setup(model_cfg=NO_DROPOUT, optim_cfg=OptimConfig(learning_rate=1e-3))
    new, _ = _train(steps)(state, _batch())
    moves = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new.params, state.params)
    assert max(jax.tree.leaves(moves)) == pytest.approx(1e-3, rel=1e-2)


def _assert_bit_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("poison", ["lr_scale_inf", "nan_in_batch"])
def test_a_nonfinite_update_keeps_the_whole_state(poison):
    cfg = ModelConfig(conv_filters=(4,), convs_per_block=1, dropout=0.1, dense=(),
                      batch_norm=True, num_classes=3)
    state, steps = tiny_setup(model_cfg=cfg, ema=0.5)
    state, _ = _train(steps)(state, _batch())  # a step in, so every part is non-trivial
    batch = _batch()
    if poison == "lr_scale_inf":
        state = state.replace(opt_state=with_lr_scale(state.opt_state, jnp.inf))
    else:  # a NaN input: float pixels, so normalise-then-NaN reaches the loss
        steps_cfg = steps.config
        nan_norm = Normalization((jnp.nan,), (0.0,))
        steps = type(steps)(config=StepConfig(**{**steps_cfg.__dict__,
                                                 "normalization": nan_norm}),
                            train=None, eval=None, predict=None)
    new, metrics = _train(steps)(state, batch)
    assert float(metrics["nonfinite"]) == 1.0
    _assert_bit_identical(new, state)  # params, opt_state, batch_stats, EMA, rng and step


def test_ema_follows_params():
    state, steps = tiny_setup(ema=0.5)
    new, _ = _train(steps)(state, _batch())
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, state.ema_params, new.params)
    for e, x in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(e, x, rtol=1e-6, atol=1e-7)


def test_l2_is_keras_kernel_regularizer_and_is_in_the_logged_loss():
    # With plain SGD the extra update is exactly lr * d(l2 * w**2)/dw = lr * 2 * l2 * w, on
    # kernels only; the logged loss includes the penalty, as Keras 3's `loss` does.
    sgd = OptimConfig(name="sgd", momentum=0.0, learning_rate=0.1)
    state, plain = tiny_setup(optim_cfg=sgd)
    _, with_l2 = tiny_setup(optim_cfg=sgd, l2=0.01)
    a, ma = _train(plain)(state, _batch())
    b, mb = _train(with_l2)(state, _batch())
    penalty = 0.01 * float(l2_penalty(state.params))
    assert penalty > 0
    np.testing.assert_allclose(float(mb["loss_sum"]) / 16,
                               float(ma["loss_sum"]) / 16 + penalty, rtol=1e-6)
    k0 = state.params["dense0"]["kernel"]
    np.testing.assert_allclose(b.params["dense0"]["kernel"] - a.params["dense0"]["kernel"],
                               -0.1 * 2 * 0.01 * k0, atol=1e-6)
    np.testing.assert_allclose(b.params["dense0"]["bias"], a.params["dense0"]["bias"], atol=1e-7)
    # val_loss too (Keras: loss = val_loss = cross-entropy + penalty on the same weights).
    batch = _batch()
    e_plain = eval_step(plain.config, state.params, state.batch_stats, batch)
    e_l2 = eval_step(with_l2.config, state.params, state.batch_stats, batch)
    np.testing.assert_allclose(float(e_l2["loss_sum"]) / 16,
                               float(e_plain["loss_sum"]) / 16 + penalty, rtol=1e-6)


def test_eval_step_masks_padding():
    state, steps = tiny_setup()
    batch = _batch(8)
    full = eval_step(steps.config, state.params, state.batch_stats, batch)
    mask = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32)
    half = eval_step(steps.config, state.params, state.batch_stats, {**batch, "mask": mask})
    first = eval_step(steps.config, state.params, state.batch_stats,
                      {"image": batch["image"][:4], "label": batch["label"][:4]})
    assert float(half["count"]) == 4 and float(full["count"]) == 8
    np.testing.assert_allclose(float(half["loss_sum"]), float(first["loss_sum"]), rtol=1e-5)
    np.testing.assert_allclose(float(half["correct"]), float(first["correct"]))


class InputRange(__import__("flax").linen.Module):
    """Records the largest input it sees (as a logit) to compare train and eval inputs."""

    @__import__("flax").linen.compact
    def __call__(self, x, train: bool = False):
        bias = self.param("bias", lambda k: jnp.zeros(3))
        return jnp.zeros((x.shape[0], 3)) + jnp.max(x) + bias


def test_the_courses_generator_rescale_normalises_train_and_eval_alike():
    # ImageDataGenerator(rescale=1./255, horizontal_flip=True): the model must see the same
    # range in training, evaluation and prediction (it used to get pixel/255**2 in training).
    from convjax.optim import make_optimizer, make_schedule
    from convjax.steps import make_steps
    from convjax.train_state import init_train_state

    optim = OptimConfig()
    tx = make_optimizer(optim, make_schedule(optim, 1, 1))
    model = InputRange()
    state = init_train_state(model, tx, jax.random.key(0), (8, 8, 3))
    steps = make_steps(model=model, tx=tx,
                       augment=AugmentConfig(rescale=1 / 255, horizontal_flip=True))
    images = jnp.full((4, 8, 8, 3), 255, jnp.uint8)
    batch = {"image": images, "label": jnp.zeros(4, jnp.int32)}
    seen = {}
    apply = model.apply

    def spy(variables, x, train=False, **kw):
        seen["train" if train else "eval"] = float(jnp.max(x))
        return apply(variables, x, train=train, **kw)

    object.__setattr__(model, "apply", spy)
    train_step(steps.config, state, batch)
    eval_step(steps.config, state.params, state.batch_stats, batch)
    predict_step(steps.config, state.params, state.batch_stats, images)
    assert seen["train"] == pytest.approx(1.0) and seen["eval"] == pytest.approx(1.0)


def test_conflicting_normalisations_are_refused():
    from convjax.steps import make_steps

    state, steps = tiny_setup()
    with pytest.raises(ValueError, match="one place"):
        make_steps(model=steps.config.model, tx=steps.config.tx,
                   normalization=Normalization((1.0,), (0.0,)),
                   augment=AugmentConfig(rescale=1 / 255))
    del state
