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
# # Convolutional networks on photos
#
# The course's CNN day, checked line by line: the slides' parameter arithmetic against
# `summary`, the receptive field growing with each conv + pool, then Cats vs Dogs from photo
# folders (`flow_from_directory`), a 1-block against a 2-block CNN, augmentation and dropout
# against overfitting, the learning curves, TensorBoard's logs read back and plotted, what the
# first layer learned, and a confusion matrix.
#
# Full scale: the shared 2,000 training and 1,000 validation photos at 64x64 (the course uses
# 150x150; 64x64 keeps three trainings within minutes on a 2-core CPU).
# `CONVJAX_NOTEBOOK_SMOKE=1` runs the same code on a few photos in seconds.

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

import flax.linen as nn
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convjax.augment import AugmentConfig, augment_batch
from convjax.callbacks import TensorBoard
from convjax.callbacks.timing import RunTimer
from convjax.config import ModelConfig, OptimConfig
from convjax.data import flow_from_directory, make_batch_source, to_arrays
from convjax.loop import fit, predict
from convjax.models import CNN
from convjax.models.layers import Conv2D, pool2x2
from convjax.models.summary import count_params, layer_table, summary
from convjax.normalize import RESCALE
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import init_train_state
from course import SMOKE, fresh_workdir, image_root, show_jpeg, table

SCALE = SimpleNamespace(  # what differs between full and smoke scale
    photos={"train": 8, "validation": 4},  # per class, smoke scale only
    size=32 if SMOKE else 64,  # training resolution
    batch_size=8 if SMOKE else 32,
    epochs=2 if SMOKE else 15,
    filters=8 if SMOKE else 32,  # the first block's filters (the second has twice as many)
    dense=16 if SMOKE else 128,
)
WORK = fresh_workdir("02_cnn")

# %% [markdown]
# ## 1. The slides' arithmetic, checked with `summary`
#
# A `Conv2D(32, (3, 3), padding="same")` on a 28x28x3 input keeps the 28x28 size and has
# (3 x 3 x 3 + 1) x 32 = 896 parameters: one 3x3x3 kernel and one bias per filter.


# %%
class OneConv(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return Conv2D(32, 3, "SAME", name="conv2d")(x)


print(summary(OneConv(), (28, 28, 3)))
(row,) = layer_table(OneConv(), (28, 28, 3))
assert row.output_shape == (28, 28, 32) and row.params == (3 * 3 * 3 + 1) * 32 == 896

# %% [markdown]
# The slides' MNIST model: Conv2D(32, 3x3, same) - MaxPooling2D(2) - Flatten - Dense(128) -
# Dense(10) on 28x28x1. Pooling and flattening have no parameters (and, here, no row: they
# are functions, not layers); the 2x2 pooling halves 28x28 to 14x14, so the first Dense sees
# 14 x 14 x 32 = 6,272 inputs.

# %%
mnist_cnn = CNN(ModelConfig(conv_filters=(32,), convs_per_block=1, padding="SAME",
                            dropout=0.0, dense=(128,), dense_dropout=0.0, num_classes=10))
print(summary(mnist_cnn, (28, 28, 1)))
by_hand = [("conv0_0", (3 * 3 * 1 + 1) * 32), ("dense0", (14 * 14 * 32 + 1) * 128),
           ("logits", (128 + 1) * 10)]
rows = layer_table(mnist_cnn, (28, 28, 1))
display(table(["layer", "by hand", "summary"],
              [[name, f"{n:,}", f"{r.params:,}"] for (name, n), r in zip(by_hand, rows)]))
assert [r.params for r in rows] == [n for _, n in by_hand]
assert sum(r.params for r in rows) == 804_554

# %% [markdown]
# ## 2. Receptive fields
#
# How many input pixels can one unit see? A 3x3 conv adds 2 x *jump* pixels to the field of
# the layer below (the *jump* being the distance, in input pixels, between neighbouring units);
# a 2x2 pooling with stride 2 adds 1 x jump and doubles the jump. So the field grows with every
# conv + pool block, and faster and faster.

# %%
def receptive_fields(layers):
    """(layer, jump, receptive field) after each "conv" (3x3, stride 1) or "pool" (2x2, /2)."""
    field, jump, rows = 1, 1, []
    for kind in layers:
        field += (3 - 1) * jump if kind == "conv" else (2 - 1) * jump
        jump *= 1 if kind == "conv" else 2
        rows.append((kind, jump, field))
    return rows


def field_by_gradient(layers, size=96):
    """The same, measured: the input pixels on which one central unit's gradient is non-zero
    (all-ones kernels and average pooling, so that no path cancels or is cut)."""
    def centre_unit(x):
        for kind in layers:
            if kind == "conv":
                x = jax.lax.conv_general_dilated(x, jnp.ones((3, 3, 1, 1)), (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
            else:
                x = pool2x2(x, "avg")
        return x[0, x.shape[1] // 2, x.shape[2] // 2, 0]

    grad = jax.grad(centre_unit)(jnp.ones((1, size, size, 1)))
    rows = np.nonzero(np.asarray(grad[0, :, :, 0]).any(axis=1))[0]
    return int(rows.max() - rows.min() + 1)


layers = ["conv", "pool"] * 4
computed = receptive_fields(layers)
display(table(["after", "jump", "receptive field", "measured by gradient"],
              [[f"block {i // 2 + 1}: {kind}", jump, f"{field}x{field}",
                field_by_gradient(layers[: i + 1])]
               for i, (kind, jump, field) in enumerate(computed)]))
assert all(field == field_by_gradient(layers[: i + 1])
           for i, (_, _, field) in enumerate(computed))

# %% [markdown]
# ## 3. Photos from folders: `flow_from_directory`
#
# Keras's `ImageDataGenerator().flow_from_directory` reads `<folder>/<class>/*.jpg`, resizes
# every photo to `target_size`, decodes it in colour (`"rgb"`) or grey (`"grayscale"`), and
# yields shuffled batches of `batch_size`. convjax keeps its arguments and its listing rules;
# batches are uint8 (the train step rescales on the device), and the order of each epoch is a
# function of the seed, so a run can be resumed exactly.

# %%
root, note = image_root("cats_vs_dogs-small.tar.gz", "cats_vs_dogs", SCALE.photos, WORK)
print(note)
size = (SCALE.size, SCALE.size)
train_flow = flow_from_directory(root / "train", target_size=size, color_mode="rgb",
                                 class_mode="binary", batch_size=SCALE.batch_size,
                                 shuffle=True, seed=0, cache_dir=not SMOKE)
val_flow = flow_from_directory(root / "validation", target_size=size, color_mode="rgb",
                               class_mode="binary", batch_size=SCALE.batch_size,
                               shuffle=False, cache_dir=not SMOKE)
grey_flow = flow_from_directory(root / "train", target_size=size, color_mode="grayscale",
                                class_mode="binary", batch_size=SCALE.batch_size, seed=0)
class_names = train_flow.class_names
images, labels = next(iter(train_flow))
grey_images, _ = next(iter(grey_flow))
print(f"classes {class_names}; a colour batch {images.shape} {images.dtype}, labels "
      f"{labels[:8]} ({labels.dtype}); a grey batch {grey_images.shape}")

fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
for i in range(8):
    axes[0, i].imshow(images[i % len(images)])
    axes[0, i].set_title(class_names[int(labels[i % len(labels)])], fontsize=9)
    axes[1, i].imshow(grey_images[i % len(grey_images), ..., 0], cmap="gray")
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(f"One shuffled batch at {size[0]}x{size[1]}: colour, and the same folder in grey")
show_jpeg(fig)

# %% [markdown]
# For training, the flow's source goes to `make_batch_source`, which keeps photos that fit
# in memory on the device (each step gathers its batch there), with the flow's batch size,
# seed and shuffling.

# %%
mesh = make_mesh()
train_batches = make_batch_source(train_flow.source, batch_size=train_flow.batch_size,
                                  seed=train_flow.seed, shuffle=train_flow.shuffle, mesh=mesh)
val_batches = make_batch_source(val_flow.source, batch_size=100, seed=0, shuffle=False,
                                mesh=mesh)
val_arrays = to_arrays(val_flow.source)
print(f"{train_batches.num_examples} training photos, {train_batches.steps_per_epoch} "
      f"batches per epoch; {val_batches.num_examples} validation photos")

# %% [markdown]
# ## 4. Augmentation, the lab's settings
#
# `ImageDataGenerator(rotation_range=20, width_shift_range=0.1, height_shift_range=0.1,
# shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")` becomes an
# `AugmentConfig` with the same fields, applied on the device inside the train step (a new
# draw at every step, from the state's RNG key). Beware a Keras quirk kept for fidelity:
# `shear_range` is in *degrees*, so 0.2 is a fifth of a degree, invisible. Shown at 150x150,
# the course's size.

# %%
AUG = AugmentConfig(rotation_range=20, width_shift_range=0.1, height_shift_range=0.1,
                    shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")
show_flow = flow_from_directory(root / "train", target_size=(150, 150), batch_size=3,
                                shuffle=True, seed=3)
photos, _ = next(iter(show_flow))
augment = jax.jit(augment_batch, static_argnums=0)
variants = [augment(AUG, jax.random.key(k), photos.astype(np.float32)) for k in range(5)]

fig, axes = plt.subplots(len(photos), 6, figsize=(10, 1.8 * len(photos)))
for i in range(len(photos)):
    axes[i, 0].imshow(photos[i])
    for k, batch in enumerate(variants):
        axes[i, k + 1].imshow(np.clip(np.asarray(batch[i]), 0, 255).astype(np.uint8))
axes[0, 0].set_title("original", fontsize=9)
for k in range(5):
    axes[0, k + 1].set_title(f"draw {k + 1}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
show_jpeg(fig)

# %% [markdown]
# ## 5. One block, two blocks, and two blocks with dropout and augmentation
#
# Three CNNs, Adam at 1e-3, the same photos and epochs:
#
# - **1 block**: Conv(32) - MaxPool - Dense(128) - Dense(2)
# - **2 blocks**: Conv(32) - MaxPool - Conv(64) - MaxPool - Dense(128) - Dense(2)
# - **2 blocks + dropout + augmentation**: Dropout(0.25) after each block, Dropout(0.5)
#   after Dense(128), and the augmentation above. It starts from the very same weights as
#   "2 blocks" (dropout has no parameters), so the curves differ only by regularisation.
#
# Two classes with two logits and softmax cross-entropy is the same model as one sigmoid
# output with binary cross-entropy. Each run writes TensorBoard logs with weight histograms.

# %%
def cnn_config(blocks: int, dropout: bool) -> ModelConfig:
    filters = tuple(SCALE.filters * 2**b for b in range(blocks))
    return ModelConfig(conv_filters=filters, convs_per_block=1, dropout=0.25 if dropout else 0.0,
                       dense=(SCALE.dense,), dense_dropout=0.5 if dropout else 0.0,
                       num_classes=2, conv_impl="im2col", pool_impl="reshape")


optim = OptimConfig(name="adam", learning_rate=1e-3)
spe = train_batches.steps_per_epoch
tx = make_optimizer(optim, make_schedule(optim, spe, spe * SCALE.epochs))
init = jax.jit(init_train_state, static_argnums=(0, 1, 3))  # one compile, not one per op
runs = {}


def train_cnn(name, cfg, augment=None, state0=None):
    model = CNN(cfg)
    if state0 is None:
        state0 = init(model, tx, jax.random.key(0), train_batches.image_shape)
    steps = make_steps(model=model, tx=tx, augment=augment)
    timer = RunTimer()
    board = TensorBoard(WORK / "tb" / name, histogram_freq=1)
    state, history = fit(state0, train_batches, steps=steps, epochs=SCALE.epochs,
                         validation=val_batches, callbacks=[board, timer], verbose=0)
    runs[name] = SimpleNamespace(model=model, steps=steps, state0=state0, state=state,
                                 history=history.history, timer=timer)
    h = history.history
    print(f"{name}: val_accuracy {h['val_accuracy'][-1]:.3f} after {SCALE.epochs} epochs, "
          f"{timer.summary(train_batches.batch_size)['train_seconds'] / SCALE.epochs:.1f} s "
          f"per epoch (+{timer.compile_seconds:.1f} s compiling)")


print(summary(CNN(cnn_config(2, True)), train_batches.image_shape))
train_cnn("1 block", cnn_config(1, False))
train_cnn("2 blocks", cnn_config(2, False))
train_cnn("2 blocks + dropout + aug", cnn_config(2, True), AUG, runs["2 blocks"].state0)

# %%
rows = []
for name, run in runs.items():
    h = run.history
    per_epoch = run.timer.summary(train_batches.batch_size)["train_seconds"] / SCALE.epochs
    rows.append([name, f"{count_params(run.state.params):,}", h["accuracy"][-1],
                 h["val_accuracy"][-1], max(h["val_accuracy"]),
                 h["val_loss"][-1] - min(h["val_loss"]), f"{per_epoch:.1f}"])
display(table(["model", "parameters", "train acc (running)", "val acc", "best val acc",
               "val_loss above its minimum", "s / epoch"], rows))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
for (name, run), colour in zip(runs.items(), ["C0", "C1", "C2"]):
    epochs = np.arange(1, SCALE.epochs + 1)
    ax1.plot(epochs, run.history["loss"], "--", color=colour)
    ax1.plot(epochs, run.history["val_loss"], "o-", color=colour, label=name)
    ax2.plot(epochs, run.history["accuracy"], "--", color=colour)
    ax2.plot(epochs, run.history["val_accuracy"], "o-", color=colour, label=name)
ax1.set(xlabel="epoch", ylabel="loss", title="Loss (dashed: training, dots: validation)")
ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (dashed: training)")
ax1.legend()
plt.show()

# %% [markdown]
# ## 6. TensorBoard's logs, read back
#
# `TensorBoard` writes Keras's layout: `train/` and `validation/` runs with `epoch_loss`,
# `epoch_accuracy` and `epoch_learning_rate`, and, with `histogram_freq=1`, a histogram of
# every weight at every epoch. `tensorboard --logdir <workdir>/tb` shows them; here we read
# the event files with TensorBoard's own reader and plot them.

# %%
def events(name, split):
    reader = EventAccumulator(str(WORK / "tb" / name / split),
                              size_guidance={"scalars": 0, "histograms": 0})
    reader.Reload()
    return reader


fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for (name, run), colour in zip(runs.items(), ["C0", "C1", "C2"]):
    for split, style in (("train", "--"), ("validation", "o-")):
        scalars = events(name, split).Scalars("epoch_loss")
        steps_logged = [e.step for e in scalars]
        values = [e.value for e in scalars]
        axes[0].plot(steps_logged, values, style, color=colour,
                     label=f"{name} ({split})" if split == "validation" else None)
        key = "loss" if split == "train" else "val_loss"
        assert np.allclose(values, run.history[key], rtol=1e-6)  # the History's numbers
axes[0].set(xlabel="epoch (TensorBoard step)", ylabel="epoch_loss",
            title="Scalars from the event files")
axes[0].legend(fontsize=8)

reader = events("2 blocks + dropout + aug", "train")
for ax, tag in zip(axes[1:], ["conv0_0/kernel/histogram", "dense0/kernel/histogram"]):
    histograms = reader.Histograms(tag)
    colours = plt.cm.viridis(np.linspace(0, 1, len(histograms)))
    for event, colour in zip(histograms, colours):
        value = event.histogram_value
        edges = [value.min, *value.bucket_limit[:-1]]
        ax.plot(edges, np.asarray(value.bucket) / value.num, color=colour,
                label=f"epoch {event.step}" if event.step in (0, histograms[-1].step) else None)
    ax.set(title=tag.removesuffix("/histogram") + " (2 blocks + dropout + aug)",
           xlabel="weight", ylabel="fraction of weights")
    ax.legend(fontsize=8)
plt.show()
print("tags written for the training run:", len(reader.Tags()["scalars"]), "scalars,",
      len(reader.Tags()["histograms"]), "histograms")

# %% [markdown]
# ## 7. What the first layer learned
#
# The first conv layer's 3x3x3 kernels, each scaled to the full colour range, and the
# activations (after ReLU) of a few filters of both conv layers on one validation photo.

# %%
best = runs["2 blocks + dropout + aug"]
kernels = np.asarray(best.state.params["conv0_0"]["kernel"])  # (3, 3, 3, filters)
filters = kernels.shape[-1]
fig, axes = plt.subplots(2, (filters + 1) // 2, figsize=(0.7 * filters, 1.8))
for f, ax in enumerate(axes.T.flat):
    k = kernels[..., f]
    ax.imshow((k - k.min()) / (k.max() - k.min() + 1e-12))
    ax.axis("off")
fig.suptitle("First-layer filters (3x3, RGB)")
plt.show()

photo = val_arrays.images[len(val_arrays) // 2]
_, captured = best.model.apply({"params": best.state.params}, RESCALE(photo[None]),
                               train=False, capture_intermediates=True, mutable=["intermediates"])
maps = {name: np.maximum(np.asarray(captured["intermediates"][name]["__call__"][0][0]), 0)
        for name in ("conv0_0", "conv1_0")}
fig, axes = plt.subplots(2, 7, figsize=(13, 4))
for row, (name, fmap) in enumerate(maps.items()):
    axes[row, 0].imshow(photo)
    axes[row, 0].set_title("photo", fontsize=9)
    for i in range(6):
        axes[row, i + 1].imshow(fmap[..., i], cmap="magma")
        axes[row, i + 1].set_title(f"{name} #{i} {fmap.shape[0]}x{fmap.shape[1]}", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
show_jpeg(fig)

# %% [markdown]
# ## 8. Confusion matrix
#
# `predict` returns class probabilities (Keras's `model.predict`); the confusion matrix counts
# each validation photo of the regularised CNN by its true class (rows) and its predicted
# class (columns). Its diagonal over the total is the validation accuracy of the last epoch.

# %%
probs = predict(best.state.params, best.state.batch_stats, val_arrays.images, best.steps)
predicted = probs.argmax(axis=1)
matrix = np.zeros((2, 2), int)
np.add.at(matrix, (val_arrays.labels, predicted), 1)
accuracy = np.trace(matrix) / matrix.sum()
assert np.isclose(accuracy, best.history["val_accuracy"][-1])

fig, ax = plt.subplots(figsize=(3.8, 3.4))
ax.imshow(matrix, cmap="Blues")
for (i, j), count in np.ndenumerate(matrix):
    ax.text(j, i, str(count), ha="center", va="center", fontsize=12,
            color="white" if count > matrix.max() / 2 else "black")
ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=class_names, yticklabels=class_names,
       xlabel="predicted", ylabel="true", title=f"2 blocks + dropout + aug: {accuracy:.3f}")
plt.show()
for i, name in enumerate(class_names):
    print(f"{name}: {matrix[i, i]} of {matrix[i].sum()} right "
          f"(recall {matrix[i, i] / max(matrix[i].sum(), 1):.3f})")

# %%
print(f"jax {jax.__version__}, {jax.devices()[0].platform} x{jax.device_count()}, "
      f"{os.cpu_count()} CPU cores; this notebook ran in {time.perf_counter() - T0:.0f} s "
      f"at {'smoke' if SMOKE else 'full'} scale")
