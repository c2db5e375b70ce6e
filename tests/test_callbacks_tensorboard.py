import numpy as np
import pytest
from fake_loop import attach, make_control, tiny_fit, tiny_parts
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convjax.callbacks import TensorBoard
from convjax.callbacks.tensorboard import named_leaves, params_table, weight_image

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
    control.resumed = True
    cbs = attach([resumed], control)
    cbs.call("on_train_begin", {})
    resumed.load_state_dict(saved)
    cbs.call("on_epoch_end", 1, {"loss": 1.5, "val_loss": 1.75})
    cbs.call("on_train_end", {})
    train, val = read(tmp_path / "train"), read(tmp_path / "validation")
    assert [(e.step, e.value) for e in train.Scalars("epoch_loss")] == [(0, 3.0), (1, 1.5)]
    assert [(e.step, e.value) for e in val.Scalars("epoch_loss")] == [(0, 3.5), (1, 1.75)]
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


def test_weight_images():
    assert weight_image(np.arange(3.0)).shape == (1, 3)
    dense = weight_image(np.arange(12.0).reshape(6, 2))
    assert dense.shape == (2, 6) and dense.min() == 0.0 and dense.max() == 1.0
    conv = np.zeros((3, 3, 2, 4))
    conv[:, :, 1, 2] = 1.0  # input channel 1, filter 2
    grid = weight_image(conv)
    assert grid.shape == (2 * 3, 4 * 3)
    assert grid[3:6, 6:9].min() == 1.0 and grid.sum() == 9.0
    assert not weight_image(np.ones((2, 2))).any()  # constant: all zeros, no division by 0


def test_params_table_lists_every_weight():
    params = {"dense": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}}
    table = params_table(params)
    assert "dense/kernel" in table and "(2, 3)" in table and "Total params: 9" in table


def test_update_freq_batch_means_1_and_bad_values_fail(tmp_path):
    assert TensorBoard(tmp_path, update_freq="batch").update_freq == 1
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(tmp_path, update_freq="sometimes")
