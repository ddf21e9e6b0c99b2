"""Pushing to remote-write and OTLP endpoints, without ever disturbing the program.

Two ways, sharing the encoders and the HTTP transport:

* :class:`CollectorPusher` — in a program (``holter.start(export=["otlp"])``,
  ``mon.export("otlp")``): the collector hands it the batches each flush wrote (an
  after-flush hook: no work on the program's threads); a sender thread of its own
  encodes and POSTs them with a timeout, retries with backoff, and a bounded backlog
  (past ``max_backlog`` points and spans the oldest batches are dropped and counted).
* :class:`StorePusher` — ``holter export remote-write|otlp [--follow]``: reads what the
  store holds after the target's cursor (:mod:`holter.store.cursors`), sends it, and
  moves the cursor only once the endpoint accepted it, so a restart resumes where the
  last run stopped and nothing is sent twice. The store is the backlog.

Failures are counted in ``holter.export.failed{target=..., reason=...}`` (each failed
try: ``refused``, ``timeout``, ``http_503``...), points and spans given up in
``holter.export.dropped{target=...}``, and those delivered in ``holter.export.sent``.
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from holter._clock import time_ns
from holter.core.tracing import clean_tag
from holter.errors import ConfigError
from holter.export import otlp
from holter.export.http import (
    DEFAULT_TIMEOUT_S,
    ExportFailed,
    HttpTarget,
    RetryPolicy,
    redact,
    send_with_retries,
)
from holter.model import Batch, SeriesKey
from holter.store import cursors
from holter.store import query as q
from holter.store.query import ExportPoint
from holter.store.sqlite import Store

logger = logging.getLogger("holter")

TARGETS = ("otlp", "remote-write")
DEFAULT_MAX_BACKLOG = 100_000
"""Points and spans an in-process pusher keeps while its endpoint is unreachable."""
MAX_HEAD_TRIES = 20
"""Tries of one in-process request before it is dropped (about 8 minutes of backoff)."""
_NS = 1_000_000_000


# -- in a program: after each flush ------------------------------------------------------


class CollectorPusher:
    """Pushes what a monitor's flushes wrote to an OTLP endpoint, from its own thread.

    Attach it with ``monitor.after_flush_hooks.append(pusher.after_flush)`` (what
    ``Monitor.export`` does). Safe across ``fork``: a child starts with an empty backlog
    and its own thread; what the parent recorded is the parent's to send.
    """

    def __init__(
        self,
        monitor: Any,
        *,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        temporality: str = "cumulative",
        compression: str | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        traces: bool = True,
        policy: RetryPolicy | None = None,
        final_timeout_s: float | None = None,
    ) -> None:
        if max_backlog < 1:
            raise ConfigError(f"max_backlog must be at least 1, got {max_backlog!r}")
        self._monitor = weakref.ref(monitor)
        config = monitor.config
        self.endpoints = otlp.resolve_endpoints(endpoint, headers=headers, compression=compression)
        self.metrics_target = HttpTarget(self.endpoints.metrics_url, headers=self.endpoints.headers,
                                         timeout_s=timeout_s, what="OTLP metrics")
        self.traces_target = HttpTarget(self.endpoints.traces_url, headers=self.endpoints.headers,
                                        timeout_s=timeout_s, what="OTLP traces")
        self.name = "otlp"
        self.traces = traces
        self.temporality = temporality
        self.max_backlog = max_backlog
        self.policy = policy or RetryPolicy()
        self.final_timeout_s = (
            config.exit_timeout_s if final_timeout_s is None else final_timeout_s
        )
        self._app = config.app
        self._version = config.version
        self._failed = monitor.counter("holter.export.failed")
        self._dropped = monitor.counter("holter.export.dropped")
        self._sent = monitor.counter("holter.export.sent")
        otlp._pb()  # fail now, in the caller, when opentelemetry-proto is missing
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: collections.deque[Batch] = collections.deque()
        self._queued = 0
        self._absorb: list[Batch] = []
        self._head: list[tuple[str, HttpTarget, bytes, dict[str, str], int]] = []
        self._head_tries = 0
        self._failures = 0
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._series_ids: dict[SeriesKey, int] = {}
        self._metrics = otlp.MetricsEncoder(
            resource_of=self._resource, start_of=self._start, temporality=self.temporality
        )
        self._spans = otlp.SpansEncoder(resource_of=self._resource)
        self.last_error: str | None = None

    # -- the collector's side ----------------------------------------------------------

    def after_flush(self, batches: list[Batch]) -> None:
        """Queue the batches just written (runs in the collector thread; never blocks long)."""
        if os.getpid() != self._pid:
            self._setup()  # a forked child: the backlog and thread were the parent's
        dropped = 0
        with self._cond:
            for batch in batches:
                if batch.size:
                    self._queue.append(batch)
                    self._queued += batch.size
            while self._queued > self.max_backlog and len(self._queue) > 1:
                old = self._queue.popleft()
                self._queued -= old.size
                self._absorb.append(old)
                dropped += old.size
            self._cond.notify_all()
        if dropped:
            self._count(self._dropped, dropped, reason="backlog_full")
        self._ensure_thread()
        monitor = self._monitor()
        if monitor is None or monitor._stopped:
            # the final flush: give the sender a moment, unless the endpoint is known down
            if self._failures == 0:
                self.wait_idle(self.final_timeout_s)
            self.close(0.0)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until everything queued was sent (or given up); True if it was."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while self._queue or self._head or self._busy:
                remaining = deadline - time.monotonic()
                thread = self._thread
                if remaining <= 0 or self._failures or thread is None or not thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the sender thread (what is still queued is not sent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and timeout_s > 0:
            thread.join(timeout_s)

    def _ensure_thread(self) -> None:
        thread = self._thread
        if (thread is None or not thread.is_alive()) and not self._stopping:
            self._thread = threading.Thread(target=self._run, name="holter-export-otlp",
                                            daemon=True)
            self._thread.start()

    # -- the sender thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._head or self._absorb or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                absorb, self._absorb = self._absorb, []
                batch = None
                if not self._head and self._queue:
                    batch = self._queue.popleft()
                    self._queued -= batch.size
                self._busy = True
            try:
                for old in absorb:
                    self._metrics.absorb(self._points(old))
                if batch is not None:
                    self._head = self._encode(batch)
                    self._head_tries = 0
                self._send_head()
            except Exception as exc:  # a bug must never kill the thread or the program
                logger.warning("holter OTLP export dropped a batch: %r", exc)
                self._count(self._failed, 1, reason="encode_error")
                self._head = []
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send_head(self) -> None:
        while self._head:
            signal, target, body, headers, n = self._head[0]
            try:
                answer = target.post(body, otlp.CONTENT_TYPE, headers=headers)
            except ExportFailed as exc:
                self._head_tries += 1
                self._count(self._failed, 1, reason=exc.reason)
                self._note_error(exc)
                if not exc.retryable or self._head_tries >= MAX_HEAD_TRIES:
                    self._head.pop(0)
                    self._head_tries = 0
                    self._count(self._dropped, n, reason=exc.reason)
                    continue
                self._failures += 1
                delay = self.policy.delay(self._failures, exc.retry_after_s)
                with self._cond:
                    self._cond.notify_all()  # waiters see the failure and stop waiting
                    self._cond.wait_for(lambda: self._stopping, delay)
                return
            self._head.pop(0)
            self._head_tries = 0
            if self._failures:
                logger.warning("holter: %s accepts exports again", target.display)
            self._failures = 0
            self.last_error = None
            rejected, message = otlp.rejected_points(self._metrics.pb, answer, signal)
            if rejected:
                self._count(self._dropped, rejected, reason="rejected")
                logger.warning("holter: %s rejected %d %s: %s", target.display, rejected,
                               "points" if signal == "metrics" else "spans", message)
            if n - rejected > 0:
                self._count(self._sent, n - rejected)

    def _encode(self, batch: Batch) -> list[tuple[str, HttpTarget, bytes, dict[str, str], int]]:
        out = []
        comp = self.endpoints.compression
        body, n = self._metrics.encode(self._points(batch))
        if body is not None:
            data, headers = otlp.compress(body, comp)
            out.append(("metrics", self.metrics_target, data, headers, n))
        if self.traces and batch.spans:
            body, n = self._spans.encode(span_dicts(batch.spans, self._run_id()))
            if body is not None:
                data, headers = otlp.compress(body, comp)
                out.append(("traces", self.traces_target, data, headers, n))
        return out

    def _points(self, batch: Batch) -> list[ExportPoint]:
        run_id = self._run_id()
        out = []
        for p in batch.points:
            key = p.key
            sid = self._series_ids.get(key)
            if sid is None:
                sid = self._series_ids[key] = -len(self._series_ids) - 1
            out.append(ExportPoint(
                0, sid, key.name, key.kind, key.unit, dict(key.tags), run_id, self._app,
                p.t_start_ns, p.t_end_ns, p.count, p.total, p.min, p.max, p.last, p.m2, p.sketch,
            ))
        return out

    def _run_id(self) -> int:
        monitor = self._monitor()
        return int(monitor.run_id or 0) if monitor is not None else 0

    def _resource(self, run_id: int) -> dict[str, object]:
        return resource_attributes(self._app, self._version, os.getpid(), socket.gethostname(),
                                   platform.python_version(), run_id=run_id)

    def _start(self, run_id: int) -> int:
        monitor = self._monitor()
        return int(monitor._started_ns) if monitor is not None else 0

    def _count(self, counter: Any, n: int, **tags: str) -> None:
        try:
            counter.inc(n, target=self.name, **tags)
        except Exception as exc:  # pragma: no cover - counting never fails the sender
            logger.debug("holter: could not count an export event: %r", exc)

    def _note_error(self, exc: ExportFailed) -> None:
        text = str(exc)
        if text != self.last_error:
            logger.warning("holter OTLP export: %s; retrying with backoff, counted in "
                           "holter.export.failed{target=otlp}", text)
        self.last_error = text


def resource_attributes(app: str, version: str | None, pid: int, host: str, python: str,
                        *, run_id: int) -> dict[str, object]:
    """The OTLP resource of a run."""
    out: dict[str, object] = {
        "service.name": app,
        "process.pid": int(pid),
        "host.name": host,
        "process.runtime.name": "cpython" if platform.python_implementation() == "CPython"
        else platform.python_implementation().lower(),
        "process.runtime.version": python,
        "telemetry.sdk.name": "holter",
        "holter.run_id": int(run_id),
    }
    if version:
        out["service.version"] = version
    return out


def span_dicts(records: Sequence[tuple[Any, ...]], run_id: int) -> list[dict[str, Any]]:
    """Span records of a batch as the dicts :func:`holter.store.query.trace` returns."""
    out = []
    for (trace, span, parent, name, start, duration, status, etype, emsg, tags, events,
         remote) in records:
        out.append({
            "trace_id": f"{trace:032x}",
            "span_id": f"{span:016x}",
            "parent_id": f"{parent:016x}" if parent is not None else None,
            "name": name,
            "start_ns": start,
            "duration_ns": duration,
            "status": status,
            "error_type": etype,
            "error_message": emsg,
            "tags": {str(k): clean_tag(v) for k, v in (tags or {}).items()},
            "events": [
                {"t_ns": t, "message": str(message),
                 **({"fields": {str(k): clean_tag(v) for k, v in fields.items()}}
                    if fields else {})}
                for t, message, fields in (events or ())
            ],
            "remote_parent": bool(remote) and parent is not None,
            "run_id": run_id,
        })
    return out


# -- from the store: the CLI ---------------------------------------------------------------


@dataclass(slots=True)
class PushResult:
    """What one :meth:`StorePusher.push` sent."""

    points: int = 0
    samples: int = 0
    spans: int = 0
    requests: int = 0
    dropped: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"points": self.points, "samples": self.samples, "spans": self.spans,
                "requests": self.requests, "dropped": self.dropped, "failures": self.failures,
                "errors": list(self.errors)}


class StorePusher:
    """Sends a store's points (and, for OTLP, spans) after a cursor, moving the cursor.

    ``kind`` is ``"remote-write"`` (``url`` is the receiver's write URL) or ``"otlp"``
    (``url`` is the base endpoint, default ``$OTEL_EXPORTER_OTLP_ENDPOINT`` or
    http://127.0.0.1:4318). On the first push (no cursor yet) only points and spans newer
    than ``since_s`` are sent; later pushes send everything after the cursor.
    ``on_failure(reason)`` and ``on_dropped(n, reason)`` are told about each failed try
    and each point or span given up.
    """

    def __init__(
        self,
        store: Store,
        kind: str,
        url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        since_s: float | None = 3600.0,
        labels: Mapping[str, str] | None = None,
        temporality: str = "cumulative",
        compression: str | None = None,
        traces: bool = True,
        policy: RetryPolicy | None = None,
        page: int = 2000,
        on_failure: Callable[[str], None] | None = None,
        on_dropped: Callable[[int, str], None] | None = None,
    ) -> None:
        if kind not in TARGETS:
            raise ConfigError(f"unknown export target {kind!r}: use one of {', '.join(TARGETS)}")
        self.store = store
        self.kind = kind
        self.policy = policy or RetryPolicy()
        self.page = page
        self.since_s = since_s
        self.on_failure = on_failure
        self.on_dropped = on_dropped
        self.traces = traces and kind == "otlp"
        self._runs: dict[int, Any] = {}
        if kind == "remote-write":
            if not url:
                raise ConfigError("remote write needs the receiver's URL, for example "
                                  "http://127.0.0.1:9090/api/v1/write")
            self.target = HttpTarget(url, headers=headers, timeout_s=timeout_s,
                                     what="remote-write")
            self.name = f"remote-write {self.target.display}"
            from holter.export.remote_write import RemoteWriteEncoder, snappy_compress

            snappy_compress(b"")  # fail now when no snappy library is installed
            self.cursor = cursors.load(store, self.name)
            self.encoder: Any = RemoteWriteEncoder(
                labels=labels, last_ts=self.cursor.state.setdefault("last_ts", {})
            )
        else:
            self.endpoints = otlp.resolve_endpoints(url, headers=headers, compression=compression)
            self.target = HttpTarget(self.endpoints.metrics_url, headers=self.endpoints.headers,
                                     timeout_s=timeout_s, what="OTLP metrics")
            self.traces_target = HttpTarget(self.endpoints.traces_url,
                                            headers=self.endpoints.headers,
                                            timeout_s=timeout_s, what="OTLP traces")
            self.name = f"otlp {redact(self.endpoints.metrics_url.removesuffix(otlp.METRICS_PATH))}"
            self.cursor = cursors.load(store, self.name)
            self.encoder = otlp.MetricsEncoder(resource_of=self._resource, start_of=self._start,
                                               temporality=temporality)
            self.spans_encoder = otlp.SpansEncoder(resource_of=self._resource)
        self._fresh = self.cursor.updated_ns is None
        self._pending: tuple[str, bytes, dict[str, str], int, int] | None = None

    @property
    def label(self) -> str:
        """The ``target`` tag of the failure counters: ``remote-write`` or ``otlp``."""
        return self.kind

    def reset(self) -> bool:
        """Forget this target's cursor (the next push starts afresh); True if one existed."""
        self.cursor = cursors.Cursor(self.name)
        if self.kind == "remote-write":
            self.encoder.last_ts = self.cursor.state.setdefault("last_ts", {})
        self._fresh = True
        return cursors.delete(self.store, self.name)

    def push(self, stop: threading.Event | None = None) -> PushResult:
        """Send everything after the cursor.

        Raises :class:`ExportFailed` when a request still failed after the retries (the
        cursor then stays before what failed, and the next push sends it first).
        """
        stop = stop or threading.Event()
        result = PushResult()
        since_ns = None
        if self._fresh and self.since_s is not None:
            since_ns = time_ns() - int(self.since_s * _NS)
            self.cursor.points_rowid = max(q.first_point_rowid_after(self.store, since_ns) - 1, 0)
            self.cursor.span_chunk_id = max(q.first_span_chunk_after(self.store, since_ns) - 1, 0)
        self._fresh = False
        if self._pending is not None:
            self._send_pending(result, stop)
        while not stop.is_set():
            rows, newest = q.points_after(self.store, self.cursor.points_rowid, limit=self.page)
            if newest < self.cursor.points_rowid:  # retention emptied the table: ids restart
                self.cursor.points_rowid = 0
                continue
            if not rows:
                break
            missing = self.encoder.missing_bases(rows)
            if missing:
                totals = q.point_totals(
                    self.store, by=self.encoder.group_by, upto_rowid=self.cursor.points_rowid,
                    pairs=missing, sketches=self.kind == "otlp",
                )
                self.encoder.set_bases(missing, totals)
            if self.kind == "remote-write":
                body, n = self.encoder.encode(rows, since_ns)
                headers = dict(_remote_write_headers())
            else:
                old = [r for r in rows if since_ns is not None and r.t_end_ns <= since_ns]
                if old:  # before --since: not sent, but part of the cumulative totals
                    self.encoder.absorb(old)
                    rows_sent = [r for r in rows if r.t_end_ns > since_ns]  # type: ignore[operator]
                else:
                    rows_sent = rows
                body, n = self.encoder.encode(rows_sent)
                headers = {}
                if body is not None:
                    body, headers = otlp.compress(body, self.endpoints.compression)
            result.points += len(rows)
            self._pending = ("metrics", body or b"", headers, n, rows[-1].rowid)
            if body is None:
                self._advance("metrics", rows[-1].rowid)
                self._pending = None
                continue
            self._send_pending(result, stop)
        while self.traces and not stop.is_set():
            chunks, newest = q.span_chunks_after(self.store, self.cursor.span_chunk_id)
            if newest < self.cursor.span_chunk_id:
                self.cursor.span_chunk_id = 0
                continue
            if not chunks:
                break
            spans: list[dict[str, Any]] = []
            for _chunk_id, run_id, decoded in chunks:
                if decoded is None:
                    result.dropped += 1
                    self._tell_dropped(1, "bad_chunk")
                    continue
                for span in decoded:
                    if since_ns is None or span["start_ns"] > since_ns:
                        span["run_id"] = run_id
                        spans.append(span)
            body, n = self.spans_encoder.encode(spans)
            last = chunks[-1][0]
            if body is None:
                self._advance("traces", last)
                continue
            body, headers = otlp.compress(body, self.endpoints.compression)
            self._pending = ("traces", body, headers, n, last)
            self._send_pending(result, stop)
        return result

    def _send_pending(self, result: PushResult, stop: threading.Event) -> None:
        assert self._pending is not None
        signal, body, headers, n, last = self._pending
        target = self.target if signal == "metrics" else self.traces_target
        content_type = "application/x-protobuf"

        def failed(exc: ExportFailed) -> None:
            result.failures += 1
            result.errors.append(str(exc))
            if self.on_failure is not None:
                self.on_failure(exc.reason)

        try:
            answer = send_with_retries(
                lambda: target.post(body, content_type, headers=headers), self.policy,
                on_failure=failed, stop=stop,
            )
        except ExportFailed as exc:
            if exc.retryable:
                raise  # keep the request pending: the next push tries it first
            result.dropped += n
            self._tell_dropped(n, exc.reason)
            answer = b""
        else:
            result.requests += 1
            if signal == "metrics":
                result.samples += n
            else:
                result.spans += n
            if self.kind == "otlp":
                rejected, _message = otlp.rejected_points(self.encoder.pb, answer, signal)
                if rejected:
                    result.dropped += rejected
                    self._tell_dropped(rejected, "rejected")
        self._advance(signal, last)
        self._pending = None

    def _advance(self, signal: str, last: int) -> None:
        if signal == "metrics":
            self.cursor.points_rowid = last
        else:
            self.cursor.span_chunk_id = last
        cursors.save(self.store, self.cursor)

    def _tell_dropped(self, n: int, reason: str) -> None:
        if self.on_dropped is not None:
            self.on_dropped(n, reason)

    def follow(
        self,
        interval_s: float,
        stop: threading.Event,
        on_push: Callable[[PushResult | ExportFailed], None] | None = None,
    ) -> None:
        """Push every ``interval_s`` until ``stop`` is set.

        Failures back off (up to the policy's longest wait) and are retried, never lost.
        """
        failures = 0
        while not stop.is_set():
            try:
                outcome: PushResult | ExportFailed = self.push(stop)
                failures = 0
                wait = interval_s
            except ExportFailed as exc:
                outcome = exc
                failures += 1
                wait = max(self.policy.delay(failures, exc.retry_after_s), interval_s)
            if on_push is not None:
                on_push(outcome)
            stop.wait(wait)

    def _run(self, run_id: int) -> Any:
        run = self._runs.get(run_id)
        if run is None:
            self._runs = {r.id: r for r in q.runs(self.store)}
            run = self._runs.get(run_id)
        return run

    def _resource(self, run_id: int) -> dict[str, object]:
        run = self._run(run_id)
        if run is None:
            return {"service.name": "unknown", "holter.run_id": int(run_id)}
        return resource_attributes(run.app, run.version, run.pid, run.host, run.python,
                                   run_id=run.id)

    def _start(self, run_id: int) -> int:
        run = self._run(run_id)
        return int(run.started_ns) if run is not None else 0


def _remote_write_headers() -> dict[str, str]:
    from holter.export.remote_write import HEADERS

    return HEADERS


def attach(monitor: Any, target: str = "otlp", **options: Any) -> CollectorPusher:
    """Build the pusher of ``target`` for ``monitor`` and hook it after each flush."""
    if target != "otlp":
        raise ConfigError(
            f"in-process export target {target!r} is not supported: use 'otlp' (for "
            "Prometheus, scrape mon.serve_prometheus() or run `holter export remote-write`)"
        )
    pusher = CollectorPusher(monitor, **options)
    monitor.after_flush_hooks.append(pusher.after_flush)
    return pusher
