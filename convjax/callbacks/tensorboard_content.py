"""What the TensorBoard callback writes, computed: weight images, confusion matrix images,
the table of weights, the flattened hyperparameters, the batches to profile.

Pure (no I/O); `convjax.callbacks.tensorboard` writes the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from convjax.models.summary import count_params

HParam = bool | int | float | str

# Confusion matrix images: cells of about CONFUSION_SIDE / C pixels, within CONFUSION_CELL, so
# 10 classes make a 480-pixel square and 1,000 classes one pixel a cell.
CONFUSION_SIDE = 480
CONFUSION_CELL = (1, 64)  # smallest and largest cell side, pixels
LABEL_MIN_CELL = 12  # class names only when a row is as tall as a line of the default font
NAME_CHARS = 16  # longer class names are cut
WHITE, DARK_BLUE = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])  # "Blues" ends


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """("conv0_0/kernel", leaf) for each leaf, with Flax's module paths."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in flat]


def params_table(params: Any) -> str:
    """A text summary of the weights (path, shape, count) for when no model summary is given.
    Reads only shapes, so device arrays are not copied to the host."""
    rows = [f"{name:<40}{str(value.shape):<20}{int(np.prod(value.shape)):>12,}"
            for name, value in named_leaves(params)]
    header = f"{'Weight':<40}{'Shape':<20}{'Param #':>12}"
    return "\n".join([header, *rows, f"Total params: {count_params(params):,}"])


def flatten_hparams(hparams: dict[str, Any], prefix: str = "") -> dict[str, HParam]:
    """`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`: bools, numbers and strings as they are,
    tuples (and anything else) as their text; None is left out (an empty cell in the HPARAMS
    table, rather than the text "None" turning a numeric column into text)."""
    flat: dict[str, HParam] = {}
    for name, value in hparams.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, dict):
            flat.update(flatten_hparams(value, key))
        elif isinstance(value, (bool, int, float, str)):
            flat[key] = value
        elif value is not None:
            flat[key] = str(value)
    return flat


def profile_range(profile_batch: int | tuple[int, int] | str) -> tuple[int, int]:
    """Keras's `profile_batch` as the first and last global batch (1-based, inclusive) to
    profile: N -> (N, N), a pair (or Keras's "start,stop") as given, 0 -> (0, 0): off."""
    if isinstance(profile_batch, int):
        pair = (profile_batch,) * 2
    elif isinstance(profile_batch, str):
        parts = profile_batch.split(",")
        pair = tuple(int(part) for part in parts if part.strip().isdigit())
        pair = pair if len(pair) == len(parts) else ()
    else:
        pair = tuple(profile_batch) if isinstance(profile_batch, (tuple, list)) else ()
    if not (len(pair) == 2 and all(isinstance(batch, int) for batch in pair)
            and (pair == (0, 0) or 1 <= pair[0] <= pair[1])):
        raise ValueError("profile_batch must be 0 (off), a batch N >= 1 or a pair (start, "
                         f"stop) with 1 <= start <= stop, got {profile_batch!r}")
    return pair


def weight_image(weight: np.ndarray) -> np.ndarray:
    """A (H, W) image in [0, 1] of a weight: a bias as one row, a dense kernel with its longer
    side across, a conv kernel (kh, kw, cin, cout) as a grid with one (kh, kw) tile per input
    channel (rows) and filter (columns). Keras skips conv kernels unless they have 1, 3 or 4
    filters."""
    w = np.asarray(weight, np.float32)
    if w.ndim <= 1:
        image = w.reshape(1, -1)
    elif w.ndim == 2:
        image = w.T if w.shape[0] > w.shape[1] else w
    else:
        kh, kw = w.shape[0], w.shape[1]
        tiles = w.reshape(kh, kw, -1, w.shape[-1])  # (kh, kw, cin, cout)
        image = tiles.transpose(2, 0, 3, 1).reshape(tiles.shape[2] * kh, tiles.shape[3] * kw)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def confusion_image(matrix: np.ndarray, class_names: Sequence[str] | None = None
                    ) -> np.ndarray:
    """An RGB uint8 (H, W, 3) picture of a confusion matrix of counts (rows: true class,
    columns: predicted). Each cell is a square coloured by its share of the row, i.e. of its
    true class's examples, from white (0) to dark blue (1), so the diagonal reads as per-class
    accuracy whatever the class sizes; its count is written in it where it fits. With
    `class_names` and cells big enough, the names label the rows (left) and columns (top)."""
    counts = np.asarray(matrix, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    cell = int(np.clip(CONFUSION_SIDE // len(counts), *CONFUSION_CELL))
    colours = np.rint(WHITE + fractions[..., None] * (DARK_BLUE - WHITE)).astype(np.uint8)
    grid = Image.fromarray(colours.repeat(cell, axis=0).repeat(cell, axis=1))
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    for (row, col), count in np.ndenumerate(counts):
        text = str(round(count))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left > cell - 2 or bottom - top > cell - 2:
            continue  # does not fit in its cell
        x = col * cell + (cell - (right - left)) // 2 - left
        y = row * cell + (cell - (bottom - top)) // 2 - top
        ink = "white" if fractions[row, col] > 0.5 else "black"  # readable on dark and light
        draw.text((x, y), text, fill=ink, font=font)
    if class_names is not None and cell >= LABEL_MIN_CELL:
        grid = _with_class_names(grid, list(class_names), cell, font)
    return np.asarray(grid)


def _with_class_names(grid: Image.Image, names: list[str], cell: int,
                      font: ImageFont.ImageFont) -> Image.Image:
    """`grid` with the names left of its rows and above its columns (read upwards)."""
    names = [str(name)[:NAME_CHARS] for name in names]
    boxes = [ImageDraw.Draw(grid).textbbox((0, 0), name, font=font) for name in names]
    margin = 4 + max(right for _, _, right, _ in boxes)
    canvas = Image.new("RGB", (margin + grid.width, margin + grid.height), "white")
    canvas.paste(grid, (margin, margin))
    draw = ImageDraw.Draw(canvas)
    for i, (name, (_, top, right, bottom)) in enumerate(zip(names, boxes)):
        y = i * cell + (cell - (bottom - top)) // 2 - top  # centred on row / column i
        draw.text((margin - 2 - right, margin + y), name, fill="black", font=font)
        label = Image.new("RGB", (margin, cell), "white")  # written across, then turned
        ImageDraw.Draw(label).text((2, y - i * cell), name, fill="black", font=font)
        canvas.paste(label.rotate(90, expand=True), (margin + i * cell, 0))
    return canvas
