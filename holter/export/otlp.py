"""OTLP/HTTP: holter's points and spans as OpenTelemetry protobuf requests.

The messages are the official ones (``opentelemetry-proto``, imported when an encoder
is built); the transport is :class:`holter.export.http.HttpTarget` (protobuf over HTTP
POST to ``/v1/metrics`` and ``/v1/traces``, gzip by default), so timeouts, retries and
failure counting are holter's own.

One resource per run: ``service.name`` (app), ``service.version``, ``process.pid``,
``host.name``, ``process.runtime.version`` and ``holter.run_id``. Scope ``holter``.

Metrics, names and units unchanged:

* counter → ``Sum`` (monotonic), cumulative per run by default (``start_time`` = the
  run's start) or delta (``start_time`` = the interval's start);
* gauge → ``Gauge`` with the interval's last value;
* histogram → ``ExponentialHistogram`` at scale 6: holter's sketch bucket ``k`` holds
  ``(2^((k-1)/64), 2^(k/64)]``, which is OTLP's bucket index ``k-1`` — the same
  boundaries, so counts, sum, min and max are sent without loss.

Spans: ids, parent, name, start and end, tags as attributes (typed), events with their
fields, status (``error`` → ``STATUS_CODE_ERROR`` with the message, and attribute
``error.type``; ``unfinished`` → unset, with attribute ``holter.status``), kind from a
``span.kind`` tag, and flags saying whether the parent is remote.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from holter._version import __version__
from holter.core.sketch import Sketch
from holter.errors import ConfigError
from holter.store.query import ExportPoint, PointTotals

CONTENT_TYPE = "application/x-protobuf"
DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
METRICS_PATH = "/v1/metrics"
TRACES_PATH = "/v1/traces"
SCALE = 6

OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""Base URL of the OTLP/HTTP receiver (``/v1/metrics`` and ``/v1/traces`` are appended)."""
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
"""Full URL for metrics (overrides the base endpoint)."""
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""Full URL for traces (overrides the base endpoint)."""
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
"""Extra headers, ``key=value,key2=value2`` (URL-encoded values), e.g. an API key."""
OTEL_EXPORTER_OTLP_COMPRESSION = "OTEL_EXPORTER_OTLP_COMPRESSION"
"""``gzip`` (holter's default) or ``none``."""

_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200
_SAMPLED = 0x01
_INT64 = (-(2**63), 2**63 - 1)


def _pb() -> Any:
    try:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.metrics.v1 import metrics_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2
    except ImportError:
        raise ConfigError(
            "OTLP export needs the OpenTelemetry protobuf messages: install them with "
            "pip install 'holter[otlp]'"
        ) from None

    class Proto:
        metrics_service = metrics_service_pb2
        trace_service = trace_service_pb2
        common = common_pb2
        metrics = metrics_pb2
        resource = resource_pb2
        trace = trace_pb2

    return Proto


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where OTLP requests go, with their headers and compression."""

    metrics_url: str
    traces_url: str
    headers: dict[str, str] = field(default_factory=dict)
    compression: str = "gzip"


def resolve_endpoints(
    endpoint: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    compression: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Endpoints:
    """The OTLP endpoints: arguments, then ``OTEL_EXPORTER_OTLP_*``, then 127.0.0.1:4318."""
    env = os.environ if environ is None else environ
    base = (endpoint or env.get(OTEL_EXPORTER_OTLP_ENDPOINT) or DEFAULT_ENDPOINT).rstrip("/")
    for suffix in (METRICS_PATH, TRACES_PATH):
        if base.endswith(suffix):  # a signal URL given as the base: use its root
            base = base[: -len(suffix)]
    metrics_url = (
        env.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) if endpoint is None else None
    ) or base + METRICS_PATH
    traces_url = (
        env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) if endpoint is None else None
    ) or base + TRACES_PATH
    merged = parse_headers(env.get(OTEL_EXPORTER_OTLP_HEADERS, ""))
    merged.update({str(k): str(v) for k, v in (headers or {}).items()})
    comp = (compression or env.get(OTEL_EXPORTER_OTLP_COMPRESSION) or "gzip").strip().lower()
    if comp not in ("gzip", "none"):
        raise ConfigError(f"bad OTLP compression {comp!r}: use 'gzip' or 'none'")
    return Endpoints(metrics_url, traces_url, merged, comp)


def parse_headers(text: str) -> dict[str, str]:
    """``key=value,key2=value2`` (values URL-encoded) → dict; malformed parts are skipped."""
    from urllib.parse import unquote

    out = {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


def compress(body: bytes, compression: str) -> tuple[bytes, dict[str, str]]:
    """The body to send and its ``Content-Encoding`` header."""
    if compression == "gzip":
        return gzip.compress(body, 6), {"Content-Encoding": "gzip"}
    return body, {}


# -- values -------------------------------------------------------------------------------


def any_value(pb: Any, value: object) -> Any:
    """An OTLP ``AnyValue`` of a tag or field value (bool, int, float, str; else its repr)."""
    av = pb.common.AnyValue()
    if isinstance(value, bool):
        av.bool_value = value
    elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        av.int_value = value
    elif isinstance(value, float):
        av.double_value = value
    elif isinstance(value, str):
        av.string_value = value
    elif isinstance(value, list | tuple):
        av.array_value.values.extend(any_value(pb, v) for v in value)
    else:
        av.string_value = repr(value)
    return av


def attributes(pb: Any, values: Mapping[str, object] | None) -> list[Any]:
    """``KeyValue`` list of a mapping, in key order."""
    return [
        pb.common.KeyValue(key=str(k), value=any_value(pb, v))
        for k, v in sorted((values or {}).items())
    ]


def sketch_buckets(pb: Any, store: Mapping[int, int], target: Any) -> None:
    """Fill an ExponentialHistogram ``Buckets`` from holter sketch buckets (key k → index k-1)."""
    if not store:
        return
    low = min(store)
    high = max(store)
    counts = [0] * (high - low + 1)
    for k, c in store.items():
        counts[k - low] = int(c)
    target.offset = low - 1
    target.bucket_counts.extend(counts)


# -- metrics ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Running:
    count: float = 0.0
    total: float = 0.0
    min: float | None = None
    max: float | None = None
    sketch: Sketch | None = None


class MetricsEncoder:
    """Turns points into ``ExportMetricsServiceRequest`` bodies.

    ``resource_of(run_id)`` gives a run's resource attributes and ``start_of(run_id)`` its
    start (ns), the start time of cumulative points. Cumulative totals continue from
    ``bases`` (per (series id, run id), from
    :func:`holter.store.query.point_totals` with ``by="run"``) set for pairs that
    :meth:`missing_bases` names; without bases they start at zero.
    """

    group_by = "run"

    def __init__(
        self,
        *,
        resource_of: Callable[[int], Mapping[str, object]],
        start_of: Callable[[int], int],
        temporality: str = "cumulative",
    ) -> None:
        if temporality not in ("cumulative", "delta"):
            raise ConfigError(
                f"bad temporality {temporality!r}: use 'cumulative' or 'delta'"
            )
        self.pb = _pb()
        self.resource_of = resource_of
        self.start_of = start_of
        self.temporality = temporality
        self._running: dict[tuple[int, int], _Running] = {}

    def missing_bases(self, points: Iterable[ExportPoint]) -> set[tuple[int, int]]:
        """(series id, run id) of counters and histograms without a running total yet."""
        if self.temporality == "delta":
            return set()
        return {
            (p.series_id, p.run_id) for p in points
            if p.kind != "gauge" and (p.series_id, p.run_id) not in self._running
        }

    def set_bases(self, pairs: Iterable[tuple[int, int]],
                  totals: Mapping[tuple[int, Any], PointTotals]) -> None:
        """Start the running totals of ``pairs`` at ``totals`` (zero where absent)."""
        for pair in pairs:
            t = totals.get(pair)
            running = self._running[pair] = _Running()
            if t is not None:
                running.count, running.total = t.count, t.total
                running.min, running.max = t.min, t.max
                running.sketch = t.sketch.copy() if t.sketch is not None else None

    def absorb(self, points: Iterable[ExportPoint]) -> None:
        """Add points to the running totals without sending them (they were dropped)."""
        for p in points:
            if p.kind != "gauge":
                self._advance(p)

    def _advance(self, p: ExportPoint) -> _Running:
        running = self._running.get((p.series_id, p.run_id))
        if running is None:
            running = self._running[(p.series_id, p.run_id)] = _Running()
        running.count += p.count or 0.0
        running.total += p.total or 0.0
        if p.kind == "histogram":
            if p.min is not None:
                running.min = p.min if running.min is None else min(running.min, p.min)
            if p.max is not None:
                running.max = p.max if running.max is None else max(running.max, p.max)
            if p.sketch:
                if running.sketch is None:
                    running.sketch = Sketch()
                running.sketch.merge(Sketch.from_bytes(p.sketch))
        return running

    def encode(self, points: Sequence[ExportPoint]) -> tuple[bytes | None, int]:
        """The serialised request for ``points`` (None if empty) and its data point count."""
        pb = self.pb
        cumulative = self.temporality == "cumulative"
        temporality = (
            pb.metrics.AGGREGATION_TEMPORALITY_CUMULATIVE if cumulative
            else pb.metrics.AGGREGATION_TEMPORALITY_DELTA
        )
        by_run: dict[int, dict[tuple[str, str, str], Any]] = {}
        n = 0
        for p in sorted(points, key=lambda p: (p.t_end_ns, p.rowid)):
            metrics = by_run.setdefault(p.run_id, {})
            metric = metrics.get((p.name, p.kind, p.unit))
            if metric is None:
                metric = metrics[(p.name, p.kind, p.unit)] = pb.metrics.Metric(
                    name=p.name, unit=p.unit or ""
                )
                if p.kind == "counter":
                    metric.sum.aggregation_temporality = temporality
                    metric.sum.is_monotonic = True
                elif p.kind == "histogram":
                    metric.exponential_histogram.aggregation_temporality = temporality
            attrs = attributes(pb, p.tags)
            if p.kind == "gauge":
                if p.last is None:
                    continue
                metric.gauge.data_points.add(
                    attributes=attrs, time_unix_nano=p.t_end_ns, as_double=float(p.last)
                )
            elif p.kind == "counter":
                running = self._advance(p) if cumulative else None
                metric.sum.data_points.add(
                    attributes=attrs,
                    start_time_unix_nano=self.start_of(p.run_id) if cumulative else p.t_start_ns,
                    time_unix_nano=p.t_end_ns,
                    as_double=float(running.total if running is not None else p.total or 0.0),
                )
            else:
                if cumulative:
                    running = self._advance(p)
                    count, total, lo, hi = running.count, running.total, running.min, running.max
                    sketch = running.sketch or Sketch()
                    start = self.start_of(p.run_id)
                else:
                    count, total, lo, hi = p.count or 0, p.total or 0.0, p.min, p.max
                    sketch = Sketch.from_bytes(p.sketch) if p.sketch else Sketch()
                    start = p.t_start_ns
                dp = metric.exponential_histogram.data_points.add(
                    attributes=attrs, start_time_unix_nano=start, time_unix_nano=p.t_end_ns,
                    count=int(count), sum=float(total), scale=SCALE, zero_count=int(sketch.zero),
                )
                if lo is not None:
                    dp.min = float(lo)
                if hi is not None:
                    dp.max = float(hi)
                sketch_buckets(pb, sketch.pos, dp.positive)
                sketch_buckets(pb, sketch.neg, dp.negative)
            n += 1
        if not n:
            return None, 0
        request = pb.metrics_service.ExportMetricsServiceRequest()
        for run_id in sorted(by_run):
            rm = request.resource_metrics.add()
            rm.resource.attributes.extend(attributes(pb, self.resource_of(run_id)))
            sm = rm.scope_metrics.add()
            sm.scope.name = "holter"
            sm.scope.version = __version__
            sm.metrics.extend(m for m in by_run[run_id].values() if _has_points(m))
        return request.SerializeToString(), n


def _has_points(metric: Any) -> bool:
    which = metric.WhichOneof("data")
    return which is not None and len(getattr(metric, which).data_points) > 0


def rejected_points(pb: Any, answer: bytes, signal: str) -> tuple[int, str]:
    """``partial_success`` of an OTLP answer: (rejected data points or spans, message)."""
    if not answer:
        return 0, ""
    try:
        if signal == "metrics":
            msg = pb.metrics_service.ExportMetricsServiceResponse.FromString(answer)
            return int(msg.partial_success.rejected_data_points), msg.partial_success.error_message
        msg = pb.trace_service.ExportTraceServiceResponse.FromString(answer)
        return int(msg.partial_success.rejected_spans), msg.partial_success.error_message
    except Exception:  # an answer that is not protobuf (a proxy's page): nothing rejected
        return 0, ""


# -- spans --------------------------------------------------------------------------------


class SpansEncoder:
    """Turns stored spans into ``ExportTraceServiceRequest`` bodies.

    Spans are dicts as :func:`holter.store.query.trace` gives them, with a ``run_id``.
    """

    def __init__(self, *, resource_of: Callable[[int], Mapping[str, object]]) -> None:
        self.pb = _pb()
        self.resource_of = resource_of

    def encode(self, spans: Sequence[Mapping[str, Any]]) -> tuple[bytes | None, int]:
        """The serialised request (None if there are no spans) and its span count."""
        if not spans:
            return None, 0
        pb = self.pb
        by_run: dict[int, list[Any]] = {}
        for s in spans:
            by_run.setdefault(int(s.get("run_id") or 0), []).append(self.span(s))
        request = pb.trace_service.ExportTraceServiceRequest()
        for run_id in sorted(by_run):
            rs = request.resource_spans.add()
            rs.resource.attributes.extend(attributes(pb, self.resource_of(run_id)))
            ss = rs.scope_spans.add()
            ss.scope.name = "holter"
            ss.scope.version = __version__
            ss.spans.extend(by_run[run_id])
        return request.SerializeToString(), len(spans)

    def span(self, s: Mapping[str, Any]) -> Any:
        """One OTLP ``Span``."""
        pb = self.pb
        tags = dict(s.get("tags") or {})
        status = s.get("status") or "ok"
        if status == "error" and s.get("error_type") and "error.type" not in tags:
            tags["error.type"] = s["error_type"]
        if status not in ("ok", "error"):
            tags.setdefault("holter.status", status)
        kind = _KINDS.get(str(tags.get("span.kind", "internal")).lower(), 1)
        flags = _SAMPLED | _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if s.get("remote_parent") else 0)
        out = pb.trace.Span(
            trace_id=bytes.fromhex(s["trace_id"]),
            span_id=bytes.fromhex(s["span_id"]),
            parent_span_id=bytes.fromhex(s["parent_id"]) if s.get("parent_id") else b"",
            flags=flags,
            name=str(s.get("name", "")),
            kind=kind,
            start_time_unix_nano=int(s["start_ns"]),
            end_time_unix_nano=int(s["start_ns"]) + int(s.get("duration_ns") or 0),
            attributes=attributes(pb, tags),
        )
        for event in s.get("events") or ():
            out.events.add(
                time_unix_nano=int(event["t_ns"]), name=str(event.get("message", "")),
                attributes=attributes(pb, event.get("fields")),
            )
        if status == "error":
            out.status.code = pb.trace.Status.STATUS_CODE_ERROR
            out.status.message = str(s.get("error_message") or "")
        return out
