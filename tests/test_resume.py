"""Exact resume after SIGKILL: a tiny run in a subprocess is killed at several points
(inside backup writes, inside a step, at a random moment), restarted with BackupAndRestore
each time, and must end bit for bit where an uninterrupted run ends: params, optimizer
state, History, the CSV log and the TensorBoard scalars and histograms.

Each subprocess imports JAX afresh; a persistent compilation cache shared by the runs keeps
all but the first from recompiling. About a minute on a busy 2-core machine, hence slow.
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

WORKER = Path(__file__).with_name("resume_worker.py")
KILLED = -signal.SIGKILL


def run_worker(out: Path, *flags: str, env: dict) -> int:
    proc = subprocess.run([sys.executable, str(WORKER), str(out), *flags], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, KILLED), f"worker {flags} failed:\n{proc.stderr[-4000:]}"
    return proc.returncode


def load_result(out: Path):
    with np.load(out / "result.npz") as npz:
        arrays = [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]
    return arrays, json.loads((out / "history.json").read_text())


def tensorboard_contents(out: Path) -> dict:
    """{run: {tag: [(step, value or (min, max, sum))]}} for scalars and histograms."""
    contents = {}
    for run in ("train", "validation"):
        acc = EventAccumulator(str(out / "tb" / run), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars = {t: sorted((e.step, e.value) for e in acc.Scalars(t)) for t in tags["scalars"]}
        histos = {t: sorted((e.step, e.histogram_value.min, e.histogram_value.max,
                             e.histogram_value.sum) for e in acc.Histograms(t))
                  for t in tags["histograms"]}
        contents[run] = {**scalars, **histos}
    return contents


@pytest.mark.slow
def test_killed_and_restarted_runs_end_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert run_worker(reference, "--no-backup", env=env) == 0
    # 18 batches; a backup before the first step, then after every 2nd batch. The kills, in
    # order (each run resumes from the backup the previous one left):
    times = random.Random(0)
    kills = [
        ["--kill-in-save", "3"],  # backup after batch 4 written, not yet renamed into place
        ["--kill-at-batch", "9"],  # inside a step in the middle of epoch 1
        ["--kill-in-save", "3", "--in-item", "state"],  # half-way through the backup after
        # batch 14 (this run resumed after batch 8)
        ["--kill-after", f"{times.uniform(0.05, 1.0):.3f}"],  # anywhere, twice
        ["--kill-after", f"{times.uniform(0.05, 1.0):.3f}"],
    ]
    outcomes = []
    for flags in kills:
        outcomes.append(run_worker(run, *flags, env=env))
        if outcomes[-1] == 0:
            break  # finished before the timer fired
    assert outcomes[:3] == [KILLED] * 3, outcomes
    if outcomes[-1] == KILLED:
        assert run_worker(run, env=env) == 0
    # The last process continued from a backup: it trained the remaining batches only (none
    # when it was killed after the last epoch's backup).
    assert int((run / "trained_by_last_process.txt").read_text()) < 18
    (got, got_history), (want, want_history) = load_result(run), load_result(reference)
    assert len(got) == len(want)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    assert got_history["epoch"] == want_history["epoch"] == [0, 1, 2]
    assert got_history["history"] == want_history["history"]
    assert list(csv.reader(open(run / "log.csv"))) == list(csv.reader(open(reference / "log.csv")))
    assert tensorboard_contents(run) == tensorboard_contents(reference)
    assert not (run / "backup").exists()
