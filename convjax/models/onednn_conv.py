"""Stride-1 convolution from oneDNN (Intel's CPU deep-learning kernels) through `jax.ffi`.

Pure as seen from JAX: `conv_onednn(x, kernel, padding)` is `lax.conv_general_dilated` in
NHWC/HWIO without bias, a custom call whose two gradients are custom calls too. Why it
exists: XLA:CPU's own convolutions, and every pure-JAX rewrite of them (`layers`,
`shifted_conv`), left the course CNN's train step at about half of PyTorch's speed on CPU
(issue #14). PyTorch gets its CPU convolutions from oneDNN; here the same library runs
inside the jitted JAX program, so the step, the loop and the functional design are unchanged.
Measured per layer and for the whole step in the README ("Training speed").

oneDNN comes from PyPI (`onednn-cpu-gomp` and its headers in `onednn-devel-cpu-gomp`, both
x86-64 Linux). The handlers (`onednn_conv.cc`, ~170 lines) are compiled on first use with the
system's C++ compiler against those headers and JAX's own FFI headers, into
`$CONVJAX_CACHE/kernels/` (`convjax.cache`), keyed by a hash of the source and both
libraries' versions (a few seconds, once per machine: no binary is shipped, so it always
matches the installed jaxlib). `available()` says whether that works here; the model's
`conv_impl="auto"` uses this conv on CPU only when it does.

float32 only (the handlers bind float32 buffers); other dtypes are refused at trace time, and
`auto` keeps XLA's conv for a layer computing in another dtype.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from convjax.cache import cache_root
from convjax.models.shifted_conv import padding_amounts

SOURCE = Path(__file__).with_name("onednn_conv.cc")
ONEDNN_LIB, ONEDNN_HEADERS = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"
INSTALL_HINT = "pip install 'onednn-cpu-gomp==2023.2.0' 'onednn-devel-cpu-gomp==2023.2.0'"
TARGETS = {"forward": "ConvForward", "input_grad": "ConvInputGrad",
           "kernel_grad": "ConvKernelGrad"}


class OneDnnUnavailable(RuntimeError):
    """oneDNN or a C++ compiler is missing, or building the handlers failed."""


def cache_dir() -> Path:
    """Where the compiled handlers live: `kernels/` under convjax's cache root."""
    return cache_root() / "kernels"


def _package_dir(dist: str, suffix: str) -> Path:
    """The installed directory of `dist` whose files end with `suffix` (wheels put oneDNN's
    lib/ and include/ under the environment's prefix, not under site-packages)."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise OneDnnUnavailable(
            f"conv_impl='onednn' needs the {dist} package: {INSTALL_HINT}") from None
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate()).resolve().parent
    raise OneDnnUnavailable(f"{dist} is installed but has no {suffix}: reinstall it")


def _build_inputs() -> tuple[Path, Path, str]:
    """(include dir, lib dir, cache key) for compiling the handlers."""
    include = _package_dir(ONEDNN_HEADERS, "oneapi/dnnl/dnnl.hpp").parent.parent
    lib = _package_dir(ONEDNN_LIB, "libdnnl.so")
    inputs = (jax.ffi.include_dir(), importlib.metadata.version("jaxlib"), str(lib),
              importlib.metadata.version(ONEDNN_LIB), SOURCE.read_text())
    key = hashlib.sha256("|".join(inputs).encode()).hexdigest()[:16]
    return include, lib, key


def build() -> Path:
    """Compile `onednn_conv.cc` into the cache (if not there yet) and return the library's path.
    Written to a temporary name and renamed, so concurrent processes never load a half file."""
    include, lib, key = _build_inputs()
    target = cache_dir() / f"onednn_conv-{key}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise OneDnnUnavailable(f"conv_impl='onednn' compiles its handlers with a C++ compiler; "
                                f"{compiler!r} was not found (set CXX)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            _compile(compiler, include, lib, Path(tmp) / target.name)
            os.replace(Path(tmp) / target.name, target)
    except OSError as err:
        raise OneDnnUnavailable(f"cannot write the kernel cache {target.parent}: "
                                f"{err.strerror} (set CONVJAX_CACHE)") from None
    return target


def _compile(compiler: str, include: Path, lib: Path, out: Path) -> None:
    cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
           f"-I{jax.ffi.include_dir()}", f"-I{include}", str(SOURCE), "-o", str(out),
           f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise OneDnnUnavailable(f"compiling {SOURCE.name} failed: {last}")


@functools.cache
def register() -> None:
    """Build (once) and register the three handlers with XLA:CPU (once per process)."""
    path = build()
    # oneDNN's threads are OpenMP's, which by default spin for a while after each conv; that
    # spinning takes the cores from XLA's own threads running the ops in between (course CNN,
    # images/s, 3 runs: 662 with OMP_WAIT_POLICY=active, 1,046 with libgomp's default, 1,095
    # passive; README). libgomp reads this once, when it is loaded (just below, unless
    # another library in the process loaded it first); a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    lib = ctypes.cdll.LoadLibrary(str(path))
    for name in TARGETS.values():
        jax.ffi.register_ffi_target(f"convjax_onednn_{name}",
                                    jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")


@functools.cache
def available() -> bool:
    """True when the handlers can be built and loaded here (what `conv_impl="auto"` asks).
    When not, says why once (a warning): `auto` then runs XLA's conv, at 0.5-0.6x the speed."""
    try:
        register()
    except (OneDnnUnavailable, OSError) as err:
        warnings.warn(f"oneDNN's conv is unavailable here, so conv_impl='auto' runs XLA's: "
                      f"{err}", RuntimeWarning, stacklevel=2)
        return False
    return True


def _call(target: str, out_shape: tuple[int, ...], *args: jax.Array, pads: tuple[int, int]):
    register()
    result = jax.ShapeDtypeStruct(out_shape, jnp.float32)
    return jax.ffi.ffi_call(f"convjax_onednn_{TARGETS[target]}", result,
                            vmap_method="sequential")(
        *args, pad_top=np.int64(pads[0]), pad_left=np.int64(pads[1]))


def _pads_and_out_shape(x_bhwc: jax.Array, kernel_hwio: jax.Array, padding: str):
    kh, kw, in_ch, out_ch = kernel_hwio.shape
    if x_bhwc.dtype != jnp.float32 or kernel_hwio.dtype != jnp.float32:
        raise ValueError(f"conv_impl='onednn' computes in float32, got {x_bhwc.dtype} input "
                         f"and {kernel_hwio.dtype} kernel (use conv_impl='xla' for others)")
    if x_bhwc.shape[-1] != in_ch:
        raise ValueError(f"input has {x_bhwc.shape[-1]} channels, kernel expects {in_ch}")
    (top, bottom), (left, right) = padding_amounts(kh, padding), padding_amounts(kw, padding)
    b, h, w, _ = x_bhwc.shape
    return (top, left), (b, h + top + bottom - kh + 1, w + left + right - kw + 1, out_ch)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_onednn(x_bhwc: jax.Array, kernel_hwio: jax.Array, padding: str = "SAME") -> jax.Array:
    """`lax.conv_general_dilated(x, kernel, (1, 1), padding)` in NHWC/HWIO, from oneDNN."""
    pads, out_shape = _pads_and_out_shape(x_bhwc, kernel_hwio, padding)
    return _call("forward", out_shape, x_bhwc, kernel_hwio, pads=pads)


def _conv_fwd(x_bhwc, kernel_hwio, padding):
    return conv_onednn(x_bhwc, kernel_hwio, padding), (x_bhwc, kernel_hwio)


def _conv_bwd(padding, residuals, dy_bhwc):
    x_bhwc, kernel_hwio = residuals
    pads, _ = _pads_and_out_shape(x_bhwc, kernel_hwio, padding)
    # Neither call has side effects, so XLA drops the input gradient where nothing uses it
    # (the first layer's: its input is the data).
    dx = _call("input_grad", x_bhwc.shape, dy_bhwc, kernel_hwio, pads=pads)
    dkernel = _call("kernel_grad", kernel_hwio.shape, x_bhwc, dy_bhwc, pads=pads)
    return dx, dkernel


conv_onednn.defvjp(_conv_fwd, _conv_bwd)
