import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.config import OptimConfig
from convjax.loop import fit
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import state_from_variables
from convjax.transfer import (
    Classifier,
    Head,
    init_classifier,
    make_partitioned_optimizer,
    trainable_labels,
)
from helpers import TinyBackbone, array_batches, tiny_arrays


def _setup(trainable):
    backbone = TinyBackbone()
    pretrained = backbone.init(jax.random.key(7), jnp.zeros((1, 8, 8, 3)))
    pretrained = jax.tree.map(lambda v: v + 0.1, pretrained)  # non-trivial BN statistics
    model = Classifier(backbone, Head(num_classes=3, hidden=(5,), dropout=0.1))
    variables = init_classifier(model, jax.random.key(0), (8, 8, 3), pretrained)
    optim = OptimConfig(learning_rate=1e-2)
    tx = make_partitioned_optimizer(make_optimizer(optim, make_schedule(optim, 6, 12)),
                                    variables["params"], trainable)
    state = state_from_variables(variables, tx, jax.random.key(1))
    mesh = make_mesh(jax.devices()[:1])
    state, _ = fit(state, array_batches(tiny_arrays(48), 8, mesh=mesh),
                   steps=make_steps(model=model, tx=tx), epochs=2, verbose=0, mesh=mesh)
    return pretrained, variables, state


def test_frozen_backbone_stays_bit_identical():
    pretrained, variables, state = _setup(trainable=("head",))
    for a, b in zip(jax.tree.leaves(pretrained["params"]),
                    jax.tree.leaves(state.params["backbone"])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(pretrained["batch_stats"]),
                    jax.tree.leaves(state.batch_stats["backbone"])):
        np.testing.assert_array_equal(a, b)  # inference-mode BN: statistics untouched
    head_before = variables["params"]["head"]["logits"]["kernel"]
    assert not np.array_equal(head_before, state.params["head"]["logits"]["kernel"])


def test_fine_tuning_unfreezes_only_the_named_block():
    pretrained, _, state = _setup(trainable=("head", "backbone/block2"))
    np.testing.assert_array_equal(pretrained["params"]["block1"]["kernel"],
                                  state.params["backbone"]["block1"]["kernel"])
    assert not np.array_equal(pretrained["params"]["block2"]["kernel"],
                              state.params["backbone"]["block2"]["kernel"])


def test_trainable_labels_and_errors():
    params = {"backbone": {"mixed9": {"k": 1}, "mixed10": {"k": 1}, "stem": {"k": 1}},
              "head": {"logits": {"k": 1}}}
    labels = trainable_labels(params, ("head", "backbone/mixed1*"))
    assert labels["head"]["logits"]["k"] == "train"
    assert labels["backbone"]["mixed10"]["k"] == "train"
    assert labels["backbone"]["mixed9"]["k"] == "freeze"
    with pytest.raises(ValueError, match="no parameter matches"):
        trainable_labels(params, ("decoder",))


def test_frozen_parameters_get_no_optimizer_state():
    params = {"backbone": {"w": jnp.ones((100,))}, "head": {"w": jnp.ones((3,))}}
    tx = make_partitioned_optimizer(optax.adam(1e-3), params, ("head",))
    sizes = sum(x.size for x in jax.tree.leaves(tx.init(params)))
    assert sizes < 100  # Adam moments only for the 3 head weights (+ counters)


def test_mismatched_backbone_variables_are_an_error():
    model = Classifier(TinyBackbone(), Head(num_classes=2))
    wrong = {"params": {"block1": {"kernel": jnp.zeros((3, 3, 3, 4)), "bias": jnp.zeros(4)}}}
    with pytest.raises(ValueError, match="do not fit TinyBackbone"):
        init_classifier(model, jax.random.key(0), (8, 8, 3), wrong)
