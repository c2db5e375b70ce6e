"""convjax.cli.main: --help lists every config key; a bad --set exits 2 with one line before
the runner is even imported; good arguments reach the runner."""

import dataclasses
import sys
import types

import pytest

from convjax import cli, host_memory
from convjax.config import Config, TrainConfig, leaves
from convjax.config_fields import type_name


def experiment() -> Config:
    return Config(train=TrainConfig(epochs=7))


def smoke() -> Config:
    return Config(train=TrainConfig(epochs=1, batch_size=4))


@pytest.fixture
def runner(monkeypatch):
    """A stand-in for convjax.train that records its calls (the real one loads data), and
    records the allocator setting instead of changing the test process's (host_memory)."""
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory",
                        lambda: calls.append("keep_freed_memory"))
    fake = types.ModuleType("convjax.train")
    fake.train_and_evaluate = lambda cfg, workdir, **kwargs: calls.append(
        (cfg, workdir, kwargs)) or {"ok": True}
    fake.Interrupted = type("Interrupted", (Exception,), {})
    monkeypatch.setitem(sys.modules, "convjax.train", fake)
    return calls


def test_help_lists_every_key_with_type_default_and_comment(capsys, runner):
    with pytest.raises(SystemExit) as exit_:
        cli.main(experiment, smoke, "the doc", ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # comments are wrapped
    for leaf in leaves(experiment()):
        assert f"  {leaf.key}: {type_name(leaf.type)} = {leaf.value!r}\n" in out
        assert " ".join(leaf.comment.split()) in flat
    assert "train.epochs: int = 7" in out  # the experiment's default, not the class's
    assert "model.pool: {max, avg, none} = 'max'" in out
    assert "--restart" in out and runner == []


@pytest.mark.parametrize("item, message", [
    ("train.epochs=2.5", "train.epochs: expected int, got 2.5"),
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("optim.name=lion", "optim.name: must be one of 'sgd', 'adam', 'adamw'; got 'lion'"),
    ("train.epoch=3", "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
])
def test_a_bad_value_exits_2_with_one_line_before_the_runner(capsys, runner, item, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(experiment, smoke, "", ["--workdir", "w", "--set", item])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage lines
    assert last.split(": error: ", 1)[1].startswith(message)
    assert runner == []


def test_arguments_reach_the_runner(runner):
    result = cli.main(experiment, smoke, "", ["--workdir", "runs/a", "--set", "train.epochs=3",
                                              "--set", "model.dense=()"])
    assert result == {"ok": True}
    assert runner[0] == "keep_freed_memory"  # before the runner starts JAX's threads
    ((cfg, workdir, kwargs),) = runner[1:]
    assert cfg == dataclasses.replace(
        experiment(), train=dataclasses.replace(experiment().train, epochs=3),
        model=dataclasses.replace(experiment().model, dense=()))
    assert workdir == "runs/a" and kwargs == {"restart": False}


def test_smoke_and_restart(runner):
    cli.main(experiment, smoke, "", ["--workdir", "w", "--smoke", "--restart",
                                     "--set", "train.batch_size=2"])
    ((cfg, _, kwargs),) = runner[1:]
    assert (cfg.train.epochs, cfg.train.batch_size) == (1, 2)
    assert kwargs == {"restart": True}
