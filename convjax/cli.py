"""Command line shared by the experiment scripts. I/O (argument parsing, printing).

Each experiment module defines `config()` and `smoke()` and calls `main(config, smoke,
__doc__)`:

    python -m experiments.cifar10_cnn --workdir runs/x [--smoke] [--set train.epochs=3 ...]
        [--restart]

`--help` lists every config key with its type, the experiment's default and its comment. The
config is parsed and checked before the runner is imported, so a bad value exits at once
(status 2) with one line naming the key and what it accepts.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from convjax.config import Config, apply_overrides, leaves, validate
from convjax.config_fields import type_name

WIDTH = 100


def help_text(cfg: Config) -> str:
    """Every key of `cfg` by section: `key: type = default`, then the field's comment."""
    lines = ["config keys (--set KEY=VALUE; defaults are this experiment's config(),",
             "which --smoke shrinks):"]
    section = None
    for leaf in leaves(cfg):
        if leaf.section is not section:
            section = leaf.section
            summary = (type(section).__doc__ or "").strip().split("\n")[0]
            lines += ["", f"{leaf.key.rsplit('.', 1)[0]}: {summary}"]
        lines.append(f"  {leaf.key}: {type_name(leaf.type)} = {leaf.value!r}")
        lines += textwrap.wrap(leaf.comment, WIDTH, initial_indent=" " * 6,
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


def make_parser(cfg: Config, doc: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, epilog=help_text(cfg),
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", required=True,
                        help="the run's directory: config, logs, CSV, checkpoints, results")
    parser.add_argument("--smoke", action="store_true", help="tiny config for a quick check")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set train.epochs=3")
    parser.add_argument("--restart", action="store_true",
                        help="start the run in --workdir afresh, even with a different\n"
                             "config (without it, an unfinished run resumes and a\n"
                             "different config is refused)")
    return parser


class Runner(Protocol):
    def __call__(self, cfg: Any, workdir: str | Path, restart: bool = False) -> Any: ...


def _cnn_runner() -> Runner:
    from convjax.train import train_and_evaluate

    return train_and_evaluate


def main(
    config: Callable[[], Any],
    smoke: Callable[[], Any],
    doc: str = "",
    argv: Sequence[str] | None = None,
    load_runner: Callable[[], Runner] = _cnn_runner,
) -> Any:
    """Parses the command line, checks the whole config, then runs `load_runner()(cfg,
    workdir, restart=...)` (the CNN runner, `train.train_and_evaluate`, unless the experiment
    names another, e.g. the transfer runner).

    The runner is loaded only after the whole config is checked, so a bad value exits at once
    (status 2, one line naming the key) without importing JAX or Orbax. A `ConfigError` the
    runner raises before it starts (a value the data refuses) and a refused workdir exit 2;
    SIGINT/SIGTERM exit 128 + the signal, without a traceback."""
    parser = make_parser(config(), doc)
    args = parser.parse_args(argv)
    try:
        cfg = validate(apply_overrides(smoke() if args.smoke else config(), args.set))
    except ValueError as err:
        parser.error(str(err))
    from convjax.config_fields import ConfigError
    from convjax.host_memory import keep_freed_memory
    from convjax.rundir import RunRefused
    from convjax.train import Interrupted

    keep_freed_memory()  # before JAX starts its backend's threads (host_memory says why)
    run = load_runner()
    try:
        return run(cfg, args.workdir, restart=args.restart)
    except (RunRefused, ConfigError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except Interrupted as stopped:  # SIGINT/SIGTERM: backed up; no traceback
        parser.exit(stopped.exit_code, f"{stopped}\n")
