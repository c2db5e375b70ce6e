"""experiments/ablate.py on a tiny image folder: every variant × seed runs once, the table is
mean ± std over seeds of those runs' numbers, a rerun resumes instead of retraining, and
every name, key and seed is checked before anything trains."""

import json
import statistics
from pathlib import Path

import pytest

from experiments import ablate
from helpers import write_image_folder

TINY = ["data.source=folder", "data.image_size=[8,8]", "data.validation_split=0.25",
        "model.num_classes=2", "model.conv_filters=[4]", "model.dense=[8]", "train.epochs=2",
        "train.batch_size=4", "train.verbose=0"]


def sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    sets = [*TINY, f"data.folder={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}"]
    return ["--experiment", "cifar10_cnn", "--workdir", str(tmp_path / "abl"),
            *(arg for s in sets for arg in ("--set", s)),
            "--variant", "none:", "--variant", "flip:augment.horizontal_flip=true",
            "--seeds", "0,1", *extra]


def no_training(cfg, workdir):
    raise AssertionError(f"trained {workdir}, but nothing should have")


def read_rows(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]


def check_first_sweep(work: Path, calls: list) -> None:
    """4 runs, each in its own seed directory with its seed, and the rows say so."""
    expected = [(v, s) for v in ("none", "flip") for s in (0, 1)]
    assert calls == [(s, work / v / f"seed{s}") for v, s in expected]
    rows = read_rows(work)
    assert [(r["variant"], r["seed"]) for r in rows] == expected
    for row in rows:
        saved = json.loads((work / row["workdir"] / "results.json").read_text())
        assert saved["config"]["train"]["seed"] == row["seed"]  # the runner got the seed
        assert row["config"] == saved["config"]  # the full resolved config, as trained
        assert row["test_accuracy"] == saved["test_accuracy"]
        assert row["gap"] == row["train_eval_accuracy"] - row["val_accuracy"]
        assert row["config"]["augment"]["horizontal_flip"] is (row["variant"] == "flip")


def test_sweep_runs_variants_times_seeds_then_resumes_without_retraining(
        tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path / "data" / "train", per_class=8)
    write_image_folder(tmp_path / "data" / "test", per_class=3)
    work, calls = tmp_path / "abl", []

    def counting(cfg, workdir):
        calls.append((cfg.train.seed, Path(workdir)))
        return ablate_train(cfg, workdir)

    ablate_train = ablate.train_and_evaluate
    monkeypatch.setattr(ablate, "train_and_evaluate", counting)
    ablate.main(sweep_args(tmp_path))
    check_first_sweep(work, calls)
    table, rows = (work / "table.md").read_text(), (work / "results.jsonl").read_text()
    none = table.splitlines()[2]
    tests = [r["test_accuracy"] for r in read_rows(work) if r["variant"] == "none"]
    mean, std = statistics.fmean(tests), statistics.stdev(tests)
    assert none.startswith("| none | ") and f"| {mean:.3f} ± {std:.3f} (2) |" in none
    assert "| 2.0 ± 0.0 (2) |" in none  # epochs
    assert table.splitlines()[3].startswith("| flip | ")
    assert (work / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same command again: every run is finished, nothing trains, same outputs.
    monkeypatch.setattr(ablate, "train_and_evaluate", no_training)
    capsys.readouterr()
    ablate.main(sweep_args(tmp_path))
    assert (work / "table.md").read_text() == table
    assert (work / "results.jsonl").read_text() == rows  # rewritten, not appended
    assert table.strip() in capsys.readouterr().out

    # An unfinished run (no results.json) goes back to the runner, alone, on its workdir.
    unfinished = work / "flip" / "seed1"
    saved = (unfinished / "results.json").read_text()
    (unfinished / "results.json").unlink()
    resumed = []

    def finish(cfg, workdir):
        resumed.append((cfg.train.seed, Path(workdir)))
        (Path(workdir) / "results.json").write_text(saved)
        return json.loads(saved)

    monkeypatch.setattr(ablate, "train_and_evaluate", finish)
    ablate.main(sweep_args(tmp_path))
    assert resumed == [(1, unfinished)]
    assert (work / "results.jsonl").read_text() == rows

    # A finished run under a different config is refused, not tabulated under the new one.
    monkeypatch.setattr(ablate, "train_and_evaluate", no_training)
    with pytest.raises(SystemExit):
        ablate.main(sweep_args(tmp_path, "--set", "train.epochs=3"))
    assert "different config (train.epochs: 2 -> 3)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--variant", "a:", "--variant", "a:train.epochs=1"], "duplicate variant name(s) 'a'"),
    (["--variant", "a:", "--variant", "b:train.epoks=1"], "unknown config key 'train.epoks'"),
    (["--variant", "a:", "--seeds", "0,0"], "--seeds must list each seed once"),
    (["--variant", "a:", "--seeds", "0,x"], "--seeds must be comma-separated integers"),
    (["--variant", "a/b:"], "one directory name"),
    (["--variant", "no-colon"], "NAME:key=value"),
])
def test_bad_sweeps_fail_in_one_line_before_any_run(tmp_path, monkeypatch, capsys, args,
                                                    message):
    monkeypatch.setattr(ablate, "train_and_evaluate", no_training)
    with pytest.raises(SystemExit) as exit_info:
        ablate.main(["--workdir", str(tmp_path / "abl"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "abl").exists()


def test_a_workdir_the_runner_would_refuse_stops_the_sweep_before_any_run(tmp_path, monkeypatch,
                                                                         capsys):
    (tmp_path / "abl" / "b" / "seed0" / "backup").mkdir(parents=True)  # e.g. a killed old run
    monkeypatch.setattr(ablate, "train_and_evaluate", no_training)
    with pytest.raises(SystemExit):
        ablate.main(["--workdir", str(tmp_path / "abl"), "--variant", "a:", "--variant", "b:"])
    assert "b/seed0 is not empty and holds no config.json" in capsys.readouterr().err
    assert not (tmp_path / "abl" / "a").exists()


def test_mean_std_is_mean_sample_std_and_n():
    assert ablate.mean_std([0.5, 0.7]) == "0.600 ± 0.141 (2)"  # ddof=1 (ddof=0: 0.100)
    assert ablate.mean_std([0.1, -0.1, 0.3], "+.3f") == "+0.100 ± 0.200 (3)"
    assert ablate.mean_std([12.4, 13.6], ".0f") == "13 ± 1 (2)"
    assert ablate.mean_std([0.5]) == "0.500 (1)"
    assert ablate.mean_std([None, None]) == "n/a"
    assert ablate.mean_std([0.5, None, 0.7]) == "0.600 ± 0.141 (2)"


def test_table_has_one_line_per_variant_in_order():
    def row(variant, test, val):
        return {"variant": variant, "train_eval_accuracy": 0.9, "val_accuracy": val,
                "gap": None if val is None else 0.9 - val, "test_accuracy": test,
                "train_accuracy": 0.8, "epochs_run": 3, "train_seconds": 10.0}

    lines = ablate.table([row("b", 0.6, 0.5), row("a", 0.7, None), row("b", 0.8, 0.7)])
    assert len(lines.splitlines()) == 4
    assert lines.splitlines()[2] == ("| b | 0.900 ± 0.000 (2) | 0.600 ± 0.141 (2) "
                                     "| +0.300 ± 0.141 (2) | 0.700 ± 0.141 (2) "
                                     "| 0.800 ± 0.000 (2) | 3.0 ± 0.0 (2) | 10 ± 0 (2) |")
    assert lines.splitlines()[3].startswith("| a | 0.900 (1) | n/a | n/a | 0.700 (1) |")


def test_a_variant_keeps_the_commas_of_tuple_values():
    assert ablate.parse_variant("big:model.conv_filters=32,64,128,model.dense=128") == (
        "big", ["model.conv_filters=32,64,128", "model.dense=128"])
    assert ablate.parse_variant("none:") == ("none", [])
    assert ablate.parse_variant("a:x.y=1,z=2,") == ("a", ["x.y=1", "z=2"])
