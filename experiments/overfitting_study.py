r"""The course's overfitting slide, measured: eight techniques against overfitting, 3 seeds each.

    CONVJAX_DATA=../shared/data/cifar10-jpg.tar.gz python -m experiments.overfitting_study \
        --workdir runs/overfitting

The course CNN (`experiments.cifar10_cnn`) on a CIFAR-10 subset small enough that it
overfits within the study's epochs (`SHARED`), once per variant and seed through
`experiments.ablate`, which writes `table.md` (mean ± std over the seeds of the train and
validation accuracy, their gap, and test accuracy), `results.jsonl` and `curves.png` in the
workdir, and `curves_grid.png`: one panel per variant with the baseline behind it. Rerunning
the command continues a study that stopped; more `--set` overrides
(applied after `SHARED`) or other `--seeds` may be given, e.g. `--set train.epochs=30`.

Every variant changes one thing of the baseline (`VARIANTS`). The learning rate is *not*
scaled with the batch size: the course changes only `batch_size`, so a larger batch also
means fewer updates per epoch. `--list` prints the ablate command it runs.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from experiments import ablate
from experiments.plots import plot_grid, read_variant

# 4,000 training images drawn with the run's seed, 1,000 of them for validation; 5,000 test
# images; 20 epochs: about 100 s a run on 2 CPU cores, 36 runs in about an hour. How much
# the baseline overfits there: README, "The overfitting study".
SHARED = ("data.train_limit=4000", "data.validation_split=0.25", "data.test_limit=5000",
          "train.epochs=20")
SEEDS = "0,1,2"

# name -> overrides of the baseline (Conv32x2-Pool-Conv64x2-Pool-Dense512, dropout 0.25 after
# each conv block and 0.5 after the dense layer, Adam 1e-3, batch 128).
VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "conv+1": ("model.conv_filters=32,64,128",),  # more conv layers: a third block
    "batchnorm": ("model.batch_norm=true",),
    "flip+shift": ("augment.horizontal_flip=true", "augment.width_shift_range=0.1",
                   "augment.height_shift_range=0.1"),
    "smaller": ("model.conv_filters=16,32", "model.dense=128"),  # smaller filters and dense
    "l2-dense": ("model.l2=0.001", "model.l2_layers=dense"),  # Keras l2(1e-3) on the Dense
    "dropout0.5": ("model.dropout=0.5",),  # after every block (the dense one has 0.5)
    "dropout0.6": ("model.dropout=0.6", "model.dense_dropout=0.6"),
    "lr3e-4": ("optim.learning_rate=0.0003",),
    "lr3e-3": ("optim.learning_rate=0.003",),
    "batch32": ("train.batch_size=32",),  # learning rate not scaled (see above)
    "batch512": ("train.batch_size=512",),
}


def ablate_argv(extra: list[str]) -> list[str]:
    """The `experiments.ablate` arguments of the study; `extra` (the user's) comes last."""
    argv = ["--experiment", "cifar10_cnn", "--seeds", SEEDS]
    for item in SHARED:
        argv += ["--set", item]
    for name, overrides in VARIANTS.items():
        argv += ["--variant", f"{name}:{','.join(overrides)}"]
    return argv + extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]) + "\nOther arguments go to experiments.ablate.")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--list", action="store_true", help="print the ablate command, run nothing")
    args, rest = parser.parse_known_args(argv)
    argv = ablate_argv(["--workdir", str(args.workdir), *rest])
    if args.list:
        print("python -m experiments.ablate " + shlex.join(argv))
        return
    ablate.main(argv)  # the sweep, table.md, results.jsonl and curves.png (all variants)
    histories = {name: read_variant(args.workdir / name) for name in VARIANTS}
    plot_grid(histories, args.workdir / "curves_grid.png", reference="baseline")


if __name__ == "__main__":
    main()
