"""Learning curves of several variants in one figure: per variant, the mean over its seeds
with a ±1 sample-std band.

    python -m experiments.plots runs/augment/none runs/augment/flip+shift --out curves.png

Each argument is a run directory (with `history.csv`, written by CSVLogger) or a variant
directory whose `seed*/` runs are averaged (the layout `experiments/ablate.py` writes).
Two panels: accuracy (validation solid, the epoch's running training accuracy dashed) and
loss, one colour per variant, epochs on the x axis. `ablate.py` calls `plot_variants` with
the runs' histories after its sweep.

`curve_mean_std` is pure; the rest is I/O (reads CSVs, writes a PNG). matplotlib is optional
(`pip install convjax[plots]`): without it `plot_variants` says so and returns None.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

History = Mapping[str, Sequence[float]]  # Keras-style: metric -> one value per epoch


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """Columns of `<run_dir>/history.csv` as float lists ("NA" becomes nan; a ValueError
    names a missing file)."""
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        raise ValueError(f"no history.csv in {run_dir} (was it written by train_and_evaluate?)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no epochs")
    return {key: [math.nan if row[key] == "NA" else float(row[key]) for row in rows]
            for key in rows[0]}


def read_variant(path: Path) -> list[dict[str, list[float]]]:
    """One history for a run directory, or one per `seed*/` run of a variant directory."""
    path = Path(path)
    if (path / "history.csv").exists():
        return [read_history(path)]
    seed_dirs = sorted(d for d in path.glob("seed*") if d.is_dir())
    if not seed_dirs:
        raise ValueError(f"no history.csv in {path} nor in any {path}/seed*/")
    return [read_history(d) for d in seed_dirs]


def curve_mean_std(histories: Sequence[History], metric: str
                   ) -> tuple[list[int], list[float], list[float]]:
    """(epochs from 1, mean, sample std) of `metric` over the runs that have it. Runs may stop
    at different epochs (early stopping): each epoch averages the runs that reached it, and
    its std is 0 where fewer than two did."""
    curves = [list(h[metric]) for h in histories if metric in h]
    length = max((len(c) for c in curves), default=0)
    means, stds = [], []
    for epoch in range(length):
        values = [c[epoch] for c in curves if len(c) > epoch]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return list(range(1, length + 1)), means, stds


def _draw(ax, histories: Sequence[History], metric: str, style: str, label: str,
          colour: dict) -> None:
    epochs, mean, std = curve_mean_std(histories, metric)
    if not epochs:
        return
    ax.plot(epochs, mean, style, label=label, **colour)
    if len(histories) > 1:
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                        [m + s for m, s in zip(mean, std)], alpha=0.15, linewidth=0, **colour)


def _pyplot() -> Any:
    """matplotlib.pyplot drawing to files only, or None (with a message) when matplotlib is
    not installed: it is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'convjax[plots]')")
        return None
    return plt


def plot_variants(histories: Mapping[str, Sequence[History]], out: Path, title: str = ""
                  ) -> Path | None:
    """Writes the figure to `out`; returns it, or None (with a message) without matplotlib.
    `histories` maps each variant's name to its runs' histories (one per seed)."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, runs), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"]()):
        n = f" (n={len(runs)})" if len(runs) > 1 else ""
        for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
            _draw(ax, runs, metric, "--", f"{name} train (running){n}", colour)
            _draw(ax, runs, f"val_{metric}", "-", f"{name} validation{n}", colour)
    for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric + (" (mean ± std over seeds)" if any(
            len(r) > 1 for r in histories.values()) else ""))
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    if title:
        fig.suptitle(textwrap.fill(title, 150), fontsize=9)  # ablate's --set can be long
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_grid(histories: Mapping[str, Sequence[History]], out: Path, reference: str,
              metric: str = "accuracy", columns: int = 4) -> Path | None:
    """Small multiples for many variants: one panel per variant, with the `reference`
    variant (e.g. the baseline) drawn in grey behind it; validation solid, the running
    training `metric` dashed, so each panel shows how far that variant closes the gap.
    Returns `out`, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    if reference not in histories:
        raise ValueError(f"no variant {reference!r} to draw behind the others")
    rows = -(-len(histories) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows),
                             sharex=True, sharey=True, squeeze=False)
    grey, blue = {"color": "0.6"}, {"color": "tab:blue"}
    for ax, (name, runs) in zip(axes.flat, histories.items()):
        for style, key in (("--", metric), ("-", f"val_{metric}")):
            if name != reference:
                _draw(ax, histories[reference], key, style, "", grey)
            _draw(ax, runs, key, style, "", blue)
        ax.set_title(f"{name} (n={len(runs)})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(histories):]:
        ax.axis("off")
    fig.supxlabel("epoch")
    fig.supylabel(f"{metric}: validation (solid), running train (dashed); grey: {reference}",
                  fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_runs(paths: Sequence[Path], out: Path, title: str = "") -> Path | None:
    """`plot_variants` over run or variant directories, each named by its directory."""
    return plot_variants({Path(p).name: read_variant(Path(p)) for p in paths}, out, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="run directories (with history.csv) or variant directories "
                             "(with seed*/history.csv)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    if (written := plot_runs(args.runs, args.out, args.title)) is not None:
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
