"""experiments/ablate.py and experiments/plots.py on a tiny image folder: one run per variant,
a table whose numbers come from those runs, and a learning-curve figure."""

import json

import pytest

from experiments import ablate, plots
from helpers import write_image_folder


def test_ablate_runs_each_variant_and_tabulates_its_results(tmp_path):
    write_image_folder(tmp_path / "data" / "train", per_class=8)
    write_image_folder(tmp_path / "data" / "test", per_class=3)
    work = tmp_path / "abl"
    ablate.main([
        "--experiment", "cifar10_cnn", "--workdir", str(work),
        "--set", "data.source=folder", "--set", f"data.folder={tmp_path / 'data'}",
        "--set", "data.image_size=[8,8]", "--set", "data.validation_split=0.25",
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "model.num_classes=2",
        "--set", "model.conv_filters=[4]", "--set", "model.dense=[8]",
        "--set", "train.epochs=2", "--set", "train.batch_size=4", "--set", "train.verbose=0",
        "--variant", "none:", "--variant", "flip:augment.horizontal_flip=true",
    ])
    rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["none", "flip"]
    for row in rows:
        saved = json.loads((work / row["variant"] / "results.json").read_text())
        assert row["test_accuracy"] == saved["test_accuracy"]
        assert row["train_eval_accuracy"] == saved["train_eval_accuracy"]
        assert row["epochs_run"] == 2
    flip_config = json.loads((work / "flip" / "results.json").read_text())["config"]
    assert flip_config["augment"]["horizontal_flip"] is True
    table = (work / "table.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| none | ")
    gap = rows[0]["train_eval_accuracy"] - rows[0]["val_accuracy"]
    assert f"| {gap:+.3f} |" in table[2]
    assert (work / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_variant_and_missing_history_are_named(tmp_path):
    with pytest.raises(ValueError, match="NAME:key=value"):
        ablate.parse_variant("no-colon")
    with pytest.raises(ValueError, match="no history.csv in"):
        plots.read_history(tmp_path)
