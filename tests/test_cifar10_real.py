"""Slow: the course CNN really learns CIFAR-10 (shared JPEG folders), in well under a minute.

Uses the 10,000 test-folder images (decoding the 50,000 training ones would dominate the
runtime): 8,000 to train for 2 epochs, 2,000 held out. Chance is 10%; the full main job's
numbers are in the README.
"""

import jax
import pytest

from convjax.config import ModelConfig, OptimConfig
from convjax.data import load_image_folder, split_validation
from convjax.data.device_batches import DeviceArrays
from convjax.loop import evaluate, fit
from convjax.models import CNN
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import init_train_state


@pytest.mark.slow
def test_course_cnn_learns_real_cifar10_subset(shared_archive, tmp_path):
    root = shared_archive("cifar10-jpg.tar.gz") / "cifar10" / "test"
    data = load_image_folder(root, (32, 32), "rgb", cache_dir=tmp_path)
    assert len(data) == 10_000 and len(data.class_names) == 10
    train, held_out = split_validation(data, 0.2, seed=0)
    model = CNN(ModelConfig(num_classes=10))  # "auto" layers: the fastest on this backend
    optim = OptimConfig()
    tx = make_optimizer(optim, make_schedule(optim, 62, 124))
    state = init_train_state(model, tx, jax.random.key(0), (32, 32, 3))
    mesh = make_mesh(jax.devices()[:1])
    steps = make_steps(model=model, tx=tx)
    state, history = fit(state, DeviceArrays(train, batch_size=128, seed=0, mesh=mesh),
                         steps=steps, epochs=2, verbose=0, mesh=mesh)
    held_out = DeviceArrays(held_out, batch_size=500, seed=0, mesh=mesh, shuffle=False)
    logs = evaluate(state.params, state.batch_stats, held_out, steps, mesh=mesh)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert logs["accuracy"] > 0.30, logs  # chance is 0.10
