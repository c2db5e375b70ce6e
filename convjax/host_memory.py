"""Keep freed host memory in the process, so that XLA:CPU's scratch buffer is not re-faulted
every step.

I/O (process-wide allocator settings). XLA:CPU runs each execution of a compiled program in
one scratch buffer for its intermediates (159 MB for the course CNN's train step at batch 128),
allocated with malloc and freed when the step ends. glibc hands blocks that large straight to
mmap and gives them back with munmap, so each step the kernel zero-fills ~39,000 fresh 4 KB
pages again on first touch. Measured on the 2-core machine (README, "Training speed"): 38,800
minor page faults and 60 ms of system time per 115 ms step; with memory kept, none, and the
step takes 78-85 ms.

`keep_freed_memory()` asks glibc (`mallopt`) to serve large blocks from its heap and to keep
what is freed: the same as starting the process with the environment variable
`GLIBC_TUNABLES` set to `TUNABLES` (what `benchmarks/bench_train_speed.py` gives every peer,
PyTorch included, so that frameworks and not allocators are compared). All three settings are
needed (any two left most of the faults, measured): threads other than the main one get
arenas of their own, which cannot hold blocks this large and fall back to mmap, so all threads
share the main arena; it must not mmap; and it must not give freed memory back. It acts on
threads that allocate afterwards, so it must run before JAX starts its backend (its threads
take an arena at their first allocation): the experiments' command line calls it just before
the runner. The costs: the process keeps its peak heap until it exits, and threads share one
arena's lock (the image-folder decoder's thread pool, `benchmarks/bench_folder_loader.py`,
decoded at 2.05x its single-threaded baseline with the setting and 2.06x without).
`CONVJAX_KEEP_FREED_MEMORY=0` turns it off; off glibc it does nothing.

Why not jemalloc or tcmalloc (the remedy PyTorch's CPU tuning guides give): they are
preloaded when a process starts (LD_PRELOAD), which a library cannot do for its user, while
glibc's own allocator can be told from inside the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
KEEP_AT_MOST = 2**31 - 1  # bytes of free heap kept before trimming: mallopt takes an int
TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            f"glibc.malloc.trim_threshold={KEEP_AT_MOST}")


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process (module docstring). True if it took."""
    if os.environ.get("CONVJAX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_AT_MOST))
    return all(mallopt(param, value) == 1 for param, value in settings)
