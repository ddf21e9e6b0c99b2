"""holter: a Holter monitor for Python programs.

Record metrics cheaply on the hot path; a collector thread flushes them into one
local SQLite file that the CLI, dashboards and reports read::

    import holter
    mon = holter.start(app="mycli")
    mon.counter("http.requests").inc(method="GET", status=200)
    with mon.timer("db.query", table="users"):
        ...

``import holter`` is cheap: the monitor, the store and every optional library are
imported only when used.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from holter._version import __version__
from holter.errors import (
    ConfigError,
    HolterError,
    InvalidValue,
    NotAStore,
    QueryError,
    SchemaError,
    StoreError,
)

if TYPE_CHECKING:
    from holter.monitor import Monitor


_default: Monitor | None = None
_lock = threading.Lock()


def start(
    app: str | None = None,
    *,
    db: str | os.PathLike[str] | None = None,
    flush_interval: float | str | None = None,
    strict: bool | None = None,
    version: str | None = None,
    max_series: int | None = None,
    exit_timeout: float | str | None = None,
    export: str | list[str] | dict[str, dict[str, Any]] | None = None,
    **settings: Any,
) -> Monitor:
    """Start the default monitor and return it.

    ``db`` defaults to ``$HOLTER_DB`` or ``./holter.db``; ``flush_interval`` to 10 s;
    ``strict`` (raise on bad values instead of dropping them) to ``$HOLTER_STRICT``.
    Calling ``start`` again with the same settings returns the running monitor.
    Other settings of :class:`holter.config.Config` may be given by name
    (``sample_ratio=0.1``, ``propagate_threads=False``, ``raw_retention_s=...``).
    ``export=["otlp"]`` pushes every flush over OTLP/HTTP (``$OTEL_EXPORTER_OTLP_ENDPOINT``
    or http://127.0.0.1:4318); ``export={"otlp": {"endpoint": URL}}`` passes options to
    :meth:`Monitor.export`.
    """
    global _default
    from holter.config import Config
    from holter.monitor import Monitor, install_exit_hooks

    config = Config.resolve(
        app=app,
        db=db,
        version=version,
        flush_interval=flush_interval,
        strict=strict,
        max_series=max_series,
        exit_timeout=exit_timeout,
        **settings,
    )
    with _lock:
        if _default is not None and not _default._stopped:
            if _default.config == config:
                return _default
            raise ConfigError(
                f"holter is already started with {_default!r}; call holter.stop() before "
                "starting it again with other settings"
            )
        install_exit_hooks()
        _default = Monitor(config)
        if export:
            try:
                targets = {export: {}} if isinstance(export, str) else (
                    dict(export) if isinstance(export, dict) else {t: {} for t in export}
                )
                for target, options in targets.items():
                    _default.export(target, **(options or {}))
            except Exception:
                _default.stop()
                _default = None
                raise
        return _default


def get_monitor() -> Monitor | None:
    """The monitor started by :func:`start`, or None."""
    return _default


def stop() -> None:
    """Flush and stop the default monitor (also done automatically at exit)."""
    global _default
    with _lock:
        monitor, _default = _default, None
    if monitor is not None:
        monitor.stop()


def inject(headers: dict[str, str] | None = None, span: Any = None) -> dict[str, str]:
    """Add W3C ``traceparent`` (and ``tracestate``) for ``span`` or the current span.

    Returns ``headers`` (a new dict when None). Without a span, nothing is added.
    """
    from holter.core.tracing import current_span, format_traceparent

    out = headers if headers is not None else {}
    ctx = span if span is not None else current_span()
    if ctx is not None:
        out["traceparent"] = format_traceparent(ctx)
        if ctx.tracestate:
            out["tracestate"] = ctx.tracestate
    return out


def extract(headers: Any) -> Any:
    """Read W3C ``traceparent``/``tracestate`` from a mapping of headers (any case).

    Returns a :class:`holter.core.tracing.SpanContext` to pass as ``context=``, or None
    when the headers carry no valid trace context (bad headers never raise).
    """
    from holter.core.tracing import parse_traceparent

    try:
        items = headers.items() if hasattr(headers, "items") else headers
        found = {str(k).lower(): v for k, v in items}
    except Exception:
        return None
    parent = found.get("traceparent")
    state = found.get("tracestate")
    return parse_traceparent(parent if isinstance(parent, str) else None,
                             state if isinstance(state, str) else None)


def current_span() -> Any:
    """The current span (or remote context), or None."""
    from holter.core.tracing import current_span as _current_span

    return _current_span()


def __getattr__(name: str) -> Any:
    if name == "Monitor":
        from holter.monitor import Monitor

        return Monitor
    if name == "Config":
        from holter.config import Config

        return Config
    if name == "WindowStats":
        from holter.model import WindowStats

        return WindowStats
    if name == "otel":
        import holter.otel

        return holter.otel
    if name == "analysis":
        import holter.analysis

        return holter.analysis
    if name == "testing":
        import holter.testing

        return holter.testing
    raise AttributeError(f"module 'holter' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "HolterError",
    "InvalidValue",
    "NotAStore",
    "QueryError",
    "SchemaError",
    "StoreError",
    "__version__",
    "current_span",
    "extract",
    "get_monitor",
    "inject",
    "start",
    "stop",
]
