"""Runs one command as N processes of one run on this machine, joined by jax.distributed.

    python -m convjax.launch --processes 2 [--devices-per-process 2] -- \\
        python -m experiments.cifar10_cnn --workdir runs/x --smoke

I/O (processes, signals). Each process gets the coordinator's address (a free port on
127.0.0.1, picked now), the process count and its index in the environment
(`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, read by
`convjax.dist.initialize`). SIGINT and SIGTERM are forwarded to every process (the runner
then backs up and all stop at the same step). When one process fails, the others get
SIGTERM, then SIGKILL after `--grace` seconds: a process of a broken run would otherwise
wait in a collective for good (and under jax.distributed JAX catches SIGTERM itself). The
exit status is the worst of the processes' (signals as 128 + N).

For a cluster (SLURM, Open MPI, TPU pods) no launcher is needed: start the same command on
every host the cluster's way; `dist.initialize="auto"` finds the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from convjax.dist import ADDRESS_ENV, COUNT_ENV, ID_ENV

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now (the coordinator binds it moments later: a small race, accepted)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_env(base: dict[str, str], address: str, processes: int, index: int,
                devices: int = 0) -> dict[str, str]:
    """The environment of process `index`. `devices` > 0: on CPU, that many fake devices per
    process; on GPUs, process i uses GPUs i*devices ... (i+1)*devices - 1."""
    env = {**base, ADDRESS_ENV: address, COUNT_ENV: str(processes), ID_ENV: str(index)}
    if devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if
                 not f.startswith(DEVICE_COUNT_FLAG)]
        env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices}"])
        env["JAX_LOCAL_DEVICE_IDS"] = ",".join(
            str(i) for i in range(index * devices, (index + 1) * devices))
    return env


def exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _signal_all(children: list[subprocess.Popen], signum: int) -> None:
    for child in children:
        if child.poll() is None:
            try:
                os.killpg(child.pid, signum)  # the child's group: its own workers too
            except ProcessLookupError:
                pass


def run(command: Sequence[str], processes: int, devices: int = 0, grace: float = 30.0,
        host: str = "127.0.0.1") -> int:
    """Starts the processes, waits for all, returns the worst exit status."""
    address = f"{host}:{free_port(host)}"
    children = [subprocess.Popen(list(command), start_new_session=True,
                                 env=process_env(dict(os.environ), address, processes, i,
                                                 devices))
                for i in range(processes)]
    forward = lambda signum, frame: _signal_all(children, signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    kill_at = None
    try:
        while any(child.poll() is None for child in children):
            failed = any(child.poll() not in (None, 0) for child in children)
            if failed and kill_at is None:
                _signal_all(children, signal.SIGTERM)
                kill_at = time.monotonic() + grace
            if kill_at is not None and time.monotonic() > kill_at:
                _signal_all(children, signal.SIGKILL)
            time.sleep(0.1)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _signal_all(children, signal.SIGKILL)  # the launcher itself failed: leave nothing
    return max(exit_status(child.returncode) for child in children)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convjax.launch", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, required=True, help="processes to start")
    parser.add_argument("--devices-per-process", type=int, default=0, metavar="K",
                        help="CPU: fake K devices per process; GPU: K GPUs per process "
                             "(default: JAX's own choice)")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds between SIGTERM and SIGKILL once a process failed")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then the command every process runs")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.processes < 1:
        parser.error("give --processes >= 1 and a command after --")
    return run(command, args.processes, args.devices_per_process, args.grace)


if __name__ == "__main__":
    sys.exit(main())
