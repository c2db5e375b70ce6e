"""Test setup: force the CPU backend with 4 fake devices (for the sharding tests) and locate
the shared real data.

Real-data tests use the `shared_data` fixture: it skips with a message when the archives are
absent, except under CI (CI=true), where their absence is a failure.
"""

import os

# Must happen before jax is imported anywhere.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("KERAS_BACKEND", "jax")  # the parity tests compare against Keras-on-JAX
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402

# With the (default) partitionable threefry, every differently-shaped 4-D random draw (each
# conv kernel init) takes ~9 s to compile on XLA:CPU in jax 0.10; the classic scheme takes
# ~0.6 s. Tests only compare runs made under the same setting, so this changes no assertion.
jax.config.update("jax_threefry_partitionable", False)

import tarfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$CONVJAX_SHARED_DATA`, else `../shared/data` beside the repository."""
    return Path(os.environ.get("CONVJAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if path.exists():
        return path
    message = f"real data not found at {path} (set CONVJAX_SHARED_DATA to the shared data folder)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " -- required under CI=true")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_archive():
    """Returns a function: archive name -> extracted folder (extracted once per session)."""
    extracted: dict[str, Path] = {}

    tmp_root = Path(os.environ.get("CONVJAX_TEST_CACHE", "/tmp"))

    def get(name: str) -> Path:
        if name not in extracted:
            archive = _require(shared_data_dir() / name)
            dest = tmp_root / "convjax-test-data" / name.replace(".tar.gz", "")
            marker = dest / ".complete"
            if not marker.exists():
                dest.mkdir(parents=True, exist_ok=True)
                with tarfile.open(archive) as tar:
                    tar.extractall(dest, filter="data")
                marker.touch()
            extracted[name] = dest
        return extracted[name]

    return get
