"""RemoteMonitor: POST each epoch's logs to an HTTP server (Keras 3 semantics).

I/O (network), with the standard library's `urllib` instead of `requests` (one dependency
fewer). Network and HTTP errors become warnings: monitoring never stops training.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any

import numpy as np

from convjax.callbacks.base import Callback, Logs


def epoch_payload(epoch: int, logs: Logs | None) -> dict[str, Any]:
    """`{"epoch": epoch, **logs}` with numpy scalars unwrapped (pure)."""
    send: dict[str, Any] = {"epoch": epoch}
    for key, value in (logs or {}).items():
        send[key] = value.item() if isinstance(value, (np.ndarray, np.generic)) else value
    return send


class RemoteMonitor(Callback):
    """Keras's `RemoteMonitor`: POST to `root + path` at the end of every epoch.

    `send_as_json=False` sends a form with the JSON under `field` (Keras's default);
    `send_as_json=True` sends the JSON itself as `application/json`. `timeout` (seconds,
    convjax only) bounds how long an unreachable server can hold up training.
    """

    def __init__(
        self,
        root: str = "http://localhost:9000",
        path: str = "/publish/epoch/end/",
        field: str = "data",
        headers: dict[str, str] | None = None,
        send_as_json: bool = False,
        timeout: float = 5.0,
    ):
        self.root = root
        self.path = path
        self.field = field
        self.headers = headers
        self.send_as_json = send_as_json
        self.timeout = timeout

    def make_request(self, send: dict[str, Any]) -> urllib.request.Request:
        headers = dict(self.headers or {})
        if self.send_as_json:
            body = json.dumps(send).encode()
            headers.setdefault("Content-Type", "application/json")
        else:
            body = urllib.parse.urlencode({self.field: json.dumps(send)}).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return urllib.request.Request(self.root + self.path, data=body, headers=headers,
                                      method="POST")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        request = self.make_request(epoch_payload(epoch, logs))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError) as error:  # HTTPError is a URLError
            warnings.warn(f"Could not reach RemoteMonitor root server at {self.root} "
                          f"({error})", stacklevel=2)
