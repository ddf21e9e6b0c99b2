"""HTTP client instrumentation against a real server on 127.0.0.1.

Every client — urllib.request, http.client, requests, httpx (sync and async), the
aiohttp client — records a span ``HTTP <METHOD>`` with method, host, route template and
status, feeds ``http.client.duration/requests/errors``, sends a ``traceparent`` whose ids
are the client span's (checked at the server), and returns and raises exactly what it
would without holter.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests

import holter.instrument
import holter.testing
from holter.errors import QueryError
from holter.store import query as q
from holter.store.spans import decode_chunk

SECRET = "hunter2-query-token"

# -- a real server -------------------------------------------------------------------------


class Server:
    """A threaded http.server on 127.0.0.1 that remembers what each request carried."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append({
                    "method": self.command, "path": self.path,
                    "traceparent": self.headers.get_all("traceparent") or [],
                    "x-dup": self.headers.get_all("X-Dup") or [],
                })
                code = 200
                if self.path.startswith("/status/"):
                    code = int(self.path.split("/")[2].split("?")[0])
                payload = json.dumps({"method": self.command, "path": self.path,
                                      "body": body.decode()}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Server", "holter-test")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as srv:
        yield srv


@pytest.fixture(scope="module")
def refused_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connecting is refused, race-free."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


HTTP_ORIGINALS = {name: http.client.HTTPConnection.__dict__[name]
                  for name in ("putrequest", "endheaders", "getresponse")}
HTTPX_ORIGINAL = httpx.HTTPTransport.__dict__["handle_request"]
AIOHTTP_ORIGINAL = aiohttp.ClientSession.__dict__["_request"]


@pytest.fixture(autouse=True)
def no_leaked_patches() -> Iterator[None]:
    yield
    assert holter.instrument.installed() == []
    for name, value in HTTP_ORIGINALS.items():
        assert http.client.HTTPConnection.__dict__[name] is value, name
    assert httpx.HTTPTransport.__dict__["handle_request"] is HTTPX_ORIGINAL
    assert aiohttp.ClientSession.__dict__["_request"] is AIOHTTP_ORIGINAL


# -- reading the store -----------------------------------------------------------------------


def stored_spans(mon) -> list[dict[str, Any]]:
    mon.flush()
    with mon.store.reading() as conn:
        return [s for (blob,) in conn.execute("SELECT data FROM span_chunks ORDER BY id")
                for s in decode_chunk(blob)]


def http_spans(mon) -> list[dict[str, Any]]:
    return [s for s in stored_spans(mon) if s["name"].startswith("HTTP ")]


def count(mon, name: str, **tags: object) -> float:
    """The total of counter ``name`` (or observations of a histogram); 0 if never recorded."""
    try:
        return mon.query(name, "1h", tags={k: str(v) for k, v in tags.items()}).count
    except QueryError:
        return 0


def assert_never_stored(mon, secret: str) -> None:
    """``secret`` is nowhere in the store: not in the file bytes, not in any span chunk."""
    mon.flush()
    needle = secret.encode()
    with mon.store.reading() as conn:
        for (blob,) in conn.execute("SELECT data FROM span_chunks"):
            assert secret not in json.dumps(decode_chunk(blob)), "a span holds the secret"
        for (tags,) in conn.execute("SELECT tags FROM series"):
            assert secret not in tags
    db = Path(mon.config.db)
    for path in db.parent.glob(db.name + "*"):
        assert needle not in path.read_bytes(), f"{path.name} holds the secret"


# -- the clients -----------------------------------------------------------------------------

Result = tuple[int, bytes, str, str]
"""(status, body, type of the response object, the X-Server header)."""


def via_urllib(url: str, method: str = "GET", body: bytes | None = None) -> Result:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (response.status, response.read(), type(response).__name__,
                    response.headers["X-Server"])
    except urllib.error.HTTPError as exc:  # 4xx/5xx: urllib raises, unchanged
        with exc:
            return exc.code, exc.read(), "HTTPError", exc.headers["X-Server"]


def via_http_client(url: str, method: str = "GET", body: bytes | None = None) -> Result:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body)
        response = conn.getresponse()
        return (response.status, response.read(), type(response).__name__,
                response.getheader("X-Server"))
    finally:
        conn.close()


def via_requests(url: str, method: str = "GET", body: bytes | None = None) -> Result:
    with requests.Session() as session:
        response = session.request(method, url, data=body, timeout=10)
        return (response.status_code, response.content, type(response).__name__,
                response.headers["X-Server"])


def via_httpx(url: str, method: str = "GET", body: bytes | None = None) -> Result:
    with httpx.Client(timeout=10) as client:
        response = client.request(method, url, content=body)
        return (response.status_code, response.content, type(response).__name__,
                response.headers["X-Server"])


def via_httpx_async(url: str, method: str = "GET", body: bytes | None = None) -> Result:
    async def go() -> Result:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.request(method, url, content=body)
            return (response.status_code, response.content, type(response).__name__,
                    response.headers["X-Server"])

    return asyncio.run(go())


def via_aiohttp(url: str, method: str = "GET", body: bytes | None = None) -> Result:
    async def go() -> Result:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
                method, url, data=body) as response:
            return (response.status, await response.read(), type(response).__name__,
                    response.headers["X-Server"])

    return asyncio.run(go())


CLIENTS: dict[str, Callable[..., Result]] = {
    "urllib": via_urllib,
    "http.client": via_http_client,
    "requests": via_requests,
    "httpx": via_httpx,
    "httpx-async": via_httpx_async,
    "aiohttp": via_aiohttp,
}


def monitor(tmp_path: Path):
    return holter.testing.monitor(db=str(tmp_path / "h.db"), instrument=["http"])


def parse_traceparent(header: str) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and len(flags) == 2
    assert int(trace_id, 16) != 0 and int(span_id, 16) != 0
    return version, trace_id, span_id, flags


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_request_is_a_span_with_metrics_and_a_traceparent(client, server, tmp_path) -> None:
    call = CLIENTS[client]
    url = f"{server.base}/users/42/orders/7?token={SECRET}"
    baseline = call(url)  # the same call without holter
    assert baseline[0] == 200
    with monitor(tmp_path) as mon:
        del server.seen[:]
        with mon.span("job") as job:
            result = call(url)
        assert result == baseline  # status, body, response type and headers unchanged

        [seen] = server.seen
        assert seen["path"] == f"/users/42/orders/7?token={SECRET}"  # the URL itself unchanged
        [header] = seen["traceparent"]
        _, trace_id, parent_id, flags = parse_traceparent(header)

        [span] = http_spans(mon)
        assert span["name"] == "HTTP GET"
        assert span["tags"] == {"http.method": "GET", "http.host": f"127.0.0.1:{server.port}",
                                "http.route": "/users/{id}/orders/{id}", "http.status": 200}
        assert span["status"] == "ok"
        assert (trace_id, parent_id, flags) == (span["trace_id"], span["span_id"], "01")
        assert span["trace_id"] == f"{job.trace_id:032x}"
        assert span["parent_id"] == f"{job.span_id:016x}"

        host = f"127.0.0.1:{server.port}"
        duration = mon.query("http.client.duration", "1h", tags={
            "method": "GET", "host": host, "route": "/users/{id}/orders/{id}"})
        assert duration.count == 1 and duration.unit == "s" and duration.min >= 0
        assert count(mon, "http.client.requests", method="GET", host=host, status=200) == 1
        assert count(mon, "http.client.errors") == 0
        assert_never_stored(mon, SECRET)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_error_statuses_pass_through_and_are_recorded(client, server, tmp_path) -> None:
    call = CLIENTS[client]
    baselines = {code: call(f"{server.base}/status/{code}") for code in (404, 503)}
    with monitor(tmp_path) as mon:
        for code, baseline in baselines.items():
            assert call(f"{server.base}/status/{code}") == baseline
        spans = {s["tags"]["http.status"]: s for s in http_spans(mon)}
        assert set(spans) == {404, 503}
        assert spans[404]["status"] == "ok"  # the server answered: not a client failure
        assert spans[503]["status"] == "error"
        assert spans[503]["tags"]["http.route"] == "/status/{id}"
        host = f"127.0.0.1:{server.port}"
        assert count(mon, "http.client.requests", host=host, status=404) == 1
        assert count(mon, "http.client.requests", host=host, status=503) == 1
        assert count(mon, "http.client.errors") == 0


REFUSED_AS = {  # the exception each client library raises where holter sees it
    "urllib": "ConnectionRefusedError", "http.client": "ConnectionRefusedError",
    "requests": "NewConnectionError", "httpx": "ConnectError", "httpx-async": "ConnectError",
    "aiohttp": "ClientConnectorError",
}


def _outcome(call: Callable[..., Result], url: str) -> BaseException:
    with pytest.raises(Exception) as info:
        call(url)
    return info.value


def _shape(exc: BaseException) -> tuple:
    """What a program can see of an exception: its type, errno, what it wraps, and where it
    was raised (holter re-raises the library's own object: it is never recreated)."""
    inner = exc.__cause__ or exc.__context__
    return (type(exc), getattr(exc, "errno", None), type(getattr(exc, "reason", None)),
            type(inner) if inner is not None else None, len(exc.args), _frames(exc)[-1])


@pytest.mark.parametrize("client", list(CLIENTS))
def test_connection_refused_raises_the_same_exception(client, refused_port, tmp_path) -> None:
    call = CLIENTS[client]
    url = f"http://127.0.0.1:{refused_port}/users/1"
    baseline = _outcome(call, url)
    with monitor(tmp_path) as mon:
        error = _outcome(call, url)
        assert _shape(error) == _shape(baseline)
        assert error.args.__class__ is baseline.args.__class__
        if isinstance(error, OSError) and error.errno is not None:
            assert error.errno == baseline.errno
        holter_frames = [
            f for f in _frames(error) if "holter" in f and "holter/tests" not in f
            and "/tests/" not in f
        ]
        assert all("instrument" in f for f in holter_frames)  # only the thin wrappers
        [span] = http_spans(mon)
        assert span["status"] == "error"
        assert "http.status" not in span["tags"]
        host = f"127.0.0.1:{refused_port}"
        errors = mon.query("http.client.errors", "1h", tags={"host": host}, by="error")
        assert [(g.group["error"], g.count) for g in errors] == [(REFUSED_AS[client], 1)]
        assert count(mon, "http.client.requests") == 0
        assert mon.query("http.client.duration", "1h", tags={"host": host}).count == 1


def _frames(exc: BaseException) -> list[str]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return out


@pytest.mark.parametrize("client", ["urllib", "requests", "httpx", "httpx-async", "aiohttp"])
def test_request_bodies_and_methods_pass_through(client, server, tmp_path) -> None:
    call = CLIENTS[client]
    body = json.dumps({"password": "hunter2-body"}).encode()
    baseline = call(f"{server.base}/items", "POST", body)
    deleted = call(f"{server.base}/items/9", "DELETE")
    with monitor(tmp_path) as mon:
        assert call(f"{server.base}/items", "POST", body) == baseline
        assert json.loads(baseline[1])["body"] == body.decode()
        assert call(f"{server.base}/items/9", "DELETE") == deleted
        spans = http_spans(mon)
        assert {(s["tags"]["http.method"], s["tags"]["http.route"]) for s in spans} == {
            ("POST", "/items"), ("DELETE", "/items/{id}")}
        assert_never_stored(mon, "hunter2-body")


def test_a_kept_alive_connection_records_each_request(server, tmp_path) -> None:
    with monitor(tmp_path) as mon:
        del server.seen[:]
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for i in range(3):
                conn.request("GET", f"/users/{i}")
                assert conn.getresponse().read()
        finally:
            conn.close()
        spans = http_spans(mon)
        assert len(spans) == 3
        sent = [parse_traceparent(s["traceparent"][0])[2] for s in server.seen]
        assert sent == [s["span_id"] for s in sorted(spans, key=lambda s: s["start_ns"])]
        assert len(set(sent)) == 3


def test_many_ids_are_one_series(server, tmp_path) -> None:
    with monitor(tmp_path) as mon, requests.Session() as session:
        for i in range(25):
            assert session.get(f"{server.base}/users/{1000 + i}", timeout=10).ok
        mon.flush()
        series = q.series(mon.store, "http.client.duration")
        assert [s.tags["route"] for s in series] == ["/users/{id}"]
        assert count(mon, "http.client.requests", status=200) == 25


@pytest.mark.parametrize("client", [
    pytest.param("http.client"),
    pytest.param("requests"),
    "httpx", "aiohttp",
])
def test_a_request_with_its_own_traceparent_carries_exactly_one(client, server,
                                                                  tmp_path) -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with monitor(tmp_path):
        del server.seen[:]
        if client == "http.client":
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                conn.request("GET", "/x", headers={"traceparent": own})
                conn.getresponse().read()
            finally:
                conn.close()
        elif client == "requests":
            requests.get(f"{server.base}/x", headers={"traceparent": own}, timeout=10)
        elif client == "httpx":
            httpx.get(f"{server.base}/x", headers={"traceparent": own}, timeout=10)
        else:
            async def go() -> None:
                async with aiohttp.ClientSession() as session, session.get(
                        f"{server.base}/x", headers={"traceparent": own}) as response:
                    await response.read()

            asyncio.run(go())
        [seen] = server.seen
        assert len(seen["traceparent"]) == 1


def _aiohttp_with_repeated_header(url: str) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session, session.get(
                url, headers=[("X-Dup", "1"), ("X-Dup", "2")]) as response:
            await response.read()

    asyncio.run(go())


def test_aiohttp_repeated_headers_are_sent_unchanged(server, tmp_path) -> None:
    del server.seen[:]
    _aiohttp_with_repeated_header(f"{server.base}/dup")
    assert server.seen[-1]["x-dup"] == ["1", "2"]  # what aiohttp sends without holter
    with monitor(tmp_path):
        _aiohttp_with_repeated_header(f"{server.base}/dup")
    assert server.seen[-1]["x-dup"] == ["1", "2"]


def test_aiohttp_session_base_url(server, tmp_path) -> None:
    async def go() -> int:
        async with aiohttp.ClientSession(base_url=server.base) as session, session.get(
                "/users/5") as response:
            return response.status

    with monitor(tmp_path) as mon:
        assert asyncio.run(go()) == 200
        [span] = http_spans(mon)
        assert span["tags"]["http.host"] == f"127.0.0.1:{server.port}"
        assert span["tags"]["http.route"] == "/users/{id}"


def test_no_recording_after_uninstall(server, tmp_path) -> None:
    with monitor(tmp_path) as mon:
        holter.instrument.uninstall()
        del server.seen[:]
        for call in CLIENTS.values():
            assert call(f"{server.base}/users/1")[0] == 200
        assert http_spans(mon) == []
        assert all(s["traceparent"] == [] for s in server.seen)


def test_holter_start_from_code_records_every_kind(tmp_path) -> None:
    """``holter.start(instrument=[...], runtime=True)`` in a program, flushed at exit."""
    db = tmp_path / "h.db"
    env = {k: v for k, v in os.environ.items() if k != "HOLTER_DB"}
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "scripts" /
                                               "instr_app.py"), str(db)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n" and done.stderr == ""
    conn = sqlite3.connect(db)
    try:
        names = {s["name"] for (blob,) in conn.execute("SELECT data FROM span_chunks")
                 for s in decode_chunk(blob)}
        metrics = {n for (n,) in conn.execute("SELECT DISTINCT name FROM series")}
        [(status, app)] = conn.execute("SELECT exit_status, app FROM runs").fetchall()
    finally:
        conn.close()
    assert {"HTTP GET", "db.query", "subprocess"} <= names
    assert {"http.client.requests", "http.client.duration", "db.client.duration",
            "subprocess.runs", "subprocess.duration", "process.memory.rss",
            "python.gc.collections"} <= metrics
    assert (status, app) == (0, "instr-app")
