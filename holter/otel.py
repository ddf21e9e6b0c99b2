"""The OpenTelemetry API bridge: code instrumented with ``opentelemetry-api`` records into holter.

::

    import holter
    holter.start(app="svc")
    holter.otel.install()      # global TracerProvider and MeterProvider backed by holter

    from opentelemetry import trace, metrics
    tracer = trace.get_tracer("lib")
    with tracer.start_as_current_span("handle") as span:   # a holter span
        span.set_attribute("rows", 3)
    metrics.get_meter("lib").create_counter("jobs").add(1, {"queue": "a"})

Tracer spans become holter spans (same ids: a parent extracted by an OpenTelemetry
propagator keeps its trace id; OpenTelemetry and holter spans nest inside each other);
attributes become tags, events become span logs, ``set_status(ERROR)`` and
``record_exception`` mark the span as failed, a non-internal kind is kept in the tag
``span.kind``. ``start_time`` is honoured; ``end(end_time)`` ends the span now (holter
measures durations with a monotonic clock). Links are ignored.

Instruments map to holter's: ``Counter`` → counter, ``Histogram`` → histogram, ``Gauge``
→ gauge, ``UpDownCounter`` → a gauge holding the running sum per attribute set; the
observable ones are read by the collector at each flush (``ObservableCounter``'s
cumulative values become increases). Attribute keys that holter's tag rules refuse
are cleaned (characters other than letters, digits, ``_`` and ``.`` become ``_``). An
instrument whose name conflicts with a holter metric of another kind becomes a no-op,
with one warning. Nothing here is imported by ``import holter``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from holter.core.tracing import Span as HolterSpan
from holter.core.tracing import SpanContext, _current, clean_tag
from holter.errors import ConfigError

logger = logging.getLogger("holter")

_BAD_KEY = re.compile(r"[^A-Za-z0-9_.]")
_classes: dict[str, Any] = {}
_lock = threading.RLock()


def _monitor(monitor: Any) -> Any:
    if monitor is not None:
        return monitor
    import holter

    found = holter.get_monitor()
    return found if found is not None else holter.start()


def tracer_provider(monitor: Any = None) -> Any:
    """An OpenTelemetry ``TracerProvider`` whose spans are ``monitor``'s (default monitor)."""
    return _build()["TracerProvider"](_monitor(monitor))


def meter_provider(monitor: Any = None) -> Any:
    """An OpenTelemetry ``MeterProvider`` whose instruments are ``monitor``'s."""
    return _build()["MeterProvider"](_monitor(monitor))


def install(monitor: Any = None, *, traces: bool = True, metrics: bool = True) -> tuple[Any, Any]:
    """Make holter the global OpenTelemetry tracer and meter provider; return both.

    Uses ``monitor``, else the default monitor (started with :func:`holter.start` if
    needed). OpenTelemetry lets a process set its global providers once: if another
    provider (an SDK's) is already installed, :class:`holter.ConfigError` says so; call
    ``install()`` before anything else sets one, or pass :func:`tracer_provider` /
    :func:`meter_provider` to the instrumentation explicitly.
    """
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace

    mon = _monitor(monitor)
    tp = tracer_provider(mon) if traces else None
    mp = meter_provider(mon) if metrics else None
    if tp is not None:
        current = otel_trace.get_tracer_provider()
        if not isinstance(current, _build()["TracerProvider"]):
            otel_trace.set_tracer_provider(tp)
        if not isinstance(otel_trace.get_tracer_provider(), _build()["TracerProvider"]):
            raise ConfigError(
                f"an OpenTelemetry TracerProvider is already installed "
                f"({type(otel_trace.get_tracer_provider()).__name__}); call "
                "holter.otel.install() first, or pass holter.otel.tracer_provider() to the "
                "instrumentation"
            )
        tp = otel_trace.get_tracer_provider()
    if mp is not None:
        current_mp = otel_metrics.get_meter_provider()
        if not isinstance(current_mp, _build()["MeterProvider"]):
            otel_metrics.set_meter_provider(mp)
        if not isinstance(otel_metrics.get_meter_provider(), _build()["MeterProvider"]):
            raise ConfigError(
                f"an OpenTelemetry MeterProvider is already installed "
                f"({type(otel_metrics.get_meter_provider()).__name__}); call "
                "holter.otel.install() first, or pass holter.otel.meter_provider() to the "
                "instrumentation"
            )
        mp = otel_metrics.get_meter_provider()
    return tp, mp


def clean_key(key: object) -> str:
    """An attribute key as a holter tag key (bad characters → ``_``, at most 128)."""
    text = _BAD_KEY.sub("_", str(key))[:128] or "_"
    if not (text[0].isalpha() or text[0] == "_"):
        text = ("_" + text)[:128]
    return text


def _tags(attributes: Mapping[str, Any] | None, keys: dict[str, str]) -> dict[str, Any]:
    if not attributes:
        return {}
    out = {}
    for key, value in attributes.items():
        clean = keys.get(key)
        if clean is None:
            clean = clean_key(key)
            if len(keys) < 10_000:
                keys[key] = clean
        out[clean] = value if isinstance(value, str | int | float | bool) else clean_tag(value)
    return out


def _build() -> dict[str, Any]:
    """Define the bridge classes (they subclass OpenTelemetry's, imported here)."""
    if _classes:
        return _classes
    with _lock:
        if not _classes:
            _classes.update(_define())
    return _classes


def _define() -> dict[str, Any]:
    from opentelemetry import metrics as om
    from opentelemetry import trace as ot
    from opentelemetry.trace import SpanKind, StatusCode, TraceFlags, TraceState

    class BridgeSpan(ot.Span):
        """An OpenTelemetry span that is a holter span."""

        def __init__(self, span: HolterSpan) -> None:
            self._span = span
            self._exception: BaseException | None = None

        def get_span_context(self) -> ot.SpanContext:
            s = self._span
            state = TraceState.from_header([s.tracestate]) if s.tracestate else TraceState()
            return ot.SpanContext(
                s.trace_id, s.span_id, is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if s.sampled else 0),
                trace_state=state,
            )

        def set_attributes(self, attributes: Mapping[str, Any]) -> None:
            for key, value in _tags(attributes, {}).items():
                self._span.set_tag(key, value)

        def set_attribute(self, key: str, value: Any) -> None:
            self.set_attributes({key: value})

        def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                      timestamp: int | None = None) -> None:
            self._span.log(str(name), **_tags(attributes, {}))

        def update_name(self, name: str) -> None:
            if not self._span.ended:
                self._span.name = str(name)

        def is_recording(self) -> bool:
            return not self._span.ended

        def set_status(self, status: Any, description: str | None = None) -> None:
            code = getattr(status, "status_code", status)
            text = description or getattr(status, "description", None) or ""
            if code is StatusCode.ERROR:
                if self._exception is not None:
                    self._span.set_error(self._exception)
                else:
                    self._span.set_error("Error", text)

        def record_exception(self, exception: BaseException,
                             attributes: Mapping[str, Any] | None = None,
                             timestamp: int | None = None, escaped: bool = False) -> None:
            self._exception = exception
            fields = {
                "exception.type": type(exception).__qualname__,
                "exception.message": str(exception),
                **_tags(attributes, {}),
            }
            self._span.log("exception", **fields)

        def end(self, end_time: int | None = None) -> None:
            self._span.end()

        def __repr__(self) -> str:
            return f"BridgeSpan({self._span!r})"

    class Tracer(ot.Tracer):
        """Starts holter spans through the OpenTelemetry tracer API."""

        def __init__(self, monitor: Any, scope: str) -> None:
            self._monitor = monitor
            self._scope = scope
            self._keys: dict[str, str] = {}

        def _parent(self, context: Any) -> Any:
            """The parent span: from ``context`` when given, else the innermost open one.

            Holter's or OpenTelemetry's, whichever opened last; a remote context attached
            in OpenTelemetry wins.
            """
            current = ot.get_current_span(context)
            bridged = current._span if isinstance(current, BridgeSpan) else None
            if bridged is None:
                sc = current.get_span_context()
                if sc.is_valid:
                    header = sc.trace_state.to_header() if sc.trace_state else ""
                    return SpanContext(sc.trace_id, sc.span_id, sc.trace_flags.sampled,
                                       header or None, bool(sc.is_remote))
            if context is not None:
                return bridged
            mine = _current.get()
            if bridged is None or mine is None:
                return bridged if mine is None else mine
            if isinstance(mine, HolterSpan) and mine._t0 >= bridged._t0 and not mine.ended:
                return mine  # a holter span opened inside the OpenTelemetry one
            return bridged

        def start_span(  # noqa: PLR0917 - the OpenTelemetry API signature
            self, name: str, context: Any = None, kind: Any = SpanKind.INTERNAL,
            attributes: Any = None, links: Any = None, start_time: int | None = None,
            record_exception: bool = True, set_status_on_exception: bool = True,
        ) -> BridgeSpan:
            tags = _tags(attributes, self._keys)
            if kind is not None and kind is not SpanKind.INTERNAL:
                tags["span.kind"] = kind.name.lower()
            tracer = self._monitor.tracer
            parent = self._parent(context)
            token = _current.set(None)  # no parent found means a new trace, whatever is current
            try:
                span = tracer.start_span(str(name), parent, tags)
            finally:
                _current.reset(token)
            if start_time is not None:
                span._t0 = tracer._anchor_perf + (int(start_time) - tracer._anchor_wall)
            return BridgeSpan(span)

        @contextlib.contextmanager
        def start_as_current_span(  # noqa: PLR0917 - the OpenTelemetry API signature
            self, name: str, context: Any = None, kind: Any = SpanKind.INTERNAL,
            attributes: Any = None, links: Any = None, start_time: int | None = None,
            record_exception: bool = True, set_status_on_exception: bool = True,
            end_on_exit: bool = True,
        ) -> Iterator[BridgeSpan]:
            span = self.start_span(name, context, kind, attributes, links, start_time,
                                   record_exception, set_status_on_exception)
            token = _current.set(span._span)  # holter spans started inside nest under it
            try:
                with ot.use_span(span, end_on_exit=end_on_exit,
                                 record_exception=record_exception,
                                 set_status_on_exception=set_status_on_exception) as used:
                    yield used
            finally:
                with contextlib.suppress(ValueError):
                    _current.reset(token)

    class TracerProvider(ot.TracerProvider):
        """Hands out :class:`Tracer` objects recording into one monitor."""

        def __init__(self, monitor: Any) -> None:
            self.monitor = monitor

        def get_tracer(self, instrumenting_module_name: str,
                       instrumenting_library_version: str | None = None,
                       schema_url: str | None = None, attributes: Any = None) -> Tracer:
            return Tracer(self.monitor, instrumenting_module_name)

    # -- metrics ---------------------------------------------------------------------

    def define(make: Callable[[str | None], Any], name: str, unit: str) -> Any:
        try:
            return make(unit or None)
        except ConfigError:
            try:
                return make(None)  # a unit conflict: keep the metric's first unit
            except ConfigError as exc:
                logger.warning("holter.otel: instrument %r is not recorded: %s", name, exc)
                return None

    class Counter(om.Counter):
        def __init__(self, inst: Any, name: str, unit: str, description: str) -> None:
            super().__init__(name, unit=unit, description=description)
            self._inst = inst
            self._keys: dict[str, str] = {}

        def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
            if self._inst is not None:
                self._inst.inc(amount, **_tags(attributes, self._keys))

    class Histogram(om.Histogram):
        def __init__(self, inst: Any, name: str, unit: str, description: str) -> None:
            super().__init__(name, unit=unit, description=description)
            self._inst = inst
            self._keys: dict[str, str] = {}

        def record(self, amount: float, attributes: Any = None, context: Any = None) -> None:
            if self._inst is not None:
                self._inst.observe(amount, **_tags(attributes, self._keys))

    gauge_base = getattr(om, "Gauge", None) or om._Gauge  # public name only in newer APIs

    class Gauge(gauge_base):  # type: ignore[misc,valid-type]
        def __init__(self, inst: Any, name: str, unit: str, description: str) -> None:
            super().__init__(name, unit=unit, description=description)
            self._inst = inst
            self._keys: dict[str, str] = {}

        def set(self, amount: float, attributes: Any = None, context: Any = None) -> None:
            if self._inst is not None:
                self._inst.set(amount, **_tags(attributes, self._keys))

    class UpDownCounter(om.UpDownCounter):
        def __init__(self, inst: Any, name: str, unit: str, description: str) -> None:
            super().__init__(name, unit=unit, description=description)
            self._inst = inst
            self._keys: dict[str, str] = {}
            self._sums: dict[tuple[tuple[str, str], ...], float] = {}
            self._lock = threading.RLock()

        def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
            if self._inst is None:
                return
            tags = _tags(attributes, self._keys)
            key = tuple(sorted((k, repr(v)) for k, v in tags.items()))
            with self._lock:
                total = self._sums[key] = self._sums.get(key, 0.0) + amount
            self._inst.set(total, **tags)

    class Meter(om.Meter):
        """Creates holter instruments through the OpenTelemetry meter API."""

        def __init__(self, monitor: Any, name: str, version: str | None = None,
                     schema_url: str | None = None,
                     instruments: dict[tuple[str, str], Any] | None = None) -> None:
            super().__init__(name, version=version, schema_url=schema_url)
            self._monitor = monitor
            self._instruments = instruments if instruments is not None else {}

        def _cached(self, kind: str, name: str, build: Callable[[], Any]) -> Any:
            """One instrument per (kind, name), as the OpenTelemetry SDK does."""
            found = self._instruments.get((kind, name))
            if found is None:
                with _lock:
                    found = self._instruments.get((kind, name))
                    if found is None:
                        found = self._instruments[(kind, name)] = build()
            return found

        def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
            return self._cached("counter", name, lambda: Counter(
                define(lambda u: self._monitor.counter(name, u, description), name, unit),
                name, unit, description))

        def create_up_down_counter(self, name: str, unit: str = "",
                                   description: str = "") -> Any:
            return self._cached("updown", name, lambda: UpDownCounter(
                define(lambda u: self._monitor.gauge(name, u, description), name, unit),
                name, unit, description))

        def create_histogram(self, name: str, unit: str = "", description: str = "", *,
                             explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
                             ) -> Any:
            return self._cached("histogram", name, lambda: Histogram(
                define(lambda u: self._monitor.histogram(name, u, description), name, unit),
                name, unit, description))

        def create_gauge(self, name: str, unit: str = "", description: str = "") -> Any:
            return self._cached("gauge", name, lambda: Gauge(
                define(lambda u: self._monitor.gauge(name, u, description), name, unit),
                name, unit, description))

        def _observable(self, kind: str, name: str, callbacks: Sequence[Any] | None,
                        unit: str, description: str) -> Any:
            monitor = self._monitor
            if kind == "counter":
                inst = define(lambda u: monitor.counter(name, u, description), name, unit)
            else:
                inst = define(lambda u: monitor.gauge(name, u, description), name, unit)
            if inst is not None and callbacks:
                monitor.collector.samplers.append(_Observer(inst, kind, list(callbacks)))
            return inst

        def create_observable_counter(self, name: str, callbacks: Sequence[Any] | None = None,
                                      unit: str = "", description: str = "") -> Any:
            self._observable("counter", name, callbacks, unit, description)
            return om.NoOpObservableCounter(name, callbacks, unit=unit, description=description)

        def create_observable_gauge(self, name: str, callbacks: Sequence[Any] | None = None,
                                    unit: str = "", description: str = "") -> Any:
            self._observable("gauge", name, callbacks, unit, description)
            return om.NoOpObservableGauge(name, callbacks, unit=unit, description=description)

        def create_observable_up_down_counter(
            self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "",
            description: str = "",
        ) -> Any:
            self._observable("gauge", name, callbacks, unit, description)
            return om.NoOpObservableUpDownCounter(name, callbacks, unit=unit,
                                                  description=description)

    class MeterProvider(om.MeterProvider):
        """Hands out :class:`Meter` objects recording into one monitor."""

        def __init__(self, monitor: Any) -> None:
            self.monitor = monitor
            self._instruments: dict[tuple[str, str], Any] = {}

        def get_meter(self, name: str, version: str | None = None,
                      schema_url: str | None = None, attributes: Any = None) -> Meter:
            return Meter(self.monitor, name, version, schema_url, self._instruments)

    return {"TracerProvider": TracerProvider, "MeterProvider": MeterProvider,
            "Tracer": Tracer, "Meter": Meter, "Span": BridgeSpan}


class _Observer:
    """Runs observable-instrument callbacks in the collector thread, at each flush."""

    def __init__(self, inst: Any, kind: str, callbacks: list[Any]) -> None:
        self.inst = inst
        self.kind = kind
        self.callbacks = callbacks
        self.previous: dict[tuple[tuple[str, str], ...], float] = {}
        self.keys: dict[str, str] = {}
        self.started: set[int] = set()

    def __call__(self) -> None:
        from opentelemetry.metrics import CallbackOptions

        options = CallbackOptions()
        for callback in self.callbacks:
            for obs in self._observe(callback, options):
                tags = _tags(getattr(obs, "attributes", None), self.keys)
                value = float(obs.value)
                if self.kind == "counter":
                    key = tuple(sorted((k, repr(v)) for k, v in tags.items()))
                    before = self.previous.get(key, 0.0)
                    self.previous[key] = value
                    increase = value - before if value >= before else value  # a reset
                    if increase > 0:
                        self.inst.inc(increase, **tags)
                else:
                    self.inst.set(value, **tags)

    def _observe(self, callback: Any, options: Any) -> Iterable[Any]:
        if inspect.isgenerator(callback):
            if id(callback) not in self.started:
                self.started.add(id(callback))
                return next(callback)
            return callback.send(options)
        return callback(options) or ()


__all__ = ["clean_key", "install", "meter_provider", "tracer_provider"]
