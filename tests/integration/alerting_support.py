"""Real HTTP receivers on 127.0.0.1 for the alerting tests, and a real Prometheus
Alertmanager (Debian's ``prometheus-alertmanager``), started and stopped by pid.

Not a test module; the alerting tests import it by name (this folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port where nothing listens: connections are refused."""
    return free_port()


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded); return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(step)


class Receiver:
    """An HTTP server in a thread that records every POST (path, headers, JSON body).

    ``statuses`` is a list of HTTP statuses to answer in turn (then 200 for the rest).
    """

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with outer.lock:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                           "body": body, "status": status,
                                           "thread": threading.current_thread().name})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def bodies(self, status: int | None = 200) -> list[Any]:
        """JSON bodies received (those answered with ``status``; all with None)."""
        with self.lock:
            return [r["body"] for r in self.requests if status is None or r["status"] == status]


class HangingServer:
    """Accepts connections and never answers, until ``release()`` (or exit)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.accepted = threading.Event()
        self.released = threading.Event()
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.released.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            self.accepted.set()

    def release(self) -> None:
        """Close every held connection and the listening socket (later ones are refused)."""
        self.released.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> HangingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.thread.join(5)
        self.sock.close()


def ensure_alertmanager() -> str:
    """Path of Prometheus Alertmanager, installing Debian's package when it is missing.

    Skips (with the reason printed) only when installation is impossible here.
    """
    def found() -> str | None:
        return shutil.which("prometheus-alertmanager") or (
            ALERTMANAGER if os.path.exists(ALERTMANAGER) else None)

    path = found()
    if path:
        return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        reason = "prometheus-alertmanager is missing and cannot be installed (no apt-get or root)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "prometheus-alertmanager"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                                  check=False)
        except subprocess.TimeoutExpired:
            reason = f"`{' '.join(cmd)}` did not finish within 600 s"
            print(f"SKIP: {reason}")
            pytest.skip(reason)
        log.append(done.stdout[-1500:] + done.stderr[-1500:])
    path = found()
    if not path:
        reason = "apt-get install prometheus-alertmanager failed: " + " | ".join(log)[-600:]
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return path


class Alertmanager:
    """A real Alertmanager on 127.0.0.1 with a temporary config routing to ``hook_url``."""

    def __init__(self, workdir: Path, hook_url: str) -> None:
        self.binary = ensure_alertmanager()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "alertmanager.log"
        config = {
            "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "hook", "webhook_configs": [
                {"url": hook_url, "send_resolved": True}]}],
        }
        (workdir / "am.yml").write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.workdir / 'am.yml'}",
                 f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ready = wait_for(self._ready, timeout=30.0, step=0.1)
        if not ready:
            self.stop()
            raise AssertionError("Alertmanager did not become ready in 30 s: "
                                 + self.log_path.read_text()[-2000:])
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("Alertmanager exited: " + self.log_path.read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's own view: GET /api/v2/alerts."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as answer:
            return list(json.loads(answer.read()))

    def stop(self) -> None:
        """SIGTERM by pid, then wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def alertmanager(workdir: Path, hook_url: str) -> Iterator[Alertmanager]:
    """A started Alertmanager, stopped afterwards."""
    am = Alertmanager(workdir, hook_url)
    try:
        yield am.start()
    finally:
        am.stop()
