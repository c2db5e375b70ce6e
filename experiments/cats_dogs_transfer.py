"""Cats vs Dogs by transfer learning: the course's three workflows plus a from-scratch baseline.

    frozen    pretrained backbone (inference mode) + new head; only the head trains
    features  backbone run once, features cached on disk, a small MLP trained on them
    finetune  from the frozen result, unfreeze the top blocks, continue at a low learning rate
    scratch   the course's small CNN (Conv16-Pool-Conv32-Pool-Conv64-Pool-Dense512), no pretraining

Command (offline, shared photos: 2,000 training and 1,000 validation images):
    python -m experiments.cats_dogs_transfer --workdir runs/transfer \
        --data ../shared/data/cats_vs_dogs-small.tar.gz

    --backbone inception_v3 --weights inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5
        runs the same with the course's InceptionV3 (mixed7 features, 150x150); without
        --weights it uses random weights and says so (no download here).

Expected: the README's transfer table (validation accuracy and wall time per workflow).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from convjax.config import ModelConfig, OptimConfig
from convjax.data import load_image_folder, resolve_folder
from convjax.data.batch_sources import make_batch_source
from convjax.features import cached_features
from convjax.loop import fit
from convjax.models import CNN
from convjax.normalize import IDENTITY, RESCALE
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import make_steps
from convjax.train_state import init_train_state, state_from_variables
from convjax.transfer import Classifier, Head, init_classifier, make_partitioned_optimizer
from experiments.transfer_backbones import BACKBONES


def adam(lr: float):
    """Adam at a constant rate (the course's transfer recipe)."""
    optim = OptimConfig(learning_rate=lr)
    return make_optimizer(optim, make_schedule(optim, 1, 1))


def run_fit(model, state, tx, train, val, epochs, normalization, batch_size=32, verbose=1):
    """fit() with the model's steps; returns the final state and validation history."""
    mesh = make_mesh()
    batches = make_batch_source(train, batch_size=batch_size, seed=0, mesh=mesh)
    val_batches = make_batch_source(val, batch_size=batch_size, seed=0, mesh=mesh,
                                    shuffle=False)
    steps = make_steps(model=model, tx=tx, normalization=normalization)
    t0 = time.perf_counter()
    state, history = fit(state, batches, steps=steps, validation=val_batches, epochs=epochs,
                         verbose=verbose, mesh=mesh)
    seconds = time.perf_counter() - t0
    return state, {"val_accuracy": history.history["val_accuracy"],
                   "seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / epochs, 1)}


def frozen_and_finetune(bb, train, val, args) -> tuple[dict, dict]:
    model = Classifier(bb.model, Head(num_classes=2, hidden=bb.head_hidden, dropout=0.2))
    variables = init_classifier(model, jax.random.key(0), train.image_shape, bb.variables)
    tx = make_partitioned_optimizer(adam(1e-3), variables["params"], ("head",))
    state = state_from_variables(variables, tx, jax.random.key(1))
    state, frozen = run_fit(model, state, tx, train, val, args.epochs, bb.preprocess)
    # Fine-tuning: same model, more trainable paths, a 10x lower rate, fresh optimizer state.
    tx = make_partitioned_optimizer(adam(1e-4), state.params, ("head", *bb.finetune_paths))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    state = state_from_variables(variables, tx, jax.random.key(2))
    _, finetune = run_fit(model, state, tx, train, val, args.finetune_epochs, bb.preprocess)
    return frozen, finetune


def features_mlp(bb, train, val, args) -> dict:
    t0 = time.perf_counter()
    cache = Path(args.workdir) / "features"
    f_train, hit = cached_features(train, bb.model, bb.variables, bb.preprocess, cache)
    f_val, _ = cached_features(val, bb.model, bb.variables, bb.preprocess, cache)
    extract_s = time.perf_counter() - t0
    head = Head(num_classes=2, hidden=(256,), dropout=0.5)
    tx = adam(1e-3)
    state = init_train_state(head, tx, jax.random.key(0), f_train.image_shape)
    # The features are already the backbone's outputs: nothing to normalise.
    _, result = run_fit(head, state, tx, f_train, f_val, args.features_epochs, IDENTITY,
                        verbose=0)
    result.update(extract_seconds=round(extract_s, 1), features_from_cache=hit)
    return result


def scratch_cnn(train, val, args) -> dict:
    cfg = ModelConfig(conv_filters=(16, 32, 64), convs_per_block=1, dropout=0.0,
                      dense=(512,), dense_dropout=0.0, num_classes=2)
    model, tx = CNN(cfg), adam(1e-3)
    state = init_train_state(model, tx, jax.random.key(0), train.image_shape)
    _, result = run_fit(model, state, tx, train, val, args.scratch_epochs, RESCALE)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data", required=True, help="cats_vs_dogs folder or .tar.gz")
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(BACKBONES))
    parser.add_argument("--weights", help="InceptionV3 Keras weight file (.h5)")
    parser.add_argument("--workflows", default="features,frozen,scratch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--features-epochs", type=int, default=20)
    parser.add_argument("--scratch-epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=0, help="use N photos per split (smoke)")
    args = parser.parse_args()
    bb = BACKBONES[args.backbone](args.weights)
    root = resolve_folder(args.data)
    root = root / "cats_vs_dogs" if (root / "cats_vs_dogs").is_dir() else root
    train = load_image_folder(root / "train", bb.image_size).sample(args.limit, 0)
    val = load_image_folder(root / "validation", bb.image_size).sample(args.limit, 0)
    print(f"{args.backbone} ({bb.note}); train {len(train)}, validation {len(val)} "
          f"at {bb.image_size}", flush=True)
    results = {"backbone": args.backbone, "weights": bb.note, "args": vars(args)}
    workflows = args.workflows.split(",")
    if "features" in workflows:
        results["features"] = features_mlp(bb, train, val, args)
    if "frozen" in workflows:
        results["frozen"], results["finetune"] = frozen_and_finetune(bb, train, val, args)
    if "scratch" in workflows:
        scratch_train = load_image_folder(root / "train", (150, 150)).sample(args.limit, 0)
        scratch_val = load_image_folder(root / "validation", (150, 150)).sample(args.limit, 0)
        results["scratch"] = scratch_cnn(scratch_train, scratch_val, args)
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results_{args.backbone}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "args"}, indent=2))


if __name__ == "__main__":
    main()
