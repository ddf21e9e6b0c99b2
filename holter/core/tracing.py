"""Spans: recorded on the hot path, handed to the collector through a bounded buffer.

A span carries W3C Trace Context ids (128-bit trace id, 64-bit span id, random),
its parent, a wall-clock start, a monotonic duration, tags, events and a status.
The current span lives in a :class:`contextvars.ContextVar`, so it follows
``asyncio`` tasks by itself; holter also carries it into threads started inside a
span (``threading.Thread`` and ``concurrent.futures`` pools), which the standard
library does not do (:func:`install_thread_propagation`).

Finishing a span appends one tuple to the tracer's buffer: no I/O, no formatting
(ids stay integers until the collector writes them). A full buffer drops the span
and counts it in ``holter.dropped{reason="span_buffer_full"}``; it never blocks.
When the buffer passes half full the collector is woken to drain it early.

Sampling: head sampling by ratio (default: keep everything). A trace sampled out
is kept in memory until its local root ends and is written anyway if any span
errored or the root was slower than ``keep_slower_than_s`` (the tail rule).
Every span, sampled or not, feeds the histogram ``span.duration{name=...}``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from holter.core.instruments import Histogram
from holter.errors import ConfigError

if TYPE_CHECKING:
    from holter.core.registry import Registry

P = ParamSpec("P")
R = TypeVar("R")

MAX_TAGS = 64
"""Tags kept per span; more are dropped and counted in the ``holter.truncated`` tag."""
MAX_EVENTS = 64
"""Events kept per span; more are counted in the ``holter.events_dropped`` tag."""
MAX_TAG_LEN = 512
"""Longest stored tag value or event message, in characters (cut with a ``…`` marker)."""
DEFAULT_BUFFER = 65_536
"""Finished spans waiting for the collector, at most."""

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_UNFINISHED = "unfinished"

_current: contextvars.ContextVar[Span | SpanContext | None] = contextvars.ContextVar(
    "holter_current_span", default=None
)
_getrandbits = random.getrandbits
_random = random.random
_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns


class SpanContext:
    """The identity of a span that can cross a process boundary (W3C Trace Context)."""

    __slots__ = ("remote", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        sampled: bool = True,
        tracestate: str | None = None,
        remote: bool = True,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.tracestate = tracestate
        self.remote = remote

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 lowercase hex digits."""
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        """The span id as 16 lowercase hex digits."""
        return f"{self.span_id:016x}"

    def __repr__(self) -> str:
        return f"SpanContext({self.trace_id_hex}, {self.span_id_hex}, sampled={self.sampled})"


def clean_tag(value: object) -> str | int | float | bool:
    """Keep str/int/float/bool (long strings cut); store anything else by ``repr``, cut."""
    cls = value.__class__
    if cls is str:
        text: str = value  # type: ignore[assignment]
    elif cls is bool or cls is int or cls is float:
        return value  # type: ignore[return-value]
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {cls.__name__}>"
    if len(text) > MAX_TAG_LEN:
        return text[: MAX_TAG_LEN - 1] + "…"
    return text


class Span:
    """One timed operation. Use as a context manager, or call :meth:`end` yourself."""

    __slots__ = (
        "_ended",
        "_t0",
        "_token",
        "_tracer",
        "duration_ns",
        "error",
        "events",
        "name",
        "parent_id",
        "remote_parent",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "tags",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        parent: Span | SpanContext | None,
        tags: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self.name = name
        if parent is None:
            self.trace_id = _getrandbits(128) or 1
            self.parent_id: int | None = None
            self.sampled = tracer.ratio >= 1.0 or _random() < tracer.ratio
            self.remote_parent = False
            self.tracestate: str | None = None
        else:
            self.trace_id = parent.trace_id
            self.parent_id = parent.span_id
            self.sampled = parent.sampled
            self.remote_parent = parent.__class__ is SpanContext and parent.remote  # type: ignore[union-attr]
            self.tracestate = parent.tracestate
        self.span_id = _getrandbits(64) or 1
        self.tags = tags
        self.events: list[tuple[int, str, dict[str, Any]]] | None = None
        self.status = STATUS_OK
        self.error: tuple[str, str] | None = None
        self.duration_ns: int | None = None
        self._token: contextvars.Token[Any] | None = None
        self._ended = False
        self.start_ns = _time_ns()
        self._t0 = _perf_ns()
        tracer._open[self.span_id] = self

    # -- recording ---------------------------------------------------------------------

    def set_tag(self, key: str, value: object) -> Span:
        """Set a tag (str/int/float/bool kept; anything else stored by ``repr``)."""
        tags = self.tags
        if len(tags) >= MAX_TAGS and key not in tags:
            tags["holter.truncated"] = int(tags.get("holter.truncated", 0)) + 1
            return self
        tags[key] = value
        return self

    def log(self, message: str, **fields: object) -> Span:
        """Record a timestamped event on the span."""
        events = self.events
        if events is None:
            events = self.events = []
        if len(events) >= MAX_EVENTS:
            self.tags["holter.events_dropped"] = int(self.tags.get("holter.events_dropped", 0)) + 1
            return self
        events.append((_time_ns(), message, fields))
        return self

    def set_error(self, exc: BaseException | str, message: str | None = None) -> Span:
        """Mark the span as failed (an exception, or a type name and message)."""
        self.status = STATUS_ERROR
        if isinstance(exc, BaseException):
            self.error = (type(exc).__qualname__, str(exc))
        else:
            self.error = (str(exc), message or "")
        return self

    @property
    def context(self) -> SpanContext:
        """The span's identity, e.g. to pass to another thread or process."""
        return SpanContext(self.trace_id, self.span_id, self.sampled, self.tracestate, False)

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 lowercase hex digits."""
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        """The span id as 16 lowercase hex digits."""
        return f"{self.span_id:016x}"

    @property
    def ended(self) -> bool:
        """True once :meth:`end` has run."""
        return self._ended

    # -- ending ------------------------------------------------------------------------

    def end(self) -> None:
        """Finish the span (only the first call counts)."""
        if self._ended:
            return
        self._ended = True
        duration = _perf_ns() - self._t0
        self.duration_ns = duration
        tracer = self._tracer
        tracer._open.pop(self.span_id, None)
        tracer._finish(self, duration)

    def __enter__(self) -> Span:
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and self.status != STATUS_ERROR:
            self.set_error(exc)
        self.end()
        token = self._token
        if token is not None:
            self._token = None
            try:  # noqa: SIM105 - contextlib.suppress costs ~0.3 µs on every span
                _current.reset(token)
            except ValueError:  # entered in another context (e.g. another task): leave it
                pass

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return f"Span({self.name!r}, trace={self.trace_id_hex}, span={self.span_id_hex}, {state})"


SpanRecord = tuple[Any, ...]
"""``(trace_id, span_id, parent_id, name, start_ns, duration_ns, status, error_type,
error_message, tags, events, remote_parent)`` — ids as ints, as the buffer holds them."""


class Tracer:
    """Creates spans, samples them, and buffers finished ones for the collector."""

    def __init__(
        self,
        registry: Registry,
        *,
        ratio: float = 1.0,
        keep_slower_than_s: float | None = 1.0,
        buffer_size: int = DEFAULT_BUFFER,
        wake: Callable[[], None] | None = None,
    ) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"sample ratio must be between 0 and 1, got {ratio!r}")
        self.registry = registry
        self.ratio = ratio
        self.keep_slower_ns = (
            int(keep_slower_than_s * 1e9) if keep_slower_than_s is not None else None
        )
        self.buffer_size = buffer_size
        self.wake = wake
        self._buffer: list[SpanRecord] = []
        self._open: dict[int, Span] = {}
        self._tail: dict[int, list[SpanRecord]] = {}
        self._tail_error: set[int] = set()
        self._duration_cells: dict[str, Any] = {}
        self._durations: Histogram = registry.define(  # type: ignore[assignment]
            Histogram, "span.duration", "s", "Duration of every span, by span name."
        )

    def start_span(
        self,
        name: str,
        context: Span | SpanContext | None = None,
        tags: dict[str, Any] | None = None,
    ) -> Span:
        """A new span, child of ``context`` or else of the current span."""
        parent = context if context is not None else _current.get()
        return Span(self, name, parent, tags if tags is not None else {})

    def _finish(self, span: Span, duration: int) -> None:
        cell = self._duration_cells.get(span.name)
        if cell is None:
            cell = self._duration_cells[span.name] = self._durations.bind(name=span.name)
        cell.observe(duration / 1e9)
        error = span.error
        record = (
            span.trace_id, span.span_id, span.parent_id, span.name, span.start_ns, duration,
            span.status, error[0] if error else None, error[1] if error else None, span.tags,
            span.events, span.remote_parent,
        )
        if span.sampled:
            self._push(record)
            return
        self._hold(span, record, duration)

    def _push(self, record: SpanRecord) -> None:
        buffer = self._buffer
        n = len(buffer)
        if n >= self.buffer_size:
            self.registry.count_drop("span_buffer_full", 1, record[3])
            return
        buffer.append(record)
        if n == self.buffer_size // 2 and self.wake is not None:
            self.wake()

    def _hold(self, span: Span, record: SpanRecord, duration: int) -> None:
        """Tail sampling: keep an unsampled trace until its local root ends."""
        trace_id = span.trace_id
        if span.status == STATUS_ERROR:
            self._tail_error.add(trace_id)
        local_root = span.parent_id is None or span.remote_parent
        held = self._tail.get(trace_id)
        if not local_root:
            if held is None:
                if len(self._tail) >= 1024:  # bounded: forget the oldest held trace
                    oldest = next(iter(self._tail))
                    self._tail.pop(oldest, None)
                    self._tail_error.discard(oldest)
                held = self._tail[trace_id] = []
            if len(held) < 1024:
                held.append(record)
            return
        held = self._tail.pop(trace_id, None) or []
        errored = trace_id in self._tail_error
        self._tail_error.discard(trace_id)
        slow = self.keep_slower_ns is not None and duration >= self.keep_slower_ns
        if errored or slow:
            for r in held:
                self._push(r)
            self._push(record)

    def drain(self) -> list[SpanRecord]:
        """Take every finished span (the collector calls this)."""
        buffer = self._buffer
        n = len(buffer)
        if not n:
            return []
        taken = buffer[:n]
        del buffer[:n]
        return taken

    def open_spans(self) -> list[SpanRecord]:
        """Records of spans still open, marked unfinished with their duration so far."""
        now = _perf_ns()
        out = []
        for span in list(self._open.values()):
            if span._ended:
                continue
            out.append(
                (span.trace_id, span.span_id, span.parent_id, span.name, span.start_ns,
                 now - span._t0, STATUS_UNFINISHED, None, None, dict(span.tags),
                 list(span.events or ()), span.remote_parent)
            )
        return out

    def pending(self) -> int:
        """Finished spans waiting for the collector."""
        return len(self._buffer)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's spans are the parent's to write."""
        del self._buffer[:]
        self._open.clear()
        self._tail.clear()
        self._tail_error.clear()


def current_span() -> Span | SpanContext | None:
    """The span (or remote context) that new spans would be children of."""
    return _current.get()


def traced_decorator(
    tracer: Tracer, name: str | None, tags: dict[str, Any]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Build a decorator running each call of a sync or async function in a span."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        span_name = name or getattr(fn, "__qualname__", getattr(fn, "__name__", "call"))
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with tracer.start_span(span_name, None, dict(tags)):
                    return await fn(*args, **kwargs)  # type: ignore[misc]

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with tracer.start_span(span_name, None, dict(tags)):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


# -- carrying the current span into threads ---------------------------------------------

_propagation = {"installed": False, "enabled": True}
_orig_thread_start = threading.Thread.start
_orig_bootstrap_inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _thread_start(self: threading.Thread) -> None:
    if _propagation["enabled"]:
        span = _current.get()
        if span is not None:
            self._holter_span = span  # type: ignore[attr-defined]
    _orig_thread_start(self)


def _bootstrap_inner(self: threading.Thread) -> None:
    span = getattr(self, "_holter_span", None)
    if span is not None:
        self._holter_span = None  # type: ignore[attr-defined]
        _current.set(span)
    _orig_bootstrap_inner(self)


def _wrap_for_pool(fn: Callable[..., Any]) -> Callable[..., Any]:
    span = _current.get()
    if span is None or not _propagation["enabled"]:
        return fn

    def run_in_span(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(span)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    return run_in_span


def install_thread_propagation() -> None:
    """Carry the current span into new threads and thread-pool tasks (idempotent).

    Only holter's own context variable is carried; other context variables of the
    program keep the standard library's behaviour.
    """
    _propagation["enabled"] = True
    if _propagation["installed"]:
        return
    _propagation["installed"] = True
    import concurrent.futures.thread as cft

    threading.Thread.start = _thread_start  # type: ignore[method-assign]
    threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]
    original_submit = cft.ThreadPoolExecutor.submit

    @functools.wraps(original_submit)
    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return original_submit(self, _wrap_for_pool(fn), *args, **kwargs)

    cft.ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


def disable_thread_propagation() -> None:
    """Stop carrying spans into threads (the patches stay, but do nothing)."""
    _propagation["enabled"] = False


# -- W3C Trace Context -------------------------------------------------------------------

_HEX = frozenset("0123456789abcdef")


def format_traceparent(ctx: Span | SpanContext) -> str:
    """``00-<trace id>-<span id>-<flags>`` for a span or context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{'01' if ctx.sampled else '00'}"


def parse_traceparent(header: str | None, tracestate: str | None = None) -> SpanContext | None:
    """Parse a W3C ``traceparent`` header; None if it is missing or invalid (never raises)."""
    if not header or not isinstance(header, str):
        return None
    value = header.strip()
    parts = value.split("-")
    if len(parts) < 4:
        return None
    version, trace, span, flags = parts[0], parts[1], parts[2], parts[3]
    if len(version) != 2 or not set(version) <= _HEX or version == "ff":
        return None
    if version == "00" and len(parts) != 4:
        return None
    if len(trace) != 32 or len(span) != 16 or len(flags) != 2:
        return None
    if not (set(trace) <= _HEX and set(span) <= _HEX and set(flags) <= _HEX):
        return None
    trace_id = int(trace, 16)
    span_id = int(span, 16)
    if trace_id == 0 or span_id == 0:
        return None
    state = tracestate.strip() if isinstance(tracestate, str) and tracestate.strip() else None
    if state is not None and len(state) > 512:
        state = None
    return SpanContext(trace_id, span_id, bool(int(flags, 16) & 1), state, True)
