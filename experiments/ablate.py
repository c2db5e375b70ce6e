r"""Run an experiment under several override sets and seeds, and tabulate mean ± std.

Each `--variant` is a name and comma-separated overrides; every variant shares `--set`, and
runs once per seed of `--seeds` (default: the config's `train.seed` only):

    python -m experiments.ablate --experiment cifar10_cnn --workdir runs/augment \
        --set data.train_limit=10000 --set train.epochs=6 --seeds 0,1,2 \
        --variant "none:" \
        --variant "flip+shift:augment.horizontal_flip=true,augment.width_shift_range=0.1,\
augment.height_shift_range=0.1"

Runtime: variants × seeds runs, one after another, each as long as the experiment alone.
Every name, override and seed is checked before the first run starts (a duplicate variant
name, an unknown key or a finished run whose config differs exits at once, status 2).

Writes, under `--workdir`:
    <variant>/seed<k>/   one run with `train.seed=k` (train_and_evaluate's layout)
    results.jsonl        one JSON object per (variant, seed): its metrics and its full
                         resolved config (for notebooks); rewritten from all runs at the end
    table.md             per variant, each column as `mean ± std (n)` over seeds (sample
                         std; n=1 shows no ±), also printed: final train accuracy (inference
                         mode) and validation accuracy, their gap (overfitting), test
                         accuracy, the last epoch's running train accuracy, epochs, seconds
    curves.png           learning curves, mean ± std band over seeds (needs matplotlib)

Rerunning the same command resumes the sweep: a run with a `results.json` is read, not
retrained; an unfinished one is handed to `train_and_evaluate` again, which continues it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convjax.config import (
    Config,
    apply_overrides,
    config_diff,
    config_from_dict,
    config_to_dict,
)
from convjax.rundir import NOT_COMPARED, run_status
from convjax.train import train_and_evaluate
from experiments.plots import plot_variants

RESULT_KEYS = ("test_accuracy", "train_eval_accuracy", "epochs_run", "train_seconds")
# The table's columns: (title, key in a results.jsonl row, format). 'train acc' is measured
# like 'val acc' (inference mode, final weights), so their gap is the overfitting (its ± is
# the spread of the per-seed gaps); 'running' is the last epoch's mean with dropout and
# augmentation on.
COLUMNS = (("train acc", "train_eval_accuracy", ".3f"), ("val acc", "val_accuracy", ".3f"),
           ("gap", "gap", "+.3f"), ("test acc", "test_accuracy", ".3f"),
           ("running train acc", "train_accuracy", ".3f"), ("epochs", "epochs_run", ".1f"),
           ("train time (s)", "train_seconds", ".0f"))


@dataclass(frozen=True)
class Run:
    """One (variant, seed) of the sweep, with its resolved config."""

    variant: str
    seed: int
    overrides: tuple[str, ...]  # the variant's, without the shared --set and the seed
    cfg: Config
    workdir: Path


# A comma starts the next override only where a `key=` follows it, so tuple values keep
# theirs: "model.conv_filters=32,64,128,model.dense=128" is two overrides.
_NEXT_OVERRIDE = re.compile(r",(?=[A-Za-z_][\w.]*=)")


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition(":")
    if not sep or not name:
        raise ValueError(f"--variant must be NAME:key=value,key=value (got {text!r})")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"variant name {name!r} must be usable as one directory name")
    return name, [item for item in _NEXT_OVERRIDE.split(overrides.strip(",")) if item]


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; each seed once."""
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers (got {text!r})") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list each seed once (got {text!r})")
    return seeds


def plan_runs(base: Config, variants: list[tuple[str, list[str]]], seeds: list[int] | None,
              workdir: Path) -> list[Run]:
    """Every run of the sweep, each config built and checked; no run has started yet."""
    names = [name for name, _ in variants]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"duplicate variant name(s) {', '.join(map(repr, dupes))}: each "
                         "--variant needs its own name (its runs go in <workdir>/<name>/)")
    runs = []
    for name, overrides in variants:
        cfg = apply_overrides(base, overrides)
        for seed in seeds if seeds is not None else [cfg.train.seed]:
            seeded = apply_overrides(cfg, [f"train.seed={seed}"])  # built = checked
            runs.append(Run(name, seed, tuple(overrides), seeded,
                            workdir / name / f"seed{seed}"))
    return runs


def finished_results(run: Run) -> dict[str, Any] | None:
    """The saved results of a finished run (None if new or unfinished); a ValueError if it
    finished under another config, whose results would otherwise be tabulated under this one,
    or if the runner would refuse its workdir (`run_status`: another config, or a directory
    that is not a run), so that the sweep stops before its first run, not in the middle."""
    path = run.workdir / "results.json"
    if not path.exists():
        run_status(run.cfg, run.workdir)  # RunRefused is a ValueError
        return None
    try:
        results = json.loads(path.read_text())
        saved = config_from_dict(results["config"], type(run.cfg))
    except (ValueError, KeyError) as err:  # unreadable, or a config this code cannot load
        raise ValueError(f"{path}: {err!s}; remove the run to redo it") from None
    # The runner's rule: keys such as train.verbose may change between reruns.
    if diff := [d for d in config_diff(saved, run.cfg) if not d.startswith(NOT_COMPARED)]:
        raise ValueError(f"{run.workdir} finished under a different config ({'; '.join(diff)}"
                         "): remove it to rerun, or use another --workdir")
    return results


def run_sweep(runs: list[Run], finished: list[dict | None]) -> list[dict[str, Any]]:
    """Each run's results: read when finished, else trained (or continued) by the runner.

    Sequential on purpose: on XLA:CPU the team measured 4 seeds vmapped into one step at
    64-77 img/s against 184-191 img/s for the same seeds run one after another."""
    results = []
    for i, (run, saved) in enumerate(zip(runs, finished)):
        where = f"[{i + 1}/{len(runs)}] {run.variant} seed {run.seed} ({run.workdir})"
        if saved is not None:
            print(f"{where}: finished, reading its results.json", flush=True)
            results.append(saved)
            continue
        print(f"{where}: training", flush=True)
        results.append(train_and_evaluate(run.cfg, run.workdir))
    return results


def result_row(run: Run, result: dict[str, Any], root: Path) -> dict[str, Any]:
    """One line of results.jsonl: what the table needs, and the full resolved config."""
    history = result["history"]
    # None without a validation split (JSON has no NaN; the table shows n/a)
    val = history["val_accuracy"][-1] if history.get("val_accuracy") else None
    return {"variant": run.variant, "seed": run.seed, "overrides": list(run.overrides),
            "workdir": run.workdir.relative_to(root).as_posix(),
            "train_accuracy": history["accuracy"][-1], "val_accuracy": val,
            "gap": None if val is None else result["train_eval_accuracy"] - val,
            **{k: result[k] for k in RESULT_KEYS},
            "config": config_to_dict(run.cfg)}


def mean_std(values: list[float], spec: str = ".3f") -> str:
    """'0.712 ± 0.013 (3)': mean, sample std (ddof=1) and n; n=1 shows no ±, n=0 'n/a'."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    mean = f"{statistics.fmean(values):{spec}}"
    if len(values) == 1:
        return f"{mean} (1)"
    std = f"{statistics.stdev(values):{spec.replace('+', '')}}"  # a spread has no sign
    return f"{mean} ± {std} ({len(values)})"


def table(rows: list[dict]) -> str:
    """Markdown, one line per variant (in order of appearance)."""
    lines = ["| variant | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        cells = [mean_std([r[key] for r in runs], spec) for _, key, spec in COLUMNS]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    """Whole or not at all: an interrupted write never leaves half a results file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--experiment", default="cifar10_cnn", help="module in experiments/")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], help="overrides for all variants")
    parser.add_argument("--variant", action="append", required=True, help="NAME:k=v,k=v")
    parser.add_argument("--seeds", help="comma-separated, e.g. 0,1,2 (default: train.seed)")
    args = parser.parse_args(argv)
    try:  # everything is checked before the first run starts
        base = importlib.import_module(f"experiments.{args.experiment}").config()
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
        variants = [parse_variant(v) for v in args.variant]
        runs = plan_runs(apply_overrides(base, args.set), variants, seeds, args.workdir)
        finished = [finished_results(run) for run in runs]
    except ValueError as err:
        parser.error(str(err))
    results = run_sweep(runs, finished)
    rows = [result_row(run, result, args.workdir) for run, result in zip(runs, results)]
    write_atomic(args.workdir / "results.jsonl",
                 "".join(json.dumps(row, default=str) + "\n" for row in rows))
    text = table(rows)
    write_atomic(args.workdir / "table.md", text + "\n")
    print(text)
    histories: dict[str, list] = {}
    for run, result in zip(runs, results):
        histories.setdefault(run.variant, []).append(result["history"])
    plot_variants(histories, args.workdir / "curves.png", title=" / ".join(args.set))


if __name__ == "__main__":
    main()
