import pytest
from fake_loop import attach, tiny_fit

from convjax.callbacks import LambdaCallback


def test_calls_the_given_functions_with_the_hook_arguments():
    calls = []
    cb = LambdaCallback(on_epoch_end=lambda epoch, logs: calls.append(("end", epoch, logs)),
                        on_train_begin=lambda logs: calls.append(("begin", logs)),
                        on_test_end=lambda logs: calls.append(("test", logs)))
    cbs = attach([cb])
    cbs.call("on_train_begin", {})
    cbs.call("on_epoch_begin", 0, {})  # not given: a no-op
    cbs.call("on_test_end", {"loss": 2.0})
    cbs.call("on_epoch_end", 0, {"loss": 1.0})
    assert calls == [("begin", {}), ("test", {"loss": 2.0}), ("end", 0, {"loss": 1.0})]


def test_unknown_hook_names_are_an_error():
    with pytest.raises(TypeError, match="unknown hooks"):
        LambdaCallback(on_epoch_ned=print)


def test_in_fit_batch_hooks_run_for_every_batch():
    batches = []
    tiny_fit([LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))],
             epochs=1)
    assert batches == list(range(6))
