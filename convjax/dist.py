"""Several processes (hosts) as one run: the `dist` config section, `initialize`, and the
few rules that keep the processes in step.

Glue (I/O: environment variables, the JAX distributed runtime). Nothing here is a
home-made engine: `jax.distributed.initialize` joins the processes, after which every
process runs the same program on the global mesh of all devices; placement
(`sharding.place_replicated`, `data.placement`) and Orbax handle the rest.

    python -m convjax.launch --processes 2 -- python -m experiments.cifar10_cnn --workdir W

Who writes: only process 0 (`is_writer`) writes logs, CSV, TensorBoard, config.json and
results.json and prints progress; Orbax checkpoints are collective (every process calls
save and restore; Orbax's primary host, process 0, writes the shared files), and so are the
renames and deletions around them (`checkpoint.write_tree`): process 0 makes them, the
others wait at a `barrier`. Every process sees the same global metrics, so every callback
decision (early stopping, learning rate) is the same everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import jax
import numpy as np

from convjax.config_fields import check_fields, require

# Set by `convjax.launch` (JAX itself reads JAX_COORDINATOR_ADDRESS; the other two are ours).
ADDRESS_ENV, COUNT_ENV, ID_ENV = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
# Environments where `jax.distributed.initialize()` finds everything by itself: SLURM
# (srun), Open MPI (mpirun), TPU pods on GKE / multislice. A bare Cloud TPU VM pod is found
# only through its metadata server: use initialize="always" there.
CLUSTER_ENVS = {
    "slurm": ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID"),
    "open mpi": ("OMPI_MCA_orte_hnp_uri",),
    "tpu pod": ("TPU_WORKER_HOSTNAMES",),
    "tpu multislice": ("MEGASCALE_COORDINATOR_ADDRESS",),
}


@dataclass(frozen=True)
class DistConfig:
    """Several processes (hosts) as one run, through jax.distributed."""

    config_key: ClassVar[str] = "dist"
    # auto: join when an address is set (here or $JAX_COORDINATOR_ADDRESS) or under SLURM,
    # Open MPI or a TPU pod (CLUSTER_ENVS); always: join, JAX finds the rest; never: 1 process.
    initialize: Literal["auto", "never", "always"] = "auto"  # auto: if an address/cluster is set
    coordinator_address: str = ""  # host:port of process 0; "" = $JAX_COORDINATOR_ADDRESS/cluster
    num_processes: int = 0  # processes in the run; 0 = $JAX_NUM_PROCESSES or the cluster's
    process_id: int = -1  # this process's index; -1 = $JAX_PROCESS_ID or the cluster's
    cpu_collectives: Literal["gloo", "mpi"] = "gloo"  # cross-process collectives on CPU

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.num_processes >= 0, self, "num_processes", ">= 0 (0: from the environment)")
        require(self.process_id >= -1, self, "process_id", ">= -1 (-1: from the environment)")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value else None


def detected_cluster() -> str | None:
    """The cluster whose variables are set (SLURM only with several tasks), else None."""
    for name, variables in CLUSTER_ENVS.items():
        if all(os.environ.get(v) for v in variables):
            if name == "slurm" and int(os.environ["SLURM_NTASKS"]) < 2:
                continue
            if name == "tpu pod" and "," not in os.environ["TPU_WORKER_HOSTNAMES"]:
                continue  # a single TPU host
            return name
    return None


def initialize(cfg: DistConfig) -> bool:
    """Joins the other processes when `cfg` asks (see `DistConfig.initialize`); returns
    whether it did. Call it before anything touches devices (the runner calls it first).
    Explicit settings win over the environment; what neither gives, JAX detects."""
    address = cfg.coordinator_address or os.environ.get(ADDRESS_ENV, "")
    wanted = {"never": False, "always": True,
              "auto": bool(address or detected_cluster())}[cfg.initialize]
    if not wanted or jax.distributed.is_initialized():
        return False
    count = cfg.num_processes or _env_int(COUNT_ENV)
    index = cfg.process_id if cfg.process_id >= 0 else _env_int(ID_ENV)
    # Only the CPU backend reads it; GPUs and TPUs use their own interconnect.
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    jax.distributed.initialize(address or None, num_processes=count, process_id=index)
    return True


def is_writer() -> bool:
    """Whether this process writes the run's logs and files: process 0 only."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier `name` (the same text in every
    process; JAX checks it). With one process it returns at once. A collective: every
    process must call it, in the same order, or the callers wait for good."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-process only

    multihost_utils.sync_global_devices(name)


def sync_every_step() -> bool:
    """Whether `fit` waits for each step before dispatching the next: only with several
    processes on CPU.

    Why: on XLA:CPU each local device runs its steps on its own thread, and the cross-process
    all-reduces go through gloo. With several local devices per process and several steps in
    flight, the devices of one process can enter the collectives of different steps, and
    the processes then wait on each other for good (measured: 2 processes x 2 devices, 50
    steps dispatched without waiting, hung 3 times out of 3 in issue #12's measurement;
    openxla/xla#16430). Waiting for
    each step's metric sums keeps at most one step in flight. Cost: the host no longer
    prepares step n+1 while step n runs (on CPU, the dispatch time of one step, not measured
    here; small beside CPU step times); GPUs and TPUs keep the overlap.
    """
    return jax.process_count() > 1 and jax.default_backend() == "cpu"


# How often (in global steps) several processes agree on stopping after a signal: each
# agreement is a small all-gather that waits for the current step.
STOP_CHECK_EVERY = 10


def stop_agreed(flag: bool, global_step: int | None) -> bool:
    """Whether to stop for a signal (`flag`: this process received one), the same answer in
    every process: a signal reaches them at different steps, and a process that stopped
    alone would leave the others waiting in a collective. With several processes they agree
    every `STOP_CHECK_EVERY` global steps and at epoch ends (`global_step=None`)."""
    if jax.process_count() == 1:
        return flag
    if global_step is not None and global_step % STOP_CHECK_EVERY:
        return False
    return any_process(flag)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process (a collective: every process calls it at the
    same point)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-process only

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))
