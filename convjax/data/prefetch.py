"""A bounded read-ahead: the next items of an iterator computed in a background thread.

I/O plumbing (threads, no data logic). Used by `StreamingBatches` (host batches decoded and
put on the devices ahead of the step) and by the Keras-style `FolderDataset`. The queue is
bounded, so at most `size` finished items wait plus the one being made: memory stays flat
however slow the consumer. Stopping early (`break`, `close()`, the generator being
garbage-collected) stops and joins the thread, so no thread outlives its iteration.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone
_DONE = object()


def prefetch(items: Iterator[T], size: int, name: str = "convjax-prefetch") -> Iterator[T]:
    """Yields `items`, computed in a thread at most `size` ahead; `size=0` computes each
    item when asked. An exception raised making an item is raised here, in its place."""
    if size < 1:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(items, ready, stop), name=name, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting for room, then wait for it
            _drain(ready)
            thread.join(_POLL_S)
        close = getattr(items, "close", None)
        if close is not None:
            close()  # runs the items generator's own clean-up, in this thread


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _produce(items: Iterator, ready: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in items:
            if not _put(ready, item, stop):
                return
        _put(ready, _DONE, stop)
    except BaseException as err:  # noqa: BLE001  handed to the consumer, raised there
        _put(ready, _Failure(err), stop)


def _put(ready: queue.Queue, item, stop: threading.Event) -> bool:
    """Puts `item` once there is room; False (dropping it) if the consumer stopped."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _drain(ready: queue.Queue) -> None:
    while True:
        try:
            ready.get_nowait()
        except queue.Empty:
            return
