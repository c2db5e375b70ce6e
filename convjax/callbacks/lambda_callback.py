"""LambdaCallback: a callback built from functions (Keras 3 semantics). Pure glue."""

from __future__ import annotations

from collections.abc import Callable

from convjax.callbacks.base import Callback

HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
)


class LambdaCallback(Callback):
    """Keras's `LambdaCallback(on_epoch_begin=..., on_epoch_end=..., ...)`.

    The functions take the hook's positional arguments: `(epoch, logs)` for epoch hooks,
    `(batch, logs)` for batch hooks, `(logs)` for train/test hooks. Any other hook can be
    given by name (`on_test_end=fn`); unlike Keras, an unknown name is an error rather than a
    silently ignored attribute.
    """

    def __init__(
        self,
        on_epoch_begin: Callable | None = None,
        on_epoch_end: Callable | None = None,
        on_train_begin: Callable | None = None,
        on_train_end: Callable | None = None,
        on_train_batch_begin: Callable | None = None,
        on_train_batch_end: Callable | None = None,
        **kwargs: Callable,
    ):
        unknown = sorted(set(kwargs) - set(HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hooks {unknown}; known: {HOOKS}")
        given = dict(
            on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
            on_train_begin=on_train_begin, on_train_end=on_train_end,
            on_train_batch_begin=on_train_batch_begin, on_train_batch_end=on_train_batch_end,
            **kwargs,
        )
        for name, fn in given.items():
            if fn is not None:
                setattr(self, name, fn)  # an instance attribute shadows the no-op method
