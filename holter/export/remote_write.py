"""Prometheus remote write 1.0: stored points as a snappy-compressed protobuf WriteRequest.

The message is small and fixed (``prometheus/prompb/remote.proto`` and ``types.proto``:
``WriteRequest{timeseries=1}``, ``TimeSeries{labels=1, samples=2}``, ``Label{name=1,
value=2}``, ``Sample{value=1 double, timestamp=2 int64 ms}``), so it is encoded here
directly; snappy (block format) comes from ``cramjam`` (or ``python-snappy``), imported
when the first request is built.

What is sent, per app (label ``app``) and tag set, with the names of the scrape
exposition (:mod:`holter.export.names`), at each point's interval end:

* counters: ``name_total``, cumulative over every run of the app (the same value the
  scrape endpoint shows);
* gauges: ``name``, the point's last value;
* histograms: ``name{quantile=...}`` of the point's own interval (0.5, 0.9, 0.95,
  0.99), and ``name_sum``/``name_count`` cumulative.

Prometheus refuses a sample that is not newer than the last one of its series, so each
series's last timestamp is remembered (in the export cursor's state) and a point that
arrives late is sent 1 ms after it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from holter.core.sketch import Sketch
from holter.errors import ConfigError
from holter.export.names import APP_LABEL, NameMapper, label_name, labels_of
from holter.export.prometheus import QUANTILES
from holter.store.query import ExportPoint, PointTotals

CONTENT_TYPE = "application/x-protobuf"
HEADERS = {
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
_DOUBLE = struct.Struct("<d")


# -- protobuf wire format -----------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_timeseries(
    labels: Sequence[tuple[str, str]], samples: Sequence[tuple[float, int]]
) -> bytes:
    """One ``TimeSeries``: labels (sorted by name) and ``(value, timestamp ms)`` samples."""
    parts = [
        _field(1, _field(1, name.encode()) + _field(2, value.encode()))
        for name, value in sorted(labels)
    ]
    for value, ts in samples:
        parts.append(_field(2, b"\x09" + _DOUBLE.pack(value) + b"\x10" + _varint(int(ts))))
    return b"".join(parts)


def encode_write_request(
    series: Iterable[tuple[Sequence[tuple[str, str]], Sequence[tuple[float, int]]]],
) -> bytes:
    """A ``WriteRequest`` (uncompressed) of ``(labels, samples)`` pairs."""
    return b"".join(_field(1, encode_timeseries(labels, samples)) for labels, samples in series)


def snappy_compress(data: bytes) -> bytes:
    """Snappy block format (what remote write uses), from cramjam or python-snappy."""
    try:
        import cramjam
    except ImportError:
        try:
            import snappy  # python-snappy
        except ImportError:
            raise ConfigError(
                "remote write needs snappy compression: install it with "
                "pip install 'holter[prometheus]' (it brings cramjam)"
            ) from None
        return bytes(snappy.compress(data))
    return bytes(cramjam.snappy.compress_raw(data))


# -- points to samples --------------------------------------------------------------------


class RemoteWriteEncoder:
    """Turns stored points into remote-write requests, keeping cumulative totals.

    Counter and histogram totals continue from ``bases`` (what was recorded before the
    first point this encoder sees of a series, from :func:`holter.store.query.point_totals`
    grouped by app). ``last_ts`` maps ``"series id|app"`` to the last timestamp sent (ms)
    and is saved with the export cursor.
    """

    group_by = "app"

    def __init__(
        self,
        mapper: NameMapper | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        last_ts: dict[str, int] | None = None,
        quantiles: Sequence[float] = QUANTILES,
    ) -> None:
        self.mapper = mapper or NameMapper("summary")
        self.extra_labels = {label_name(k): str(v) for k, v in (labels or {}).items()}
        self.last_ts: dict[str, int] = last_ts if last_ts is not None else {}
        self.quantiles = tuple(quantiles)
        self._cum: dict[tuple[int, str], list[float]] = {}

    def missing_bases(self, points: Iterable[ExportPoint]) -> set[tuple[int, str]]:
        """(series id, app) pairs of counters and histograms with no running total yet."""
        return {
            (p.series_id, p.app) for p in points
            if p.kind != "gauge" and (p.series_id, p.app) not in self._cum
        }

    def set_bases(self, pairs: Iterable[tuple[int, str]],
                  totals: Mapping[tuple[int, Any], PointTotals]) -> None:
        """Start the running totals of ``pairs`` at ``totals`` (zero where absent)."""
        for pair in pairs:
            t = totals.get(pair)
            self._cum[pair] = [t.count, t.total] if t is not None else [0.0, 0.0]

    def encode(
        self, points: Sequence[ExportPoint], since_ns: int | None = None
    ) -> tuple[bytes | None, int]:
        """The compressed WriteRequest of ``points`` (None if empty) and its sample count.

        Points that ended at or before ``since_ns`` are not sent but still move totals.
        """
        self.mapper.update((p.name, p.kind, p.unit) for p in points)
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, int]]] = {}
        n = 0
        for p in sorted(points, key=lambda p: (p.t_end_ns, p.rowid)):
            pair = (p.series_id, p.app)
            cum = self._cum.get(pair)
            if p.kind != "gauge":
                if cum is None:
                    cum = self._cum[pair] = [0.0, 0.0]
                cum[0] += p.count or 0.0
                cum[1] += p.total or 0.0
            if since_ns is not None and p.t_end_ns <= since_ns:
                continue
            key = f"{p.series_id}|{p.app}"
            ts = p.t_end_ns // 1_000_000
            last = self.last_ts.get(key)
            if last is not None and ts <= last:
                ts = last + 1
            fam = self.mapper.family(p.name, p.kind, p.unit)
            labels = {**self.extra_labels, **labels_of(p.tags), APP_LABEL: p.app}
            base = [(k, v) for k, v in labels.items() if v != ""]
            samples: list[tuple[str, list[tuple[str, str]], float]] = []
            if p.kind == "counter":
                samples.append((f"{fam.name}_total", base, cum[1]))  # type: ignore[index]
            elif p.kind == "gauge":
                if p.last is None:
                    continue
                samples.append((fam.name, base, p.last))
            else:
                if p.sketch:
                    values = Sketch.from_bytes(p.sketch).quantiles(self.quantiles, p.min, p.max)
                    for quantile, value in zip(self.quantiles, values, strict=True):
                        if value is not None:
                            samples.append((fam.name, [*base, ("quantile", repr(quantile))],
                                            value))
                samples.append((f"{fam.name}_sum", base, cum[1]))  # type: ignore[index]
                samples.append((f"{fam.name}_count", base, cum[0]))  # type: ignore[index]
            for name, labelled, value in samples:
                full = tuple(sorted([("__name__", name), *labelled]))
                series.setdefault(full, []).append((float(value), ts))
                n += 1
            self.last_ts[key] = ts
        if not series:
            return None, 0
        return snappy_compress(encode_write_request(series.items())), n
