"""Command line shared by the experiment scripts: `--workdir` and repeated `--set a.b=v`.

I/O (argument parsing, printing). Each experiment module defines `config()` and `smoke()`
and calls `main(config, smoke)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from convjax.config import Config, apply_overrides


def main(config: Callable[[], Config], smoke: Callable[[], Config], doc: str = "") -> dict:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", required=True, help="where logs, CSV, checkpoints go")
    parser.add_argument("--smoke", action="store_true", help="tiny config for a quick check")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.epochs=3")
    args = parser.parse_args()
    try:
        cfg = apply_overrides(smoke() if args.smoke else config(), args.set)
    except ValueError as err:
        parser.error(str(err))
    from convjax.train import train_and_evaluate  # after parsing: --help stays instant

    return train_and_evaluate(cfg, args.workdir)
