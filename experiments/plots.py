"""Learning curves of several runs in one figure, from their `history.csv` files (CSVLogger).

    python -m experiments.plots runs/augment/none runs/augment/flip+shift --out curves.png

Two panels per figure: accuracy (validation solid, the epoch's running training accuracy
dashed) and loss, one colour per run, epochs on the x axis. `experiments/ablate.py` calls
`plot_runs` after its variants. I/O only (reads CSVs, writes a PNG); matplotlib is optional
(`pip install convjax[plots]`), and `plot_runs` says so instead of failing when it is missing.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """Columns of `<run_dir>/history.csv` as float lists (a ValueError names a missing file)."""
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        raise ValueError(f"no history.csv in {run_dir} (was it written by train_and_evaluate?)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no epochs")
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def plot_runs(run_dirs: list[Path], out: Path, title: str = "") -> Path | None:
    """Writes the figure to `out`; returns it, or None (with a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'convjax[plots]')")
        return None
    histories = {Path(d).name: read_history(Path(d)) for d in run_dirs}
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, h), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"]()):
        epochs = [e + 1 for e in h["epoch"]]
        for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
            ax.plot(epochs, h[metric], "--", label=f"{name} train (running)", **colour)
            if f"val_{metric}" in h:
                ax.plot(epochs, h[f"val_{metric}"], "-", label=f"{name} validation", **colour)
    for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with history.csv)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    if (written := plot_runs(args.runs, args.out, args.title)) is not None:
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
