"""RemoteMonitor against a real HTTP server on 127.0.0.1."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from fake_loop import attach

from convjax.callbacks import RemoteMonitor


@pytest.fixture
def server():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.path, dict(self.headers), body))
            status = 500 if "fail" in self.path else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", received
    httpd.shutdown()
    httpd.server_close()


def end_epoch(monitor, epoch, logs):
    attach([monitor]).call("on_epoch_end", epoch, logs)


def test_posts_a_form_with_the_json_under_field(server):
    root, received = server
    end_epoch(RemoteMonitor(root=root), 3, {"loss": np.float32(0.5), "accuracy": 0.75})
    [(path, headers, body)] = received
    assert path == "/publish/epoch/end/"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    payload = json.loads(urllib.parse.parse_qs(body)["data"][0])
    assert payload == {"epoch": 3, "loss": 0.5, "accuracy": 0.75}


def test_posts_json_with_custom_headers_path_and_field(server):
    root, received = server
    monitor = RemoteMonitor(root=root, path="/metrics", headers={"X-Run": "7"},
                            send_as_json=True)
    end_epoch(monitor, 0, {"loss": 1.0})
    [(path, headers, body)] = received
    assert path == "/metrics" and headers["X-Run"] == "7"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"epoch": 0, "loss": 1.0}


def test_server_errors_and_unreachable_servers_only_warn(server):
    root, _ = server
    with pytest.warns(UserWarning, match="Could not reach RemoteMonitor"):
        end_epoch(RemoteMonitor(root=root, path="/fail"), 0, {"loss": 1.0})
    with pytest.warns(UserWarning, match="Could not reach RemoteMonitor"):
        end_epoch(RemoteMonitor(root="http://127.0.0.1:9", timeout=2.0), 0, {"loss": 1.0})
