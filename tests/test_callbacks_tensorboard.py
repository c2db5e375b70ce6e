import io
import threading

import jax
import numpy as np
import pytest
from fake_loop import attach, make_control, tiny_fit, tiny_parts
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from convjax.callbacks import LambdaCallback, TensorBoard
from convjax.callbacks.backup import BackupOptions
from convjax.callbacks.tensorboard import write_test_confusion
from convjax.callbacks.tensorboard_content import confusion_image, named_leaves
from convjax.loop import TrainingInterrupted

GUIDANCE = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}


def read(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance=GUIDANCE)
    acc.Reload()
    return acc


def steps(events):
    return [e.step for e in events]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tb")
    tb = TensorBoard(log_dir, histogram_freq=1, write_images=True, update_freq=2,
                     write_steps_per_second=True)
    tiny_fit([tb], epochs=2)
    return log_dir


def test_epoch_scalars_in_keras_runs_and_tags(logged):
    train, val = read(logged / "train"), read(logged / "validation")
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_steps_per_second"):
        assert steps(train.Scalars(tag)) == [0, 1], tag
    assert train.Scalars("epoch_learning_rate")[0].value == pytest.approx(1e-3)
    assert steps(val.Scalars("epoch_loss")) == [0, 1]
    assert steps(val.Scalars("epoch_accuracy")) == [0, 1]
    assert steps(val.Scalars("evaluation_loss_vs_iterations")) == [6, 12]
    assert not any(t.startswith("epoch_val") for t in train.Tags()["scalars"])


def test_batch_scalars_every_update_freq_global_batches(logged):
    train = read(logged / "train")
    assert steps(train.Scalars("batch_loss")) == [2, 4, 6, 8, 10, 12]
    assert steps(train.Scalars("batch_accuracy")) == [2, 4, 6, 8, 10, 12]
    assert all(e.value > 0 for e in train.Scalars("batch_steps_per_second"))


def test_histograms_and_images_of_every_weight(logged):
    train = read(logged / "train")
    names = [name for name, _ in named_leaves(tiny_parts()[0].params)]
    assert names and "conv0_0/kernel" in names
    assert sorted(train.Tags()["histograms"]) == sorted(f"{n}/histogram" for n in names)
    kernel = dict(named_leaves(tiny_parts()[0].params))["conv0_0/kernel"]
    events = train.Histograms("conv0_0/kernel/histogram")
    assert steps(events) == [0, 1] and events[0].histogram_value.num == kernel.size
    assert sorted(train.Tags()["images"]) == sorted(f"{n}/image" for n in names)
    image = train.Images("conv0_0/kernel/image")[0]
    assert (image.height, image.width) == (3 * 3, 3 * 4)  # (cin*kh, cout*kw) for 3x3x3x4


def test_model_structure_as_text(logged):
    train = read(logged / "train")
    [event] = train.Tensors("model_summary/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert "conv0_0/kernel" in text and "Total params:" in text


def test_resume_purges_what_was_written_after_the_backup(tmp_path):
    control = make_control(steps_per_epoch=1)
    control.validation_confusion = np.eye(2)  # as if validated: an image each epoch too
    first = TensorBoard(tmp_path, write_graph=False)
    cbs = attach([first], control)
    cbs.call("on_train_begin", {})
    cbs.call("on_epoch_end", 0, {"loss": 3.0, "val_loss": 3.5})
    saved = first.state_dict()  # the backup
    cbs.call("on_epoch_end", 1, {"loss": 2.0, "val_loss": 2.5})  # then the crash
    (tmp_path / "other").mkdir()
    foreign = tmp_path / "train" / "events.out.tfevents.1.otherhost"
    foreign.write_bytes(b"")  # another run's file: left alone
    resumed = TensorBoard(tmp_path, write_graph=False)
    control = make_control(steps_per_epoch=1)
    control.resumed, control.validation_confusion = True, np.eye(2)
    cbs = attach([resumed], control)
    cbs.call("on_train_begin", {})
    resumed.load_state_dict(saved)
    cbs.call("on_epoch_end", 1, {"loss": 1.5, "val_loss": 1.75})
    cbs.call("on_train_end", {})
    train, val = read(tmp_path / "train"), read(tmp_path / "validation")
    assert [(e.step, e.value) for e in train.Scalars("epoch_loss")] == [(0, 3.0), (1, 1.5)]
    assert [(e.step, e.value) for e in val.Scalars("epoch_loss")] == [(0, 3.5), (1, 1.75)]
    assert steps(val.Images("epoch_confusion_matrix")) == [0, 1]  # epoch 1's once, not twice
    assert foreign.exists()


def test_files_opened_after_the_backup_are_deleted_on_resume(tmp_path):
    first = TensorBoard(tmp_path, write_graph=False)
    cbs = attach([first], make_control())
    cbs.call("on_train_begin", {})
    saved = first.state_dict()  # nothing written yet
    cbs.call("on_epoch_end", 0, {"loss": 3.0})
    assert len(list((tmp_path / "train").iterdir())) == 1
    resumed = TensorBoard(tmp_path, write_graph=False)
    attach([resumed], make_control())
    resumed.load_state_dict(saved)
    assert list((tmp_path / "train").iterdir()) == []


def decoded(image_event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def test_the_validation_confusion_matrix_as_an_image_at_each_epoch(tmp_path):
    matrices = []
    seen = LambdaCallback(on_epoch_end=lambda e, logs: matrices.append(
        seen.loop.validation_confusion))
    names = ["low", "mid", "high"]
    tiny_fit([TensorBoard(tmp_path, write_graph=False, class_names=names), seen], epochs=2,
             num_classes=3)
    events = read(tmp_path / "validation").Images("epoch_confusion_matrix")
    assert steps(events) == [0, 1] and len(matrices) == 2
    for event, matrix in zip(events, matrices):
        np.testing.assert_array_equal(decoded(event), confusion_image(matrix, names))
    assert read(tmp_path / "train").Tags()["images"] == []


def test_no_confusion_image_when_switched_off_or_not_counted(tmp_path):
    off = TensorBoard(tmp_path / "off", write_graph=False, confusion_matrix=False)
    tiny_fit([off], epochs=1, num_classes=3)
    tiny_fit([TensorBoard(tmp_path / "uncounted", write_graph=False)], epochs=1)
    for run in ("off", "uncounted"):
        validation = read(tmp_path / run / "validation")
        assert validation.Tags()["images"] == [] and validation.Scalars("epoch_loss"), run


def test_the_test_confusion_image_replaces_an_earlier_one(tmp_path):
    write_test_confusion(tmp_path, np.eye(2), step=3)
    [first] = (tmp_path / "test").iterdir()  # named after the second it was written in:
    first.rename(first.with_name("events.out.tfevents.1000000000.host"))  # as an older run's
    write_test_confusion(tmp_path, np.array([[1, 1], [0, 2]]), step=3, class_names=["a", "b"])
    assert len(list((tmp_path / "test").iterdir())) == 1
    [event] = read(tmp_path / "test").Images("epoch_confusion_matrix")
    assert event.step == 3
    expected = confusion_image(np.array([[1, 1], [0, 2]]), ["a", "b"])
    np.testing.assert_array_equal(decoded(event), expected)


def test_update_freq_batch_means_1_and_bad_values_fail(tmp_path):
    assert TensorBoard(tmp_path, update_freq="batch").update_freq == 1
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(tmp_path, update_freq="sometimes")


# --- profiler ------------------------------------------------------------------------------


def test_profile_batch_writes_a_trace_for_the_profile_plugin(tmp_path):
    tiny_fit([TensorBoard(tmp_path, write_graph=False, profile_batch=2)], epochs=1)
    [trace] = (tmp_path / "train" / "plugins" / "profile").glob("*/*.xplane.pb")
    assert trace.stat().st_size > 0


@pytest.fixture
def profiler_calls(monkeypatch):
    """Records (call, global batch, step of the state) instead of tracing."""
    calls, boards = [], []

    def record(name):
        def call(*args):
            loop = boards[0].loop
            calls.append((name, loop.global_batch, int(loop.state.step)))
        return call

    monkeypatch.setattr(jax.profiler, "start_trace", record("start"))
    monkeypatch.setattr(jax.profiler, "stop_trace", record("stop"))
    return calls, boards


@pytest.mark.parametrize("profile_batch, expected", [
    (2, [("start", 1, 1), ("stop", 2, 2)]),  # batch 2: after 1 step, until 2 steps are done
    ((5, 8), [("start", 4, 4), ("stop", 8, 8)]),  # across the epoch end (6 batches)
    ((11, 99), [("start", 10, 10), ("stop", 12, 12)]),  # stopped when training ends
    (0, []),
])
def test_profile_batch_traces_those_global_batches(tmp_path, profiler_calls, profile_batch,
                                                  expected):
    calls, boards = profiler_calls
    boards.append(TensorBoard(tmp_path, write_graph=False, profile_batch=profile_batch))
    tiny_fit(boards, epochs=2)
    assert calls == expected


def test_a_profiler_that_cannot_start_does_not_stop_training(tmp_path):
    jax.profiler.start_trace(tmp_path / "other")  # someone else's trace is running
    try:
        with pytest.warns(UserWarning, match="profiler did not start"):
            _, history = tiny_fit([TensorBoard(tmp_path, profile_batch=2)], epochs=1)
    finally:
        jax.profiler.stop_trace()
    assert len(history.epoch) == 1


# --- hyperparameters -----------------------------------------------------------------------

HPARAMS = {"optim": {"learning_rate": 1e-3, "name": "adam", "warmup": None},
           "model": {"conv_filters": (4,)}, "seed": 0, "augment": False}


def test_hparams_session_in_the_log_dir_with_the_final_metrics(tmp_path):
    _, history = tiny_fit([TensorBoard(tmp_path, hparams=HPARAMS)], epochs=2)
    session = read(tmp_path)  # the log dir itself (not train/ or validation/)
    content = session.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert values == {"optim.learning_rate": 1e-3, "optim.name": "adam", "seed": 0.0,
                      "model.conv_filters": "(4,)", "augment": False}
    assert hparams_metadata.SESSION_END_INFO_TAG in content
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        events = session.Scalars(f"hparam/{key}")
        assert steps(events) == [0, 1], key
        assert events[-1].value == pytest.approx(history.history[key][-1], rel=1e-6), key
    assert not any(t.startswith("hparam/") for t in read(tmp_path / "train").Tags()["scalars"])


def test_no_hparams_no_session(tmp_path):
    tiny_fit([TensorBoard(tmp_path)], epochs=1)
    assert not [p for p in tmp_path.iterdir() if p.is_file()]


def session_events(log_dir):
    """(tag, step) of every value in the log dir's own event files, in the order written."""
    return [(value.tag, event.step)
            for path in sorted(p for p in log_dir.iterdir() if p.is_file())
            for event in EventFileLoader(str(path)).Load() for value in event.summary.value]


def test_a_resumed_run_keeps_one_hparams_session(tmp_path):
    backup = BackupOptions(tmp_path / "backup")
    interrupt = threading.Event()
    stop_after_first = LambdaCallback(on_epoch_end=lambda epoch, logs: interrupt.set())
    with pytest.raises(TrainingInterrupted):
        tiny_fit([TensorBoard(tmp_path / "tb", hparams=HPARAMS), stop_after_first], epochs=2,
                 backup=backup, interrupt=interrupt)
    tiny_fit([TensorBoard(tmp_path / "tb", hparams=HPARAMS)], epochs=2, backup=backup)
    # Once more from the kept backup of the finished run: nothing to train, training ends again.
    tiny_fit([TensorBoard(tmp_path / "tb", hparams=HPARAMS)], epochs=2, backup=backup)
    events = session_events(tmp_path / "tb")
    assert [e for e in events if e[0].startswith("_hparams_")] == [
        (hparams_metadata.SESSION_START_INFO_TAG, 0), (hparams_metadata.SESSION_END_INFO_TAG, 2)]
    assert [step for tag, step in events if tag == "hparam/loss"] == [0, 1]
