"""Spans: recorded on the hot path, handed to the collector through a bounded buffer.

A span carries W3C Trace Context ids (128-bit trace id, 64-bit span id, random),
its parent, a wall-clock start, a monotonic duration, tags, events and a status.
The current span lives in a :class:`contextvars.ContextVar`, so it follows
``asyncio`` tasks by itself; holter also carries it into threads started inside a
span (``threading.Thread`` and ``concurrent.futures`` pools), which the standard
library does not do (:func:`install_thread_propagation`).

Finishing a span appends one tuple, its record, to the tracer's buffer (a rare span,
e.g. sampled out or failed, goes in itself): no I/O, no formatting (ids stay integers
until the collector writes them). A full buffer drops the span
and counts it in ``holter.dropped{reason="span_buffer_full"}``; it never blocks.
When the buffer passes half full the collector is woken to drain it early.

Sampling: head sampling by ratio (default: keep everything). A trace sampled out
is kept in memory until its local root ends and is written anyway if any span
errored or the root was slower than ``keep_slower_than_s`` (the tail rule).
Every span, sampled or not, feeds the histogram ``span.duration{name=...}``.
"""

from __future__ import annotations

import array
import contextvars
import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from holter.core._cells import NUMPY_MIN_BATCH, want_numpy
from holter.core.instruments import Histogram, _is_coroutine_function
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
# A private generator seeded from the OS: a program calling random.seed(n) must not make
# holter repeat ids; re-seeded in forked children.
_rng = random.Random()
_getrandbits = _rng.getrandbits
_random = _rng.random
_ID_BLOCK = 8192
"""Bytes of OS randomness drawn at a time for span ids (1024 ids of 64 bits)."""


def _id_block() -> Iterator[int]:
    """Random 64-bit span ids, read from one draw of OS randomness.

    Taking the next one costs a third of ``getrandbits(64)``, which builds its int byte by
    byte. The iterator is only advanced under the GIL, so threads never share an id.
    """
    try:
        raw = os.urandom(_ID_BLOCK)
    except (OSError, NotImplementedError):  # pragma: no cover - no OS randomness
        raw = _rng.randbytes(_ID_BLOCK)
    return iter(array.array("Q", raw))  # "Q" is 8 bytes on every platform Python runs on


_ids = _id_block()


def _new_id_block() -> int:
    """The id block ran out (or yielded a zero): start another, return an id."""
    global _ids
    _ids = _id_block()  # threads racing here each make a block: harmless
    return _getrandbits(64) or 1


def _after_fork_in_child() -> None:
    global _ids
    _rng.seed()
    _ids = _id_block()  # the parent goes on using its block: never reuse its ids


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
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
    elif cls is bool or cls is int:
        return value  # type: ignore[return-value]
    elif cls is float:
        return value if value - value == 0.0 else repr(value)  # type: ignore[return-value,operator]
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {cls.__name__}>"
    if len(text) > MAX_TAG_LEN:
        return text[: MAX_TAG_LEN - 1] + "…"
    return text


def _trim(tags: dict[str, Any]) -> dict[str, Any]:
    kept = dict(list(tags.items())[:MAX_TAGS])
    kept["holter.truncated"] = len(tags) - MAX_TAGS
    return kept


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def error_type(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``module.Qualified`` for anything else."""
    cls = type(exc)
    module = getattr(cls, "__module__", "builtins")
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _is_failure(exc: BaseException) -> bool:
    """Whether an exception leaving a span marks it as an error.

    ``Exception`` does; so do ``KeyboardInterrupt`` and a non-zero ``SystemExit``.
    ``GeneratorExit``, a task's cancellation and ``SystemExit(0)`` are normal ends.
    """
    if isinstance(exc, Exception):
        return exc.__class__.__name__ != "CancelledError"
    if isinstance(exc, SystemExit):
        return exc.code not in (None, 0)
    return not isinstance(exc, GeneratorExit)


_OPEN = object()
"""``Span._prev`` while the span's ``with`` block has not exited."""
_MISSING = contextvars.Token.MISSING


def _first_open(span: Span | SpanContext | None) -> Span | SpanContext | None:
    """``span``, or the nearest enclosing span still inside its ``with`` block.

    A span exited out of order (its ``with`` ended while a child's was still open) must
    not stay current once the child exits: its own ``_prev`` leads further out.
    """
    seen = 0
    while span is not None and span.__class__ is Span and span._prev is not _OPEN:  # type: ignore[union-attr]
        span = span._prev  # type: ignore[union-attr]
        seen += 1
        if seen > 10_000:  # a cycle cannot happen, but never loop forever
            return None
    return span


class Span:
    """One timed operation. Use as a context manager, or call :meth:`end` yourself."""

    # Rarely-set fields live in the instance __dict__ (created only when set) and
    # default to the class attributes below: creating a span assigns 8 slots.
    __slots__ = (
        "__dict__",
        "_prev",
        "_rare",
        "_t0",
        "_token",
        "_tracer",
        "duration_ns",
        "name",
        "parent_id",
        "sampled",
        "span_id",
        "tags",
        "trace_id",
    )

    status = STATUS_OK
    error: tuple[str, str] | None = None
    events: list[tuple[int, str, dict[str, Any]]] | None = None
    remote_parent = False
    tracestate: str | None = None

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        /,
        context: Span | SpanContext | None = None,
        **tags: Any,
    ) -> None:
        parent = context if context is not None else _current.get()
        self._tracer = tracer
        self.name = name
        # _rare: the collector must take the slow path for this span (sampled out, or
        # status, error, events, tracestate or a remote parent set)
        if parent is None:
            self.trace_id = tracer.trace_prefix | _getrandbits(96)
            self.parent_id: int | None = None
            if tracer.sample_all:
                self.sampled = True
                self._rare = False
            else:
                self.sampled = sampled = _random() < tracer.ratio
                self._rare = not sampled
        else:
            self.trace_id = parent.trace_id
            self.parent_id = parent.span_id
            self.sampled = sampled = parent.sampled
            self._rare = not sampled
            if type(parent) is not Span or parent._rare:  # type: ignore[union-attr]
                if parent.tracestate is not None:
                    self.tracestate = parent.tracestate
                    self._rare = True
                if type(parent) is SpanContext and parent.remote:  # type: ignore[union-attr]
                    self.remote_parent = True
                    self._rare = True
        # ids come from a block of OS randomness; 0 is not a valid id (W3C): draw again
        span_id = self.span_id = next(_ids, 0) or _new_id_block()
        if len(tags) > MAX_TAGS:
            tags = _trim(tags)
        self.tags = tags
        self.duration_ns: int | None = None
        self._prev: Any = _OPEN  # what was current before its `with`, once it has exited
        tracer._open[span_id] = self
        self._t0 = _perf_ns()

    # -- recording ---------------------------------------------------------------------

    def set_tag(self, key: str, value: object) -> Span:
        """Set a tag (str/int/float/bool kept; anything else stored by ``repr``).

        Once the span has ended it no longer changes.
        """
        if self.duration_ns is not None:
            return self
        tags = self.tags
        if len(tags) >= MAX_TAGS and key not in tags:
            tags["holter.truncated"] = int(tags.get("holter.truncated", 0)) + 1
            return self
        tags[key] = value
        return self

    def log(self, message: str, **fields: object) -> Span:
        """Record a timestamped event on the span (ignored once the span has ended)."""
        if self.duration_ns is not None:
            return self
        if len(fields) > MAX_TAGS:
            fields = _trim(fields)
        events = self.events
        if events is None:
            events = self.events = []
            self._rare = True
        if len(events) >= MAX_EVENTS:
            self.tags["holter.events_dropped"] = int(self.tags.get("holter.events_dropped", 0)) + 1
            return self
        events.append((_time_ns(), message, fields))
        return self

    def set_error(self, exc: BaseException | str, message: str | None = None) -> Span:
        """Mark the span as failed (an exception, or a type name and message)."""
        if self.duration_ns is not None:
            return self
        self.status = STATUS_ERROR
        self._rare = True
        if isinstance(exc, BaseException):
            self.error = (error_type(exc), clean_tag(_safe_str(exc)))  # type: ignore[assignment]
        else:
            self.error = (clean_tag(_safe_str(exc)), clean_tag(message or ""))  # type: ignore[assignment]
        return self

    @property
    def start_ns(self) -> int:
        """Wall-clock start, nanoseconds since the epoch."""
        return self._tracer.wall_ns(self._t0)

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
        return self.duration_ns is not None

    # -- ending ------------------------------------------------------------------------

    def end(self) -> None:
        """Finish the span (only the first call counts)."""
        if self.duration_ns is not None:
            return
        t0 = self._t0
        duration = self.duration_ns = _perf_ns() - t0
        tracer = self._tracer
        tracer._open.pop(self.span_id, None)
        buffer = tracer._buffer
        if len(buffer) < tracer.buffer_size:
            buffer.append(self if self._rare else (  # the record, as in __exit__
                self.trace_id, self.span_id, self.parent_id, self.name, tracer._offset + t0,
                duration, STATUS_OK, None, None, self.tags or None, None, False,
            ))
            if len(buffer) == tracer.wake_at:
                tracer.wake()
        else:
            tracer.overflow(self)

    def __enter__(self) -> Span:
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and self.status != STATUS_ERROR and _is_failure(exc):
            self.set_error(exc)
        if self.duration_ns is None:  # end(), inlined: this runs for every span
            t0 = self._t0
            duration = self.duration_ns = _perf_ns() - t0
            tracer = self._tracer
            # `del` is one opcode where .pop(key, None) is a method call, and a `try`
            # costs nothing until it catches (contextlib.suppress would cost a lot)
            try:  # noqa: SIM105
                del tracer._open[self.span_id]
            except KeyError:  # started before a fork: the child's _open was cleared
                pass
            buffer = tracer._buffer
            if len(buffer) < tracer.buffer_size:
                # The common span goes in as its finished record, so the Span object is
                # freed when its `with` ends instead of being walked by the cyclic GC
                # while it waits. No tags: None, not {}: the GC untracks a tuple of
                # plain values on its first pass, never one holding a dict.
                buffer.append(self if self._rare else (
                    self.trace_id, self.span_id, self.parent_id, self.name,
                    tracer._offset + t0, duration, STATUS_OK, None, None, self.tags or None,
                    None, False,
                ))
                if len(buffer) == tracer.wake_at:
                    tracer.wake()
            else:
                tracer.overflow(self)
        token = self._token
        if token is None:
            return
        self._token = None
        previous = token.old_value
        if previous is _MISSING:  # a module global: token.MISSING is a slow attribute
            previous = None
        self._prev = previous
        if _current.get() is not self:
            # Exited out of order (a parent before its child), or in another task: leave
            # the current span alone; the child's own exit will skip ended spans.
            return
        # type() is a specialised call; .__class__ is a generic attribute lookup
        if type(previous) is not Span or previous._prev is _OPEN:  # type: ignore[union-attr]
            # nothing enclosing, a remote context, or an enclosing `with` still open
            try:
                _current.reset(token)
            except ValueError:  # entered in another context: set it back by value instead
                _current.set(previous)
            return
        _current.set(_first_open(previous))  # type: ignore[arg-type]

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"Span({self.name!r}, trace={self.trace_id_hex}, span={self.span_id_hex}, {state})"


SpanRecord = tuple[Any, ...]
"""``(trace_id, span_id, parent_id, name, start_ns, duration_ns, status, error_type,
error_message, tags, events, remote_parent)`` — ids as ints, as the store takes them."""

MAX_HELD_TRACES = 1024
"""Sampled-out traces held by the collector until their local root ends."""
MAX_HELD_SPANS = 1024
"""Spans held per sampled-out trace."""


class Tracer:
    """Creates spans and buffers finished ones; the collector samples and records them.

    The hot path (a span ending) only appends the span's record to a list (a span the
    collector must decide on, e.g. sampled out or failed, goes in itself). In the
    collector, :meth:`drain` feeds every duration into ``span.duration{name=...}``,
    applies the tail rule to sampled-out traces, and turns the held spans into records.
    """

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
        if buffer_size < 1:
            raise ConfigError(f"span_buffer must be at least 1, got {buffer_size!r}")
        self.registry = registry
        self.ratio = ratio
        self.sample_all = ratio >= 1.0
        self.keep_slower_ns = (
            int(keep_slower_than_s * 1e9) if keep_slower_than_s is not None else None
        )
        self.buffer_size = buffer_size
        self.wake_at = max(buffer_size // 2, 1)
        self.wake: Callable[[], None] = wake or _nothing
        # finished spans: their records, or (rare spans) the Span objects themselves
        self._buffer: list[SpanRecord | Span] = []
        self._open: dict[int, Span] = {}
        self._held: dict[int, list[Span]] = {}
        self._held_error: set[int] = set()
        self._duration_cells: dict[str, Any] = {}
        self._durations: Histogram = registry.define(  # type: ignore[assignment]
            Histogram, "span.duration", "s", "Duration of every span, by span name."
        )
        self.anchor()

    def anchor(self) -> None:
        """Re-read the wall clock against the monotonic clock (the collector calls this).

        Also refreshes the prefix of new trace ids: their first 32 bits are the epoch
        second (as AWS X-Ray does), the other 96 bits random, so the store's trace id
        index grows at its end instead of at random places.
        """
        self._anchor_perf = perf = _perf_ns()
        self._anchor_wall = wall = _time_ns()
        self._offset = wall - perf  # wall clock = perf_counter_ns() + _offset
        self.trace_prefix = ((wall // 1_000_000_000) & 0xFFFFFFFF) << 96

    def wall_ns(self, perf_ns: int) -> int:
        """Wall-clock time of a ``perf_counter_ns`` reading."""
        return self._anchor_wall + (perf_ns - self._anchor_perf)

    def start_span(
        self,
        name: str,
        context: Span | SpanContext | None = None,
        tags: dict[str, Any] | None = None,
    ) -> Span:
        """A new span, child of ``context`` or else of the current span."""
        return Span(self, name, context, **(tags or {}))

    def overflow(self, span: Span) -> None:
        """A finished span found the buffer full: count the drop, keep its duration."""
        self.registry.count_drop("span_buffer_full", 1, span.name)
        self._duration_cell(span.name).observe_many([span.duration_ns / 1e9])  # type: ignore[operator]

    def _duration_cell(self, name: str) -> Any:
        cell = self._duration_cells.get(name)
        if cell is None:
            cell = self._duration_cells[name] = self._durations.bind(name=name)
        return cell

    # -- the collector's side ------------------------------------------------------------

    def pending(self) -> int:
        """Finished spans waiting for the collector."""
        return len(self._buffer)

    def drain(self) -> list[SpanRecord]:
        """Take finished spans: feed durations, sample, and return records to store.

        This runs for every span, on the collector's share of the interpreter: durations
        are grouped by name in one tight loop, records built in a comprehension.
        """
        buffer = self._buffer
        n = len(buffer)
        if not n:
            return []
        taken = buffer[:n]
        del buffer[:n]
        if n >= NUMPY_MIN_BATCH:
            want_numpy()  # busy tracing: fold span.duration with numpy when installed
        # the buffer holds finished records (tuples) and, for the rare spans (sampled
        # out, errors, events, remote parents), the Span objects themselves
        durations: dict[str, list[float]] = {}
        rare = False
        for r in taken:
            try:
                durations[r[3]].append(r[5] / 1e9)  # type: ignore[index]
            except KeyError:
                durations[r[3]] = [r[5] / 1e9]  # type: ignore[index]
            except TypeError:  # a Span is not subscriptable (try costs nothing until then)
                rare = True
                durations.setdefault(r.name, []).append(r.duration_ns / 1e9)  # type: ignore[union-attr,operator]
        for name, values in durations.items():
            self._duration_cell(name).observe_many(values)
        # records keep the order spans ended in (never sort them): a trace's spans stay
        # together, so the store writes one trace_parts row per trace and chunk
        out: list[SpanRecord] = taken  # type: ignore[assignment] # all records: as they are
        if rare:
            out = []
            append = out.append
            for r in taken:
                if type(r) is tuple:
                    append(r)
                elif r.sampled:  # type: ignore[union-attr]
                    append(self.record(r))  # type: ignore[arg-type]
                else:
                    self._hold(r, out)  # type: ignore[arg-type]
        self.anchor()
        return out

    def record(
        self, span: Span, status: str | None = None, duration: int | None = None
    ) -> SpanRecord:
        """The stored form of a span."""
        error = span.error
        return (
            span.trace_id, span.span_id, span.parent_id, span.name, self.wall_ns(span._t0),
            span.duration_ns if duration is None else duration, status or span.status,
            error[0] if error else None, error[1] if error else None, span.tags, span.events,
            span.remote_parent,
        )

    def _hold(self, span: Span, out: list[SpanRecord]) -> None:
        """Tail rule: keep a sampled-out trace until its local root ends, then decide."""
        trace_id = span.trace_id
        if span.status == STATUS_ERROR:
            self._held_error.add(trace_id)
        held = self._held
        if not (span.parent_id is None or span.remote_parent):
            spans = held.get(trace_id)
            if spans is None:
                if len(held) >= MAX_HELD_TRACES:  # bounded: forget the oldest held trace
                    oldest = next(iter(held))
                    del held[oldest]
                    self._held_error.discard(oldest)
                spans = held[trace_id] = []
            if len(spans) < MAX_HELD_SPANS:
                spans.append(span)
            return
        spans = held.pop(trace_id, None) or []
        errored = trace_id in self._held_error
        self._held_error.discard(trace_id)
        slow = self.keep_slower_ns is not None and span.duration_ns >= self.keep_slower_ns  # type: ignore[operator]
        if errored or slow:
            out.extend(self.record(s) for s in spans)
            out.append(self.record(span))

    def open_spans(self) -> list[SpanRecord]:
        """Records of spans still open, marked unfinished with their duration so far."""
        now = _perf_ns()
        return [
            self.record(span, STATUS_UNFINISHED, now - span._t0)
            for span in list(self._open.values())
            if span.duration_ns is None
        ]

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's spans are the parent's to write."""
        del self._buffer[:]
        self._open.clear()
        self._held.clear()
        self._held_error.clear()
        self.anchor()


def _nothing() -> None:
    return None


def current_span() -> Span | SpanContext | None:
    """The span (or remote context) that new spans would be children of."""
    return _current.get()


def traced_decorator(
    tracer: Tracer, name: str | None, tags: dict[str, Any]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Build a decorator running each call of a sync or async function in a span."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        span_name = name or getattr(fn, "__qualname__", getattr(fn, "__name__", "call"))
        if _is_coroutine_function(fn):

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
    if not _propagation["enabled"]:
        return fn
    span = _current.get()

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
        wrapped = _wrap_for_pool(fn)
        token = _current.set(None)  # a worker thread started here must not keep this span
        try:
            return original_submit(self, wrapped, *args, **kwargs)
        finally:
            _current.reset(token)

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
