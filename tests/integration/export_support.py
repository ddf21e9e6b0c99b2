"""Real servers for the export tests: Prometheus (Debian package), and an OTLP/HTTP receiver
on 127.0.0.1 that decodes each request with the official ``opentelemetry-proto`` package.

Not a test module; the export tests import it by name (this folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

PROMETHEUS = "/usr/bin/prometheus"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return free_port()


def ensure_prometheus() -> str:
    """Path of the prometheus binary, installing Debian's package when it is missing.

    Skips (with the reason printed) only when installation is impossible here.
    """
    found = shutil.which("prometheus") or (PROMETHEUS if os.path.exists(PROMETHEUS) else None)
    if found:
        return found
    if shutil.which("apt-get") is None:
        reason = "prometheus is not installed and there is no apt-get to install it"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    if os.geteuid() != 0:
        reason = "prometheus is not installed and installing it needs root (apt-get)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends",
                                         "prometheus"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                                  check=False)
        except subprocess.TimeoutExpired:
            reason = f"`{' '.join(cmd)}` did not finish within 600 s"
            print(f"SKIP: {reason}")
            pytest.skip(reason)
        log.append(done.stdout[-2000:] + done.stderr[-2000:])
    found = shutil.which("prometheus") or (PROMETHEUS if os.path.exists(PROMETHEUS) else None)
    if not found:
        reason = "apt-get install prometheus failed: " + " | ".join(log)[-600:]
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return found


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: (status, headers, body), also for error statuses."""
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Prometheus:
    """A real Prometheus on 127.0.0.1 with a temporary config and storage, stopped by pid."""

    def __init__(self, workdir: Path, scrape_targets: list[str] | None = None) -> None:
        self.binary = ensure_prometheus()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "holter", "scrape_interval": "1s",
                 "static_configs": [{"targets": scrape_targets or []}]},
            ],
        }
        (workdir / "prom.yml").write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes it; closed below
        try:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.workdir / 'prom.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--web.enable-remote-write-receiver"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                status, _, _ = http_get(self.url + "/-/ready", timeout=1)
                if status == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready in 30 s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant PromQL query: ``data.result``."""
        status, _, body = http_get(
            self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )
        assert status == 200, body[:500]
        return json.loads(body)["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0, min_results: int = 1,
                 check: Any = None) -> list[dict[str, Any]]:
        """Poll ``expr`` until it has ``min_results`` results (and ``check(result)`` holds)."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if len(result) >= min_results and (check is None or check(result)):
                return result
            time.sleep(0.25)
        raise AssertionError(f"no answer to {expr!r} in {timeout} s: {result}; "
                             f"log: {self.log_path.read_text()[-1500:]}")


@contextlib.contextmanager
def prometheus(workdir: Path, scrape_targets: list[str] | None = None) -> Iterator[Prometheus]:
    """A started :class:`Prometheus`, always stopped afterwards."""
    server = Prometheus(workdir, scrape_targets)
    try:
        yield server.start()
    finally:
        server.stop()


# -- OTLP receiver ------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP/HTTP receiver on 127.0.0.1 decoding requests with ``opentelemetry-proto``.

    ``script`` is a list of behaviours for the next requests (``"ok"``, an HTTP status
    such as ``503``, or ``"hang"``: accept and never answer until closed); once used up,
    every request gets ``"ok"``.
    """

    def __init__(self, script: list[Any] | None = None) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.metrics_type = metrics_service_pb2.ExportMetricsServiceRequest
        self.traces_type = trace_service_pb2.ExportTraceServiceRequest
        self.metrics: list[Any] = []
        self.traces: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.script = list(script or [])
        self.lock = threading.Lock()
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    action = receiver.script.pop(0) if receiver.script else "ok"
                    receiver.requests.append({
                        "path": self.path, "headers": dict(self.headers), "action": action,
                    })
                if action == "hang":
                    receiver.closing.wait(60)
                    return
                if action != "ok":
                    self.send_response(int(action))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers.get("Content-Type") == "application/x-protobuf"
                if self.path == "/v1/metrics":
                    message = receiver.metrics_type.FromString(body)
                    with receiver.lock:
                        receiver.metrics.append(message)
                elif self.path == "/v1/traces":
                    message = receiver.traces_type.FromString(body)
                    with receiver.lock:
                        receiver.traces.append(message)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def wait(self, what: str, n: int = 1, timeout: float = 20.0) -> list[Any]:
        """Wait until ``n`` decoded requests of ``what`` (metrics/traces) arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = list(getattr(self, what))
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(got)} {what} requests arrived in {timeout} s, wanted {n}")

    # -- flattening ------------------------------------------------------------------

    def data_points(self) -> list[tuple[dict[str, Any], Any, Any]]:
        """(resource attributes, metric, data point) of every metric request received."""
        out = []
        with self.lock:
            requests = list(self.metrics)
        for request in requests:
            for rm in request.resource_metrics:
                resource = attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    assert sm.scope.name == "holter"
                    for metric in sm.metrics:
                        which = metric.WhichOneof("data")
                        for dp in getattr(metric, which).data_points:
                            out.append((resource, metric, dp))
        return out

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every trace request received."""
        out = []
        with self.lock:
            requests = list(self.traces)
        for request in requests:
            for rs in request.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    assert ss.scope.name == "holter"
                    out.extend((resource, span) for span in ss.spans)
        return out


def any_value(value: Any) -> Any:
    """Python value of an OTLP AnyValue."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def attrs(kvs: Any) -> dict[str, Any]:
    """A KeyValue list as a dict."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def otlp_bucket_bounds(index: int, scale: int = 6) -> tuple[float, float]:
    """OTLP exponential bucket ``index`` at ``scale``: (base**index, base**(index+1)] with
    base = 2**(2**-scale), computed as 2**(index * 2**-scale) (exact at powers of two)."""
    step = 2.0**-scale
    return 2.0 ** (index * step), 2.0 ** ((index + 1) * step)
