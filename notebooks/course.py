"""What the notebooks share: their scale, where the shared photos are, where runs are written,
how a table is shown.

I/O (reads the shared archives, writes small image folders). Used by the notebooks beside it:

- `SMOKE`: `CONVJAX_NOTEBOOK_SMOKE=1` runs every notebook at smoke scale (seconds, for tests);
  otherwise at full scale.
- `shared_archive(name)`: `$CONVJAX_SHARED_DATA/<name>`, by default `../shared/data/<name>`
  beside the repository (the project's shared data, never copied into it).
- `image_root(name, top, per_class)`: the folder of photos a notebook trains on. Full scale:
  the whole extracted archive (`convjax.data.resolve_folder` extracts it once into the cache).
  Smoke scale: a tiny copy of the first `per_class` photos of each class of each split, read
  straight from the archive, or, without the archive, synthetic pictures whose class is their
  colour (so CI never depends on a download; under CI=true the shared data is present).
- `table(headers, rows)`: a Markdown table for `display`; `show_jpeg(fig)`: a figure of
  photos shown as a JPEG (a fraction of a PNG's size in the committed notebook).
- `fresh_workdir(name)`: `$CONVJAX_NOTEBOOK_WORKDIR/<name>` (default `runs/<name>`, relative
  to the notebook), emptied first, so a rerun never resumes or compares with an old run.

Notebooks print paths relative to their workdir only: an executed notebook is committed, and
must not carry this machine's paths.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image as ImageOutput
from IPython.display import Markdown, display
from PIL import Image

from convjax.data import resolve_folder

SMOKE = os.environ.get("CONVJAX_NOTEBOOK_SMOKE", "") == "1"
REPO = Path(__file__).resolve().parents[1]


def shared_archive(name: str) -> Path:
    return Path(os.environ.get("CONVJAX_SHARED_DATA", REPO.parent / "shared" / "data")) / name


def fresh_workdir(name: str) -> Path:
    path = Path(os.environ.get("CONVJAX_NOTEBOOK_WORKDIR", "runs")) / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def image_root(name: str, top: str, per_class: dict[str, int], workdir: Path,
               synthetic_classes: tuple[str, ...] = ("cats", "dogs")) -> tuple[Path, str]:
    """(folder with <split>/<class>/ photos, a line saying what it holds).

    `name` is the archive (e.g. "cats_vs_dogs-small.tar.gz") whose top folder is `top`;
    `per_class` maps each split to the photos per class a smoke run keeps."""
    archive = shared_archive(name)
    if not SMOKE:
        if not archive.exists():
            raise FileNotFoundError(f"{name} not found: set CONVJAX_SHARED_DATA to the shared "
                                    "data folder, or run at smoke scale (CONVJAX_NOTEBOOK_SMOKE=1)")
        root = resolve_folder(archive)
        return (root / top if (root / top).is_dir() else root), f"all of {name}"
    dest = workdir / "photos"
    if archive.exists():
        copy_first_photos(archive, top, per_class, dest)
        return dest, f"smoke scale: the first {per_class} photos per class of {name}"
    synthetic_folder(dest, per_class, synthetic_classes)
    return dest, f"smoke scale: {name} absent, synthetic pictures {per_class} per class"


def copy_first_photos(archive: Path, top: str, per_class: dict[str, int], dest: Path) -> None:
    """Copies the first `per_class[split]` files of every <top>/<split>/<class>/ in `archive`,
    reading it as a stream (no extraction of the whole archive)."""
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4 or parts[0] != top:
                continue
            _, split, label, filename = parts
            if taken and split not in per_class:
                break  # past the wanted splits (archives hold one split after the other)
            if taken.get((split, label), 0) >= per_class.get(split, 0):
                continue
            taken[(split, label)] = taken.get((split, label), 0) + 1
            out = dest / split / label / filename
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())


def synthetic_folder(dest: Path, per_class: dict[str, int], classes: tuple[str, ...]) -> None:
    """Noisy JPEGs of varying size; class k is tinted with its own colour (learnable)."""
    rng = np.random.default_rng(0)
    tints = rng.uniform(40, 215, (len(classes), 3))
    for split, n in per_class.items():
        for k, label in enumerate(classes):
            (dest / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(48, 96, 2)
                pixels = np.clip(tints[k] + rng.normal(0, 40, (h, w, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(dest / split / label / f"{i}.jpg")


def table(headers: list[str], rows: list[list]) -> Markdown:
    """A Markdown table (floats with 4 decimals) for `display`."""
    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))


def show_jpeg(fig: plt.Figure, quality: int = 85) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=80, bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(ImageOutput(data=buffer.getvalue(), format="jpeg"))
