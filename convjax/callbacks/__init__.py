"""Keras-style training callbacks for `convjax.loop.fit`."""

from convjax.callbacks.base import Callback, CallbackList
from convjax.callbacks.recorders import CSVLogger, History, ProgbarLogger, TensorBoard

__all__ = ["CSVLogger", "Callback", "CallbackList", "History", "ProgbarLogger", "TensorBoard"]
