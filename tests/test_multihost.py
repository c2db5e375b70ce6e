"""Several processes as one run (convjax.dist, convjax.launch): 2 processes x 2 fake CPU
devices on localhost, joined by jax.distributed with gloo, interrupted by SIGTERM and resumed,
end exactly like 1 process x 4 devices run without a stop.

Resumed and uninterrupted 2-process runs agree bit for bit (History, CSV, parameters, test
loss), and both leave ModelCheckpoint's directories as one process would. The 2-process and
1-process runs agree within RTOL, not exactly: the cross-device sums (gradients, metrics) are
added in another order by gloo's all-reduce than by XLA:CPU's in-process one, so float32
results differ in the last bits (measured after 12 steps: params 2.3e-7 relative, test loss
6e-8; the History happened to be identical).
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from convjax import checkpoint, dist, launch
from convjax.config import DistConfig
from helpers import write_image_folder

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("multihost_worker.py")
LIMIT_S = 240
RTOL = 1e-5  # per launch; `timeout -k` because JAX catches SIGTERM under jax.distributed


def launch_worker(workdir: Path, folder: Path, *extra: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "CONVJAX_CACHE": str(cache)}
    env.pop("XLA_FLAGS", None)  # the launcher fakes 2 devices per process
    cmd = ["timeout", "-k", "10", str(LIMIT_S), sys.executable, "-m", "convjax.launch",
           "--processes", "2", "--devices-per-process", "2", "--grace", "10", "--",
           sys.executable, str(WORKER), str(workdir), str(folder), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    output = proc.communicate(timeout=LIMIT_S + 30)[0]
    return proc.returncode, "\n".join(x for x in output.splitlines() if "[Gloo]" not in x)


def final_params(workdir: Path, like=None) -> dict:
    """The final parameters; `like` (e.g. another run's) when it was saved on another
    topology (Orbax then needs the target shardings)."""
    step_dir = next((workdir / "final").iterdir())
    target = None if like is None else jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    state = ocp.StandardCheckpointer().restore((step_dir / "state").absolute(), target)
    return state


def host(x) -> np.ndarray:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # the state's RNG key
        x = jax.random.key_data(x)
    return np.asarray(x)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "train", per_class=12)
    write_image_folder(root / "test", per_class=3)
    return root


def test_two_processes_interrupted_and_resumed_end_like_one_process(folder, tmp_path):
    from multihost_worker import config

    from convjax.train import train_and_evaluate

    stopped_dir, whole_dir, cache = tmp_path / "stopped", tmp_path / "whole", tmp_path / "cache"
    # SIGTERM at global step 10 (epoch 3, step 2): both processes back up and stop there.
    stopped = launch_worker(stopped_dir, folder, "--sigterm-at", "10", cache=cache)
    whole = launch_worker(whole_dir, folder, cache=tmp_path / "cache-whole")
    # Meanwhile, the reference: 1 process x 4 devices (conftest's fakes).
    want = train_and_evaluate(_quiet(config(str(folder))), tmp_path / "one")
    code, output = finish(stopped)
    assert code == 143, output  # 128 + SIGTERM from both: backed up, no hang, no kill
    assert output.count("stopped at epoch 3, step 2") == 2, output
    assert not (stopped_dir / "results.json").exists()
    code, whole_output = finish(whole)
    assert code == 0, whole_output

    code, output = finish(launch_worker(stopped_dir, folder, cache=cache))
    assert code == 0, output
    # Only process 0 prints and writes; both trained (the run needs both processes' devices).
    assert output.count("resuming at epoch 3, step 2 of 4") == 1, output
    assert output.count("test accuracy") == 1, output
    got = json.loads((stopped_dir / "results.json").read_text())
    assert got["resumed"] and got["provenance"]["process_count"] == 2

    # Resumed in 2 processes == uninterrupted in 2 processes, bit for bit.
    uninterrupted = json.loads((whole_dir / "results.json").read_text())
    assert got["history"] == uninterrupted["history"]
    assert got["test_loss"] == uninterrupted["test_loss"]
    assert (stopped_dir / "history.csv").read_text() == (whole_dir / "history.csv").read_text()
    one = final_params(tmp_path / "one")
    two, whole_two = final_params(stopped_dir, like=one), final_params(whole_dir, like=one)
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(whole_two), strict=True):
        np.testing.assert_array_equal(host(a), host(b))
    for workdir, final in ((stopped_dir, two), (whole_dir, whole_two)):
        assert_model_checkpoints(workdir / "checkpoints", final, like=one)

    # 2 processes x 2 devices == 1 process x 4 devices, up to the all-reduce's rounding.
    for key, values in want["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=RTOL, err_msg=key)
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=RTOL)
    for a, b in zip(jax.tree.leaves(two["params"]), jax.tree.leaves(one["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=1e-7)


def assert_model_checkpoints(directory: Path, final, like) -> None:
    """ModelCheckpoint (max_to_keep=2) in 2 processes: the checkpoints its record lists, i.e.
    the last two epochs' and the best, and nothing else (no `.incoming` or `.replaced` left
    by racing swaps, no half-written record); the last holds the final state."""
    record = json.loads((directory / "epochX.checkpoints.json").read_text())
    saved = [Path(path).name for path in record["saved"]]
    assert saved[-2:] == ["epoch002", "epoch003"], record
    assert Path(record["best_path"]).name in saved and len(saved) <= 3, record
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [*saved, "epochX.checkpoints.json"])
    state, meta = checkpoint.read_tree(directory / "epoch003", like=like)
    assert meta["epoch"] == 3
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(final), strict=True):
        np.testing.assert_array_equal(host(a), host(b))


def _quiet(cfg):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, verbose=0,
                                                            compilation_cache=False))


def test_initialize_joins_only_when_asked(monkeypatch):
    for name in (dist.ADDRESS_ENV, "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri",
                 "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert dist.detected_cluster() is None
    assert not dist.initialize(DistConfig())  # auto, nothing set: one process
    assert not dist.initialize(DistConfig(initialize="never", coordinator_address="h:1"))
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b")
    assert dist.detected_cluster() == "tpu pod"
    for name, value in (("SLURM_JOB_ID", "1"), ("SLURM_STEP_NODELIST", "n1"),
                        ("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    assert dist.detected_cluster() is None  # a single SLURM task is not a multi-host run
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert dist.detected_cluster() == "slurm"


def test_launcher_environment_and_worst_status():
    env = launch.process_env({"XLA_FLAGS": "--a --xla_force_host_platform_device_count=4"},
                             "127.0.0.1:5", 2, 1, devices=2)
    assert env[dist.ADDRESS_ENV] == "127.0.0.1:5"
    assert (env[dist.COUNT_ENV], env[dist.ID_ENV]) == ("2", "1")
    assert env["XLA_FLAGS"] == "--a --xla_force_host_platform_device_count=2"
    assert env["JAX_LOCAL_DEVICE_IDS"] == "2,3"
    assert launch.exit_status(-15) == 143


def test_launcher_stops_the_others_when_one_fails():
    # Process 1 fails at once; process 0 would sleep for a minute: it is terminated instead.
    script = "import os, sys, time; sys.exit(3) if os.environ['JAX_PROCESS_ID'] == '1' " \
             "else time.sleep(60)"
    assert launch.run([sys.executable, "-c", script], processes=2, grace=5) == 143
