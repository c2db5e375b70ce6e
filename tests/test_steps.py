import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.augment import AugmentConfig
from convjax.config import ModelConfig, OptimConfig
from convjax.losses import l2_penalty
from convjax.models import CNN
from convjax.normalize import Normalization
from convjax.optim import learning_rate, with_lr_scale
from convjax.steps import StepConfig, eval_step, predict_step, train_step, variables
from helpers import TINY_MODEL as TINY_MODEL_CFG
from helpers import tiny_arrays, tiny_setup

NO_DROPOUT = ModelConfig(conv_filters=(4,), convs_per_block=1, dropout=0.0, dense=(),
                         num_classes=3)
NO_DROPOUT_MODEL, TINY_MODEL = CNN(NO_DROPOUT), CNN(TINY_MODEL_CFG)


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


def test_k_accumulated_batches_equal_one_k_times_larger_batch():
    # SGD with momentum, a model without batch norm or dropout: two updates from 2 x 8
    # examples each equal two updates from the 16 at once (the mean of equal-size means is
    # the mean). Tolerance: float32 rounding of the running mean, 1e-6.
    def sgd(k):
        return OptimConfig(name="sgd", learning_rate=0.1, momentum=0.9,
                           gradient_accumulation_steps=k)

    batch = _batch(16)
    halves = [{k: v[:8] for k, v in batch.items()}, {k: v[8:] for k, v in batch.items()}]
    state, big = tiny_setup(model_cfg=NO_DROPOUT, optim_cfg=sgd(1))
    one = state
    for _ in range(2):
        one, _ = _train(big)(one, batch)
    _, small = tiny_setup(model_cfg=NO_DROPOUT, optim_cfg=sgd(2))
    acc = state.replace(opt_state=small.config.tx.init(state.params))
    for i in range(4):
        before = acc.params
        acc, metrics = _train(small)(acc, halves[i % 2])
        moved = any(not np.array_equal(a, b) for a, b in
                    zip(jax.tree.leaves(before), jax.tree.leaves(acc.params)))
        assert moved == (i % 2 == 1)  # params change only at the end of each window
        np.testing.assert_allclose(float(metrics["learning_rate"]), 0.1, rtol=1e-6)
    assert int(acc.step) == 4 and int(one.step) == 2  # the step counts batches
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(acc.params)):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


def test_class_weights_weight_the_training_loss_as_keras_does_by_hand():
    # Keras: loss = sum_i w[y_i] * ce_i / n (not / sum of weights); accuracy unweighted
    # (metrics=["accuracy"]); evaluation unweighted (class_weight is for training only).
    weights = (0.5, 2.0, 3.0)
    sgd = OptimConfig(name="sgd", momentum=0.0, learning_rate=0.1)
    state, plain = tiny_setup(model_cfg=NO_DROPOUT, optim_cfg=sgd)
    _, weighted = tiny_setup(model_cfg=NO_DROPOUT, optim_cfg=sgd, class_weights=weights)
    batch = _batch()
    logits = NO_DROPOUT_MODEL.apply({"params": state.params},
                                    plain.config.normalization(batch["image"]))
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    w = np.asarray(weights)[np.asarray(batch["label"])]
    _, m_plain = _train(plain)(state, batch)
    new, m_weighted = _train(weighted)(state, batch)
    assert float(m_weighted["count"]) == 16
    np.testing.assert_allclose(float(m_weighted["loss_sum"]) / 16, np.sum(w * ce) / 16,
                               rtol=1e-5)
    assert float(m_weighted["correct"]) == float(m_plain["correct"])
    e_plain = eval_step(plain.config, state.params, state.batch_stats, batch)
    e_weighted = eval_step(weighted.config, state.params, state.batch_stats, batch)
    assert float(e_weighted["loss_sum"]) == float(e_plain["loss_sum"])
    # Every class weighing 2: the gradient, so the SGD update, doubles.
    _, doubled = tiny_setup(model_cfg=NO_DROPOUT, optim_cfg=sgd, class_weights=(2.0,) * 3)
    a, _ = _train(plain)(state, batch)
    b, _ = _train(doubled)(state, batch)
    for p0, pa, pb in zip(*(jax.tree.leaves(s.params) for s in (state, a, b))):
        np.testing.assert_allclose(pb - p0, 2 * (pa - p0), rtol=1e-4, atol=1e-7)
    del new


def test_eval_counts_top_k_and_the_confusion_matrix_without_padding():
    state, steps = tiny_setup(num_classes=3, top_k=2)
    batch = _batch(8)
    mask = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
    sums = eval_step(steps.config, state.params, state.batch_stats, {**batch, "mask": mask})
    confusion = np.asarray(sums["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == float(sums["count"]) == 5
    assert np.trace(confusion) == float(sums["correct"])  # trace / count = accuracy
    logits = np.asarray(TINY_MODEL.apply({"params": state.params},
                                         steps.config.normalization(batch["image"][:5])))
    labels = np.asarray(batch["label"][:5])
    top2 = np.argsort(-logits, axis=-1)[:, :2]
    assert float(sums["top_k_correct"]) == np.sum(top2 == labels[:, None])
    # Three classes: top-5 would always be right, so it is not counted at all.
    _, five = tiny_setup(num_classes=3, top_k=5)
    assert five.config.top_k == 0 and "top_k_correct" not in five.zero_eval_sums()


def test_bfloat16_compute_tracks_float32_with_float32_params_and_loss():
    # 20 Adam steps of a tiny CNN with batch norm, bfloat16 compute vs float32: every step's
    # loss within 1% of float32's (measured: within 0.1%; the loss falls 1.146 -> 0.0338);
    # params, optimizer state and batch statistics stay float32; logits and loss are float32.
    bn = dataclasses.replace(NO_DROPOUT, batch_norm=True)
    batch, losses, states = _batch(), {}, {}
    for dtype in ("float32", "bfloat16"):
        state, steps = tiny_setup(model_cfg=dataclasses.replace(bn, dtype=dtype),
                                  optim_cfg=OptimConfig(learning_rate=1e-2))
        step = jax.jit(_train(steps))
        curve = []
        for _ in range(20):
            state, metrics = step(state, batch)
            assert metrics["loss_sum"].dtype == jnp.float32
            curve.append(float(metrics["loss_sum"] / metrics["count"]))
        losses[dtype], states[dtype] = curve, (state, steps)
    assert losses["bfloat16"][0] != losses["float32"][0]  # bfloat16 really computed
    assert losses["float32"][-1] < 0.5 * losses["float32"][0]  # it learned something
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=1e-2)
    state, steps = states["bfloat16"]
    for leaf in jax.tree.leaves((state.params, state.opt_state, state.batch_stats)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    logits = steps.config.model.apply(variables(state.params, state.batch_stats),
                                      steps.config.normalization(batch["image"]))
    assert logits.dtype == jnp.float32
    assert predict_step(steps.config, state.params, state.batch_stats,
                        batch["image"]).dtype == jnp.float32


def test_l2_on_the_dense_layers_leaves_conv_kernels_to_the_optimizer_alone():
    sgd = OptimConfig(name="sgd", momentum=0.0, learning_rate=0.1)
    state, plain = tiny_setup(optim_cfg=sgd)
    _, dense_l2 = tiny_setup(optim_cfg=sgd, l2=0.01, l2_layers="dense")
    (a, ma), (b, mb) = _train(plain)(state, _batch()), _train(dense_l2)(state, _batch())
    penalty = 0.01 * float(l2_penalty(state.params, "dense"))
    np.testing.assert_allclose(float(mb["loss_sum"]) / 16,
                               float(ma["loss_sum"]) / 16 + penalty, rtol=1e-6)
    np.testing.assert_allclose(b.params["conv0_0"]["kernel"], a.params["conv0_0"]["kernel"],
                               atol=1e-7)
    k0 = state.params["dense0"]["kernel"]
    np.testing.assert_allclose(b.params["dense0"]["kernel"] - a.params["dense0"]["kernel"],
                               -0.1 * 2 * 0.01 * k0, atol=1e-6)
