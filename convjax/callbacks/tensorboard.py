"""TensorBoard: Keras's event layout, written with tensorboardX's summaries and event writer.

I/O (event files and profiler traces); what is written is computed in `tensorboard_content`.
Layout as Keras: `<log_dir>/train` and `<log_dir>/validation` runs; `epoch_<metric>` scalars
at step `epoch`; `batch_<metric>` at the global batch (1-based) every `update_freq` batches;
`evaluation_<metric>_vs_iterations` after each validation; `<layer>/<weight>/histogram`
(and `/image`) every `histogram_freq` epochs; the model structure as a text summary; profiler
traces of the `profile_batch` batches under `train/plugins/profile/` (jax.profiler).
convjax adds the validation confusion matrix as an image, `epoch_confusion_matrix` in the
`validation` run at step `epoch`, and the runner writes the test set's beside it in a `test`
run (`write_test_confusion`), under the same tag so that TensorBoard shows them together.

Hyperparameters (convjax's `hparams=`, for TensorBoard's HPARAMS tab) make `<log_dir>` itself a
run: the session's start (the flattened hparams, from tensorboardX's `summary.hparams`, as
`add_hparams` writes them) when training begins, `hparam/<metric>` scalars at each epoch end
(the tab shows the latest: the final metrics once training ends), the session's end status
when it ends. The tab finds the `train/` and `validation/` curves below the session too.

Files are written synchronously (tensorboardX's `SummaryWriter` queues events for a thread,
so its files have no known length at a given moment). A backup records each file's length;
a resumed run cuts the files back to it, which purges every event written after the backup
(scalars, histograms and images alike, whatever their step units), then appends; a resumed
run does not write the model summary or the hparams session start again.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2

from convjax.callbacks.base import Callback, Logs
from convjax.callbacks.tensorboard_content import (
    confusion_image,
    flatten_hparams,
    named_leaves,
    params_table,
    profile_range,
    weight_image,
)

RUNS = ("train", "validation")
SESSION_RUN = "."  # the log dir itself: the hparams session, with train/ and validation/ below
TEST_RUN = "test"  # the runner's test confusion matrix (`write_test_confusion`), not a callback's
CONFUSION_TAG = "epoch_confusion_matrix"


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
    """Keras's `TensorBoard` callback (embeddings are not supported).

    `profile_batch`: N traces the N-th batch of training, (start, stop) batches start to stop
    (counted from 1 across epochs, as Keras); each trace starts and ends with a wait for the
    device (only around the profiled batches), so it holds just those steps. Skip the first
    batch, which holds the compilation.

    convjax only: `model_summary`, the text to show for `write_graph`, e.g.
    `convjax.models.summary.summary(model, (32, 32, 3))` (by default a table of the weights);
    `hparams`, a (nested) dict of the run's hyperparameters for the HPARAMS tab, e.g.
    `convjax.config.config_to_dict(cfg)`, flattened by `flatten_hparams`;
    `confusion_matrix`, the validation confusion matrix as an image at each epoch end (when
    the steps count it: `make_steps(num_classes=...)`), labelled with `class_names` if given.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike = "logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_steps_per_second: bool = False,
        update_freq: str | int = "epoch",
        profile_batch: int | tuple[int, int] = 0,
        embeddings_freq: int = 0,
        embeddings_metadata: Any = None,
        model_summary: str | None = None,
        hparams: dict[str, Any] | None = None,
        confusion_matrix: bool = True,
        class_names: Sequence[str] | None = None,
    ):
        if embeddings_freq or embeddings_metadata:
            warnings.warn("TensorBoard: embeddings are not supported", stacklevel=2)
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
        self.profile_batch = profile_range(profile_batch)
        self.hparams = None if hparams is None else flatten_hparams(hparams)
        self.confusion_matrix = confusion_matrix
        self.class_names = None if class_names is None else list(class_names)
        self._tracing = False
        self._profiled = False  # the trace of this training was started (or failed to start)
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
        return [path for run in (SESSION_RUN, *RUNS) if (self.log_dir / run).is_dir()
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
        if self._tracing:  # left running by a training of this callback that raised
            self._stop_trace()
        self._profiled = False
        self._run_id, self._files_opened = secrets.token_hex(4), 0
        if self.loop.resumed:  # the files from before the backup have the summary and hparams
            return
        if self.write_graph:
            text = self.model_summary or params_table(self.loop.state.params)
            indented = "\n".join("    " + line for line in text.splitlines())  # markdown code
            self._file("train").write(summary.text("model_summary", indented), 0)
            self._file("train").flush()
        if self.hparams is not None:
            _, session_start, _ = summary.hparams(self.hparams, {})
            self._file(SESSION_RUN).write(session_start, 0)
            self._file(SESSION_RUN).flush()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._clock["epoch"] = (time.perf_counter(), self.loop.global_batch)
        self._clock.setdefault("batch", self._clock["epoch"])

    def wants_batch_logs(self, batch: int) -> bool:
        return self.update_freq != "epoch" and self.loop.global_batch % self.update_freq == 0

    # --- profiler --------------------------------------------------------------------------

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        start, stop = self.profile_batch
        if not self._profiled and start <= self.loop.global_batch + 1 <= stop:
            self._start_trace()

    def _start_trace(self) -> None:
        self._profiled = True
        jax.block_until_ready(self.loop.state)  # the steps before the first profiled one
        try:
            jax.profiler.start_trace(self.log_dir / "train")
            self._tracing = True
        except Exception as err:  # e.g. another trace is running: not worth a crash
            warnings.warn(f"TensorBoard: the profiler did not start: {err}", stacklevel=2)

    def _stop_trace(self) -> None:
        jax.block_until_ready(self.loop.state)  # the last profiled step's work is in the trace
        self._tracing = False
        try:
            jax.profiler.stop_trace()  # writes train/plugins/profile/<time>/<host>.xplane.pb
        except Exception as err:  # e.g. stopped by someone else
            warnings.warn(f"TensorBoard: the profiler did not stop: {err}", stacklevel=2)

    # --- scalars, histograms, images -------------------------------------------------------

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self._tracing and self.loop.global_batch >= self.profile_batch[1]:
            self._stop_trace()
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
        matrix = self.loop.validation_confusion
        if self.confusion_matrix and matrix is not None:
            image = confusion_image(matrix, self.class_names)
            self._file("validation").write(
                summary.image(CONFUSION_TAG, image, dataformats="HWC"), epoch)
        if self.hparams is not None:  # the HPARAMS tab shows each metric's latest value
            self._scalars(SESSION_RUN, logs, "hparam/", epoch)
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
        if self._tracing:  # training ended inside the profiled range
            self._stop_trace()
        if self.hparams is not None:
            _, _, session_end = summary.hparams({}, {})  # status: success
            self._file(SESSION_RUN).write(session_end, self.loop.epoch)
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


def write_test_confusion(log_dir: str | os.PathLike, matrix: np.ndarray, step: int,
                         class_names: Sequence[str] | None = None) -> None:
    """Writes the test set's confusion matrix as the image `epoch_confusion_matrix` at `step`
    (the last epoch trained) in `<log_dir>/test`, the only event in that run.

    The event files already there are removed first. The runner writes this before
    results.json, whose presence marks the run finished, so a run that stops in between is
    continued and its test evaluated again: appending would show two test matrices."""
    directory = Path(log_dir) / TEST_RUN
    if directory.is_dir():
        for old in directory.glob("events.out.tfevents.*"):
            old.unlink()
    file = _EventFile(directory, "")
    image = confusion_image(matrix, class_names)
    file.write(summary.image(CONFUSION_TAG, image, dataformats="HWC"), step)
    file.close()
