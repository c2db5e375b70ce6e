"""TensorBoard: Keras's event layout, written with tensorboardX's summaries and event writer.

I/O (event files), with pure helpers to turn weights into images and a text summary.
Layout as Keras: `<log_dir>/train` and `<log_dir>/validation` runs; `epoch_<metric>` scalars
at step `epoch`; `batch_<metric>` at the global batch (1-based) every `update_freq` batches;
`evaluation_<metric>_vs_iterations` after each validation; `<layer>/<weight>/histogram`
(and `/image`) every `histogram_freq` epochs; the model structure as a text summary.

Files are written synchronously (tensorboardX's `SummaryWriter` queues events for a thread,
so its files have no known length at a given moment). A backup records each file's length;
a resumed run cuts the files back to it, which purges every event written after the backup
(scalars, histograms and images alike, whatever their step units), then appends.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2

from convjax.callbacks.base import Callback, Logs
from convjax.models.summary import count_params

RUNS = ("train", "validation")


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """("conv0_0/kernel", leaf) for each leaf, with Flax's module paths."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in flat]


def params_table(params: Any) -> str:
    """A text summary of the weights (path, shape, count) for when no model summary is given.
    Reads only shapes, so device arrays are not copied to the host."""
    rows = [f"{name:<40}{str(value.shape):<20}{int(np.prod(value.shape)):>12,}"
            for name, value in named_leaves(params)]
    header = f"{'Weight':<40}{'Shape':<20}{'Param #':>12}"
    return "\n".join([header, *rows, f"Total params: {count_params(params):,}"])


def weight_image(weight: np.ndarray) -> np.ndarray:
    """A (H, W) image in [0, 1] of a weight: a bias as one row, a dense kernel with its longer
    side across, a conv kernel (kh, kw, cin, cout) as a grid with one (kh, kw) tile per input
    channel (rows) and filter (columns). Keras skips conv kernels unless they have 1, 3 or 4
    filters."""
    w = np.asarray(weight, np.float32)
    if w.ndim <= 1:
        image = w.reshape(1, -1)
    elif w.ndim == 2:
        image = w.T if w.shape[0] > w.shape[1] else w
    else:
        kh, kw = w.shape[0], w.shape[1]
        tiles = w.reshape(kh, kw, -1, w.shape[-1])  # (kh, kw, cin, cout)
        image = tiles.transpose(2, 0, 3, 1).reshape(tiles.shape[2] * kh, tiles.shape[3] * kw)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


class _EventFile:
    """One event file, written synchronously, so that its length after `flush` ends a record."""

    def __init__(self, directory: Path, suffix: str):
        directory.mkdir(parents=True, exist_ok=True)
        self._writer = EventsWriter(str(directory / "events"), suffix)

    def write(self, summary_proto: Any, step: int) -> None:
        event = event_pb2.Event(summary=summary_proto, step=int(step), wall_time=time.time())
        self._writer.write_event(event)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TensorBoard(Callback):
    """Keras's `TensorBoard` callback (profiling and embeddings are not supported).

    `model_summary` (convjax only): the text to show for `write_graph`, e.g.
    `convjax.models.summary.summary(model, (32, 32, 3))`; by default a table of the weights.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike = "logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_steps_per_second: bool = False,
        update_freq: str | int = "epoch",
        profile_batch: int = 0,
        embeddings_freq: int = 0,
        embeddings_metadata: Any = None,
        model_summary: str | None = None,
    ):
        if profile_batch or embeddings_freq or embeddings_metadata:
            warnings.warn("TensorBoard: profile_batch and embeddings are not supported; "
                          "use jax.profiler for traces", stacklevel=2)
        update_freq = 1 if update_freq == "batch" else update_freq
        if update_freq != "epoch" and (not isinstance(update_freq, int) or update_freq <= 0):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or a positive int, "
                             f"got {update_freq!r}")
        self.log_dir = Path(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.write_images = write_images
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = update_freq
        self.model_summary = model_summary
        self._files: dict[str, _EventFile] = {}
        self._run_id = ""  # names this training's files, to tell them from other runs'
        self._files_opened = 0
        self._clock: dict[str, tuple[float, int]] = {}  # (time, global batch) at marks

    # --- files -----------------------------------------------------------------------------

    def _file(self, run: str) -> _EventFile:
        if run not in self._files:
            suffix = f".{self._run_id}.{self._files_opened}"
            self._files[run] = _EventFile(self.log_dir / run, suffix)
            self._files_opened += 1
        return self._files[run]

    def _run_files(self) -> list[Path]:
        pattern = re.compile(rf"\.{self._run_id}\.\d+$")
        return [path for run in RUNS if (self.log_dir / run).is_dir()
                for path in sorted((self.log_dir / run).iterdir()) if pattern.search(path.name)]

    def _close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files = {}

    def _scalars(self, run: str, values: dict[str, Any], prefix: str, step: int) -> None:
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._file(run).write(summary.scalar(f"{prefix}{name}", float(value)), step)

    # --- hooks -----------------------------------------------------------------------------

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._close()
        self._run_id, self._files_opened = secrets.token_hex(4), 0
        if self.write_graph and not self.loop.resumed:  # a resumed run has it already
            text = self.model_summary or params_table(self.loop.state.params)
            indented = "\n".join("    " + line for line in text.splitlines())  # markdown code
            self._file("train").write(summary.text("model_summary", indented), 0)
            self._file("train").flush()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._clock["epoch"] = (time.perf_counter(), self.loop.global_batch)
        self._clock.setdefault("batch", self._clock["epoch"])

    def wants_batch_logs(self, batch: int) -> bool:
        return self.update_freq != "epoch" and self.loop.global_batch % self.update_freq == 0

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if not logs or not self.wants_batch_logs(batch):
            return
        step = self.loop.global_batch
        values = dict(logs)
        if self.write_steps_per_second:  # logs were read, so the device has caught up here
            values["steps_per_second"] = self._steps_per_second("batch")
        self._scalars("train", values, "batch_", step)
        self._file("train").flush()  # so that TensorBoard shows batch curves as they come

    def _steps_per_second(self, mark: str) -> float:
        now, batch = time.perf_counter(), self.loop.global_batch
        then, then_batch = self._clock.get(mark, (now, batch))
        self._clock[mark] = (now, batch)
        return (batch - then_batch) / max(now - then, 1e-9)

    def on_test_end(self, logs: Logs | None = None) -> None:
        values = {f"{name}_vs_iterations": v for name, v in (logs or {}).items()}
        self._scalars("validation", values, "evaluation_", self.loop.global_batch)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        if self.write_steps_per_second:
            train["steps_per_second"] = self._steps_per_second("epoch")
        self._scalars("train", train, "epoch_", epoch)
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        self._scalars("validation", val, "epoch_", epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)
        for file in self._files.values():
            file.flush()

    def _log_weights(self, epoch: int) -> None:
        params, batch_stats = self.loop.snapshot()
        for name, value in named_leaves(params) + named_leaves(batch_stats):
            value = np.asarray(value)
            if value.size == 0 or not np.all(np.isfinite(value)):
                continue  # a histogram of NaNs has no range; TerminateOnNaN reports those
            self._file("train").write(summary.histogram(f"{name}/histogram", value, 30), epoch)
            if self.write_images:
                image = summary.image(f"{name}/image", weight_image(value), dataformats="HW")
                self._file("train").write(image, epoch)

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._close()

    # --- resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        for file in self._files.values():
            file.flush()
        sizes = {str(p.relative_to(self.log_dir)): p.stat().st_size for p in self._run_files()}
        return {"run_id": self._run_id, "files_opened": self._files_opened, "sizes": sizes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Purges what the interrupted run wrote after the backup: files are cut back to
        their length at the backup, files created after it are deleted."""
        self._close()
        self._run_id, self._files_opened = state["run_id"], state["files_opened"]
        for path in self._run_files():
            size = state["sizes"].get(str(path.relative_to(self.log_dir)))
            if size is None:
                path.unlink()
            elif path.stat().st_size > size:
                os.truncate(path, size)
