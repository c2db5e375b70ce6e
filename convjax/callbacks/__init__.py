"""Keras-style training callbacks for `convjax.loop.fit` (docs/callbacks.md maps each one)."""

from convjax.callbacks.backup import BackupAndRestore, BackupOptions
from convjax.callbacks.base import Callback, CallbackList
from convjax.callbacks.checkpointing import ModelCheckpoint
from convjax.callbacks.early_stopping import EarlyStopping
from convjax.callbacks.ema import SwapEMAWeights
from convjax.callbacks.lambda_callback import LambdaCallback
from convjax.callbacks.lr import LearningRateScheduler, ReduceLROnPlateau
from convjax.callbacks.recorders import CSVLogger, History, ProgbarLogger, ValidationConfusion
from convjax.callbacks.remote import RemoteMonitor
from convjax.callbacks.tensorboard import TensorBoard
from convjax.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "BackupAndRestore", "BackupOptions", "CSVLogger", "Callback", "CallbackList",
    "EarlyStopping", "History",
    "LambdaCallback", "LearningRateScheduler", "ModelCheckpoint", "ProgbarLogger",
    "ReduceLROnPlateau", "RemoteMonitor", "SwapEMAWeights", "TensorBoard", "TerminateOnNaN",
    "ValidationConfusion",
]
