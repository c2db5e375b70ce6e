"""Placement (convjax.data.placement) across processes: two processes on localhost, each
reading only its rows of every global batch, through both batch sources."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from convjax.data.placement import local_rows
from convjax.sharding import make_mesh

WORKER = Path(__file__).with_name("placement_worker.py")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_a_single_process_reads_every_row():
    assert local_rows(make_mesh(), 8) == slice(0, 8)


@pytest.mark.slow
def test_two_processes_each_read_their_share_of_each_batch(tmp_path):
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)  # the worker fakes its own 2 devices
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(i), port], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=120)[0])
        finally:
            worker.kill()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        for name in ("replicated", "sharded", "streaming"):
            assert f"{name} ok" in output, output
