"""SwapEMAWeights: evaluate (and optionally checkpoint) with the EMA of the weights.

Pure bookkeeping. The EMA lives in the train state (`init_train_state(..., ema=True)` and the
train step bound with `ema_momentum`, Keras's default being 0.99). Validation never swaps
anything: the loop evaluates `state.ema_params` when asked (`request_eval_with_ema`), so no
weights can be left swapped after evaluation or prediction (Keras's `on_predict_end` has
that bug). Only `swap_on_epoch=True` swaps, from each epoch's end to the next one's start.
"""

from __future__ import annotations

from convjax.callbacks.base import Callback, Logs


class SwapEMAWeights(Callback):
    """Keras's `SwapEMAWeights(swap_on_epoch=False)`.

    With `swap_on_epoch=True`, `state.params` holds the EMA weights during `on_epoch_end`
    (so a later ModelCheckpoint or EarlyStopping sees them) and the raw weights again from
    the next `on_epoch_begin`; at the end of training the state is swapped back, so
    `fit` returns raw `params` and the EMA in `ema_params` (Keras instead leaves the EMA in
    the model).
    """

    def __init__(self, swap_on_epoch: bool = False):
        self.swap_on_epoch = swap_on_epoch
        self.swapped = False  # state.params holds the EMA right now

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self.loop.state.ema_params is None:
            raise ValueError("SwapEMAWeights needs EMA weights: create the state with "
                             "init_train_state(..., ema=True) and bind ema_momentum in the step")
        self.swapped = False

    def on_test_begin(self, logs: Logs | None = None) -> None:
        self.loop.request_eval_with_ema(not self.swapped)  # swapped: params are the EMA

    def on_test_end(self, logs: Logs | None = None) -> None:
        self.loop.request_eval_with_ema(False)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.swap_on_epoch and not self.swapped:
            self._swap()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self.swapped:
            self._swap()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.swapped:
            self._swap()

    def _swap(self) -> None:
        self.loop.request_swap_ema()
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        return {"swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        self.swapped = state["swapped"]
