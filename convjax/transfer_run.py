"""`run_transfer(cfg, workdir)`: a transfer-learning run, phase by phase, through the runner.

Glue (I/O). The workdir is a run (`rundir.open_run`: start, continue, report a finished run,
refuse another config, `--restart`), and each enabled phase is a sub-run of its own:

    <workdir>/config.json, results.json          the whole run (results: every phase)
    <workdir>/<phase>/config.json, results.json  one phase: its backup/, history.csv,
                                                 tensorboard/, final/<step>/
    <workdir>/<phase>/...                        (features, frozen, finetune, scratch)

A rerun skips finished phases and resumes the unfinished one from its backup; SIGINT/SIGTERM
back up the phase and exit 130/143 (`stopping.stop_on_signals`). Data and weights load lazily:
only a phase that trains reads them, so a finished run trains and reads nothing.

Memory: the photos of a `data.limit` run are sampled before decoding, and every validation
(and feature-extraction) batch is at most `train.eval_batch_size` and no larger than the
split: a padded batch of 500 for 64 photos was the 7 GB peak of the old experiment.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from convjax import checkpoint
from convjax.backbones import BACKBONES, NATIVE_SIZE, Backbone
from convjax.cache import cache_root
from convjax.callbacks import BackupOptions
from convjax.callbacks.from_config import make_callbacks
from convjax.callbacks.timing import RunTimer
from convjax.config import config_to_dict
from convjax.config_fields import ConfigError
from convjax.data.arrays import ArraySource
from convjax.data.batch_sources import make_batch_source
from convjax.data.decode import DecodeSpec
from convjax.data.folder import list_image_files, resolve_folder
from convjax.data.folder_cache import resolve_cache_dir
from convjax.data.folder_source import FolderSource
from convjax.features import cached_features
from convjax.loop import TrainingInterrupted, fit
from convjax.models.summary import summary
from convjax.provenance import provenance
from convjax.rundir import FINAL, RESULTS, Run, open_run, write_json_atomic
from convjax.sharding import make_mesh, replicated
from convjax.stopping import Interrupted, stop_on_signals
from convjax.train import enable_compilation_cache, save_final
from convjax.transfer_config import TransferExperimentConfig
from convjax.transfer_phases import (
    PhasePlan,
    features_plan,
    finetune_plan,
    frozen_plan,
    scratch_plan,
)

DESCRIPTIONS = {
    "features": "backbone once, cached features, small MLP",
    "frozen": "frozen backbone + new head",
    "finetune": "from the frozen result, more paths trainable at a lower rate",
    "scratch": "the course's CNN, no pretraining",
}
SUMMARY_KEYS = ("val_accuracy", "best_val_accuracy", "val_loss", "epochs_run",
                "seconds_per_epoch", "compile_seconds", "validation_seconds", "train_seconds",
                "extract_seconds", "features_from_cache", "resumed")


def data_folder(cfg: TransferExperimentConfig) -> str:
    folder = cfg.data.folder or os.environ.get("CONVJAX_DATA", "")
    if not folder:
        raise ConfigError("data.folder", "no photos: set data.folder (a folder or .tar.gz "
                          "with train/<class>/ and validation/<class>/) or CONVJAX_DATA")
    return folder


def run_transfer(cfg: TransferExperimentConfig, workdir: str | Path,
                 restart: bool = False) -> dict[str, Any]:
    """Runs (or continues, or reports) every enabled phase of `cfg` in `workdir`."""
    folder = data_folder(cfg)
    run = open_run(cfg, workdir, restart)
    if run.status == "finished":
        results = run.results()
        _report(cfg, results, f"finished run in {run.workdir}; nothing to train")
        return results
    if cfg.train.compilation_cache:
        enable_compilation_cache()
    ctx = _Context(cfg, folder, run.workdir)
    phases: dict[str, dict[str, Any]] = {}
    with stop_on_signals() as stop:
        for name in cfg.phases.enabled():
            _say(cfg, f"phase {name}: {DESCRIPTIONS[name]}")
            sub = open_run(cfg, run.workdir / name)
            if sub.status == "finished":
                _say(cfg, f"phase {name}: finished earlier; not trained again")
                phases[name] = sub.results()
            else:
                phases[name] = PHASES[name](ctx, sub, stop)
                _release_programs()
    notes = [r["weights"] for r in phases.values() if "weights" in r]
    results = {
        "config": config_to_dict(cfg), "seed": cfg.train.seed, "backbone": cfg.transfer.backbone,
        "weights": notes[0] if notes else None, "image_size": list(ctx.image_size),
        "phases": {name: {k: r[k] for k in SUMMARY_KEYS if k in r} for name, r in phases.items()},
        "provenance": provenance(),
    }
    _report(cfg, results, "")
    write_json_atomic(run.workdir / RESULTS, results)
    return results


class _Context:
    """What the phases share, loaded when first asked for: the backbone and the photos."""

    def __init__(self, cfg: TransferExperimentConfig, folder: str, workdir: Path):
        self.cfg, self.folder, self.workdir = cfg, folder, workdir
        self.mesh = make_mesh()
        self.image_size = cfg.transfer.image_size or NATIVE_SIZE[cfg.transfer.backbone]
        self._photos: tuple[tuple[int, int], tuple[ArraySource, ArraySource]] | None = None

    @functools.cached_property
    def backbone(self) -> Backbone:
        t = self.cfg.transfer
        bb = BACKBONES[t.backbone](t.weights, self.image_size)
        _say(self.cfg, f"{t.backbone} at {self.image_size}: {bb.note}")
        return bb

    def photos(self, image_size: tuple[int, int]) -> tuple[ArraySource, ArraySource]:
        """(train, validation) at `image_size`; only the latest size is kept in memory."""
        if self._photos is None or self._photos[0] != tuple(image_size):
            self._photos = None  # free the previous size's photos before decoding these
            train, val = load_photos(self.cfg, self.folder, image_size)
            _say(self.cfg, f"train {len(train)}, validation {len(val)} photos at "
                           f"{image_size}, classes {list(train.class_names)}")
            self._photos = (tuple(image_size), (train, val))
        return self._photos[1]

    def eval_batch_size(self, n: int) -> int:
        return eval_batch_size(self.cfg.train.eval_batch_size, n, self.mesh.devices.size)

    def feature_cache(self) -> Path:
        configured = self.cfg.phases.features.cache_dir
        return Path(configured) if configured else Path(
            self.cfg.data.cache_dir or cache_root()) / "features"


def load_photos(cfg: TransferExperimentConfig, folder: str,
                image_size: tuple[int, int]) -> tuple[ArraySource, ArraySource]:
    """(train, validation) photos, each sampled to `data.limit` files *before* decoding."""
    cache = resolve_cache_dir(cfg.data.cache_dir or None)
    root = resolve_folder(folder, cache)
    root = root / "cats_vs_dogs" if (root / "cats_vs_dogs").is_dir() else root
    val_dir = next((root / d for d in ("validation", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or val_dir is None:
        raise FileNotFoundError(f"{root} must contain train/<class>/ and validation/<class>/")
    return tuple(_decoded(d, image_size, cfg.data.limit, cfg.train.seed, cache)
                 for d in (root / "train", val_dir))


def _decoded(directory: Path, image_size: tuple[int, int], limit: int, seed: int,
             cache: Path | None) -> ArraySource:
    files, labels, classes = list_image_files(directory)
    if 0 < limit < len(files):  # as ArraySource.sample draws, but only these files decode
        picked = np.sort(np.random.default_rng(seed).choice(len(files), limit, replace=False))
        files, labels = [files[i] for i in picked], [labels[i] for i in picked]
    source = FolderSource(files, labels, classes, DecodeSpec(tuple(image_size)), cache_dir=cache)
    return source.to_array_source()


# --- The phases -------------------------------------------------------------------------


Stop = tuple[Any, list[int]]  # (the interrupt event, the signals received): stop_on_signals


def _features(ctx: _Context, sub: Run, stop: Stop) -> dict[str, Any]:
    bb, (train, val) = ctx.backbone, ctx.photos(ctx.image_size)
    t0 = time.perf_counter()
    extract = functools.partial(cached_features, backbone=bb.model, variables=bb.variables,
                                normalization=bb.preprocess, cache_dir=ctx.feature_cache(),
                                batch_size=ctx.eval_batch_size(len(train)))
    (f_train, hit), (f_val, _) = extract(train), extract(val)
    extra = {"extract_seconds": round(time.perf_counter() - t0, 2), "features_from_cache": hit,
             "weights": bb.note}
    plan = features_plan(ctx.cfg, f_train.image_shape, len(train.class_names))
    return _fit_phase(ctx, sub, plan, f_train, f_val, ctx.cfg.phases.features.epochs, stop,
                      extra)


def _frozen(ctx: _Context, sub: Run, stop: Stop) -> dict[str, Any]:
    bb, (train, val) = ctx.backbone, ctx.photos(ctx.image_size)
    plan = frozen_plan(ctx.cfg, bb, train.image_shape, len(train.class_names))
    return _fit_phase(ctx, sub, plan, train, val, ctx.cfg.phases.frozen.epochs, stop,
                      {"weights": bb.note})


def _finetune(ctx: _Context, sub: Run, stop: Stop) -> dict[str, Any]:
    bb, (train, val) = ctx.backbone, ctx.photos(ctx.image_size)
    shape, classes = train.image_shape, len(train.class_names)
    plan = finetune_plan(ctx.cfg, bb, shape, classes, _frozen_weights(ctx, shape, classes))
    return _fit_phase(ctx, sub, plan, train, val, ctx.cfg.phases.finetune.epochs, stop,
                      {"weights": bb.note})


def _scratch(ctx: _Context, sub: Run, stop: Stop) -> dict[str, Any]:
    train, val = ctx.photos(ctx.cfg.phases.scratch.image_size)
    plan = scratch_plan(ctx.cfg, train.image_shape, len(train.class_names))
    return _fit_phase(ctx, sub, plan, train, val, ctx.cfg.phases.scratch.epochs, stop, {})


PHASES = {"features": _features, "frozen": _frozen, "finetune": _finetune,
          "scratch": _scratch}


def _frozen_weights(ctx: _Context, shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """The frozen phase's final params and batch stats, restored into an abstract copy of its
    state (no second set of weights and Adam moments is built just to be overwritten)."""
    final = ctx.workdir / "frozen" / FINAL
    if not (final.parent / RESULTS).exists() or not final.is_dir():
        raise FileNotFoundError(f"fine-tuning starts from the frozen phase's final state, "
                                f"not found in {final}")
    abstract = jax.eval_shape(lambda: frozen_plan(ctx.cfg, ctx.backbone, shape, classes).state)
    sharding = replicated(ctx.mesh)
    like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        abstract)
    with checkpoint.make_manager(final) as manager:
        state, _ = checkpoint.restore(manager, like=like)
    return {"params": state.params, "batch_stats": state.batch_stats}


def eval_batch_size(requested: int, n: int, devices: int) -> int:
    """`requested` (train.eval_batch_size), but no larger than `n` examples need, rounded up
    to a multiple of `devices`: padding a small split to a big batch only costs memory."""
    return -(-min(requested, n) // devices) * devices


def _fit_phase(ctx: _Context, sub: Run, plan: PhasePlan, train: ArraySource,
               val: ArraySource, epochs: int, stop: Stop,
               extra: dict[str, Any]) -> dict[str, Any]:
    """`fit` with the runner's backup, callbacks and timer; writes the phase's results.json,
    then its final state."""
    cfg, mesh = ctx.cfg, ctx.mesh
    train_batches = make_batch_source(train, batch_size=cfg.train.batch_size,
                                      seed=cfg.train.seed, mesh=mesh)
    val_batches = make_batch_source(val, batch_size=ctx.eval_batch_size(len(val)), seed=0,
                                    mesh=mesh, shuffle=False)
    timer = RunTimer()
    text = summary(plan.model, plan.input_shape)
    callbacks = [*make_callbacks(cfg.callbacks, sub.workdir, model_summary=text), timer]
    backup = BackupOptions(sub.backup_dir, every_steps=cfg.train.backup_every_steps, keep=2)
    interrupt, received = stop
    try:
        state, history = fit(plan.state, train_batches, steps=plan.steps, epochs=epochs,
                             validation=val_batches, callbacks=callbacks,
                             verbose=cfg.train.verbose, backup=backup, interrupt=interrupt,
                             mesh=mesh)
    except TrainingInterrupted as stopped:
        raise Interrupted(received[0], stopped, sub.workdir) from None
    h = history.history
    per_step = timer.summary(cfg.train.batch_size)["train_seconds"] / max(timer.steps, 1)
    results = {
        "phase": sub.workdir.name, "val_accuracy": h["val_accuracy"][-1],
        "best_val_accuracy": max(h["val_accuracy"]), "val_loss": h["val_loss"][-1],
        "history": h, "epochs_run": len(history.epoch), "resumed": sub.status == "unfinished",
        "train_images": len(train), "validation_images": len(val),
        # Training only: without the first step (compilation) and validation.
        "seconds_per_epoch": round(per_step * train_batches.steps_per_epoch, 2)
        if timer.steps else None,
        **timer.summary(cfg.train.batch_size), **extra,
    }
    write_json_atomic(sub.workdir / RESULTS, results)  # first: the result survives a full disk
    save_final(sub, state, results)
    return results


def _release_programs() -> None:
    """Drops the finished phase's compiled programs (each phase compiles its own; the disk
    compilation cache keeps them): the 64-photo run's peak went from 2.28 to 2.08 GB."""
    gc.collect()
    jax.clear_caches()
    gc.collect()


def _say(cfg: TransferExperimentConfig, line: str) -> None:
    if cfg.train.verbose:
        print(line, flush=True)


def _report(cfg: TransferExperimentConfig, results: dict[str, Any], note: str) -> None:
    if not cfg.train.verbose:
        return
    if note:
        print(note, flush=True)
    print(f"{results['backbone']} ({results['weights']}):", flush=True)
    for name, r in results["phases"].items():
        speed = r.get("seconds_per_epoch")
        print(f"  {name:9s} val accuracy {r['val_accuracy']:.4f} after {r['epochs_run']} "
              f"epoch(s); {speed if speed is not None else '-'} s per epoch (compile "
              f"{r.get('compile_seconds', 0):.1f} s)", flush=True)
