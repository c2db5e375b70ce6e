"""host_memory.keep_freed_memory: XLA:CPU's scratch buffer stops being re-faulted each call.

Each case runs in a fresh process: the setting is process-wide and must come before JAX
starts its backend, and the test process's own allocator is left alone."""

import os
import subprocess
import sys

import pytest

from convjax import host_memory

# A program whose scratch buffer is 64 MB (x @ w, reduced after), above glibc's 32 MB limit
# for serving blocks from its heap; prints the minor page faults per call after warm-up.
PROGRAM = """
import resource, sys
from convjax.host_memory import keep_freed_memory
took = keep_freed_memory()
import jax, jax.numpy as jnp
x, w = jnp.ones((4096, 1024)), jnp.ones((1024, 4096))
f = jax.jit(lambda x, w: jnp.sort(x @ w, axis=0)[0])
for _ in range(2):
    f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    f(x, w).block_until_ready()
print(took, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def faults_per_call(keep: str, **env_vars: str) -> tuple[bool, int]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CONVJAX_KEEP_FREED_MEMORY": keep,
           "XLA_FLAGS": "", **env_vars}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_kept_memory_is_not_faulted_again_each_call():
    took_off, off = faults_per_call("0")
    took_on, on = faults_per_call("1")
    if not took_on:
        pytest.skip("not glibc: mallopt unavailable")
    assert not took_off
    assert off > 10_000  # 64 MB of fresh 4 KB pages per call: munmap'd and mmap'd again
    assert on < off / 10, (on, off)


def test_glibc_tunables_at_start_do_the_same():
    """What bench_train_speed gives every peer's process instead of calling mallopt."""
    took, faults = faults_per_call("0", GLIBC_TUNABLES=host_memory.TUNABLES)
    assert not took
    assert faults < faults_per_call("0")[1] / 10
