"""WSGI and ASGI middlewares behind real servers on 127.0.0.1 (wsgiref and uvicorn).

Each request is a span ``<METHOD> <route>`` continuing an incoming ``traceparent``,
feeding ``http.server.duration/requests{method,route,status}`` with route templates;
responses and exceptions pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import sys
import threading
import time
import wsgiref.simple_server
import wsgiref.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import holter.instrument
import holter.testing
from holter.errors import QueryError
from holter.instrument.web import HolterASGIMiddleware, HolterWSGIMiddleware
from holter.store.spans import decode_chunk

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(autouse=True)
def no_leaked_patches() -> Iterator[None]:
    yield
    assert holter.instrument.installed() == []


def stored_spans(mon) -> list[dict[str, Any]]:
    mon.flush()
    with mon.store.reading() as conn:
        return [s for (blob,) in conn.execute("SELECT data FROM span_chunks ORDER BY id")
                for s in decode_chunk(blob)]


def server_spans(mon) -> list[dict[str, Any]]:
    return [s for s in stored_spans(mon) if "http.route" in s["tags"]
            and not s["name"].startswith("HTTP ")]


def count(mon, name: str, **tags: object) -> float:
    try:
        return mon.query(name, "1h", tags={k: str(v) for k, v in tags.items()}).count
    except QueryError:
        return 0


def monitor(tmp_path: Path, **settings: Any):
    return holter.testing.monitor(db=str(tmp_path / "h.db"), **settings)


def fetch(port: int, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()
                                                   if k.lower() in ("content-type", "x-app")}
    finally:
        conn.close()


# -- WSGI ----------------------------------------------------------------------------------


class AppError(Exception):
    pass


def make_wsgi_app(mon) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        if path == "/boom":
            raise AppError("boom")
        if path == "/missing":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such thing"]
        if path == "/broken-body":
            def body() -> Iterator[bytes]:
                yield b"first"
                raise AppError("mid-body")

            start_response("200 OK", [("Content-Type", "text/plain")])
            return body()
        if path == "/late-error":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise AppError("changed my mind")
            except AppError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            return [b"sorry"]
        with mon.span("app.work", path_len=len(path)):
            pass
        start_response("200 OK", [("Content-Type", "application/json"), ("X-App", "wsgi")])
        return [json.dumps({"path": path, "query": environ.get("QUERY_STRING", "")}).encode()]

    return app


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class QuietServer(wsgiref.simple_server.WSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextlib.contextmanager
def wsgi_server(app: Callable[..., Any]) -> Iterator[int]:
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, app, server_class=QuietServer,
                                              handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_wsgi_requests_are_spans_continuing_the_callers_trace(tmp_path, capsys) -> None:
    with monitor(tmp_path) as mon:
        plain_app = make_wsgi_app(mon)
        with wsgi_server(plain_app) as port:
            baseline = fetch(port, "/users/42?token=hunter2")
        with wsgi_server(HolterWSGIMiddleware(plain_app, monitor=mon)) as port:
            assert fetch(port, "/users/42?token=hunter2", {"traceparent": TRACEPARENT}) == \
                baseline
            for i in range(3):
                assert fetch(port, f"/users/{100 + i}")[0] == 200
            assert fetch(port, "/missing")[0] == 404
            assert fetch(port, "/users/1", {"traceparent": "00-zzz-bad-01"})[0] == 200
        spans = server_spans(mon)
        assert len(spans) == 6
        [continued] = [s for s in spans if s["trace_id"] == TRACE_ID]
        assert continued["name"] == "GET /users/{id}"
        assert continued["parent_id"] == PARENT_ID and continued["remote_parent"]
        assert continued["tags"] == {"http.method": "GET", "http.route": "/users/{id}",
                                     "http.status": 200}
        assert continued["status"] == "ok"
        others = [s for s in spans if s is not continued]
        assert all(s["parent_id"] is None for s in others)  # new traces (bad header too)
        assert len({s["trace_id"] for s in spans}) == 6
        # the application's own span is a child of the request span
        work = [s for s in stored_spans(mon) if s["name"] == "app.work"]
        assert any(w["parent_id"] == continued["span_id"] for w in work)
        missing = next(s for s in spans if s["tags"]["http.status"] == 404)
        assert missing["name"] == "GET /missing" and missing["status"] == "ok"

        assert count(mon, "http.server.requests", method="GET", route="/users/{id}",
                     status=200) == 5
        assert count(mon, "http.server.requests", route="/missing", status=404) == 1
        duration = mon.query("http.server.duration", "1h", by="route")
        assert {g.group["route"]: g.count for g in duration} == {"/users/{id}": 5, "/missing": 1}
        assert duration[0].unit == "s"
        assert "hunter2" not in json.dumps(stored_spans(mon))


def test_wsgi_application_errors(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        app = HolterWSGIMiddleware(make_wsgi_app(mon), monitor=mon)
        with wsgi_server(app) as port:
            assert fetch(port, "/boom")[0] == 500  # wsgiref's own answer to an exception
            status, body, _ = fetch(port, "/broken-body")
            assert status == 200 and body == b"first"  # wsgiref sent what came before
        spans = {s["tags"]["http.route"]: s for s in server_spans(mon)}
        assert spans["/boom"]["status"] == "error"
        assert spans["/boom"]["error_type"].endswith("AppError")
        assert spans["/boom"]["tags"]["http.status"] == 500
        assert spans["/broken-body"]["status"] == "error"
        assert spans["/broken-body"]["error_message"] == "mid-body"
        assert count(mon, "http.server.requests", route="/boom", status=500) == 1


def _environ(path: str, **extra: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, **extra}
    wsgiref.util.setup_testing_defaults(environ)
    return environ


def test_wsgi_exceptions_pass_through_unchanged(tmp_path) -> None:
    raised: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        raised.append(AppError("the very one"))
        raise raised[-1]

    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        yield b"a"
        raised.append(AppError("while streaming"))
        raise raised[-1]

    with monitor(tmp_path) as mon:
        with pytest.raises(AppError) as info:
            HolterWSGIMiddleware(app, monitor=mon)(_environ("/x"), lambda *a: None)
        assert info.value is raised[0] and info.value.__context__ is None
        body = HolterWSGIMiddleware(streaming, monitor=mon)(_environ("/y"), lambda *a: None)
        chunks = []
        with pytest.raises(AppError) as info:
            chunks.extend(body)
        assert chunks == [b"a"] and info.value is raised[1]
        body.close()
        assert {s["tags"]["http.route"]: s["status"] for s in server_spans(mon)} == {
            "/x": "error", "/y": "error"}


def test_wsgi_body_close_is_passed_on(tmp_path) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("201 Created", [])
        return Body()

    with monitor(tmp_path) as mon:
        body = HolterWSGIMiddleware(app, monitor=mon)(_environ("/items"), lambda *a: None)
        assert list(body) == [b"x"]
        assert server_spans(mon) == []  # the request ends when the server closes the body
        body.close()
        assert closed == [True]
        [span] = server_spans(mon)
        assert span["tags"]["http.status"] == 201


def test_wsgi_framework_routes(tmp_path) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        return [b"ok"]

    with monitor(tmp_path) as mon:
        middleware = HolterWSGIMiddleware(app, monitor=mon,
                                          route=lambda env: env.get("app.route"))
        for env in (_environ("/u/alice", **{"app.route": "/u/<name>"}), _environ("/u/7")):
            body = middleware(env, lambda *a: None)
            list(body)
            body.close()
        assert sorted(s["tags"]["http.route"] for s in server_spans(mon)) == [
            "/u/<name>", "/u/{id}"]


def test_wsgi_a_failing_route_function_is_counted_not_raised(tmp_path) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        return [b"ok"]

    def bad_route(environ: dict[str, Any]) -> str:
        raise KeyError("route table")

    with monitor(tmp_path) as mon:
        middleware = HolterWSGIMiddleware(app, monitor=mon, route=bad_route)
        for _ in range(2):
            body = middleware(_environ("/orders/12"), lambda *a: None)
            assert list(body) == [b"ok"]
            body.close()
        assert [s["tags"]["http.route"] for s in server_spans(mon)] == ["/orders/{id}"] * 2
        assert count(mon, "holter.dropped", reason="instrumentation_error") == 2


def test_wsgi_status_replaced_with_exc_info(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        with wsgi_server(HolterWSGIMiddleware(make_wsgi_app(mon), monitor=mon)) as port:
            assert fetch(port, "/late-error")[0] == 500
        [span] = server_spans(mon)
        assert span["tags"]["http.status"] == 500


def test_wsgi_and_http_client_share_one_trace(tmp_path) -> None:
    with monitor(tmp_path, instrument=["http"]) as mon:
        with wsgi_server(HolterWSGIMiddleware(make_wsgi_app(mon), monitor=mon)) as port, \
                mon.span("client.job") as job:
            assert fetch(port, "/users/5")[0] == 200
        spans = stored_spans(mon)
        client = next(s for s in spans if s["name"] == "HTTP GET")
        server = next(s for s in spans if s["name"] == "GET /users/{id}")
        assert client["trace_id"] == server["trace_id"] == f"{job.trace_id:032x}"
        assert server["parent_id"] == client["span_id"] and server["remote_parent"]


# -- ASGI ----------------------------------------------------------------------------------


def make_asgi_app(mon, events: list[str]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/boom":
            raise AppError("boom")
        if path == "/missing":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no such thing"})
            return
        if path == "/half":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise AppError("after the headers")
        with mon.span("app.work"):
            await asyncio.sleep(0)
        body = json.dumps({"path": path, "query": scope["query_string"].decode()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"x-app", b"asgi")]})
        await send({"type": "http.response.body", "body": body})

    return app


@contextlib.contextmanager
def asgi_server(app: Callable[..., Any]) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def test_asgi_requests_are_spans_continuing_the_callers_trace(tmp_path) -> None:
    events: list[str] = []
    with monitor(tmp_path) as mon:
        plain = make_asgi_app(mon, events)
        with asgi_server(plain) as port:
            baseline = fetch(port, "/users/42?token=hunter2")
        with asgi_server(HolterASGIMiddleware(plain, monitor=mon)) as port:
            assert fetch(port, "/users/42?token=hunter2", {"traceparent": TRACEPARENT}) == \
                baseline
            for i in range(3):
                assert fetch(port, f"/users/{i}/orders/{i * 7}", method="POST")[0] == 200
            assert fetch(port, "/missing")[0] == 404
            assert fetch(port, "/users/1", {"traceparent": "garbage"})[0] == 200
        # lifespan messages went through the middleware to the app, twice (two servers)
        assert events == ["lifespan.startup", "lifespan.shutdown"] * 2
        spans = server_spans(mon)
        assert len(spans) == 6
        [continued] = [s for s in spans if s["trace_id"] == TRACE_ID]
        assert continued["name"] == "GET /users/{id}"
        assert continued["parent_id"] == PARENT_ID and continued["remote_parent"]
        assert continued["tags"] == {"http.method": "GET", "http.route": "/users/{id}",
                                     "http.status": 200}
        work = [s for s in stored_spans(mon) if s["name"] == "app.work"]
        assert any(w["parent_id"] == continued["span_id"] for w in work)
        assert sum(s["parent_id"] is None for s in spans) == 5
        assert count(mon, "http.server.requests", method="POST",
                     route="/users/{id}/orders/{id}", status=200) == 3
        assert count(mon, "http.server.requests", method="GET", route="/missing",
                     status=404) == 1
        assert count(mon, "http.server.duration", method="GET", route="/users/{id}",
                     status=200) == 2
        assert "hunter2" not in json.dumps(stored_spans(mon))


def test_asgi_application_errors(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        app = HolterASGIMiddleware(make_asgi_app(mon, []), monitor=mon)
        with asgi_server(app) as port:
            assert fetch(port, "/boom")[0] == 500  # uvicorn's own answer
            with contextlib.suppress(http.client.HTTPException, ConnectionError):
                fetch(port, "/half")  # the body never comes
        spans = {s["tags"]["http.route"]: s for s in server_spans(mon)}
        assert spans["/boom"]["status"] == "error"
        assert spans["/boom"]["tags"]["http.status"] == 500
        assert spans["/half"]["status"] == "error"
        assert spans["/half"]["tags"]["http.status"] == 200  # what was sent
        assert spans["/half"]["error_message"] == "after the headers"


def test_asgi_exceptions_pass_through_unchanged(tmp_path) -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raised.append(AppError(scope["type"]))
        raise raised[-1]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def call(scope_type: str) -> BaseException:
        scope = {"type": scope_type, "method": "GET", "path": "/x/1", "headers": [],
                 "query_string": b""}
        with pytest.raises(AppError) as info:
            await HolterASGIMiddleware(app, monitor=mon)(scope, receive, send)
        return info.value

    with monitor(tmp_path) as mon:
        assert asyncio.run(call("http")) is raised[0]
        assert asyncio.run(call("websocket")) is raised[1]  # passed straight through
        assert raised[0].__context__ is None
        [span] = server_spans(mon)
        assert span["tags"]["http.route"] == "/x/{id}" and span["status"] == "error"
