"""Prometheus exposition built from the store, and the ``/metrics`` server.

Everything comes from the store, so a CLI tool that ran for two seconds an hour ago is
as visible as a service that is running now. Per app (label ``app``) and tag set:

* counters: ``name_total``, the cumulative increase over every run of the app;
* gauges: the newest value recorded;
* histograms: summaries — ``name{quantile="0.5|0.9|0.95|0.99"}`` over the last
  ``window`` (10 minutes by default; NaN when nothing was observed in it), with
  ``name_sum`` and ``name_count`` cumulative over every run — or, with
  ``histograms="histogram"``, classic Prometheus histograms whose ``_bucket{le=...}``
  counts come from the merged sketch (exact at powers of two, otherwise within one
  sketch bucket, 0.54 %, of ``le``).

Names follow :mod:`holter.export.names`. Both text formats are written: 0.0.4 and, when
the scraper asks for it (``Accept: application/openmetrics-text``), OpenMetrics 1.0.

The state is kept per (series, app) and brought up to date at each scrape from the
points written since the previous one (:func:`holter.store.query.points_after`), so a
scrape reads only what is new.
"""

from __future__ import annotations

import collections
import gzip
import hmac
import ipaddress
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from holter import _clock
from holter.core.sketch import Sketch, key_of, value_of
from holter.errors import ConfigError, HolterError
from holter.export.names import (
    APP_LABEL,
    Family,
    NameMapper,
    escape_help,
    escape_label_value,
    format_value,
    labels_of,
)
from holter.model import SeriesInfo
from holter.store import query as q
from holter.store.sqlite import Store

logger = logging.getLogger("holter")

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
"""Quantiles of the summaries."""
DEFAULT_WINDOW_S = 600.0
"""Summary quantiles cover the last 10 minutes of points."""
DEFAULT_PORT = 9464
"""The port OpenTelemetry's Prometheus exporter uses, and so holter's."""
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_PAGE = 20_000
_NS = 1_000_000_000


@dataclass(slots=True)
class _State:
    """What one (series, app) pair has recorded, kept up to date by :meth:`Exposition.refresh`."""

    info: SeriesInfo
    app: str
    count: float = 0.0
    total: float = 0.0
    min: float | None = None
    max: float | None = None
    last: float | None = None
    last_t_ns: int = -1
    sketch: Sketch | None = None
    recent: collections.deque[tuple[int, bytes, float | None, float | None]] = field(
        default_factory=collections.deque
    )
    merged: tuple[Sketch, float | None, float | None] | None = None


class Exposition:
    """The store as Prometheus exposition text; call :meth:`render` at each scrape.

    ``store`` is an open :class:`Store` or a path (opened read-only on first use; a
    store that does not exist yet renders as an empty, valid exposition).
    """

    def __init__(
        self,
        store: Store | str,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        histograms: str = "summary",
        buckets: Sequence[float] | None = None,
        quantiles: Sequence[float] = QUANTILES,
    ) -> None:
        if histograms not in ("summary", "histogram"):
            raise ConfigError(
                f"bad histogram mode {histograms!r}: use 'summary' (quantiles) or 'histogram' "
                "(classic buckets)"
            )
        if not window_s > 0:
            raise ConfigError(f"summary window must be positive seconds, got {window_s!r}")
        for value in buckets or ():
            if not math.isfinite(value):
                raise ConfigError(f"bucket bounds must be finite numbers, got {value!r}")
        self._store = store if isinstance(store, Store) else None
        self._path = store.path if isinstance(store, Store) else str(store)
        self._own_store = not isinstance(store, Store)
        self.window_ns = int(window_s * _NS)
        self.histograms = histograms
        self.buckets = sorted(set(buckets)) if buckets else None
        self.quantiles = tuple(quantiles)
        self.mapper = NameMapper(histograms)
        self._states: dict[tuple[int, str], _State] = {}
        self._cursor = 0
        self._ready = False
        self._lock = threading.Lock()

    # -- reading the store -----------------------------------------------------------

    def _open(self) -> Store | None:
        if self._store is None:
            if not os.path.exists(self._path):
                return None  # nothing recorded yet: an empty exposition
            self._store = Store.open(self._path, create=False)
        return self._store

    def close(self) -> None:
        """Close the store connection this exposition opened itself."""
        with self._lock:
            if self._own_store and self._store is not None:
                self._store.close()
                self._store = None

    def refresh(self) -> None:
        """Read what was written since the last refresh (everything, the first time)."""
        store = self._open()
        if store is None:
            return
        if not self._ready:
            self._load(store)
            return
        while True:
            rows, newest = q.points_after(store, self._cursor, limit=_PAGE)
            if newest < self._cursor:  # retention emptied the table; row ids restarted
                self._load(store)
                return
            for row in rows:
                self._apply(row)
            if rows:
                self._cursor = rows[-1].rowid
            if len(rows) < _PAGE:
                return

    def _load(self, store: Store) -> None:
        self._states.clear()
        upto = q.newest_point_rowid(store)
        infos = q.series_by_id(store)
        totals = q.point_totals(store, by="app", upto_rowid=upto,
                                sketches=self.histograms == "histogram")
        for (sid, app), t in totals.items():
            info = infos.get(sid)
            if info is None:  # pragma: no cover - a point always has its series
                continue
            state = self._states[(sid, app)] = _State(info, app)
            state.count, state.total, state.min, state.max = t.count, t.total, t.min, t.max
            state.last = t.last
            state.last_t_ns = t.last_t_end_ns if t.last_t_end_ns is not None else -1
            state.sketch = t.sketch
        since = _clock.time_ns() - self.window_ns
        for row in q.points_since(store, since, upto_rowid=upto, kind="histogram"):
            state = self._states.get((row.series_id, row.app))
            if state is not None and row.sketch:
                state.recent.append((row.t_end_ns, row.sketch, row.min, row.max))
        self.mapper.update((s.info.name, s.info.kind, s.info.unit) for s in self._states.values())
        self._cursor = upto
        self._ready = True

    def _apply(self, row: q.ExportPoint) -> None:
        key = (row.series_id, row.app)
        state = self._states.get(key)
        if state is None:
            info = SeriesInfo(row.series_id, row.name, row.kind, row.unit, row.tags, 0, None, None)
            state = self._states[key] = _State(info, row.app)
        kind = row.kind
        if kind == "counter":
            state.total += row.total or 0.0
        elif kind == "gauge":
            if row.t_end_ns >= state.last_t_ns and row.last is not None:
                state.last = row.last
                state.last_t_ns = row.t_end_ns
        else:
            state.count += row.count or 0.0
            state.total += row.total or 0.0
            if row.min is not None:
                state.min = row.min if state.min is None else min(state.min, row.min)
            if row.max is not None:
                state.max = row.max if state.max is None else max(state.max, row.max)
            if row.sketch:
                if self.histograms == "histogram":
                    if state.sketch is None:
                        state.sketch = Sketch()
                    state.sketch.merge(Sketch.from_bytes(row.sketch))
                state.recent.append((row.t_end_ns, row.sketch, row.min, row.max))
                state.merged = None

    # -- writing the text ------------------------------------------------------------

    def render(self, openmetrics: bool = False) -> str:
        """Bring the state up to date and return the exposition text."""
        with self._lock:
            self.refresh()
            return self._render(openmetrics)

    def _render(self, openmetrics: bool) -> str:
        now = _clock.time_ns()
        by_family: dict[Family, list[_State]] = {}
        metrics: dict[Family, tuple[str, str, str]] = {}
        for state in self._states.values():
            info = state.info
            fam = self.mapper.family(info.name, info.kind, info.unit)
            by_family.setdefault(fam, []).append(state)
            metrics.setdefault(fam, (info.name, info.kind, info.unit))
        lines: list[str] = []
        for fam in sorted(by_family, key=lambda f: f.name):
            states = sorted(by_family[fam], key=_label_key)
            name, kind, unit = metrics[fam]
            help_text = escape_help(
                f"holter {kind} {name}" + (f" ({unit})" if unit else "")
            )
            type_name = fam.name if openmetrics or fam.kind != "counter" else f"{fam.name}_total"
            lines.append(f"# HELP {type_name} {help_text}")
            lines.append(f"# TYPE {type_name} {fam.kind}")
            if openmetrics and fam.unit_word:
                lines.append(f"# UNIT {fam.name} {fam.unit_word}")
            for state in states:
                labels = _labels(state)
                if fam.kind == "counter":
                    lines.append(f"{fam.name}_total{_fmt(labels)} {format_value(state.total)}")
                elif fam.kind == "gauge":
                    value = state.last if state.last is not None else math.nan
                    lines.append(f"{fam.name}{_fmt(labels)} {format_value(value)}")
                elif fam.kind == "summary":
                    for quantile, value in zip(self.quantiles, self._quantiles(state, now),
                                               strict=True):
                        labelled = [*labels, ("quantile", _float_text(quantile))]
                        shown = value if value is not None else math.nan
                        lines.append(f"{fam.name}{_fmt(labelled)} {format_value(shown)}")
                    lines.append(f"{fam.name}_sum{_fmt(labels)} {format_value(state.total)}")
                    lines.append(f"{fam.name}_count{_fmt(labels)} {format_value(state.count)}")
                else:
                    for bound, n in self._buckets(state):
                        labelled = [*labels, ("le", _float_text(bound))]
                        lines.append(f"{fam.name}_bucket{_fmt(labelled)} {format_value(n)}")
                    lines.append(f"{fam.name}_sum{_fmt(labels)} {format_value(state.total)}")
                    lines.append(f"{fam.name}_count{_fmt(labels)} {format_value(state.count)}")
        if openmetrics:
            lines.append("# EOF")
        return "\n".join(lines) + "\n" if lines else ""

    def _quantiles(self, state: _State, now_ns: int) -> list[float | None]:
        recent = state.recent
        cut = now_ns - self.window_ns
        while recent and recent[0][0] <= cut:
            recent.popleft()
            state.merged = None
        if not recent:
            return [None] * len(self.quantiles)
        if state.merged is None:
            sketch = Sketch()
            lo = hi = None
            for _t, blob, rmin, rmax in recent:
                sketch.merge(Sketch.from_bytes(blob))
                if rmin is not None:
                    lo = rmin if lo is None else min(lo, rmin)
                if rmax is not None:
                    hi = rmax if hi is None else max(hi, rmax)
            state.merged = (sketch, lo, hi)
        sketch, lo, hi = state.merged
        return sketch.quantiles(self.quantiles, lo, hi)

    def _buckets(self, state: _State) -> list[tuple[float, float]]:
        sketch = state.sketch or Sketch()
        bounds = self.buckets if self.buckets is not None else _power_of_two_bounds(sketch)
        out = [(bound, min(cumulative_count(sketch, bound), state.count)) for bound in bounds]
        out.append((math.inf, state.count))
        return out


def cumulative_count(sketch: Sketch, le: float) -> float:
    """How many values of ``sketch`` are ≤ ``le`` (exact when ``le`` is ±2^k or 0).

    Otherwise the bucket holding ``le`` counts when ``le`` is at or above its midpoint.
    """
    if le >= 0:
        n = float(sum(sketch.neg.values()) + sketch.zero)
        if le == 0:
            return n
        edge = key_of(le)
        exact = 2.0 ** (edge / 64) == le
        for k, c in sketch.pos.items():
            if k < edge or (k == edge and (exact or le >= value_of(k))):
                n += c
        return n
    edge = key_of(-le)
    exact = 2.0 ** (edge / 64) == -le
    n = 0.0
    for k, c in sketch.neg.items():  # -v <= le  <=>  v >= -le
        if k > edge or (k == edge and (exact or -le <= value_of(k))):
            n += c
    return n


def _power_of_two_bounds(sketch: Sketch) -> list[float]:
    """``le`` bounds at the powers of two covering the sketch's values (at most 64 + 1)."""
    bounds = [0.0] if sketch.neg or sketch.zero else []
    if sketch.pos:
        low_key, high_key = min(sketch.pos), max(sketch.pos)
        stop = math.ceil(high_key / 64)  # 2**stop is at or above the highest value
        start = max(math.floor((low_key - 1) / 64), stop - 63)
        bounds.extend(2.0**e for e in range(start, stop + 1))
    return bounds


def _labels(state: _State) -> list[tuple[str, str]]:
    return [(APP_LABEL, state.app), *sorted(labels_of(state.info.tags).items())]


def _label_key(state: _State) -> list[tuple[str, str]]:
    return _labels(state)


def _fmt(labels: Sequence[tuple[str, str]]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels) + "}"


def _float_text(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# -- the /metrics server ------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MetricsServer:
    """An HTTP server answering ``GET /metrics`` with :class:`Exposition` text.

    It binds ``host`` (127.0.0.1 by default; anything else logs a warning, or passes it
    to ``warn``, since every metric becomes readable from the network) on ``port`` (0
    picks a free port). With a ``token``, requests must carry ``Authorization: Bearer
    <token>`` (401 otherwise).
    Runs in a daemon thread after :meth:`start`; :meth:`stop` ends it.
    """

    def __init__(
        self,
        exposition: Exposition,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"bad port {port!r}: use a number from 1 to 65535 (0: any free)")
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise ConfigError("bad bearer token: it must be non-empty and contain no spaces")
        self.exposition = exposition
        self.host = host
        self.token = token
        self.warning: str | None = None
        if not is_loopback(host):
            self.warning = (
                f"holter: /metrics listens on {host}:{port}, reachable from other machines: "
                "anyone who can connect reads every metric"
                + ("" if token else "; pass a bearer token (--token, or token=) to require one")
            )
            (warn or logger.warning)(self.warning)
        handler = _handler_class(self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                "--port (0 picks a free one) or stop what uses it"
            ) from None
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False
        self._state_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        """Serve in a daemon thread; returns self."""
        with self._state_lock:
            if self._thread is None and not self._serving and not self._stopped:
                self._serving = True
                self._thread = threading.Thread(
                    target=self._server.serve_forever, name="holter-metrics", daemon=True
                )
                self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or KeyboardInterrupt)."""
        with self._state_lock:
            if self._serving or self._stopped:
                return
            self._serving = True
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the listening socket and the store (idempotent)."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        if serving:
            self._server.shutdown()  # returns once the serving loop has ended
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self.exposition.close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_class(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "holter"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if server.token is not None and not _authorised(
                self.headers.get("Authorization"), server.token
            ):
                self._send(401, b"unauthorised: send Authorization: Bearer <token>\n",
                           "text/plain; charset=utf-8",
                           {"WWW-Authenticate": 'Bearer realm="holter"'})
                return
            if path in ("/", ""):
                self._send(200, b"holter: metrics at /metrics\n", "text/plain; charset=utf-8")
                return
            if path != "/metrics":
                self._send(404, b"not found: metrics are at /metrics\n",
                           "text/plain; charset=utf-8")
                return
            accept = self.headers.get("Accept") or ""
            openmetrics = "application/openmetrics-text" in accept
            try:
                text = server.exposition.render(openmetrics)
            except (HolterError, ValueError) as exc:
                self._send(503, f"holter could not read its store: {exc}\n".encode(),
                           "text/plain; charset=utf-8")
                return
            body = text.encode("utf-8")
            headers = {}
            if "gzip" in (self.headers.get("Accept-Encoding") or "") and len(body) > 1024:
                body = gzip.compress(body, 1)
                headers["Content-Encoding"] = "gzip"
            self._send(200, body, OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE,
                       headers)

        def _send(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("holter /metrics: " + format, *args)

    return Handler


def _authorised(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                              token.encode())


def serve(
    db: str,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    token: str | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    histograms: str = "summary",
    buckets: Sequence[float] | None = None,
) -> MetricsServer:
    """Start a :class:`MetricsServer` for the store at ``db`` in a daemon thread."""
    exposition = Exposition(db, window_s=window_s, histograms=histograms, buckets=buckets)
    return MetricsServer(exposition, host=host, port=port, token=token).start()
