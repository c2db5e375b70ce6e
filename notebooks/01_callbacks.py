# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training callbacks, the functional way
#
# The course's callbacks lab, rebuilt on convjax. In Keras a callback holds the model and
# changes it (`model.stop_training = True`). Here the train state is an immutable pytree whose
# buffers the compiled step consumes, so a callback **observes** (plain numbers in `logs`, a
# read-only view of the run as `self.loop`) and **asks** (`self.loop.request_stop()`); `fit`
# carries the request out, in one place. We will:
#
# 1. write the lab's `EarlyStopping` against that protocol and check that it stops where
#    `convjax.callbacks.EarlyStopping` stops, on hand-made curves and on a real run;
# 2. keep the best and the latest checkpoint, and let `ReduceLROnPlateau` lower a cosine
#    schedule (the rate is read back from the History);
# 3. crash a run on purpose, rerun it, and get the uninterrupted run's weights bit for bit.
#
# Full scale: 3,000 CIFAR-10 images (2,400 to train, 600 to validate) and a small CNN, so that
# it overfits within minutes on a 2-core CPU and the callbacks have something to react to.
# `CONVJAX_NOTEBOOK_SMOKE=1` runs the same code on a few images in seconds.

# %%
import os
import time
import warnings

T0 = time.perf_counter()
# tqdm.auto (convjax's progress bar) warns in a kernel without ipywidgets; no bars here anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

import jax

# Every differently-shaped random draw (each conv kernel's init) compiles far faster on CPU
# with the classic threefry scheme; the numbers differ, the method does not.
jax.config.update("jax_threefry_partitionable", False)

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from convjax import checkpoint
from convjax.callbacks import (
    BackupAndRestore,
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from convjax.callbacks.base import LoopView, Stop
from convjax.config import ModelConfig, OptimConfig
from convjax.data import load_image_folder, make_batch_source, split_validation
from convjax.loop import evaluate, fit
from convjax.models import CNN
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import init_train_state
from course import SMOKE, fresh_workdir, image_root, table

SCALE = SimpleNamespace(  # what differs between full and smoke scale
    images=16 if SMOKE else 300,  # per class (10 classes), before the validation split
    batch_size=16 if SMOKE else 64,
    filters=(8, 16) if SMOKE else (32, 64),  # one 3x3 conv + 2x2 max-pool per block
    dense=(32,) if SMOKE else (128,),
    epochs=8 if SMOKE else 30,  # the most the early-stopping run may train
    patience=2 if SMOKE else 3,
    plateau_epochs=5 if SMOKE else 20,
    plateau_patience=1 if SMOKE else 2,
    resume_epochs=3,
)
WORK = fresh_workdir("01_callbacks")

# %% [markdown]
# ## Data, model, optimizer: built once
#
# The compiled steps belong to `make_steps`, and every `fit` below reuses them: one compile
# for the whole notebook. `fit` never changes the state it is given (it trains a copy), so
# every run starts from the same `state0`.

# %%
# The pool: CIFAR-10's test/ folder, 10,000 images (the quickest to decode; which images
# does not matter here: this notebook compares callbacks, not models).
root, note = image_root("cifar10-jpg.tar.gz", "cifar10", {"test": SCALE.images}, WORK,
                        synthetic_classes=tuple(f"class{k}" for k in range(10)))
print(note)
pool = load_image_folder(root / "test", (32, 32), cache_dir=not SMOKE)  # decoded once, cached
pool = pool.sample(10 * SCALE.images, seed=0)
train, val = split_validation(pool, 0.2, seed=0)
print(f"{len(train)} training and {len(val)} validation images, {len(pool.class_names)} classes")

mesh = make_mesh()
train_batches = make_batch_source(train, batch_size=SCALE.batch_size, seed=0, mesh=mesh)
val_batches = make_batch_source(val, batch_size=200, seed=0, mesh=mesh, shuffle=False)
spe = train_batches.steps_per_epoch

model = CNN(ModelConfig(conv_filters=SCALE.filters, convs_per_block=1, dropout=0.0,
                        dense=SCALE.dense, dense_dropout=0.0, num_classes=10,
                        conv_impl="im2col", pool_impl="reshape"))  # same function as "auto"
optim = OptimConfig(name="adam", learning_rate=1e-3, schedule="cosine")
schedule = make_schedule(optim, spe, spe * max(SCALE.epochs, SCALE.plateau_epochs))
tx = make_optimizer(optim, schedule)
steps = make_steps(model=model, tx=tx)
# Initialising under jit compiles one program instead of one per operation.
state0 = jax.jit(init_train_state, static_argnums=(0, 1, 3))(
    model, tx, jax.random.key(0), train.image_shape)


def same(a, b) -> bool:
    """Bit-for-bit equality of two pytrees of arrays (RNG keys compared by their bits)."""
    def bits(x):
        return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    la, lb = jax.tree.leaves(jax.tree.map(bits, a)), jax.tree.leaves(jax.tree.map(bits, b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# %% [markdown]
# ## 1. The lab's EarlyStopping
#
# Keras's rules, written out: epochs before `start_from_epoch` are ignored; an epoch
# *improves* when it beats the best value so far by more than `min_delta` (in the direction
# `mode` says); an improvement resets the patience counter only if it also beats `baseline`;
# training stops once `patience` epochs in a row have not; with `restore_best_weights` the
# best epoch's weights are put back at the end. The weights are a host copy
# (`self.loop.snapshot()`): the loop hands the device buffers to the next step.


# %%
class LabEarlyStopping(Callback):
    """Stop training when `monitor` has stopped improving."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        if mode == "auto":  # accuracies go up, losses go down
            mode = "max" if ("acc" in monitor or "auc" in monitor) else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.patience, self.baseline = patience, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch

    def improves(self, value, reference) -> bool:
        """Better than `reference` by more than `min_delta` (anything beats None)."""
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self.wait, self.best, self.best_epoch, self.stopped_epoch = 0, None, 0, 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.loop.snapshot()
        self.wait += 1
        if self.improves(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.loop.snapshot()
            if self.baseline is None or self.improves(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.loop.request_stop()

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.loop.request_params(*self.best_weights)


# %% [markdown]
# ### Hand-made curves
#
# A callback only needs `logs` and `self.loop`, so it can be driven without training: feed
# both implementations the same curve and see at which epoch each asks to stop.


# %%
def stop_epoch(callback, curve, monitor="val_loss"):
    """The epoch at which `callback` asks to stop on this curve of `monitor`, or None."""
    run = SimpleNamespace(state=None, epochs=len(curve), steps_per_epoch=1, epoch=0,
                          step_in_epoch=0, stop_training=False, resumed=False,
                          nonfinite_steps=0)
    view = LoopView(run)
    callback.set_loop(view)
    callback.on_train_begin()
    for epoch, value in enumerate(curve):
        callback.on_epoch_end(epoch, {monitor: value})
        if any(isinstance(r, Stop) for r in view.take_requests()):
            return epoch
    return None


falling_then_rising = [1.0, 0.8, 0.7, 0.69, 0.72, 0.71, 0.75, 0.6]
cases = [
    ("patience=2", {"patience": 2}, falling_then_rising),
    ("min_delta=0.05, patience=1", {"min_delta": 0.05, "patience": 1}, falling_then_rising),
    ("patience=0", {"patience": 0}, falling_then_rising),
    ("baseline=0.65, patience=3", {"baseline": 0.65, "patience": 3}, falling_then_rising),
    ("start_from_epoch=4, patience=1", {"start_from_epoch": 4, "patience": 1},
     falling_then_rising),
    ("val_accuracy, mode=max, patience=1", {"monitor": "val_accuracy", "mode": "max",
     "patience": 1}, [0.5, 0.6, 0.58, 0.61, 0.6, 0.59]),
]
rows = []
for label, kwargs, curve in cases:
    monitor = kwargs.get("monitor", "val_loss")
    ours = stop_epoch(LabEarlyStopping(**kwargs), curve, monitor)
    theirs = stop_epoch(EarlyStopping(**kwargs), curve, monitor)
    assert ours == theirs, (label, ours, theirs)
    rows.append([label, curve, ours, theirs])
display(table(["arguments", "curve", "lab stops at epoch", "convjax stops at epoch"], rows))

# %% [markdown]
# ### On a real run, side by side
#
# Both callbacks sit in the same `fit`, see the same `logs` and keep their own counters.
# Whichever asks first stops the run, so if the two disagreed, one of them would show a
# different (or no) stopping epoch.

# %%
es_args = dict(monitor="val_loss", min_delta=1e-3, patience=SCALE.patience, mode="min",
               baseline=None, restore_best_weights=True, start_from_epoch=2)
lab, library = LabEarlyStopping(**es_args), EarlyStopping(**es_args)
state, history = fit(state0, train_batches, steps=steps, epochs=SCALE.epochs,
                     validation=val_batches, callbacks=[lab, library], verbose=0)
h = history.history
print(f"trained {len(history.epoch)} of at most {SCALE.epochs} epochs")
display(table(["", "stopped at epoch", "best epoch", "best val_loss"],
              [["lab EarlyStopping", lab.stopped_epoch, lab.best_epoch, lab.best],
               ["convjax EarlyStopping", library.stopped_epoch, library.best_epoch,
                library.best]]))
assert (lab.stopped_epoch, lab.best_epoch) == (library.stopped_epoch, library.best_epoch)
assert same(lab.best_weights, library.best_weights)
assert same((state.params, state.batch_stats), library.best_weights)  # restored at the end
restored = evaluate(state.params, state.batch_stats, val_batches, steps)
print(f"val_loss of the returned weights: {restored['loss']:.6f} "
      f"(epoch {library.best_epoch}'s in the History: {h['val_loss'][library.best_epoch]:.6f})")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(history.epoch, h["loss"], "o-", label="loss (train)")
ax.plot(history.epoch, h["val_loss"], "o-", label="val_loss")
ax.axvline(library.best_epoch, color="g", ls="--", label=f"best epoch {library.best_epoch}")
if library.stopped_epoch:
    ax.axvline(library.stopped_epoch, color="r", ls=":",
               label=f"stopped at epoch {library.stopped_epoch}")
ax.axvspan(-0.5, es_args["start_from_epoch"] - 0.5, color="0.9", label="not monitored yet")
ax.set(xlabel="epoch (0-based, as callbacks count)", ylabel="loss", title="Early stopping")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. Best and latest checkpoints, and ReduceLROnPlateau on a cosine schedule
#
# Two `ModelCheckpoint`s: one keeps only the best weights (`save_best_only`), one overwrites
# the whole train state (optimizer, step, RNG key) every epoch, the one to continue from.
# `ReduceLROnPlateau` cannot replace the rate of a schedule (Keras refuses schedules); here it
# scales it: the optimizer state holds an `lr_scale` that multiplies the cosine, so the
# schedule keeps its shape at half the height after each reduction.

# %%
best_ckpt = ModelCheckpoint(WORK / "ckpt" / "best", monitor="val_loss", save_best_only=True,
                            save_weights_only=True)
latest_ckpt = ModelCheckpoint(WORK / "ckpt" / "latest")
plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=SCALE.plateau_patience,
                            min_lr=1e-6)
state2, history2 = fit(state0, train_batches, steps=steps, epochs=SCALE.plateau_epochs,
                       validation=val_batches, callbacks=[plateau, best_ckpt, latest_ckpt],
                       verbose=0)
h2 = history2.history
print("checkpoints:", sorted(str(p.relative_to(WORK)) for p in (WORK / "ckpt").iterdir()))

like = {"params": state0.params, "batch_stats": state0.batch_stats}
best_weights, best_meta = checkpoint.read_tree(WORK / "ckpt" / "best", like=like)
best_epoch = int(np.argmin(h2["val_loss"]))
print(f"best checkpoint: epoch {best_meta['epoch']} (1-based), val_loss {best_meta['value']:.6f}; "
      f"lowest val_loss in the History: epoch {best_epoch + 1}, {h2['val_loss'][best_epoch]:.6f}")
reloaded = evaluate(best_weights["params"], best_weights["batch_stats"], val_batches, steps)
print(f"the best checkpoint evaluated again: val_loss {reloaded['loss']:.6f}")
assert best_meta["epoch"] == best_epoch + 1

latest, latest_meta = checkpoint.read_tree(WORK / "ckpt" / "latest", like=state2)
print(f"latest checkpoint: epoch {latest_meta['epoch']}, optimizer step {int(latest.step)}")
assert same(latest, state2)

# %% [markdown]
# The rate each epoch trained with is in the History (`learning_rate`, the rate of the epoch's
# last update); dividing by the plain cosine at the same step gives the scale the callback set.

# %%
last_steps = [(e + 1) * spe - 1 for e in history2.epoch]  # each epoch's last update
cosine = np.array([float(schedule(s)) for s in last_steps])
used = np.array(h2["learning_rate"])
scale = used / cosine
reductions = [e for e in history2.epoch[1:] if scale[e] < scale[e - 1] * 0.99]
print("lr scale per epoch:", np.round(scale, 4).tolist())
print("ReduceLROnPlateau halved the rate at the end of epochs:", [e - 1 for e in reductions])

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
ax1.plot(history2.epoch, cosine, "k--", label="cosine schedule alone")
ax1.plot(history2.epoch, used, "o-", label="rate used (History)")
for e in reductions:
    ax1.axvline(e - 0.5, color="r", alpha=0.3)
ax1.set(yscale="log", xlabel="epoch", ylabel="learning rate", title="ReduceLROnPlateau x cosine")
ax1.legend()
ax2.plot(history2.epoch, h2["loss"], "o-", label="loss")
ax2.plot(history2.epoch, h2["val_loss"], "o-", label="val_loss")
ax2.axvline(best_epoch, color="g", ls="--", label="best checkpoint")
ax2.set(xlabel="epoch", title="The run")
ax2.legend()
plt.show()

# %% [markdown]
# ## 3. A run interrupted and resumed exactly
#
# `BackupAndRestore` asks `fit` to back the run up every `save_freq` batches (and at every
# epoch's end): the train state, the position inside the epoch, the epoch's running metric
# sums and every callback's state. A callback raises in the middle of the second epoch, two
# batches after a backup; rerunning the same `fit` restores the backup, redoes those two
# batches and finishes. The result is compared, bit for bit, with a run that was never interrupted.


# %%
class Crash(Callback):
    """Raises after the `at`-th training batch (counted from the start of training)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if self.loop.global_batch == self.at:
            raise RuntimeError(f"simulated crash after batch {self.at}")


save_freq = max(2, spe // 2)  # backups after every save_freq-th batch, counted from the start
crash_at = (spe // save_freq + 1) * save_freq + 2  # two batches after a backup, in epoch 2
backup_dir = WORK / "backup"
run_args = dict(steps=steps, epochs=SCALE.resume_epochs, validation=val_batches, verbose=0)

reference, reference_history = fit(state0, train_batches, **run_args)
try:
    fit(state0, train_batches, callbacks=[BackupAndRestore(backup_dir, save_freq=save_freq),
                                          Crash(crash_at)], **run_args)
except RuntimeError as crash:
    print(f"{crash}; backups every {save_freq} batches; {spe} batches per epoch")
print("backup left behind:", sorted(p.name for p in backup_dir.iterdir()))


class Resumed(Callback):
    def on_train_begin(self, logs=None):
        print(f"resumed: {self.loop.resumed}, at epoch {self.loop.epoch}, "
              f"batch {self.loop.step_in_epoch} of {self.loop.steps_per_epoch}")


resumed, resumed_history = fit(state0, train_batches, callbacks=[
    BackupAndRestore(backup_dir, save_freq=save_freq), Resumed()], **run_args)
print("backup directory removed after a normal end:", not backup_dir.exists())
print("params bit-identical to the uninterrupted run:", same(resumed.params, reference.params))
print("whole train state bit-identical:", same(resumed, reference))
print("History identical:", resumed_history.history == reference_history.history)
assert same(resumed, reference) and resumed_history.history == reference_history.history

# %%
print(f"jax {jax.__version__}, {jax.devices()[0].platform} x{jax.device_count()}, "
      f"{os.cpu_count()} CPU cores; this notebook ran in {time.perf_counter() - T0:.0f} s "
      f"at {'smoke' if SMOKE else 'full'} scale")
