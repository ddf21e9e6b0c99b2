"""Monitor: wires the registry and collector to the store, one run per process.

``holter.start()`` builds the default monitor; tests and libraries may build their
own :class:`Monitor`. Everything a monitor records goes to the store at each flush,
at :meth:`Monitor.stop` and at interpreter exit (bounded by ``exit_timeout``).
After ``os.fork()`` the child gets a new run (linked to the parent's), a new store
connection and a new collector thread; values recorded before the fork stay with
the parent, which flushes them.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from holter import _clock
from holter.config import DEFAULT_RULES_FILE, Config, parse_seconds
from holter.core.collector import Collector
from holter.core.instruments import (
    Counter,
    Gauge,
    Histogram,
    Instrument,
    Timer,
    _is_coroutine_function,
)
from holter.core.registry import Registry
from holter.core.tracing import (
    Span,
    SpanContext,
    Tracer,
    install_thread_propagation,
    traced_decorator,
)
from holter.errors import ConfigError, NotAStore, SchemaError, StoreError
from holter.model import Batch, WindowStats
from holter.store.sqlite import Store

if TYPE_CHECKING:
    from holter.store import query as q

logger = logging.getLogger("holter")

P = ParamSpec("P")
R = TypeVar("R")

_MAINTAIN_EVERY_NS = 300 * 1_000_000_000
_SUMMARY_ROWS_PER_MAINTAIN = 20_000
"""Points merged into the summaries per maintenance (500 series at 10 s write 15 000)."""


class _QueryModule:
    """``holter.store.query``, imported on first use.

    Recording never needs the read API: a monitored program starts ~10 ms sooner.
    """

    def __getattr__(self, name: str) -> Any:
        from holter.store import query

        globals()["q"] = query  # from now on, the module itself
        return getattr(query, name)


if not TYPE_CHECKING:
    q = _QueryModule()
_live: weakref.WeakSet[Monitor] = weakref.WeakSet()
_exit_state: dict[str, Any] = {"status": None, "info": None}


class _StoreSink:
    """The collector's sink: opens the store and creates the run lazily, then writes."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = weakref.ref(monitor)

    def write(self, batch: Batch) -> None:
        monitor = self._monitor()
        if monitor is None:  # pragma: no cover - collector outlived its monitor
            return
        store = monitor._ensure_store()
        run_id = monitor._ensure_run(store)
        store.write_batch(run_id, batch)

    def set_timeout(self, timeout_s: float | None) -> None:
        monitor = self._monitor()
        if monitor is None:  # pragma: no cover
            return
        timeout = monitor.config.store_timeout_s if timeout_s is None else timeout_s
        monitor._write_timeout_s = timeout  # also used if the store is opened now
        store = monitor._store
        if store is not None:
            with contextlib.suppress(Exception):
                store.set_busy_timeout(timeout)


class _NullSink:
    def write(self, batch: Batch) -> None:
        """Discard (a disabled monitor)."""


class Monitor:
    """Instruments of one program, flushed into one store as one run per process."""

    def __init__(
        self, config: Config | None = None, *, start: bool = True, **settings: Any
    ) -> None:
        self.config = config if config is not None else Config.resolve(**settings)
        self.registry = Registry(strict=self.config.strict, max_series=self.config.max_series)
        self._instruments = self.registry.instruments
        self._plain_timers: dict[str, Any] = {}
        self.after_flush_hooks: list[Callable[[list[Batch]], None]] = []
        """Run in the collector thread after each flush with the batches written
        (analysis, alerting and exporters attach here; never on the program's threads)."""
        self._store: Store | None = None
        self._store_lock = threading.RLock()
        self._write_timeout_s = self.config.store_timeout_s
        self.run_id: int | None = None
        self._parent_run: int | None = None
        self._started_ns = _clock.time_ns()
        self._last_maintain_ns = 0
        self._stopped = False
        sink = _NullSink() if self.config.disabled else _StoreSink(self)
        self.collector = Collector(
            self.registry,
            sink,
            self.config.flush_interval_s,
            max_pending_points=self.config.max_pending_points,
            after_flush=self._after_flush,
        )
        self.tracer = Tracer(
            self.registry,
            ratio=self.config.sample_ratio,
            keep_slower_than_s=self.config.keep_slower_than_s,
            buffer_size=self.config.span_buffer,
            wake=self.collector.wake,
        )
        self.collector.tracer = self.tracer
        # the hot path: mon.span(...) constructs the Span directly, without a Python frame
        self.span = functools.partial(Span, self.tracer)  # type: ignore[method-assign]
        if self.config.propagate_threads:
            install_thread_propagation()
        self._parent_run = self.config.parent_run
        self.runtime: Any = None
        self.loop_monitor: Any = None
        self._instrumented: list[str] = []
        if not self.config.disabled:
            try:
                self._ensure_store()
            except StoreError as exc:
                if _is_config_problem(exc):
                    raise
                logger.warning("holter: %s; recording in memory and retrying at each flush", exc)
        self.anomaly_detection: Any = None
        """The detectors of every series (:class:`holter.analysis.anomaly.AnomalyDetection`),
        built at the first flush in the collector thread, so start-up does not import them."""
        if not self.config.disabled and self.config.anomalies:
            self.after_flush_hooks.append(self._judge_anomalies)
        self._alerting: Any = None
        if not self.config.disabled:
            try:
                self._configure_alerting()
            except Exception:
                if self._store is not None:
                    self._store.close()
                raise
        _live.add(self)
        if not self.config.disabled:
            self._start_sources()
        if start:
            install_exit_hooks()
            _patch_multiprocessing()
            self.collector.start()
            atexit.register(_stop_at_exit, weakref.ref(self))

    # -- instruments -------------------------------------------------------------------

    def counter(self, name: str, unit: str | None = None, description: str = "") -> Counter:
        """The counter ``name`` (created on first use)."""
        inst = self._instruments.get(name)
        if inst is not None and inst.kind == "counter" and (unit is None or unit == inst.unit):
            return inst  # type: ignore[return-value]
        return self.registry.define(Counter, name, unit, description)  # type: ignore[return-value]

    def gauge(
        self,
        name: str,
        unit: str | None = None,
        description: str = "",
        *,
        fn: Callable[[], float] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> Gauge:
        """The gauge ``name``; with ``fn``, a series sampled from ``fn()`` at each flush."""
        inst = self._instruments.get(name)
        if inst is None or inst.kind != "gauge" or (unit is not None and unit != inst.unit):
            inst = self.registry.define(Gauge, name, unit, description)
        if fn is not None:
            inst.set_function(fn, **dict(tags or {}))  # type: ignore[attr-defined]
        return inst  # type: ignore[return-value]

    def histogram(self, name: str, unit: str | None = None, description: str = "") -> Histogram:
        """The histogram ``name`` (created on first use)."""
        inst = self._instruments.get(name)
        if inst is not None and inst.kind == "histogram" and (unit is None or unit == inst.unit):
            return inst  # type: ignore[return-value]
        return self.registry.define(Histogram, name, unit, description)  # type: ignore[return-value]

    def _timer_histogram(self, name: str, unit: str | None) -> Histogram:
        if unit is None:
            inst = self._instruments.get(name)
            if inst is not None and inst.kind == "histogram":
                return inst  # type: ignore[return-value]
            unit = "s"
        return self.histogram(name, unit=unit)

    def timer(self, name: str, unit: str | None = None, **tags: object) -> Timer:
        """A context manager recording the time spent inside it into histogram ``name``.

        Seconds unless ``unit`` (``ms``, ``us``, ``ns``) says otherwise.
        """
        if not tags and unit is None:
            cell = self._plain_timers.get(name)
            if cell is not None:  # the common case, kept cheap: one lookup, one object
                return Timer(cell)
        inst = self._instruments.get(name)
        if inst is None or inst.kind != "histogram" or (unit is not None and unit != inst.unit):
            inst = self._timer_histogram(name, unit)
        timer = inst.time(**tags)  # type: ignore[attr-defined]
        if not tags and unit is None and type(timer) is Timer:
            self._plain_timers[name] = timer._cell
        return timer

    def timed(
        self, name: str, unit: str | None = None, **tags: object
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator recording each call's duration (sync and async functions)."""
        return self._timer_histogram(name, unit).timed(**tags)

    # -- sources and instrumentation -----------------------------------------------------

    def _start_sources(self) -> None:
        config = self.config
        if config.runtime:
            from holter.sources import loop
            from holter.sources.runtime import RuntimeMetrics

            self.runtime = RuntimeMetrics(self, use_tracemalloc=config.tracemalloc)
            self.runtime.start()
            self.collector.samplers.append(self.runtime.sample)
            self.loop_monitor = loop.LoopMonitor(self, config.loop_threshold_s)
            loop.install(self.loop_monitor)
        if config.instrument:
            from holter import instrument

            self._instrumented = instrument.install(config.instrument, self)

    def _stop_sources(self) -> None:
        if self._instrumented:
            from holter import instrument

            instrument.uninstall(self._instrumented, monitor=self)  # only this monitor's claim
            self._instrumented = []
        if self.runtime is not None:
            self.runtime.stop()
        if self.loop_monitor is not None:
            from holter.sources import loop

            loop.uninstall(self.loop_monitor)

    def instrument(
        self, name: str, **tags: object
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator for the program's own named operations (a tool, a job, a command).

        Each call is a span ``name`` and feeds ``operation.duration{operation}``
        (seconds) and ``operation.calls{operation,status}`` (``ok`` or ``error``); the
        function's result and exceptions pass through unchanged.
        """
        duration = self.histogram("operation.duration", unit="s",
                                  description="The program's own operations.")
        calls = self.counter("operation.calls", description="Operations, by outcome.")
        fixed = {"operation": name, **tags}
        observe = duration.bind(**fixed).observe
        ok = calls.bind(**fixed, status="ok")
        failed = calls.bind(**fixed, status="error")
        traced = traced_decorator(self.tracer, name, tags)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            inner = traced(fn)
            if _is_coroutine_function(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    start = time.perf_counter()
                    try:
                        result = await inner(*args, **kwargs)  # type: ignore[misc]
                    except BaseException:
                        failed.inc()
                        observe(time.perf_counter() - start)
                        raise
                    ok.inc()
                    observe(time.perf_counter() - start)
                    return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                start = time.perf_counter()
                try:
                    result = inner(*args, **kwargs)
                except BaseException:
                    failed.inc()
                    observe(time.perf_counter() - start)
                    raise
                ok.inc()
                observe(time.perf_counter() - start)
                return result

            return wrapper

        return decorate

    # -- tracing -----------------------------------------------------------------------

    def span(
        self, name: str, /, context: Span | SpanContext | None = None, **tags: object
    ) -> Span:
        """A span that starts now: ``with mon.span("handle", user="u1") as span: ...``.

        Its parent is ``context`` (e.g. from :func:`holter.extract`) or else the current
        span; without either it starts a new trace. Entering it makes it current.
        """
        return Span(self.tracer, name, context, **tags)

    def traced(
        self, name: str | None = None, **tags: object
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator running each call of a sync or async function in a span."""
        return traced_decorator(self.tracer, name, tags)

    # -- reading -----------------------------------------------------------------------

    def query(
        self,
        name: str,
        window: str | float | None = "5m",
        *,
        tags: Mapping[str, object] | None = None,
        by: str | None = None,
        start: datetime | str | float | None = None,
        end: datetime | str | float | None = None,
        this_run: bool = False,
        flush: bool = True,
    ) -> WindowStats | list[WindowStats]:
        """Window statistics of ``name`` from the store (flushing first, by default).

        Returns one :class:`WindowStats`, or a list of them (one per tag value) with ``by``.
        """
        if flush:
            self.flush()
        store = self._ensure_store()
        run = self.run_id if this_run else None
        if by is not None:
            return q.grouped_stats(store, name, window, start=start, end=end, tags=tags, by=by,
                                   run=run)
        return q.stats(store, name, window, start=start, end=end, tags=tags, run=run)

    @property
    def store(self) -> Store:
        """The open store (opened on demand)."""
        return self._ensure_store()

    def report(
        self,
        period: str | None = "1h",
        format: str | None = None,
        output: str | os.PathLike[str] | None = None,
        *,
        flush: bool = True,
        **options: Any,
    ) -> str:
        """A report of this store's last ``period`` (flushing first), as ``holter report``.

        ``format`` is ``"json"``, ``"md"`` or ``"html"`` (default: from ``output``'s
        extension, else Markdown); with ``output`` the report is also written there,
        atomically. ``options``: ``run``, ``app``, ``since``, ``until``, ``title``.
        Returns the rendered text.
        """
        from holter.reports import report

        if flush:
            self.flush()
        if options.get("since") is not None or options.get("run") is not None:
            period = None
        return report(self._ensure_store(), format=format, output=output, period=period,
                      **options)

    def _judge_anomalies(self, written: list[Batch]) -> None:
        """After-flush hook: anomaly detection, imported and built at the first flush."""
        hook = self.anomaly_detection
        if hook is None:
            from holter.analysis.anomaly import AnomalyDetection

            hook = self.anomaly_detection = AnomalyDetection(self)
        hook(written)

    def anomalies(
        self,
        window: str | float | None = "1h",
        *,
        metric: str | None = None,
        tags: Mapping[str, object] | None = None,
        min_severity: str = "low",
        flush: bool = True,
    ) -> list[Any]:
        """Anomalies found in the window, newest first (:class:`holter.store.anomalies.Anomaly`).

        Each has ``metric``, ``tags``, ``stat``, ``time_ns``, ``value``, ``expected``,
        ``low``/``high`` (the band), ``score``, ``severity``, ``kind`` and ``maturity``.
        """
        from holter.analysis.anomaly import find_anomalies

        if flush:
            self.flush()
        return find_anomalies(self._ensure_store(), window, metric=metric, tags=tags,
                              min_severity=min_severity)

    def baselines(self, metric: str | None = None, *, flush: bool = True) -> list[Any]:
        """What each series is compared against, and how mature that baseline is.

        One :class:`holter.analysis.baseline.Baseline` per series and statistic.
        """
        from holter.analysis.baseline import baselines

        if flush:
            self.flush()
            if self.anomaly_detection is not None:
                self.anomaly_detection.checkpoint()
        return baselines(self._ensure_store(), metric=metric)

    # -- alerting ----------------------------------------------------------------------

    def _configure_alerting(self) -> None:
        """Rules file, webhook and notifiers from the config (nothing imported without)."""
        config = self.config
        path = config.rules
        if path is None and os.path.isfile(DEFAULT_RULES_FILE):
            path = DEFAULT_RULES_FILE
        if not (path or config.webhook or config.notifiers or config.alerting):
            return
        from holter.alerting.config import load_rules_file, make_settings
        from holter.alerting.notifiers import WebhookNotifier, make_notifier

        engine = self.alerting
        if path:
            found = load_rules_file(path)
            engine.settings = make_settings(config.alerting, make_settings(found.settings))
            for notifier in found.notifiers:
                engine.add_notifier(notifier)
            for rule in found.rules:
                engine.add_rule(rule)
        if config.webhook:
            engine.add_notifier(WebhookNotifier(config.webhook))
        for spec in config.notifiers:
            engine.add_notifier(make_notifier(spec))

    @property
    def alerting(self) -> Any:
        """The :class:`holter.alerting.engine.AlertEngine` (created on first use).

        It evaluates the rules after each flush, in the collector thread.
        """
        if self._alerting is None:
            from holter.alerting.config import make_settings
            from holter.alerting.engine import AlertEngine

            self._alerting = AlertEngine(
                store=self._alert_store,
                settings=make_settings(self.config.alerting),
                meter=self,
                run_id=lambda: self.run_id,
                flush_interval_s=self.config.flush_interval_s,
            )
            self.after_flush_hooks.append(self._alerting.after_flush)
        return self._alerting

    def _alert_store(self) -> Store:
        if self._store is None and self._stopped:
            raise StoreError("the monitor is stopped")
        return self._ensure_store()

    def alert(self, name: str, expr: str | None = None, **options: Any) -> Any:
        """Define (or replace) an alert rule; return the :class:`holter.alerting.rules.Rule`.

        ``expr`` is a threshold expression such as ``"p95(http.latency) > 250"``, or give
        ``anomaly="http.latency"`` (with ``min_severity``, ``stat``, ``tags``). Options:
        ``window`` (default 5m), ``for_`` (pending time before firing), ``keep_firing_for``,
        ``severity`` (default warning), ``summary``/``description`` templates (``{value}``,
        ``{threshold}``, ``{labels[route]}``...), ``labels``, ``group``, ``by``, ``tags``,
        ``actions`` (``["gc"]``). Raises :class:`holter.alerting.rules.RuleError` (naming
        the rule, the text and the position) for a malformed rule. A metric that is not
        recorded yet is fine: the rule stays inactive until it is.
        """
        from holter.alerting.rules import make_rule

        return self.alerting.add_rule(make_rule(name, expr, **options))

    def on_alert(
        self,
        rule: str,
        action: Callable[[Any], Any] | str,
        *,
        on_resolved: Callable[[Any], Any] | None = None,
    ) -> None:
        """Run ``action(alert)`` once each time an alert of ``rule`` fires (a corrective action).

        It runs on holter's action thread; its result or exception is recorded in the
        alert's history. ``action`` may be ``"gc"`` or ``"throttle"`` (built-ins);
        ``on_resolved(alert)`` runs when the alert resolves.
        """
        engine = self.alerting
        if action == "gc":
            from holter.alerting.actions import collect_garbage

            engine.add_action(rule, collect_garbage, name="gc", on_resolved=on_resolved)
        elif action == "throttle":
            engine.throttle(rule)
        elif isinstance(action, str):
            raise ConfigError(f"unknown action {action!r} for rule {rule!r}: use 'gc', "
                              "'throttle' or a callable")
        else:
            engine.add_action(rule, action, on_resolved=on_resolved)

    def throttle(self, rule: str, delay_s: float = 0.1) -> Any:
        """The :class:`holter.alerting.actions.Throttle` engaged while ``rule`` fires."""
        return self.alerting.throttle(rule, delay_s)

    def silence(
        self,
        rule: str,
        *,
        for_: str | float = "1h",
        tags: Mapping[str, object] | None = None,
        comment: str = "",
    ) -> Any:
        """Mute notifications of ``rule`` (``*``: every rule) with these tags for ``for_``."""
        seconds = parse_seconds(for_, "silence duration")
        return self.alerting.silence(rule, duration_s=seconds, tags=tags, comment=comment)

    def alerts(
        self,
        state: str | None = None,
        *,
        since: str | float = "24h",
        rule: str | None = None,
        flush: bool = False,
    ) -> list[Any]:
        """Open alerts and those resolved within ``since``, newest first.

        Each is a :class:`holter.store.alerts.AlertRecord` (rule, labels, annotations,
        state, value, times). ``flush=True`` flushes (and so evaluates) first.
        """
        if flush:
            self.flush()
        since_ns = _clock.time_ns() - q.parse_window(since)
        return q.alerts(self._ensure_store(), state=state, since_ns=since_ns, rule=rule)

    # -- export ------------------------------------------------------------------------

    def export(self, target: str = "otlp", **options: Any) -> Any:
        """Push what each flush writes to ``target`` (``"otlp"``), from the collector side.

        Options: ``endpoint`` (default ``$OTEL_EXPORTER_OTLP_ENDPOINT`` or
        http://127.0.0.1:4318), ``headers``, ``timeout_s``, ``temporality``
        (``"cumulative"``/``"delta"``), ``compression``, ``max_backlog``, ``traces``.
        Returns the :class:`holter.export.push.CollectorPusher`. Failures are counted in
        ``holter.export.failed{target,reason}`` and never reach the program.
        """
        from holter.export.push import attach

        return attach(self, target, **options)

    def serve_prometheus(
        self, port: int = 9464, host: str = "127.0.0.1", *, token: str | None = None,
        **options: Any,
    ) -> Any:
        """Serve ``/metrics`` (Prometheus exposition of this monitor's store) in a thread.

        Binds 127.0.0.1 unless ``host`` says otherwise (then a warning is logged; pass a
        bearer ``token``). ``port=0`` picks a free port. Options: ``window_s``,
        ``histograms`` (``"summary"``/``"histogram"``), ``buckets``. Returns the started
        :class:`holter.export.prometheus.MetricsServer` (``.url``, ``.stop()``).
        """
        from holter.export.prometheus import serve

        return serve(self.config.db, port=port, host=host, token=token, **options)

    # -- dashboard ---------------------------------------------------------------------

    def dashboard(
        self,
        *,
        window: str = "5m",
        refresh_s: float = 1.0,
        this_run: bool = True,
        flush_interval_s: float | None = 1.0,
    ) -> None:
        """Watch this program in the live terminal dashboard until the user quits (``q``).

        Blocks; call it from the main thread while the program works in other threads
        (or after it has worked). It reads the store like ``holter top`` does, showing
        this run (and the runs it started) unless ``this_run`` is False. While it is open
        the flush interval drops to ``flush_interval_s`` (when shorter) so the view is
        live; it is restored afterwards. Needs ``pip install 'holter[dashboard]'``.
        """
        from holter.dashboard import run as run_dashboard
        from holter.errors import ConfigError as _ConfigError

        if self.config.disabled or self.config.db == ":memory:":
            raise _ConfigError("the dashboard reads the store file: this monitor has none "
                               "(disabled, or an in-memory store)")
        store = self._ensure_store()
        run_id = self._ensure_run(store)
        previous = self.collector.interval_s
        faster = flush_interval_s is not None and flush_interval_s < previous
        if faster:
            self.collector.set_interval(flush_interval_s)  # type: ignore[arg-type]
        self.flush()
        try:
            run_dashboard(self.config.db, window=window, refresh_s=refresh_s,
                          run=run_id if this_run else None)
        finally:
            if faster:
                self.collector.set_interval(previous)

    # -- lifecycle ---------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write everything recorded so far; True if the store took it all."""
        return self.collector.flush(timeout_s)

    def stop(self, exit_status: int | None = None, exit_info: str | None = None) -> bool:
        """Final flush, end the run, close the store: all within ``exit_timeout``.

        Returns False when something could not be written in time (another process
        holding the store's lock, a full disk); it never waits longer.
        """
        if self._stopped:
            return True
        self._stopped = True
        try:
            self._stop_sources()
        except Exception as exc:  # pragma: no cover - stopping must go on
            logger.debug("holter: stopping sources failed: %r", exc)
        budget = self.config.exit_timeout_s
        deadline = _clock.monotonic_ns() + int(budget * 1e9)
        self.collector.extra_spans = self.tracer.open_spans()  # written as "unfinished"
        ok = self.collector.shutdown(budget)
        if self._alerting is not None:  # queued notifications: within what is left
            self._alerting.close(max((deadline - _clock.monotonic_ns()) / 1e9, 0.0))
        store = self._store
        if store is None:
            return ok
        remaining = (deadline - _clock.monotonic_ns()) / 1e9
        if not store.lock.acquire(timeout=max(remaining, 0.001)):
            # the collector thread is still waiting for another process's lock; leave it
            logger.warning("holter: the store stayed busy; run %s left without an end", self.run_id)
            return False
        try:
            remaining = (deadline - _clock.monotonic_ns()) / 1e9
            if self.run_id is not None and remaining > 0:
                if exit_status is None:
                    exit_status = _exit_state["status"]
                    exit_info = exit_info or _exit_state["info"]
                try:
                    store.set_busy_timeout(remaining)
                    store.end_run(self.run_id, _clock.time_ns(), exit_status, exit_info)
                except StoreError as exc:
                    logger.warning("holter could not record the end of run %s: %s",
                                   self.run_id, exc)
                    ok = False
            elif self.run_id is not None:
                ok = False
            store.close()
            self._store = None
        finally:
            store.lock.release()
        return ok

    def _ensure_store(self) -> Store:
        store = self._store
        if store is not None:
            return store
        with self._store_lock:
            if self._store is None:
                timeout = self._write_timeout_s
                self._store = Store.open(self.config.db, timeout_s=timeout)
                self._store.timeout_s = self.config.store_timeout_s
            return self._store

    def _ensure_run(self, store: Store) -> int:
        if self.run_id is None:
            with self._store_lock:
                if self.run_id is None:
                    self.run_id = store.create_run(
                        app=self.config.app,
                        version=self.config.version,
                        argv=list(sys.argv),
                        pid=os.getpid(),
                        host=socket.gethostname(),
                        python=sys.version.split()[0],  # platform.python_version(), unimported
                        started_ns=self._started_ns,
                        parent_id=self._parent_run,
                    )
        return self.run_id

    def _after_flush(self, written: list[Batch]) -> None:
        """In the collector thread, after batches reached the store: maintenance, hooks."""
        for hook in list(self.after_flush_hooks):
            try:
                hook(written)
            except Exception as exc:
                self.registry.count_drop("hook_error", 1, repr(exc))
        self._maintain()

    def _maintain(self) -> None:
        now = _clock.time_ns()
        if now - self._last_maintain_ns < _MAINTAIN_EVERY_NS:
            return
        self._last_maintain_ns = now
        store = self._store
        if store is not None:
            store.maintain(
                now,
                raw_retention_s=self.config.raw_retention_s,
                minute_retention_s=self.config.minute_retention_s,
                hour_retention_s=self.config.hour_retention_s,
                span_retention_s=self.config.span_retention_s,
            )
            if not self._stopped:  # never at exit: `holter report` catches up instead
                # long windows (reports) read these merges; a bounded step (30 to 70 µs a
                # point), so a backlog is caught up over several maintenances
                q.refresh_summaries(store, max_rows=_SUMMARY_ROWS_PER_MAINTAIN)

    def _after_fork_child(self) -> None:
        self._store_lock = threading.RLock()
        if self._store is not None:
            _abandoned.append(self._store.conn)
            self._store.abandon()
            self._store = None
        self._parent_run = self.run_id
        self.run_id = None
        self._started_ns = _clock.time_ns()
        self.registry.reset_after_fork()
        self.tracer.reset_after_fork()
        self.collector.after_fork_child()
        if self._alerting is not None:
            self._alerting.after_fork_child()
        if not self._stopped:
            self.collector.start()

    def __repr__(self) -> str:
        return f"Monitor(app={self.config.app!r}, db={self.config.db!r}, run={self.run_id})"


def _is_config_problem(exc: StoreError) -> bool:
    """A wrong path or a newer schema: the user must fix it, so ``start`` raises."""
    return isinstance(exc, NotAStore | SchemaError)


def _stop_at_exit(ref: weakref.ref[Monitor]) -> None:
    monitor = ref()
    if monitor is not None:
        try:
            monitor.stop()
        except Exception as exc:  # pragma: no cover - exit must never fail because of us
            logger.debug("holter: stop at exit failed: %r", exc)
        if _exit_state.get("keyboard_interrupt"):
            _rearm_keyboard_interrupt_exit()


def _rearm_keyboard_interrupt_exit() -> None:
    """Let a program ended by an unhandled KeyboardInterrupt still die of SIGINT.

    CPython remembers an unhandled KeyboardInterrupt in a flag and, once finalized,
    ends the process by SIGINT (so shells see Ctrl-C). Every ``exec`` of a string
    clears that flag, and the final flush may run some (a module imported at exit
    builds dataclasses with ``exec``); an ``exec`` that raises KeyboardInterrupt sets
    it again, which is all this does.
    """
    with contextlib.suppress(KeyboardInterrupt):
        exec("raise KeyboardInterrupt")  # a constant string, see above


_FORK_LOCK_TIMEOUT_S = 2.0
_held_for_fork: list[Any] = []
_abandoned: list[Any] = []  # inherited connections a child must never close


def _before_fork() -> None:
    """Let no store transaction be in flight across a fork, and give the run an id first.

    SQLite's lock state lives in process memory: a child forked mid-transaction could
    never write. Holding each store's lock across the fork prevents that; creating the
    run first lets the child record its parent.
    """
    for monitor in list(_live):
        store = monitor._store
        if store is None or monitor._stopped:
            continue
        # The run first, before the store lock: _ensure_run takes the monitor's lock and
        # then the store's, so taking them in the other order here could deadlock with a
        # thread creating the run at the same moment.
        try:
            monitor._ensure_run(store)
        except Exception as exc:
            logger.debug("holter: could not create the run before fork: %r", exc)
        if store.lock.acquire(timeout=_FORK_LOCK_TIMEOUT_S):
            _held_for_fork.append(store.lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_for_fork.clear()  # the child gets fresh stores and locks
    for monitor in list(_live):
        try:
            monitor._after_fork_child()
        except Exception as exc:  # pragma: no cover
            logger.debug("holter: after-fork reset failed: %r", exc)


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    _exit_state["status"] = 1
    _exit_state["keyboard_interrupt"] = issubclass(exc_type, KeyboardInterrupt)
    _exit_state["info"] = f"{exc_type.__name__}: {exc}"[:500]
    _previous_excepthook(exc_type, exc, tb)


def _exit(status: object = None) -> None:
    code = 0 if status is None else status if isinstance(status, int) else 1
    _exit_state["status"] = code
    if not isinstance(status, int | None):
        _exit_state["info"] = str(status)[:500]
    _previous_exit(status)


_previous_excepthook = sys.excepthook
_previous_exit = sys.exit
_hooks_installed = {"done": False}


def install_exit_hooks() -> None:
    """Record the exit status of the program: uncaught exceptions and ``sys.exit`` codes.

    ``raise SystemExit(n)`` without ``sys.exit`` cannot be seen from inside the process
    and is recorded as a clean exit (``holter run`` records the true status).
    """
    global _previous_excepthook, _previous_exit
    if _hooks_installed["done"]:
        return
    _hooks_installed["done"] = True
    _exit_state["status"] = 0
    _previous_excepthook = sys.excepthook
    _previous_exit = sys.exit
    sys.excepthook = _excepthook
    sys.exit = _exit


def _patch_multiprocessing() -> None:
    """Flush in multiprocessing children, which end with ``os._exit`` (no atexit)."""
    if _hooks_installed.get("multiprocessing"):
        return
    _hooks_installed["multiprocessing"] = True
    import multiprocessing.process as mp_process

    original = mp_process.BaseProcess._bootstrap

    @functools.wraps(original)
    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        _flush_on_terminate()
        try:
            return original(self, *args, **kwargs)
        finally:
            _terminate_state["stopping"] = True
            for monitor in list(_live):
                with contextlib.suppress(Exception):
                    monitor.stop()
            deferred = _terminate_state["deferred"]
            if deferred is not None:  # terminate() came during this final flush: die of it now
                signal.signal(deferred, signal.SIG_DFL)
                os.kill(os.getpid(), deferred)

    mp_process.BaseProcess._bootstrap = _bootstrap  # type: ignore[method-assign]


def _flush_on_terminate() -> None:
    """In a multiprocessing child: flush before dying of ``terminate()``'s SIGTERM.

    ``Pool.__exit__`` and ``Pool.terminate()`` end their workers with SIGTERM, whose
    default action kills them before any flush: whatever they recorded since their last
    flush would be lost. Where SIGTERM still has its default action, holter's handler
    stops the monitors from a helper thread (so a lock held by the interrupted code
    costs at most the exit budget, never a hang), then restores the default action and
    re-sends SIGTERM: the process still dies of it, with the same exit code.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _terminate_handler)
    except (ValueError, OSError, AttributeError):  # no signals here: nothing to do
        return


_terminate_state: dict[str, Any] = {"stopping": False, "deferred": None}


def _terminate_handler(signum: int, _frame: Any) -> None:
    if _terminate_state["stopping"]:
        # the child is already in its final flush (a pool worker that got its sentinel)
        # and this handler interrupted it: let it finish, then die of the signal
        _terminate_state["deferred"] = signum
        return
    budget = max((m.config.exit_timeout_s for m in list(_live)), default=0.0)

    def stop_all() -> None:
        for monitor in list(_live):
            with contextlib.suppress(Exception):
                monitor.stop(exit_status=128 + signum, exit_info="killed by SIGTERM")

    if budget > 0:
        helper = threading.Thread(target=stop_all, name="holter-terminate", daemon=True)
        helper.start()
        helper.join(budget + 0.1)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


__all__ = ["Instrument", "Monitor", "install_exit_hooks"]
