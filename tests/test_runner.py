"""The runner from the command line: a workdir is a run (rerun, resume, refuse, restart), and
stopping is safe (SIGKILL anywhere, SIGTERM). Real processes, a tiny image folder."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.source=folder", "data.image_size=(8,8)", "data.validation_split=0.25",
        "model.conv_filters=(4,)", "model.dense=(8,)", "train.epochs=3", "train.batch_size=4",
        "train.eval_batch_size=8", "train.backup_every_steps=1", "train.verbose=1"]
# A device-memory budget that holds one batch (8 images of 8x8x3 + labels: 1,568 bytes) and
# the validation and test splits, but not the 12 training images (2,352 bytes): streamed.
STREAMED = "data.device_memory_budget_mb=0.002"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "train", per_class=8)
    write_image_folder(root / "test", per_class=3)
    return root


def command(workdir, folder, *extra):
    sets = [f"data.folder={folder}", f"data.cache_dir={folder}/cache", *TINY, *extra]
    return [sys.executable, "-m", "experiments.cifar10_cnn", "--workdir", str(workdir),
            *[a for s in sets for a in ("--set", s)]]


def env():
    # One CPU device per process: the runner's results do not depend on the test's 4 fakes.
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "",
            "CONVJAX_CACHE": os.environ.get("CONVJAX_TEST_CACHE", "/tmp") + "/convjax-runner"}


def run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300, **kwargs)


def final_params(workdir):
    step_dir = next((workdir / "final").iterdir())
    state = ocp.StandardCheckpointer().restore((step_dir / "state").absolute())
    return [np.asarray(x) for x in __import__("jax").tree.leaves(state["params"])]


def epoch_rows(workdir):
    return list(csv.reader(open(workdir / "history.csv")))


def scalar_steps(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(workdir / "tensorboard" / "train"))
    acc.Reload()
    return [e.step for e in acc.Scalars("epoch_loss")]


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    done = run(command(workdir, folder))
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done


@pytest.fixture(scope="module")
def streamed_reference(folder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("streamed") / "run"
    done = run(command(workdir, folder, STREAMED))
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done


def test_a_streamed_run_ends_bit_for_bit_like_one_on_the_devices(reference, streamed_reference):
    (on_device, first), (streamed, second) = reference, streamed_reference
    assert "train 12 (on device), validation 4 (on device)" in first.stdout
    assert "train 12 (streamed), validation 4 (on device)" in second.stdout
    for a, b in zip(final_params(streamed), final_params(on_device), strict=True):
        np.testing.assert_array_equal(a, b)
    assert epoch_rows(streamed) == epoch_rows(on_device)


def test_a_budget_smaller_than_one_batch_is_refused_in_one_line(folder, tmp_path):
    refused = run(command(tmp_path / "run", folder, "data.device_memory_budget_mb=0.0001"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().endswith(
        "error: data.device_memory_budget_mb=0.0001 is 104 bytes per device, less than one "
        "batch (train.batch_size=4 images of shape (8, 8, 3): 784 bytes per device); raise it "
        "or lower train.batch_size")
    # The budget is not part of what a run computes: the same workdir takes another one
    # (refused again here, for the evaluation batch, not as "another config").
    again = run(command(tmp_path / "run", folder, "data.device_memory_budget_mb=0.001"))
    assert again.returncode == 2 and "another config" not in again.stderr
    assert "less than one batch (train.eval_batch_size=8" in again.stderr.splitlines()[-1]


def test_the_same_command_twice_reports_the_finished_run(reference, folder):
    workdir, first = reference
    results = json.loads((workdir / "results.json").read_text())
    assert results["epochs_run"] == 3 and "git_commit" in json.dumps(results["provenance"])
    assert results["train_images_per_second"] > 0 and results["compile_seconds"] > 0
    again = run(command(workdir, folder))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished run" in again.stdout and "Epoch" not in again.stdout  # trained nothing
    assert json.loads((workdir / "results.json").read_text()) == results


# Backups are numbered: 0 before the first step, then one after each of the 3 steps of an
# epoch and one at its end, so backup 5 holds epoch 2 (index 1) after its first step.
MID_EPOCH_2 = "5"


@pytest.mark.parametrize("placement, when", [("on device", "anywhere"),
                                             ("streamed", "mid-epoch")])
def test_sigkill_then_the_same_command_ends_like_an_uninterrupted_run(
        placement, when, folder, tmp_path, request):
    extra = (STREAMED,) if placement == "streamed" else ()
    ref, _ = request.getfixturevalue(
        "streamed_reference" if placement == "streamed" else "reference")
    workdir = tmp_path / "run"
    proc = subprocess.Popen(command(workdir, folder, *extra), cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    if when == "anywhere":
        while not any((workdir / "backup").glob("[0-9]*")) and time.time() < deadline:
            time.sleep(0.05)  # training has started once the first backup exists
        # The run trains for about a second from here on this CPU: most kills land inside it.
        time.sleep(random.Random(os.getpid()).uniform(0.0, 1.0))
    else:  # at once when backup 5 is complete (Orbax renames it into place when written)
        while not (workdir / "backup" / MID_EPOCH_2).is_dir() and time.time() < deadline:
            time.sleep(0.01)
    proc.kill()
    finished_before_kill = proc.wait() == 0  # a random moment may fall after the run's end
    done = run(command(workdir, folder, *extra))
    assert done.returncode == 0, done.stderr[-3000:]
    if finished_before_kill:  # then the same command reports the run, and trains nothing
        assert "finished run" in done.stdout and "Epoch" not in done.stdout, done.stdout
    else:
        assert f"train 12 ({placement})" in done.stdout, done.stdout
    resumed = [line for line in done.stdout.splitlines() if line.startswith("resuming at")]
    if when == "mid-epoch":  # the next backup (6) may have been written before the kill
        assert resumed[0] in ("resuming at epoch 2, step 1 of 3",
                              "resuming at epoch 2, step 2 of 3"), resumed
    for a, b in zip(final_params(workdir), final_params(ref), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{resumed}")
    assert epoch_rows(workdir) == epoch_rows(ref)  # no duplicated or missing row
    assert scalar_steps(workdir) == scalar_steps(ref) == [0, 1, 2]


def test_sigterm_backs_up_exits_143_without_traceback_and_resumes(reference, folder,
                                                                   tmp_path):
    ref, _ = reference
    workdir = tmp_path / "run"
    proc = subprocess.Popen(command(workdir, folder), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not any((workdir / "backup").glob("[0-9]*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")  # a very fast machine
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "Run the same command again to continue" in err
    assert any((workdir / "backup").glob("[0-9]*"))
    done = run(command(workdir, folder))
    assert done.returncode == 0 and "resuming at epoch" in done.stdout, done.stderr[-3000:]
    for a, b in zip(final_params(workdir), final_params(ref)):
        np.testing.assert_array_equal(a, b)


def test_another_config_is_refused_before_any_data_is_read(reference, tmp_path):
    workdir, _ = reference
    missing = tmp_path / "no-such-folder"  # reading data would fail with FileNotFoundError
    refused = run(command(workdir, missing, "train.epochs=4"))
    assert refused.returncode == 2
    assert "another config" in refused.stderr and "train.epochs: 3 -> 4" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_restart_moves_the_old_run_aside(folder, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("keep me")
    refused = run(command(workdir, folder))
    assert refused.returncode == 2 and "not a convjax run" in refused.stderr
    done = run([*command(workdir, folder, "train.epochs=1"), "--restart"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run.restart-1" / "notes.txt").read_text() == "keep me"
    assert (workdir / "results.json").exists()
