"""Run an experiment under several override sets and tabulate the results.

Each `--variant` is a name and comma-separated overrides; every variant shares `--set`:

    python -m experiments.ablate --experiment cifar10_cnn --workdir runs/augment \
        --set data.train_limit=10000 --set train.epochs=6 \
        --variant "none:" \
        --variant "flip+shift:augment.horizontal_flip=true,augment.width_shift_range=0.1,\
augment.height_shift_range=0.1"

Writes `<workdir>/<variant>/` per run (as train_and_evaluate does), `<workdir>/results.jsonl`
(one JSON object per variant, for notebooks), `<workdir>/curves.png` (learning curves, when
matplotlib is installed) and `<workdir>/table.md`, which it also prints:
final train (inference mode) and validation accuracy, their gap (overfitting), test accuracy,
the epoch's running train accuracy, wall time.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from convjax.config import apply_overrides
from convjax.train import train_and_evaluate
from experiments.plots import plot_runs


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition(":")
    if not sep or not name:
        raise ValueError(f"--variant must be NAME:key=value,key=value (got {text!r})")
    return name, [item for item in overrides.split(",") if item]


def table(rows: list[dict]) -> str:
    """Markdown: 'train acc' is measured like 'val acc' (inference mode, final weights), so
    their gap is the overfitting; 'running' is the epoch's mean with dropout/augmentation on."""
    lines = ["| variant | train acc | val acc | gap | test acc | running train acc | epochs "
             "| train time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['train_eval_accuracy']:.3f} "
                     f"| {r['val_accuracy']:.3f} "
                     f"| {r['train_eval_accuracy'] - r['val_accuracy']:+.3f} "
                     f"| {r['test_accuracy']:.3f} | {r['train_accuracy']:.3f} "
                     f"| {r['epochs_run']} | {r['train_seconds']:.0f}s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="cifar10_cnn", help="module in experiments/")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], help="overrides for all variants")
    parser.add_argument("--variant", action="append", required=True, help="NAME:k=v,k=v")
    args = parser.parse_args(argv)
    base = importlib.import_module(f"experiments.{args.experiment}").config()
    base = apply_overrides(base, args.set)
    variants = [parse_variant(v) for v in args.variant]
    configs = {name: apply_overrides(base, overrides) for name, overrides in variants}
    workdir = Path(args.workdir)
    rows = []
    for name, cfg in configs.items():  # all configs validated before the first run starts
        result = train_and_evaluate(cfg, workdir / name)
        history = result["history"]
        row = {"variant": name, "overrides": dict(variants)[name],
               "train_accuracy": history["accuracy"][-1],
               "val_accuracy": history.get("val_accuracy", [float("nan")])[-1],
               **{k: result[k] for k in ("test_accuracy", "train_eval_accuracy", "epochs_run",
                                         "train_seconds")}}
        rows.append(row)
        with open(workdir / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    (workdir / "table.md").write_text(table(rows) + "\n")
    print(table(rows))
    plot_runs([workdir / name for name in configs], workdir / "curves.png",
              title=" / ".join(args.set))


if __name__ == "__main__":
    main()
