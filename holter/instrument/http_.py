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

from holter.core.tracing import Span, format_traceparent
from holter.instrument._common import failed, path_template, series_call

MAX_ROUTES = 4096
"""(method, host, route) combinations whose tags and series are remembered; then it starts over."""


class _Route:
    """One (method, host, route): the span's name and tags, and its series, resolved once."""

    __slots__ = ("by_status", "host", "method", "metric_tags", "name", "observe", "tags")

    def __init__(self, method: str, host: str, route: str) -> None:
        self.method = method
        self.host = host
        self.name = f"HTTP {method}"
        self.tags = {"http.method": method, "http.host": host, "http.route": route}
        self.metric_tags = {"method": method, "host": host, "route": route}
        self.observe: Any = None  # the series' observe, once the first call created it
        self.by_status: dict[object, Any] = {}  # status -> the requests series' +1


class _Recorder:
    """The instruments of HTTP client calls in one monitor."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.tracer = monitor.tracer
        self.duration = monitor.histogram("http.client.duration", unit="s",
                                          description="HTTP client requests, to response headers.")
        self.requests = monitor.counter("http.client.requests",
                                        description="HTTP client requests, by status.")
        self.errors = monitor.counter("http.client.errors",
                                      description="HTTP client requests that raised.")
        self._routes: dict[tuple[str, str, str], _Route] = {}

    def route(self, method: str, host: str, path: str) -> _Route:
        """The route of a request (``method`` upper case, ``host[:port]``, the URL's path)."""
        route = path_template(path)
        key = (method, host, route)
        known = self._routes.get(key)
        if known is None:
            if len(self._routes) >= MAX_ROUTES:  # bounded, whatever the program calls
                self._routes.clear()
            known = self._routes[key] = _Route(method, host, route)
        return known

    def start_route(self, route: _Route) -> tuple[Any, _Route]:
        """A request's span begins: the state to pass to :meth:`finish`."""
        return Span(self.tracer, route.name, None, **route.tags), route

    def start(self, method: str, host: str, path: str) -> tuple[Any, _Route]:
        """A request's span begins: the state to pass to :meth:`finish`."""
        route = self.route(method, host, path)
        return Span(self.tracer, route.name, None, **route.tags), route

    def finish(self, state: tuple[Any, _Route], status: int | None,
               error: BaseException | None = None) -> None:
        span, route = state
        try:
            if status is not None:
                span.tags["http.status"] = status  # set_tag, inline: the span is ours, open
                if status >= 500:
                    span.set_error("HTTPError", f"status {status}")
            if error is not None:
                span.set_error(error)
            span.end()
            seconds = span.duration_ns / 1e9
            observe = route.observe
            if observe is not None:
                observe(seconds)
            else:
                self.duration.observe(seconds, **route.metric_tags)
                route.observe = series_call(self.duration, route.metric_tags)
            if error is None:
                count = route.by_status.get(status)
                if count is not None:
                    count()
                else:
                    tags = {"method": route.method, "host": route.host, "status": status}
                    self.requests.inc(**tags)
                    count = series_call(self.requests, tags)
                    if count is not None:
                        route.by_status[status] = count
            else:
                self.errors.inc(host=route.host, error=type(error).__name__)
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
    plain_putheader = conn_cls.putheader
    https_cls = getattr(http.client, "HTTPSConnection", ())
    routes: dict[tuple[Any, ...], _Route] = {}  # (class, host, port, method, url) -> its route
    start = recorder.start_route
    finish = recorder.finish

    def route_of(conn: Any, method: str, url: str) -> _Route:
        key = (conn.__class__, conn.host, conn.port, method, url)
        known = routes.get(key)
        if known is None:
            default = 443 if isinstance(conn, https_cls) else 80
            path = urlsplit(url).path if "://" in url else url
            known = recorder.route(str(method).upper(), _host(str(conn.host), conn.port, default),
                                   path or "/")
            if len(routes) >= MAX_ROUTES:  # bounded: urls with ids are many
                routes.clear()
            routes[key] = known
        return known

    def make_putrequest(original: Any) -> Any:
        @functools.wraps(original)
        def putrequest(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            result = original(self, method, url, *args, **kwargs)
            try:
                self._holter_http = start(route_of(self, method, url))
            except Exception as exc:
                failed("http.client.putrequest", exc)
            return result

        return putrequest

    def make_endheaders(original: Any) -> Any:
        @functools.wraps(original)
        def endheaders(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = self.__dict__.get("_holter_http")
            if state is not None:
                try:
                    # the program's own traceparent wins: two would make both invalid (a
                    # header line starts after CRLF; a value cannot hold CRLF + a letter)
                    if b"\r\ntraceparent:" not in b"\r\n".join(self._buffer).lower():
                        value = format_traceparent(state[0])
                        if type(self).putheader is plain_putheader:
                            # what putheader does, without validating a value we made
                            self._output(b"traceparent: " + value.encode("ascii"))
                        else:  # a subclass's own putheader sees the header
                            self.putheader("traceparent", value)
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
            state = self.__dict__.pop("_holter_http", None)
            if state is not None:
                finish(state, getattr(response, "status", None))
            return response

        return getresponse

    def _end(conn: Any, status: int | None, error: BaseException | None) -> None:
        state = conn.__dict__.pop("_holter_http", None)
        if state is not None:
            finish(state, status, error)

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
