"""experiments/plots.py: per-epoch mean ± std over seeds (runs of unequal length included),
history.csv reading, and a figure from a variant directory of seed runs."""

import math

import pytest

from experiments import plots
from helpers import require_module


def write_history(run_dir, rows):
    run_dir.mkdir(parents=True)
    lines = ["epoch,accuracy,loss,val_accuracy"]
    lines += [f"{i},{acc},{loss},{val}" for i, (acc, loss, val) in enumerate(rows)]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")


def test_curve_mean_std_averages_the_runs_that_reached_each_epoch():
    runs = [{"accuracy": [0.1, 0.3]}, {"accuracy": [0.3, 0.5, 0.9]}, {"loss": [1.0]}]
    epochs, mean, std = plots.curve_mean_std(runs, "accuracy")
    assert epochs == [1, 2, 3]
    assert mean == pytest.approx([0.2, 0.4, 0.9])
    assert std == pytest.approx([math.sqrt(0.02), math.sqrt(0.02), 0.0])  # ddof=1
    assert plots.curve_mean_std(runs, "val_loss") == ([], [], [])


def test_histories_are_read_from_runs_or_seed_directories(tmp_path):
    write_history(tmp_path / "v" / "seed0", [(0.5, 1.0, 0.4), (0.6, 0.9, "NA")])
    write_history(tmp_path / "v" / "seed1", [(0.7, 0.8, 0.6)])
    seed0, seed1 = plots.read_variant(tmp_path / "v")
    assert seed0["accuracy"] == [0.5, 0.6] and math.isnan(seed0["val_accuracy"][1])
    assert plots.read_variant(tmp_path / "v" / "seed1") == [seed1]
    with pytest.raises(ValueError, match="no history.csv in"):
        plots.read_history(tmp_path)
    with pytest.raises(ValueError, match=r"nor in any .*seed\*"):
        plots.read_variant(tmp_path / "v" / "seed2")


def test_plot_runs_writes_a_png_for_variant_directories(tmp_path):
    require_module("matplotlib")
    for seed in (0, 1):
        write_history(tmp_path / "v" / f"seed{seed}", [(0.5 + seed / 10, 1.0, 0.4)] * 3)
    write_history(tmp_path / "single", [(0.5, 1.0, 0.4)] * 2)
    out = plots.plot_runs([tmp_path / "v", tmp_path / "single"], tmp_path / "c.png", "t")
    assert out == tmp_path / "c.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_grid_draws_each_variant_over_the_reference(tmp_path):
    require_module("matplotlib")
    histories = {name: [{"accuracy": [0.3, 0.6], "val_accuracy": [0.3, 0.4]}] * 2
                 for name in ("baseline", "a", "b", "c", "d")}
    out = plots.plot_grid(histories, tmp_path / "g.png", reference="baseline", columns=2)
    assert out == tmp_path / "g.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no variant 'none'"):
        plots.plot_grid(histories, tmp_path / "h.png", reference="none")
