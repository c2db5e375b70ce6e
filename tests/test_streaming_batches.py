"""StreamingBatches (convjax.data.streaming_batches): the same batches as DeviceArrays,
bounded read-ahead, exact starts, and no thread left behind."""

import threading
import time
import weakref

import jax
import numpy as np
import pytest

from convjax.callbacks import BackupOptions, Callback
from convjax.data import (
    BadImageError,
    DecodeSpec,
    DeviceArrays,
    FolderSource,
    SkippedImagesWarning,
    StreamingBatches,
    list_image_files,
    make_batch_source,
)
from convjax.loop import TrainingInterrupted, fit
from convjax.sharding import make_mesh
from helpers import tiny_arrays, tiny_setup, write_image_folder

N, B = 30, 8


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 4, "conftest.py should fake 4 CPU devices"
    return make_mesh()


def host(batches) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in b.items()} for b in batches]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def streaming_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("convjax-")]


def test_same_batches_as_device_arrays(mesh):
    src = tiny_arrays(N, shape=(4, 4, 3))
    on_device = DeviceArrays(src, batch_size=B, seed=7, mesh=mesh)
    streamed = StreamingBatches(src, batch_size=B, seed=7, mesh=mesh)
    for epoch in (0, 3):
        assert_same(host(streamed.train_batches(epoch)), host(on_device.train_batches(epoch)))
    assert_same(host(streamed.eval_batches()), host(on_device.eval_batches()))
    assert (streamed.num_examples, streamed.image_shape, streamed.num_classes,
            streamed.steps_per_epoch) == (N, (4, 4, 3), 3, 3)


def test_starting_at_step_k_continues_the_epoch_exactly(mesh):
    streamed = StreamingBatches(tiny_arrays(N, shape=(4, 4, 3)), batch_size=B, seed=2, mesh=mesh)
    full = host(streamed.train_batches(epoch=1))
    assert_same(host(streamed.train_batches(epoch=1, start_step=1)), full[1:])
    assert host(streamed.train_batches(epoch=1, start_step=3)) == []


class CountingSource:
    """An ArraySource that counts the host batches it has handed out."""

    def __init__(self, src):
        self.src, self.made = src, 0
        self.class_names, self.image_shape = src.class_names, src.image_shape

    def __len__(self):
        return len(self.src)

    def get_batch(self, indices):
        self.made += 1
        return self.src.get_batch(indices)


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_read_ahead_is_bounded(mesh, prefetch):
    src = CountingSource(tiny_arrays(64, shape=(2, 2, 1)))
    streamed = StreamingBatches(src, batch_size=4, seed=0, mesh=mesh, prefetch=prefetch)
    ahead = []
    for taken, _ in enumerate(streamed.train_batches(0), 1):
        time.sleep(0.02)  # a slow step: an unbounded reader would run far ahead
        ahead.append(src.made - taken)
    assert src.made == 16
    # Batches made but not yet taken: at most `prefetch` waiting plus the one being made.
    assert max(ahead) <= prefetch + 1
    assert max(ahead) >= prefetch  # and the read-ahead does happen


def test_stopping_mid_epoch_or_closing_leaves_no_thread(mesh, tmp_path):
    files, labels, names = list_image_files(write_image_folder(tmp_path / "d", per_class=16))
    src = FolderSource(files, labels, names, DecodeSpec((4, 4)), num_workers=2)
    streamed = StreamingBatches(src, batch_size=4, seed=0, mesh=mesh)
    assert streaming_threads() == []
    for _ in streamed.train_batches(0):
        assert streaming_threads()  # reading ahead in the background
        break  # the consumer stops after one batch
    assert streaming_threads() == []
    batches = streamed.train_batches(1)
    next(batches)
    streamed.close()  # an iteration still open, closed by the batch source
    assert streaming_threads() == []
    assert list(batches) == []


def test_a_folder_streams_the_same_as_it_sits_on_device(mesh, tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=8, size=(5, 6))
    (root / "cat" / "003.png").write_bytes(b"broken")  # replaced by cat/004 in both paths
    files, labels, names = list_image_files(root)
    src = FolderSource(files, labels, names, DecodeSpec((4, 4)))
    streamed = make_batch_source(src, batch_size=4, seed=1, mesh=mesh, device_budget_bytes=0)
    with pytest.warns(SkippedImagesWarning, match=r"(?s)skipped 1 .*003\.png"):
        on_device = make_batch_source(src, batch_size=4, seed=1, mesh=mesh)
    assert isinstance(streamed, StreamingBatches) and isinstance(on_device, DeviceArrays)
    assert_same(host(streamed.train_batches(2)), host(on_device.train_batches(2)))
    assert_same(host(streamed.eval_batches()), host(on_device.eval_batches()))
    assert on_device.num_classes == 2 and streamed.num_examples == 16


def test_a_decode_error_reaches_the_consumer(mesh, tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=4)
    (root / "dog" / "000.png").write_bytes(b"broken")
    files, labels, names = list_image_files(root)
    src = FolderSource(files, labels, names, DecodeSpec((4, 4)), on_error="raise")
    streamed = StreamingBatches(src, batch_size=4, seed=0, mesh=mesh, shuffle=False)
    with pytest.raises(BadImageError, match=r"dog.000\.png"):
        list(streamed.train_batches(0))
    assert streaming_threads() == []


class CountedFolder:
    """A FolderSource that counts the host batches it reads (`made`) and how many of those
    are still alive (`live`, most at once `most_live`: held by the reader, the read-ahead
    queue or anyone else)."""

    def __init__(self, src):
        self.src, self.class_names, self.image_shape = src, src.class_names, src.image_shape
        self.made = self.live = self.most_live = 0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.src)

    def get_batch(self, indices):
        images, labels = self.src.get_batch(indices)
        with self._lock:
            self.made, self.live = self.made + 1, self.live + 1
            self.most_live = max(self.most_live, self.live)
        weakref.finalize(images, self._freed)
        return images, labels

    def _freed(self):
        with self._lock:
            self.live -= 1


class SlowStep(Callback):
    """A step slower than reading (an unbounded read-ahead would run far ahead) that notes,
    as each batch starts, how many batches have been read but not yet trained on."""

    def __init__(self, src: CountedFolder):
        self.src, self.begun, self.ahead = src, 0, []

    def on_train_batch_begin(self, batch, logs=None):
        self.begun += 1
        self.ahead.append(self.src.made - self.begun)

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.02)


def test_a_streamed_folder_trains_through_fit_holding_a_bounded_number_of_batches(
        mesh, tmp_path):
    files, labels, names = list_image_files(write_image_folder(tmp_path / "d", per_class=24))
    src = CountedFolder(FolderSource(files, labels, names, DecodeSpec((8, 8))))
    data = make_batch_source(src, batch_size=4, seed=0, mesh=mesh, device_budget_bytes=0,
                             prefetch=2)
    assert isinstance(data, StreamingBatches)  # the whole folder never fits: streamed
    state, steps = tiny_setup()
    slow = SlowStep(src)
    state, history = fit(state, data, steps=steps, epochs=2, callbacks=[slow], verbose=0,
                         mesh=mesh)
    assert src.made == 2 * 12 and int(state.step) == 24  # every batch read once, trained
    assert np.isfinite(history.history["loss"]).all()
    # Read ahead of training: at most 2 waiting (prefetch) + 1 being read; 23 if unbounded.
    assert 2 <= max(slow.ahead) <= 2 + 1, slow.ahead
    # Host arrays alive at once: the read-ahead's (a copy to the device may still hold its
    # host array), the one being read, the reader's last and the step's; never all 24.
    assert src.most_live <= 2 + 3, src.most_live
    assert streaming_threads() == []


class StopAt(Callback):
    """Sets `event` (as SIGTERM does in the runner) after batch `step` of epoch `epoch`."""

    def __init__(self, event: threading.Event, epoch: int, step: int):
        self.event, self.at, self.epoch = event, (epoch, step), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.at:
            self.event.set()


def test_a_streamed_epoch_interrupted_mid_way_resumes_exactly(mesh, tmp_path):
    files, labels, names = list_image_files(write_image_folder(tmp_path / "d", per_class=12))
    src = FolderSource(files, labels, names, DecodeSpec((8, 8)))
    data = make_batch_source(src, batch_size=4, seed=3, mesh=mesh, device_budget_bytes=0)
    assert isinstance(data, StreamingBatches) and data.steps_per_epoch == 6
    _, steps = tiny_setup()
    # A fresh initial state for each fit: on a 4-device mesh fit donates the caller's arrays.
    reference, _ = fit(tiny_setup()[0], data, steps=steps, epochs=2, verbose=0, mesh=mesh)
    backup = BackupOptions(tmp_path / "backup", every_steps=4)  # none due at the stop
    stop = threading.Event()
    with pytest.raises(TrainingInterrupted) as interrupted:
        fit(tiny_setup()[0], data, steps=steps, epochs=2, verbose=0, mesh=mesh, backup=backup,
            interrupt=stop, callbacks=[StopAt(stop, epoch=1, step=3)])
    assert (interrupted.value.epoch, interrupted.value.step_in_epoch) == (1, 3)
    resumed, _ = fit(tiny_setup()[0], data, steps=steps, epochs=2, verbose=0, mesh=mesh,
                     backup=backup)
    assert int(resumed.step) == 12
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(a, b)
