"""experiments.cats_dogs_transfer through the runner (convjax.transfer_run): the smoke config
runs every phase end to end from the command line, a rerun trains nothing, a killed run
resumes the phase it was in, the frozen backbone stays bit-identical, and the config is
typed, overridable and checked before anything runs."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from convjax import cli, transfer_run
from convjax.backbones import BACKBONES
from convjax.config import apply_overrides, leaves
from convjax.config_fields import type_name
from convjax.train import Interrupted
from experiments import cats_dogs_transfer
from helpers import write_image_folder

REPO = Path(__file__).resolve().parents[1]
ALL_PHASES = ["features", "frozen", "finetune", "scratch"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A Cats-vs-Dogs-shaped folder: train/{cat,dog}/ and validation/{cat,dog}/."""
    root = tmp_path_factory.mktemp("photos")
    write_image_folder(root / "train", per_class=16, size=(40, 48))
    write_image_folder(root / "validation", per_class=8, size=(40, 48))
    return root


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # Classic threefry, as conftest sets in-process: the partitionable one compiles each
    # differently shaped random init for seconds on XLA:CPU (changes no assertion here).
    env = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false", **env}
    return subprocess.run([sys.executable, "-m", "experiments.cats_dogs_transfer", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _final_tree(phase_dir: Path) -> dict:
    step_dir = next((phase_dir / "final").iterdir())
    return jax.device_get(ocp.StandardCheckpointer().restore((step_dir / "state").absolute()))


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.slow
def test_smoke_runs_every_phase_and_a_rerun_trains_nothing(tmp_path, photos):
    workdir = tmp_path / "run"
    env = {"CONVJAX_DATA": str(photos), "CONVJAX_CACHE": str(tmp_path / "cache")}
    first = _run_cli(["--smoke", "--workdir", str(workdir)], env)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ALL_PHASES:
        assert f"phase {name}: " in first.stdout  # progress labelled by phase
    results = json.loads((workdir / "results.json").read_text())
    assert list(results["phases"]) == ALL_PHASES
    for name, phase in results["phases"].items():
        assert 0.0 <= phase["val_accuracy"] <= 1.0, name
        assert phase["seconds_per_epoch"] > 0 and phase["epochs_run"] >= 1, name
        for made in ("results.json", "history.csv", "tensorboard", "final"):
            assert (workdir / name / made).exists(), (name, made)
    assert results["provenance"]["git_commit"] or results["provenance"]["source_sha256"]

    before = _files(workdir)
    again = _run_cli(["--smoke", "--workdir", str(workdir)], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stdout and "Epoch" not in again.stdout + again.stderr
    assert _files(workdir) == before  # nothing written, nothing trained

    # Frozen: the backbone's weights and batch statistics are the pretrained ones, bit for
    # bit; fine-tuning then trains only the top block (tiny: block2), never block1 or bn1.
    pretrained = BACKBONES["tiny"]("", (32, 32)).variables
    frozen, finetune = _final_tree(workdir / "frozen"), _final_tree(workdir / "finetune")
    for a, b in zip(jax.tree.leaves(pretrained["params"]),
                    jax.tree.leaves(frozen["params"]["backbone"]), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(pretrained["batch_stats"]),
                    jax.tree.leaves(frozen["batch_stats"]["backbone"]), strict=True):
        np.testing.assert_array_equal(a, b)
    fb, tb = frozen["params"]["backbone"], finetune["params"]["backbone"]
    np.testing.assert_array_equal(fb["block1"]["kernel"], tb["block1"]["kernel"])
    np.testing.assert_array_equal(fb["bn1"]["scale"], tb["bn1"]["scale"])
    assert not np.array_equal(fb["block2"]["kernel"], tb["block2"]["kernel"])


def _smoke(photos: Path, *overrides: str):
    return apply_overrides(cats_dogs_transfer.smoke(),
                           [f"data.folder={photos}", "train.verbose=2", *overrides])


def test_a_killed_run_resumes_its_phase_and_finetune_starts_from_frozen(tmp_path, photos,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path / "cache"))
    # Fine-tuning with the head frozen: its head must be the frozen phase's, bit for bit.
    cfg = _smoke(photos, "phases.finetune.trainable=['backbone/block2']",
                 "phases.scratch.enabled=false")
    workdir = tmp_path / "run"
    original = transfer_run.PHASES["frozen"]

    def killed_in_frozen(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would: the loop backs up and stops
        return original(*args)

    monkeypatch.setitem(transfer_run.PHASES, "frozen", killed_in_frozen)
    with pytest.raises(Interrupted) as stopped:
        transfer_run.run_transfer(cfg, workdir)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    features_results = (workdir / "features" / "results.json").read_text()
    assert not (workdir / "frozen" / "results.json").exists()
    assert not (workdir / "results.json").exists()

    monkeypatch.setitem(transfer_run.PHASES, "frozen", original)
    capsys.readouterr()
    results = transfer_run.run_transfer(cfg, workdir)
    out = capsys.readouterr().out
    assert "phase features: finished earlier" in out
    assert "resuming at epoch 1, step 1" in out  # the frozen phase, from its backup
    assert (workdir / "features" / "results.json").read_text() == features_results
    assert list(results["phases"]) == ["features", "frozen", "finetune"]
    assert results["phases"]["frozen"]["resumed"] is True
    frozen, finetune = _final_tree(workdir / "frozen"), _final_tree(workdir / "finetune")
    for a, b in zip(jax.tree.leaves(frozen["params"]["head"]),
                    jax.tree.leaves(finetune["params"]["head"]), strict=True):
        np.testing.assert_array_equal(a, b)  # fine-tuning continued from the frozen result
    assert not np.array_equal(frozen["params"]["backbone"]["block2"]["kernel"],
                              finetune["params"]["backbone"]["block2"]["kernel"])


def test_help_lists_every_key_and_set_reaches_the_runner(capsys):
    calls = []

    def load_runner():
        return lambda cfg, workdir, restart=False: calls.append((cfg, workdir, restart))

    with pytest.raises(SystemExit) as exit_:
        cli.main(cats_dogs_transfer.config, cats_dogs_transfer.smoke,
                 cats_dogs_transfer.__doc__, ["--help"], load_runner=load_runner)
    assert exit_.value.code == 0 and calls == []
    out = capsys.readouterr().out
    for leaf in leaves(cats_dogs_transfer.config()):
        assert f"  {leaf.key}: {type_name(leaf.type)} = {leaf.value!r}\n" in out
        assert leaf.comment, f"{leaf.key} has no comment"
    assert "phases.frozen.epochs: int = 2" in out

    cli.main(cats_dogs_transfer.config, cats_dogs_transfer.smoke, "",
             ["--workdir", "w", "--set", "phases.frozen.epochs=3", "--set",
              "transfer.backbone=inception_v3", "--restart"], load_runner=load_runner)
    (cfg, workdir, restart), = calls
    assert cfg.phases.frozen.epochs == 3 and cfg.transfer.backbone == "inception_v3"
    assert (workdir, restart) == ("w", True)


@pytest.mark.parametrize("overrides, message", [
    (["phases.frozen.epochs=0"], "phases.frozen.epochs: must be >= 1, got 0"),
    (["phases.frozen.enabled=false"], "phases.finetune.enabled: needs phases.frozen.enabled"),
    (["transfer.weights=w.h5"], "transfer.weights: must be empty for this backbone"),
    (["transfer.backbone=resnet50"], "transfer.backbone: must be one of 'efficientnet_lite0'"),
    (["callbacks.ema.enabled=true"], "callbacks.ema.enabled: a transfer run keeps no EMA"),
    ([], "data.folder: no photos"),  # checked by the runner, before the workdir is touched
])
def test_a_bad_config_exits_2_naming_the_key(tmp_path, capsys, monkeypatch, overrides,
                                             message):
    monkeypatch.delenv("CONVJAX_DATA", raising=False)
    args = ["--workdir", str(tmp_path / "w")] + [a for o in overrides for a in ("--set", o)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(cats_dogs_transfer.config, cats_dogs_transfer.smoke, "", args,
                 load_runner=cats_dogs_transfer.runner)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_validation_batches_are_never_larger_than_the_split():
    # A batch of 500 padded around 64 photos was the old experiment's 7 GB peak.
    assert transfer_run.eval_batch_size(500, 64, 1) == 64
    assert transfer_run.eval_batch_size(32, 1000, 1) == 32
    assert transfer_run.eval_batch_size(32, 18, 4) == 20  # whole batches per device


def test_a_limit_decodes_only_the_sampled_photos(tmp_path, photos, monkeypatch):
    from convjax.data import folder_source

    decoded = []
    real = folder_source.decode_image
    monkeypatch.setattr(folder_source, "decode_image",
                        lambda path, spec: decoded.append(path) or real(path, spec))
    cfg = _smoke(photos, "data.limit=5", f"data.cache_dir={tmp_path}")
    train, val = transfer_run.load_photos(cfg, str(photos), (8, 8))
    assert (len(train), len(val)) == (5, 5) and train.image_shape == (8, 8, 3)
    assert len(decoded) == 10
