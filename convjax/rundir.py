"""A work directory is a run: start it, continue it, report it, or refuse it.

I/O. `open_run` decides what a command does with its `--workdir`, from the files there and
before any data is read:

    empty or missing            start a new run
    config.json, no results     the same config: continue from the backup; another: refuse,
                                listing the keys that differ (unless restart)
    results.json                finished: report the results, train nothing
    other files, no config      not a run: refuse (unless restart)

`restart=True` moves an existing run aside to `<workdir>.restart-N` (never deletes it).

Layout of a run:
    config.json      the resolved config (written when the run starts)
    backup/          fit's backups (state, data position, metric sums, callback states)
    history.csv      CSVLogger;  tensorboard/  TensorBoard (Keras's train/ validation/ layout)
    checkpoints/     ModelCheckpoint (when enabled)
    final/<step>/    the final train state
    results.json     written last: its presence means the run is finished
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from convjax.config import ConfigError, config_diff, config_from_dict, config_to_dict

CONFIG, RESULTS, BACKUP, FINAL = "config.json", "results.json", "backup", "final"
# Keys that change how a run is shown, where data and caches sit or how its processes join,
# not what it computes (a streamed split trains bit-identically to one on the devices): a rerun
# may change them and still continue the run, e.g. on a machine with less device memory.
NOT_COMPARED = ("train.verbose", "train.compilation_cache", "data.cache_dir",
                "data.device_memory_budget_mb", "dist.", "phases.features.cache_dir")


class RunRefused(ValueError):
    """The workdir holds another run (or something else) and restart was not asked for."""


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: Path
    status: str  # "new", "unfinished" or "finished"

    @property
    def backup_dir(self) -> Path:
        return self.workdir / BACKUP

    def results(self) -> dict[str, Any]:
        return json.loads((self.workdir / RESULTS).read_text())


STATUSES = ("new", "unfinished", "finished")


def open_run(cfg: Any, workdir: str | Path, restart: bool = False) -> Run:
    """What to do with `workdir` for `cfg` (a `Config`, or any config dataclass tree such as
    a transfer run's; see the module docstring); creates a new run's directory and
    config.json. With several processes only process 0 calls it (the runner passes its
    status to the others)."""
    workdir = Path(workdir)
    if restart and workdir.exists() and any(workdir.iterdir()):
        moved = _move_aside(workdir)
        print(f"--restart: the previous run in {workdir} was moved to {moved}", flush=True)
    status = run_status(cfg, workdir)
    if status == "new":
        workdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(workdir / CONFIG, config_to_dict(cfg))
    return Run(workdir, status)


def run_status(cfg: Any, workdir: str | Path) -> str:
    """"new", "unfinished" or "finished" for `cfg` in `workdir`, reading only config.json and
    whether results.json exists; `RunRefused` when the runner would refuse the workdir."""
    workdir = Path(workdir)
    if not workdir.exists() or not any(workdir.iterdir()):
        return "new"
    if not (workdir / CONFIG).exists():
        raise RunRefused(f"{workdir} is not empty and holds no {CONFIG}: not a convjax run; "
                         "choose another --workdir, or --restart to move its contents aside")
    try:
        saved = config_from_dict(json.loads((workdir / CONFIG).read_text()), type(cfg))
    except ConfigError as err:  # e.g. a CNN run's workdir given to a transfer experiment
        raise RunRefused(f"{workdir} holds a run of another kind of experiment ({err}); "
                         "choose another --workdir, or --restart") from None
    differences = [d for d in config_diff(saved, cfg) if not d.startswith(NOT_COMPARED)]
    if differences:
        raise RunRefused(f"{workdir} holds a run with another config ({'; '.join(differences)});"
                         " rerun with its config, choose another --workdir, or --restart")
    return "finished" if (workdir / RESULTS).exists() else "unfinished"


def _move_aside(workdir: Path) -> Path:
    n = 1
    while (target := workdir.with_name(f"{workdir.name}.restart-{n}")).exists():
        n += 1
    workdir.rename(target)
    return target


def write_json_atomic(path: Path, data: Any) -> None:
    """Written to a temporary file and renamed: a reader never sees half a file, and a full
    disk leaves the previous version (or nothing) rather than a truncated one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
