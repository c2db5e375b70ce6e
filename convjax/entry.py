"""The command line of an experiment whose runner is not the CNN one. I/O (parsing, printing).

`convjax.cli.main` runs `convjax.train.train_and_evaluate`; this runs whatever runner the
experiment names, with the same arguments, help and errors (it reuses `convjax.cli`'s parser,
which works on any config dataclass tree):

    python -m experiments.cats_dogs_transfer --workdir runs/x [--smoke] [--set KEY=VALUE ...]
        [--restart]

The runner comes from `load_runner()`, called only after the whole config is checked, so a
bad value exits at once (status 2, one line naming the key) without importing JAX or Orbax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from convjax.cli import make_parser
from convjax.config import apply_overrides, validate
from convjax.config_fields import ConfigError


class Runner(Protocol):
    def __call__(self, cfg: Any, workdir: str | Path, restart: bool = False) -> Any: ...


def main(
    config: Callable[[], Any],
    smoke: Callable[[], Any],
    load_runner: Callable[[], Runner],
    doc: str = "",
    argv: Sequence[str] | None = None,
) -> Any:
    """Parses the command line, checks the whole config, then runs `load_runner()(cfg, ...)`.

    A `ConfigError` the runner raises before it starts (e.g. no data folder given) exits 2
    like a bad `--set`; a refused workdir exits 2; SIGINT/SIGTERM exit 128 + the signal."""
    parser = make_parser(config(), doc)
    args = parser.parse_args(argv)
    try:
        cfg = validate(apply_overrides(smoke() if args.smoke else config(), args.set))
    except ValueError as err:
        parser.error(str(err))
    from convjax.rundir import RunRefused  # after the checks: errors come at once
    from convjax.train import Interrupted

    run = load_runner()
    try:
        return run(cfg, args.workdir, restart=args.restart)
    except (RunRefused, ConfigError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except Interrupted as stopped:  # SIGINT/SIGTERM: backed up; no traceback
        parser.exit(stopped.exit_code, f"{stopped}\n")
