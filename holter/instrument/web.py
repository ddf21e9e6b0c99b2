"""Inbound requests: WSGI and ASGI middlewares.

Each request becomes a span ``<METHOD> <route>`` continuing the caller's trace when the
request carries a valid ``traceparent`` (a new trace otherwise), and feeds
``http.server.duration{method,route,status}`` (seconds) and
``http.server.requests{method,route,status}``. The route is the framework's route when
``route=`` gives a function that finds it, else the path as a template
(``/users/{id}``) — never the raw path with its ids, nor the query string.

::

    app = HolterWSGIMiddleware(app, monitor=mon)            # Flask, Django, any WSGI app
    app = HolterASGIMiddleware(app, monitor=mon)            # Starlette, FastAPI, any ASGI app

The application's responses and exceptions pass through unchanged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from holter.core.tracing import _current, parse_traceparent
from holter.instrument._common import Failures, path_template

RouteOf = Callable[[dict[str, Any]], str | None]
"""Given the WSGI environ or ASGI scope, the route template (or None to use the path)."""


class _Recorder:
    def __init__(self, monitor: Any, route_of: RouteOf | None) -> None:
        self.monitor = monitor
        self.route_of = route_of
        self.duration = monitor.histogram("http.server.duration", unit="s",
                                          description="HTTP requests served, by route.")
        self.requests = monitor.counter("http.server.requests",
                                        description="HTTP requests served, by status.")
        self.failed = Failures()  # counted in this middleware's own monitor
        self.failed.count_drop = monitor.registry.count_drop

    def start(self, method: str, path: str, scope: dict[str, Any],
              traceparent: str | None, tracestate: str | None) -> tuple[Any, ...] | None:
        try:
            route = None
            if self.route_of is not None:
                try:
                    route = self.route_of(scope)
                except Exception as exc:
                    self.failed("web.route", exc)
            route = route or path_template(path)
            context = parse_traceparent(traceparent, tracestate)
            span = self.monitor.span(f"{method} {route}", context=context, **{
                "http.method": method, "http.route": route,
            })
            return span, method, route, time.perf_counter()
        except Exception as exc:
            self.failed("web.start", exc)
            return None

    def finish(self, state: tuple[Any, ...] | None, status: int | None,
               error: BaseException | None = None) -> None:
        if state is None:
            return
        span, method, route, started = state
        try:
            code = status if status is not None else 500
            span.set_tag("http.status", code)
            if error is not None:
                span.set_error(error)
            elif code >= 500:
                span.set_error("HTTPError", f"status {code}")
            span.end()
            self.duration.observe(time.perf_counter() - started, method=method, route=route,
                                  status=code)
            self.requests.inc(method=method, route=route, status=code)
        except Exception as exc:
            self.failed("web.finish", exc)


class HolterWSGIMiddleware:
    """Record every request a WSGI application serves (see the module docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, monitor: Any,
                 route: RouteOf | None = None) -> None:
        self.app = app
        self._recorder = _Recorder(monitor, route)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Serve one request through the application, recording it."""
        recorder = self._recorder
        state = recorder.start(
            str(environ.get("REQUEST_METHOD", "GET")).upper(),
            str(environ.get("PATH_INFO", "/")), environ,
            environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE"),
        )
        status: list[int] = []

        def recording_start_response(code: str, headers: Any, *args: Any) -> Any:
            with contextlib.suppress(ValueError):
                status.append(int(str(code).split(" ", 1)[0]))
            return start_response(code, headers, *args)

        token = _current.set(state[0]) if state is not None else None
        try:
            result = self.app(environ, recording_start_response)
        except BaseException as exc:
            recorder.finish(state, None, exc)
            raise
        finally:
            if token is not None:
                _current.reset(token)
        # the last status counts: start_response may be called again with exc_info
        return _ClosingIterable(result, lambda error: recorder.finish(
            state, status[-1] if status else None, error))


class _ClosingIterable:
    """Pass a WSGI body through; the request ends when the server closes it."""

    def __init__(self, body: Iterable[bytes], done: Callable[[BaseException | None], None]):
        self._body = body
        self._done = done
        self._finished = False

    def __iter__(self) -> Any:
        try:
            yield from self._body
        except BaseException as exc:
            self._finish(exc)
            raise

    def close(self) -> None:
        """Close the application's body (as WSGI requires) and end the request."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        if not self._finished:
            self._finished = True
            self._done(error)


class HolterASGIMiddleware:
    """Record every HTTP request an ASGI application serves (see the module docstring)."""

    def __init__(self, app: Callable[..., Any], *, monitor: Any,
                 route: RouteOf | None = None) -> None:
        self.app = app
        self._recorder = _Recorder(monitor, route)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one ASGI call through the application, recording HTTP requests."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {}
        try:
            for key, value in scope.get("headers") or ():
                name = key.decode("latin-1").lower()
                if name in ("traceparent", "tracestate"):
                    headers[name] = value.decode("latin-1")
        except Exception as exc:
            self._recorder.failed("asgi.headers", exc)
        recorder = self._recorder
        state = recorder.start(str(scope.get("method", "GET")).upper(),
                               str(scope.get("path", "/")), scope,
                               headers.get("traceparent"), headers.get("tracestate"))
        status: list[int] = []

        async def recording_send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                with contextlib.suppress(TypeError, ValueError):
                    status.append(int(message.get("status", 0)))
            await send(message)

        if state is None:
            await self.app(scope, receive, send)
            return
        token = _current.set(state[0])  # current while the application runs
        try:
            await self.app(scope, receive, recording_send)
        except BaseException as exc:
            recorder.finish(state, status[-1] if status else None, exc)
            raise
        finally:
            _current.reset(token)
        recorder.finish(state, status[-1] if status else None)
