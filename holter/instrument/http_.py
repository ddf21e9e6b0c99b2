"""HTTP clients: ``http.client`` (so ``urllib.request``, ``requests``), ``httpx``, ``aiohttp``.

Each request is a span ``HTTP <METHOD>`` (a child of the current span) with the tags
``http.method``, ``http.host``, ``http.route`` (the path as a template, ``/users/{id}``)
and ``http.status``; it feeds ``http.client.duration{method,host,route}`` (seconds, up
to the response headers) and ``http.client.requests{method,host,status}``, and errors
``http.client.errors{host,error}``. The outgoing request carries a W3C ``traceparent``
header for the span. Full URLs and query strings are never recorded.
"""

from __future__ import annotations

import functools
import http.client
from typing import Any
from urllib.parse import urlsplit

from holter.core.tracing import format_traceparent
from holter.instrument._common import failed, path_template


class _Recorder:
    """The instruments of HTTP client calls in one monitor."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.duration = monitor.histogram("http.client.duration", unit="s",
                                          description="HTTP client requests, to response headers.")
        self.requests = monitor.counter("http.client.requests",
                                        description="HTTP client requests, by status.")
        self.errors = monitor.counter("http.client.errors",
                                      description="HTTP client requests that raised.")

    def start(self, method: str, host: str, path: str) -> tuple[Any, str, str, str]:
        route = path_template(path)
        span = self.monitor.span(f"HTTP {method}", **{
            "http.method": method, "http.host": host, "http.route": route,
        })
        return span, method, host, route

    def finish(self, state: tuple[Any, str, str, str], status: int | None,
               error: BaseException | None = None) -> None:
        span, method, host, route = state
        try:
            if status is not None:
                span.set_tag("http.status", status)
                if status >= 500:
                    span.set_error("HTTPError", f"status {status}")
            if error is not None:
                span.set_error(error)
            span.end()
            duration = span.duration_ns / 1e9
            self.duration.observe(duration, method=method, host=host, route=route)
            if error is None:
                self.requests.inc(method=method, host=host, status=status)
            else:
                self.errors.inc(host=host, error=type(error).__name__)
        except Exception as exc:
            failed("http.finish", exc)


def _host(host: str, port: int | None, default: int) -> str:
    return host if port in (None, default) else f"{host}:{port}"


def install(monitor: Any, patches: Any) -> None:
    """Patch http.client now, and httpx and aiohttp when (if ever) the program imports them."""
    recorder = _Recorder(monitor)
    _install_http_client(recorder, patches)
    patches.when_imported("httpx", lambda _module: _install_httpx(recorder, patches))
    patches.when_imported("aiohttp", lambda _module: _install_aiohttp(recorder, patches))


# -- http.client ---------------------------------------------------------------------------


def _install_http_client(recorder: _Recorder, patches: Any) -> None:
    conn_cls = http.client.HTTPConnection

    def make_putrequest(original: Any) -> Any:
        @functools.wraps(original)
        def putrequest(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            result = original(self, method, url, *args, **kwargs)
            try:
                default = 443 if isinstance(self, http.client.HTTPSConnection) else 80
                path = urlsplit(url).path if "://" in url else url
                self._holter_http = recorder.start(
                    str(method).upper(), _host(str(self.host), self.port, default), path or "/"
                )
            except Exception as exc:
                failed("http.client.putrequest", exc)
            return result

        return putrequest

    def make_endheaders(original: Any) -> Any:
        @functools.wraps(original)
        def endheaders(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = getattr(self, "_holter_http", None)
            if state is not None:
                try:
                    # the program's own traceparent wins: two would make both invalid
                    if not any(line[:12].lower() == b"traceparent:" for line in self._buffer):
                        self.putheader("traceparent", format_traceparent(state[0]))
                except Exception as exc:
                    failed("http.client.endheaders", exc)
            try:
                return original(self, *args, **kwargs)
            except BaseException as exc:
                _end(self, None, exc)
                raise

        return endheaders

    def make_getresponse(original: Any) -> Any:
        @functools.wraps(original)
        def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                response = original(self, *args, **kwargs)
            except BaseException as exc:
                _end(self, None, exc)
                raise
            _end(self, getattr(response, "status", None), None)
            return response

        return getresponse

    def _end(conn: Any, status: int | None, error: BaseException | None) -> None:
        state = conn.__dict__.pop("_holter_http", None)
        if state is not None:
            recorder.finish(state, status, error)

    patches.replace(conn_cls, "putrequest", make_putrequest)
    patches.replace(conn_cls, "endheaders", make_endheaders)
    patches.replace(conn_cls, "getresponse", make_getresponse)


# -- httpx -----------------------------------------------------------------------------------


def _httpx_state(recorder: _Recorder, request: Any) -> tuple[Any, str, str, str] | None:
    try:
        url = request.url
        default = 443 if url.scheme == "https" else 80
        state = recorder.start(str(request.method).upper(), _host(url.host, url.port, default),
                               url.path or "/")
        if "traceparent" not in request.headers:
            request.headers["traceparent"] = format_traceparent(state[0])
        return state
    except Exception as exc:
        failed("httpx.request", exc)
        return None


def _install_httpx(recorder: _Recorder, patches: Any) -> None:
    import httpx

    def make_sync(original: Any) -> Any:
        @functools.wraps(original)
        def handle_request(self: Any, request: Any) -> Any:
            state = _httpx_state(recorder, request)
            try:
                response = original(self, request)
            except BaseException as exc:
                if state is not None:
                    recorder.finish(state, None, exc)
                raise
            if state is not None:
                recorder.finish(state, response.status_code)
            return response

        return handle_request

    def make_async(original: Any) -> Any:
        @functools.wraps(original)
        async def handle_async_request(self: Any, request: Any) -> Any:
            state = _httpx_state(recorder, request)
            try:
                response = await original(self, request)
            except BaseException as exc:
                if state is not None:
                    recorder.finish(state, None, exc)
                raise
            if state is not None:
                recorder.finish(state, response.status_code)
            return response

        return handle_async_request

    patches.replace(httpx.HTTPTransport, "handle_request", make_sync)
    patches.replace(httpx.AsyncHTTPTransport, "handle_async_request", make_async)


# -- aiohttp ---------------------------------------------------------------------------------


def _install_aiohttp(recorder: _Recorder, patches: Any) -> None:
    import aiohttp

    def make_request(original: Any) -> Any:
        @functools.wraps(original)
        async def _request(self: Any, method: str, str_or_url: Any, **kwargs: Any) -> Any:
            state = None
            try:
                url = urlsplit(str(str_or_url))
                base = getattr(self, "_base_url", None)
                host = url.hostname or (base.host if base is not None else "") or ""
                port = url.port or (base.port if base is not None and not url.hostname else None)
                default = 443 if (url.scheme or getattr(base, "scheme", "")) == "https" else 80
                state = recorder.start(str(method).upper(), _host(host, port, default),
                                       url.path or "/")
                from multidict import CIMultiDict  # aiohttp's own: repeated headers stay

                headers = CIMultiDict(kwargs.get("headers") or {})
                if "traceparent" not in headers:
                    headers["traceparent"] = format_traceparent(state[0])
                kwargs["headers"] = headers
            except Exception as exc:
                failed("aiohttp.request", exc)
            try:
                response = await original(self, method, str_or_url, **kwargs)
            except BaseException as exc:
                if state is not None:
                    recorder.finish(state, None, exc)
                raise
            if state is not None:
                recorder.finish(state, response.status)
            return response

        return _request

    patches.replace(aiohttp.ClientSession, "_request", make_request)
