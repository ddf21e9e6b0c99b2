"""``holter demo``: a realistic simulated CLI tool, recorded by holter and summarised.

For ``duration`` seconds a small "developer assistant" runs, recording everything with
holter's public API into the store:

* **tools** (``search``, ``read_file``, ``edit``, ``bash``) taken from a work queue by
  worker threads; each call is timed with ``mon.timed`` into ``tool.duration`` (ms)
  and counted in ``tool.runs{tool, status}``; each job is a trace (root span
  ``tool.<name>``, with the HTTP calls it makes as children);
* **HTTP calls** to a backend the demo serves itself on 127.0.0.1, recorded as
  ``http.client.duration`` (ms) and ``http.client.requests``, tagged with the route
  *template* (``/users/{id}``, never ``/users/42``) and the status;
* **sqlite queries** on the tool's own in-memory database (not the holter store),
  timed as ``db.query{table, op}`` (ms);
* a **queue** whose depth rises and falls with bursty arrivals (``queue.depth``, a
  callback gauge, and ``queue.wait``);
* an **injected latency spike** (``/users/{id}`` five times slower between 40 % and
  60 % of the run) and a **slow, bounded memory leak** (``cache.size``,
  ``process.rss``).

The live figures and the final summary are read back from the store through
:mod:`holter.store.query`, as any dashboard would: what the demo shows is what was
recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import math
import os
import queue
import random
import shlex
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import click

from holter._version import __version__
from holter.cli._options import console, default_db, fmt_num, fmt_tags, table
from holter.config import Config
from holter.core.tracing import format_traceparent, parse_traceparent
from holter.errors import ConfigError, HolterError, QueryError, StoreError
from holter.model import RunInfo, WindowStats
from holter.monitor import Monitor
from holter.store import query as q
from holter.store.sqlite import Store

APP = "holter-demo"
FLUSH_INTERVAL_S = 1.0
SPIKE_ROUTE = "/users/{id}"
SPIKE_WINDOW = (0.4, 0.6)
"""The spike's start and end, as fractions of the duration."""
SPIKE_FACTOR = 5.0
N_USERS = 400
N_FILES = 600
MISSING_USER_RATE = 0.03
"""Share of user ids the API poller asks for that do not exist (HTTP 404)."""
WORKERS = 2
JOBS_PER_S = 60.0
"""Mean arrival rate of jobs; it swings ±80 %, and jobs come in plans of 1 to
``MAX_PLAN`` at once, so the queue fills and drains."""
MAX_PLAN = 12
QUEUE_LIMIT = 500
LEAK_LIMIT_BYTES = 8 * 2**20
LEAK_CHUNK_BYTES = 128 * 2**10
TICK_S = 0.1
FIGURES_EVERY_S = 1.0
PLAIN_EVERY_S = 5.0
JOIN_TIMEOUT_S = 5.0
MIB = 2**20
WORDS = (
    "alpha", "buffer", "cache", "daemon", "event", "fixture", "gauge", "handler", "index",
    "journal", "kernel", "latency", "metric", "network", "offset", "parser", "query",
    "retry", "socket", "thread", "upload", "vector", "worker", "yield", "zone",
)


# -- timeline and latencies --------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """A lognormal latency: ``median_ms`` with spread ``sigma``, capped at ``cap`` × median."""

    median_ms: float
    sigma: float
    cap: float = 10.0

    def sample_s(self, rng: random.Random, factor: float = 1.0) -> float:
        """One latency in seconds, multiplied by ``factor``."""
        value = rng.lognormvariate(math.log(self.median_ms), self.sigma)
        return min(value, self.median_ms * self.cap) * factor / 1e3


@dataclass(frozen=True)
class Schedule:
    """The demo's timeline: its length, when it started, and the spike window."""

    duration_s: float
    start_mono: float
    start_wall: float

    @classmethod
    def begin(cls, duration_s: float) -> Schedule:
        """A timeline starting now."""
        return cls(duration_s, time.monotonic(), time.time())

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start_mono

    @property
    def spike_s(self) -> tuple[float, float]:
        """Start and end of the latency spike, in seconds from the start."""
        return SPIKE_WINDOW[0] * self.duration_s, SPIKE_WINDOW[1] * self.duration_s

    def in_spike(self) -> bool:
        """True while the latency spike is on."""
        lo, hi = self.spike_s
        return lo <= self.elapsed() < hi

    def wall(self, offset_s: float) -> float:
        """Epoch seconds of an offset from the start."""
        return self.start_wall + offset_s


# -- the simulated backend (HTTP server on 127.0.0.1) -------------------------------------


@dataclass(frozen=True)
class Route:
    """One backend route: its template, latency and share of server errors."""

    template: str
    latency: Latency
    error_rate: float = 0.0


ROUTES: dict[str, Route] = {
    r.template: r
    for r in (
        Route("/users", Latency(8.0, 0.4)),
        Route("/users/{id}", Latency(4.0, 0.3, cap=4.0)),
        Route("/search", Latency(15.0, 0.6), error_rate=0.02),
    )
}


def match_route(path: str) -> tuple[str, dict[str, str]] | None:
    """The route template of a request path and its parameters, or None.

    ``/users/42?x=1`` → ``("/users/{id}", {"id": "42"})``.
    """
    parts = [p for p in urlsplit(path).path.split("/") if p]
    if parts == ["users"]:
        return "/users", {}
    if len(parts) == 2 and parts[0] == "users" and parts[1].isdigit():
        return "/users/{id}", {"id": parts[1]}
    if parts == ["search"]:
        return "/search", {}
    return None


def backend_response(
    template: str, params: dict[str, str], query: dict[str, list[str]], rng: random.Random
) -> tuple[int, dict[str, Any]]:
    """Status and JSON body the backend answers for a matched route."""
    route = ROUTES[template]
    if route.error_rate and rng.random() < route.error_rate:
        return 500, {"error": "upstream timed out"}
    if template == "/users":
        return 200, {"users": [{"id": i, "name": f"user{i}"} for i in range(1, 21)]}
    if template == "/users/{id}":
        user_id = int(params["id"])
        if not 1 <= user_id <= N_USERS:
            return 404, {"error": f"no user {user_id}"}
        return 200, {"id": user_id, "name": f"user{user_id}", "admin": user_id % 17 == 0}
    term = (query.get("q") or [""])[0]
    hits = sorted(rng.sample(range(1, N_FILES + 1), 5))
    return 200, {"q": term, "hits": hits}


class _Backend(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose request threads are joined when it closes."""

    daemon_threads = False
    block_on_close = True


def _make_handler(
    monitor: Monitor, schedule: Schedule, rng: random.Random
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Serves the backend's routes after a simulated latency, in a server span."""

        server_version = "holter-demo"
        timeout = 5.0  # a silent client cannot hold a request thread forever

        def do_GET(self) -> None:
            """Answer one GET."""
            found = match_route(self.path)
            if found is None:
                self._reply(404, {"error": "no such route"})
                return
            template, params = found
            context = parse_traceparent(
                self.headers.get("traceparent"), self.headers.get("tracestate")
            )
            with monitor.span("http.server", context=context, route=template) as span:
                slow = template == SPIKE_ROUTE and schedule.in_spike()
                time.sleep(ROUTES[template].latency.sample_s(rng, SPIKE_FACTOR if slow else 1.0))
                query = parse_qs(urlsplit(self.path).query)
                status, body = backend_response(template, params, query, rng)
                span.set_tag("status", status)
                if status >= 500:
                    span.set_error("HTTPError", f"HTTP {status}")
                self._reply(status, body)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the terminal quiet: no line per request."""

    return Handler


class DemoServer:
    """The simulated backend: a stdlib ThreadingHTTPServer on 127.0.0.1, port chosen by the OS."""

    def __init__(self, monitor: Monitor, schedule: Schedule, rng: random.Random) -> None:
        self._httpd = _Backend(("127.0.0.1", 0), _make_handler(monitor, schedule, rng))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="holter-demo-server", daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        """Host and port it listens on."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving, wait for requests in flight, release the port."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(JOIN_TIMEOUT_S)
        self._httpd.server_close()


# -- the tool's HTTP client ---------------------------------------------------------------


class ApiClient:
    """The tool's HTTP client: GETs by route template, timed and counted per template."""

    def __init__(self, monitor: Monitor, address: tuple[str, int], timeout_s: float = 5.0) -> None:
        self._monitor = monitor
        self._address = address
        self._timeout_s = timeout_s
        self._duration = monitor.histogram(
            "http.client.duration", unit="ms", description="HTTP calls to the backend."
        )
        self._requests = monitor.counter(
            "http.client.requests", description="HTTP calls, by route template and status."
        )

    def get(
        self,
        template: str,
        params: dict[str, object] | None = None,
        query: dict[str, str] | None = None,
    ) -> int:
        """GET ``template`` filled with ``params``; the HTTP status, or 0 when it failed."""
        path = template.format(**(params or {}))
        if query:
            path += "?" + urlencode(query)
        status = 0
        with self._monitor.span("http.client", method="GET", route=template) as span:
            started = time.perf_counter()
            try:
                status = self._send(path, {"traceparent": format_traceparent(span)})
            except (OSError, http.client.HTTPException) as exc:
                span.set_error(exc)
            elapsed_ms = (time.perf_counter() - started) * 1e3
            label = str(status) if status else "error"
            self._duration.observe(elapsed_ms, method="GET", route=template, status=label)
            self._requests.inc(method="GET", route=template, status=label)
            span.set_tag("status", label)
            if status >= 500:
                span.set_error("HTTPError", f"HTTP {status}")
        return status

    def _send(self, path: str, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection(*self._address, timeout=self._timeout_s)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()


# -- the tool's own sqlite database -------------------------------------------------------


class AppDatabase:
    """The simulated tool's own database (sqlite in memory; not the holter store).

    Every statement is timed into ``db.query`` (ms), tagged with its table and kind.
    """

    def __init__(self, monitor: Monitor, rng: random.Random) -> None:
        self._monitor = monitor
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._seed(rng)

    def _seed(self, rng: random.Random) -> None:
        conn = self._conn
        conn.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
            "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL, "
            "owner_id INTEGER NOT NULL, content TEXT NOT NULL);"
            "CREATE TABLE edits (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, "
            "at REAL NOT NULL, size INTEGER NOT NULL);"
        )
        conn.executemany(
            "INSERT INTO users (id, name) VALUES (?, ?)",
            [(i, f"user{i}") for i in range(1, N_USERS + 1)],
        )
        conn.executemany(
            "INSERT INTO files (id, path, owner_id, content) VALUES (?, ?, ?, ?)",
            [
                (i, f"src/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{i}.py",
                 rng.randint(1, N_USERS), " ".join(rng.choices(WORDS, k=rng.randint(80, 400))))
                for i in range(1, N_FILES + 1)
            ],
        )

    def _run(self, table: str, op: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock, self._monitor.timer("db.query", unit="ms", table=table, op=op):
            return self._conn.execute(sql, args).fetchall()

    def read_file(self, file_id: int) -> tuple[int, str] | None:
        """Owner and content of a file, or None."""
        rows = self._run("files", "select",
                         "SELECT owner_id, content FROM files WHERE id = ?", (file_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def search(self, term: str) -> list[tuple[int, str]]:
        """Files whose content mentions ``term`` (a full scan, as LIKE does)."""
        return self._run("files", "scan",
                         "SELECT id, path FROM files WHERE content LIKE ? LIMIT 50",
                         (f"%{term}%",))

    def save_edit(self, file_id: int, content: str) -> int:
        """Store a file's new content and log the edit; the number of edits of that file."""
        self._run("files", "update", "UPDATE files SET content = ? WHERE id = ?",
                  (content, file_id))
        self._run("edits", "insert", "INSERT INTO edits (file_id, at, size) VALUES (?, ?, ?)",
                  (file_id, time.time(), len(content)))
        rows = self._run("edits", "count", "SELECT COUNT(*) FROM edits WHERE file_id = ?",
                         (file_id,))
        return int(rows[0][0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


# -- the tools ----------------------------------------------------------------------------


class ToolError(Exception):
    """A simulated tool failure: counted with ``status=error``, never raised out of the demo."""


READ_LATENCY = Latency(3.0, 0.5)
BASH_LATENCY = Latency(35.0, 0.8, cap=8.0)


class Toolbox:
    """The simulated CLI's tools; each call is timed with ``mon.timed`` and counted by status."""

    MIX: ClassVar[dict[str, float]] = {"search": 0.3, "read_file": 0.35, "edit": 0.2, "bash": 0.15}

    def __init__(
        self, monitor: Monitor, api: ApiClient, db: AppDatabase, rng: random.Random
    ) -> None:
        self._monitor = monitor
        self._api = api
        self._db = db
        self._rng = rng
        self._runs = monitor.counter("tool.runs", description="Tool executions, by status.")
        self._calls: dict[str, Callable[[], None]] = {
            name: monitor.timed("tool.duration", unit="ms", tool=name)(getattr(self, f"_{name}"))
            for name in self.MIX
        }

    def pick(self) -> str:
        """A tool name, drawn with the usual mix."""
        return self._rng.choices(list(self.MIX), weights=list(self.MIX.values()))[0]

    def run(self, name: str) -> bool:
        """Run one tool in its own trace; True if it succeeded."""
        with self._monitor.span(f"tool.{name}", tool=name) as span:
            try:
                self._calls[name]()
            except ToolError as exc:
                span.set_error(exc)
                self._runs.inc(tool=name, status="error")
                return False
        self._runs.inc(tool=name, status="ok")
        return True

    def _search(self) -> None:
        term = self._rng.choice(WORDS)
        status = self._api.get("/search", query={"q": term})
        if status != 200:
            raise ToolError(f"search backend answered HTTP {status}")
        hits = self._db.search(term)
        sorted(hits, key=lambda hit: (len(hit[1]), hit[0]))  # rank: a little CPU

    def _read_file(self) -> None:
        found = self._db.read_file(self._rng.randint(1, N_FILES))
        if found is None or self._rng.random() < 0.02:
            raise ToolError("no such file")
        data = found[1].encode()
        digest = b""
        for _ in range(self._rng.randint(5, 40)):  # "parse" it: some CPU
            digest = hashlib.sha256(digest + data).digest()
        time.sleep(READ_LATENCY.sample_s(self._rng))

    def _edit(self) -> None:
        file_id = self._rng.randint(1, N_FILES)
        found = self._db.read_file(file_id)
        if found is None:
            raise ToolError("no such file")
        owner, content = found
        status = self._api.get(SPIKE_ROUTE, {"id": owner})  # permission check
        if status != 200:
            raise ToolError(f"permission check answered HTTP {status}")
        self._db.save_edit(file_id, content + " " + self._rng.choice(WORDS))

    def _bash(self) -> None:
        n = int(self._rng.lognormvariate(math.log(20_000), 0.5))
        sum(i * i for i in range(n))  # the command's CPU time
        time.sleep(BASH_LATENCY.sample_s(self._rng))  # and its wall time
        if self._rng.random() < 0.05:
            raise ToolError("command exited with status 1")


# -- memory ------------------------------------------------------------------------------


def read_rss_bytes() -> float | None:
    """Resident set size of this process: ``/proc/self/statm``, else ``getrusage`` (peak)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return float(pages * os.sysconf("SC_PAGE_SIZE"))
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)


class LeakyCache:
    """A deliberate, bounded leak: a "cache" that only grows, up to ``limit`` bytes."""

    def __init__(self, monitor: Monitor, limit: int = LEAK_LIMIT_BYTES,
                 chunk: int = LEAK_CHUNK_BYTES) -> None:
        self._limit = limit
        self._chunk = chunk
        self._chunks: list[bytes] = []
        self._size = monitor.gauge("cache.size", unit="By", description="The leaky cache.")

    @property
    def size(self) -> int:
        """Bytes held."""
        return len(self._chunks) * self._chunk

    def fill_to(self, fraction: float) -> None:
        """Grow to ``fraction`` of the limit (never shrinks; touched memory, so RSS grows)."""
        target = min(max(fraction, 0.0), 1.0) * self._limit
        while self.size + self._chunk <= target:
            self._chunks.append(os.urandom(self._chunk))
        self._size.set(self.size)

    def clear(self) -> None:
        """Let the memory go (the demo is over)."""
        self._chunks.clear()


# -- the workload: threads ---------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One tool call waiting in the queue."""

    tool: str
    enqueued: float


class Workload:
    """The threads that drive the tool: a bursty job producer, workers and an API poller."""

    def __init__(
        self,
        monitor: Monitor,
        schedule: Schedule,
        toolbox: Toolbox,
        api: ApiClient,
        rng: random.Random,
    ) -> None:
        self._monitor = monitor
        self._schedule = schedule
        self._toolbox = toolbox
        self._api = api
        self._rng = rng
        self._stop = threading.Event()
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=QUEUE_LIMIT)
        # Sampled at each flush (fn) and set at each put/get, so min/max catch the bursts.
        self._depth = monitor.gauge(
            "queue.depth", description="Jobs waiting for a worker.", fn=self.jobs.qsize
        ).bind()
        self._wait = monitor.histogram("queue.wait", unit="ms",
                                       description="Time jobs waited in the queue.")
        self.failure: BaseException | None = None
        targets = [("producer", self._produce), ("api-poller", self._poll_api)]
        targets += [(f"worker-{i + 1}", self._work) for i in range(WORKERS)]
        self._threads = [
            threading.Thread(target=self._guard(fn), name=f"holter-demo-{name}", daemon=True)
            for name, fn in targets
        ]

    def start(self) -> None:
        """Start every thread."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[str]:
        """Stop and join every thread; the names of any still running (none, normally)."""
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(JOIN_TIMEOUT_S)
        return [t.name for t in self._threads if t.is_alive()]

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        """Run ``loop``; an unexpected error stops the demo and is re-raised by its owner."""

        def guarded() -> None:
            try:
                loop()
            except BaseException as exc:
                if self.failure is None:
                    self.failure = exc
                self._stop.set()

        return guarded

    def _arrival_rate(self) -> float:
        period = min(max(self._schedule.duration_s / 3, 2.0), 8.0)
        phase = 2 * math.pi * self._schedule.elapsed() / period
        return JOBS_PER_S * (1 + 0.8 * math.sin(phase))

    def _produce(self) -> None:
        """Plans of 1 to MAX_PLAN tool calls arrive at a rate that swings up and down."""
        mean_plan = (1 + MAX_PLAN) / 2
        while not self._stop.wait(
            self._rng.expovariate(max(self._arrival_rate() / mean_plan, 0.1))
        ):
            for _ in range(self._rng.randint(1, MAX_PLAN)):
                if not self._put(Job(self._toolbox.pick(), time.perf_counter())):
                    return

    def _put(self, job: Job) -> bool:
        """Queue ``job`` (waiting while the queue is full); False if the demo is stopping."""
        while not self._stop.is_set():
            try:
                self.jobs.put(job, timeout=TICK_S)
            except queue.Full:
                continue
            self._depth.set(self.jobs.qsize())
            return True
        return False

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.jobs.get(timeout=TICK_S)
            except queue.Empty:
                continue
            self._depth.set(self.jobs.qsize())
            self._wait.observe((time.perf_counter() - job.enqueued) * 1e3)
            self._toolbox.run(job.tool)

    def _poll_api(self) -> None:
        """The tool's background sync: list users, then fetch a few (some do not exist)."""
        top = round(N_USERS * (1 + MISSING_USER_RATE))
        while not self._stop.is_set():
            with self._monitor.span("sync.users"):  # one trace per sync round
                self._api.get("/users")
                for _ in range(3):
                    self._api.get(SPIKE_ROUTE, {"id": self._rng.randint(1, top)})
            self._stop.wait(self._rng.uniform(0.01, 0.05))


# -- live figures, read back from the store ----------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What the progress display shows, as last read from the store."""

    requests: float | None = None
    tool_runs: float | None = None
    db_queries: float | None = None
    queue_peak: float | None = None
    """The queue's highest depth over the last two flushes (it drains fast)."""
    rss: float | None = None

    def describe(self) -> str:
        """``requests 512 · tool runs 240 · ...`` (``-`` before the first flush)."""
        rss = f"{self.rss / MIB:.0f} MiB" if self.rss is not None else "-"
        return (
            f"requests {fmt_num(self.requests)} · tool runs {fmt_num(self.tool_runs)} · "
            f"db queries {fmt_num(self.db_queries)} · queue peak {fmt_num(self.queue_peak)} · "
            f"rss {rss}"
        )


class LiveFigures:
    """Reads the running demo's figures from the store through its own connection."""

    def __init__(self, path: str, monitor: Monitor, since_wall: float) -> None:
        self._path = path
        self._monitor = monitor
        self._since = since_wall - 1.0
        self._store: Store | None = None
        self.last = Figures()

    def read(self) -> Figures:
        """Fresh figures (or the last ones, if the store cannot be read right now)."""
        run = self._monitor.run_id
        if run is None:  # nothing flushed yet
            return self.last
        try:
            if self._store is None:
                self._store = Store.open(self._path, create=False)
            self.last = Figures(
                requests=self._value(run, "http.client.requests", "count"),
                tool_runs=self._value(run, "tool.runs", "count"),
                db_queries=self._value(run, "db.query", "count"),
                queue_peak=self._recent_peak(run, "queue.depth"),
                rss=self._value(run, "process.rss", "last"),
            )
        except HolterError:
            pass
        return self.last

    def _value(self, run: int, name: str, field: str) -> float | None:
        assert self._store is not None
        try:
            stats = q.stats(self._store, name, None, start=self._since, run=run)
        except QueryError:  # not flushed yet
            return None
        value = getattr(stats, field)
        return float(value) if value is not None else None

    def _recent_peak(self, run: int, name: str) -> float | None:
        """The highest value of gauge ``name`` over the last two flushes."""
        assert self._store is not None
        try:
            stats = q.stats(self._store, name, 2 * FLUSH_INTERVAL_S, run=run)
        except QueryError:
            return None
        return stats.max

    def close(self) -> None:
        """Close the reading connection."""
        if self._store is not None:
            self._store.close()
            self._store = None


# -- progress display --------------------------------------------------------------------


class ProgressView(Protocol):
    """How the demo shows it is alive: a rich bar, a line now and then, or nothing."""

    def start(self, header: str) -> None:
        """Show the header and start displaying."""

    def update(self, elapsed: float, figures: Figures, spike: bool) -> None:
        """Show the current state."""

    def stop(self) -> None:
        """Stop displaying (before the summary)."""


class QuietView:
    """``--quiet``: nothing until the summary."""

    def start(self, header: str) -> None:
        """Show nothing."""

    def update(self, elapsed: float, figures: Figures, spike: bool) -> None:
        """Show nothing."""

    def stop(self) -> None:
        """Nothing to stop."""


class PlainView:
    """Output is not a terminal: the header, then one line every few seconds."""

    def __init__(self, duration_s: float, every_s: float = PLAIN_EVERY_S) -> None:
        self._duration_s = duration_s
        self._every_s = every_s
        self._next = every_s

    def start(self, header: str) -> None:
        """Print the header."""
        click.echo(header)

    def update(self, elapsed: float, figures: Figures, spike: bool) -> None:
        """Print a line when the next multiple of ``every_s`` is reached."""
        if elapsed < self._next:
            return
        self._next = (elapsed // self._every_s + 1) * self._every_s
        note = "  [latency spike on]" if spike else ""
        click.echo(f"  {elapsed:4.0f}/{self._duration_s:.0f} s  {figures.describe()}{note}")

    def stop(self) -> None:
        """Nothing to stop."""


class RichView:
    """A terminal: a progress bar and, below it, the live figures, redrawn in place."""

    def __init__(self, duration_s: float) -> None:
        from rich.live import Live
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

        self._console = console()
        self._progress = Progress(
            SpinnerColumn(),
            BarColumn(bar_width=30),
            TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"),
            TextColumn("{task.fields[flag]}"),
            console=self._console,
        )
        self._task = self._progress.add_task("demo", total=duration_s, flag="")
        self._live = Live(self._frame("starting…"), console=self._console,
                          refresh_per_second=8)

    def _frame(self, figures: str) -> Any:
        from rich.console import Group
        from rich.text import Text

        return Group(self._progress, Text("  " + figures, style="dim"))

    def start(self, header: str) -> None:
        """Print the header and start the live display."""
        from rich.markup import escape

        self._console.print(escape(header))
        self._live.start()

    def update(self, elapsed: float, figures: Figures, spike: bool) -> None:
        """Move the bar and refresh the figures."""
        flag = "[bold red]⚡ latency spike injected[/]" if spike else ""
        self._progress.update(self._task, completed=elapsed, flag=flag)
        self._live.update(self._frame(figures.describe()))

    def stop(self) -> None:
        """Leave the last frame on screen."""
        self._live.stop()


def make_view(quiet: bool, duration_s: float) -> ProgressView:
    """The view that suits the output: quiet, plain (not a terminal) or rich."""
    if quiet:
        return QuietView()
    if not sys.stdout.isatty():
        return PlainView(duration_s)
    return RichView(duration_s)


# -- the session --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How the recording went."""

    run_id: int | None
    schedule: Schedule
    elapsed_s: float
    interrupted: bool
    flushed: bool


class _Parts:
    """The running pieces, created one by one so that teardown stops only what started."""

    def __init__(self) -> None:
        self.server: DemoServer | None = None
        self.db: AppDatabase | None = None
        self.workload: Workload | None = None
        self.leak: LeakyCache | None = None
        self.figures: LiveFigures | None = None


class DemoSession:
    """One recording: start the monitor and the workload, show progress, stop cleanly."""

    def __init__(
        self, path: str, duration_s: float, view: ProgressView, seed: int | None = None
    ) -> None:
        self._path = path
        self._duration_s = duration_s
        self._view = view
        self._rng = random.Random(seed)
        self._parts = _Parts()

    def run(self) -> Outcome:
        """Record for the duration (or until Ctrl-C); always stop and flush."""
        monitor = Monitor(Config.resolve(
            app=APP, db=self._path, flush_interval=FLUSH_INTERVAL_S, version=__version__
        ))
        schedule = Schedule.begin(self._duration_s)
        status, info = 1, None
        try:
            schedule = self._setup(monitor)
            self._loop(schedule)
            status = 0
        except KeyboardInterrupt:
            status, info = 130, "interrupted (Ctrl-C)"
        except BaseException as exc:
            info = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            elapsed = min(schedule.elapsed(), self._duration_s)
            flushed = self._teardown(monitor, status, info)
        return Outcome(monitor.run_id, schedule, elapsed, status == 130, flushed)

    def _setup(self, monitor: Monitor) -> Schedule:
        """Create every part, show the header, start the threads; the schedule starts now."""
        parts = self._parts
        rss = read_rss_bytes()
        if rss is not None:
            monitor.gauge("process.rss", unit="By", description="Resident memory.",
                          fn=lambda: read_rss_bytes() or 0.0)
        parts.leak = LeakyCache(monitor)
        parts.db = AppDatabase(monitor, self._rng)
        schedule = Schedule.begin(self._duration_s)
        parts.server = DemoServer(monitor, schedule, random.Random(self._rng.random()))
        parts.server.start()
        api = ApiClient(monitor, parts.server.address)
        toolbox = Toolbox(monitor, api, parts.db, self._rng)
        parts.workload = Workload(monitor, schedule, toolbox, api, self._rng)
        parts.figures = LiveFigures(self._path, monitor, schedule.start_wall)
        host, port = parts.server.address
        self._view.start(
            f"holter demo: recording a simulated CLI tool for {self._duration_s:g} s into "
            f"{self._path} (backend on http://{host}:{port}; Ctrl-C stops early)"
        )
        parts.workload.start()
        return schedule

    def _loop(self, schedule: Schedule) -> None:
        """Until the end: grow the leak, read the figures back, refresh the view."""
        parts = self._parts
        assert parts.workload is not None and parts.leak is not None
        assert parts.figures is not None
        next_read = 0.0
        figures = Figures()
        while (elapsed := schedule.elapsed()) < self._duration_s:
            if parts.workload.failure is not None:
                raise parts.workload.failure
            parts.leak.fill_to(elapsed / self._duration_s)
            if elapsed >= next_read:
                figures = parts.figures.read()
                next_read = elapsed + FIGURES_EVERY_S
            self._view.update(elapsed, figures, schedule.in_spike())
            time.sleep(min(TICK_S, max(self._duration_s - elapsed, 0.0)))
        self._view.update(self._duration_s, figures, False)

    def _teardown(self, monitor: Monitor, status: int, info: str | None) -> bool:
        """Stop the threads, the server and the database, then flush and end the run."""
        parts = self._parts
        with contextlib.suppress(Exception):
            self._view.stop()
        stuck = parts.workload.stop() if parts.workload is not None else []
        if parts.server is not None:
            parts.server.close()
        if parts.db is not None:
            parts.db.close()
        if parts.figures is not None:
            parts.figures.close()
        flushed = monitor.flush(timeout_s=10.0)
        flushed = monitor.stop(exit_status=status, exit_info=info) and flushed
        if parts.leak is not None:
            parts.leak.clear()
        if stuck:  # pragma: no cover - every loop checks the stop event
            click.echo(f"holter demo: threads still running: {', '.join(stuck)}", err=True)
        return flushed


# -- the summary (from the store only) ---------------------------------------------------

SKIP_METRICS = ("holter.", "span.duration")
"""Internal series left out of the summary table."""
GROUP_IGNORE = {"status", "method"}
"""Tags merged in the summary table (one row per route, not per route and status)."""
METRIC_ORDER = ("http.client.duration", "tool.duration", "db.query", "queue.wait")
"""Order of the summary table: what a user of the tool feels first."""
SPARK = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Summary:
    """Everything the summary prints, read from the store."""

    run: RunInfo
    rows: list[list[str]]
    totals: list[str]
    spike: SpikeReport


def _since(run: RunInfo) -> float:
    return run.started_ns / 1e9 - 1.0


def _maybe_stats(store: Store, name: str, run: RunInfo, **kwargs: Any) -> WindowStats | None:
    """Window stats of ``name`` in this run, or None when it has no data there."""
    kwargs.setdefault("start", _since(run))
    try:
        stats = q.stats(store, name, None, run=run.id, **kwargs)
    except QueryError:
        return None
    return stats if stats.count else None


def _grouped(store: Store, name: str, run: RunInfo, by: str | list[str]) -> list[WindowStats]:
    try:
        return q.grouped_stats(store, name, None, start=_since(run), by=by, run=run.id)
    except QueryError:
        return []


def top_series_rows(store: Store, run: RunInfo, limit: int = 20) -> list[list[str]]:
    """Rows of the summary table: each histogram of the run, per its main tags."""
    keys: dict[str, set[str]] = {}
    for info in q.series(store, run=run.id):
        if info.kind == "histogram" and not info.name.startswith(SKIP_METRICS):
            keys.setdefault(info.name, set()).update(info.tags)
    rows: list[list[str]] = []
    order = {name: i for i, name in enumerate(METRIC_ORDER)}
    for name in sorted(keys, key=lambda n: (order.get(n, len(order)), n)):
        by = sorted(keys[name] - GROUP_IGNORE)
        for s in _grouped(store, name, run, by):
            if not s.count:
                continue
            label = f"{name} {fmt_tags(s.group)}" if s.group else name
            rows.append([label, fmt_num(s.count), fmt_num(s.rate), fmt_num(s.p50, s.unit),
                         fmt_num(s.p95, s.unit), fmt_num(s.p99, s.unit), fmt_num(s.max, s.unit)])
    return rows[:limit]


def _count_by_status(store: Store, name: str, run: RunInfo) -> tuple[int, dict[str, int]]:
    groups = _grouped(store, name, run, "status")
    total = int(sum(g.count for g in groups))
    errors = {g.group["status"]: int(g.count) for g in groups
              if g.count and g.group.get("status") not in ("200", "ok")}
    return total, errors


def totals_lines(store: Store, run: RunInfo) -> list[str]:
    """Counts, errors, queue depth and memory of the run."""
    lines = []
    requests, http_errors = _count_by_status(store, "http.client.requests", run)
    runs, tool_errors = _count_by_status(store, "tool.runs", run)
    queries = _maybe_stats(store, "db.query", run)
    n_queries = queries.count if queries is not None else 0
    detail = ", ".join(f"{status}×{n}" for status, n in sorted(http_errors.items()))
    lines.append(
        f"HTTP requests {requests} (errors {sum(http_errors.values())}"
        f"{': ' + detail if detail else ''}) · tool runs {runs} "
        f"(errors {sum(tool_errors.values())}) · db queries {fmt_num(n_queries)}"
    )
    depth = _maybe_stats(store, "queue.depth", run)
    rss = _maybe_stats(store, "process.rss", run)
    cache = _maybe_stats(store, "cache.size", run)
    parts = []
    if depth is not None:
        parts.append(f"queue depth max {fmt_num(depth.max)}, mean {fmt_num(depth.mean)}")
    if rss is not None and rss.min is not None and rss.max is not None:
        grew = (rss.max - rss.min) / MIB
        parts.append(f"RSS {rss.min / MIB:.1f} → {rss.max / MIB:.1f} MiB (+{grew:.1f} MiB)")
    if cache is not None and cache.last is not None:
        parts.append(f"leaky cache {cache.last / MIB:.1f} MiB")
    if parts:
        lines.append(" · ".join(parts))
    return lines


@dataclass(frozen=True)
class SpikeReport:
    """The injected spike as the store saw it: the spiked route before, during and after."""

    head: str
    rows: list[list[str]]
    notes: list[str]


def spike_report(store: Store, run: RunInfo, schedule: Schedule, elapsed_s: float) -> SpikeReport:
    """Stats of the spiked route in the windows before, during and after the spike."""
    lo, hi = schedule.spike_s
    head = (f"Injected spike: {SPIKE_ROUTE} {SPIKE_FACTOR:g}× slower from {lo:.1f} s to "
            f"{hi:.1f} s")
    if elapsed_s <= lo:
        return SpikeReport(f"{head}: not reached (the run stopped at {elapsed_s:.1f} s)", [], [])
    # A point covers a whole flush interval: the one that ends just after the spike still
    # holds its last part, so "during" runs one interval past it.
    end = elapsed_s + FLUSH_INTERVAL_S  # the final flush, just after the load stopped
    edges = [0.0, lo, min(hi + FLUSH_INTERVAL_S, end), end]
    windows: list[tuple[str, WindowStats | None]] = []
    for label, (a, b) in zip(("before", "during", "after"), itertools.pairwise(edges),
                             strict=True):
        if b <= a:  # stopped during the spike: no "after"
            continue
        stats = _maybe_stats(store, "http.client.duration", run, tags={"route": SPIKE_ROUTE},
                             start=schedule.wall(a) if a else _since(run), end=schedule.wall(b))
        windows.append((f"{label} ({a:.1f}–{min(b, elapsed_s):.1f} s)", stats))
    rows = [[label, *_latency_cells(stats)] for label, stats in windows]
    calm = windows[0][1] or (windows[2][1] if len(windows) > 2 else None)
    during = windows[1][1]
    notes = []
    if calm and during and calm.p50 and calm.p99 and during.p50 and during.p99:
        notes.append(f"During the spike: p50 {during.p50 / calm.p50:.1f}× and "
                     f"p99 {during.p99 / calm.p99:.1f}× the calm values.")
    notes.extend(_sparkline(store, run, schedule, elapsed_s))
    return SpikeReport(head + " (read back from the store)", rows, notes)


def _latency_cells(stats: WindowStats | None) -> list[str]:
    if stats is None:
        return ["0", "-", "-", "-", "-"]
    return [fmt_num(stats.count), fmt_num(stats.p50, stats.unit), fmt_num(stats.p95, stats.unit),
            fmt_num(stats.p99, stats.unit), fmt_num(stats.max, stats.unit)]


def _sparkline(store: Store, run: RunInfo, schedule: Schedule, elapsed_s: float) -> list[str]:
    step = max(2 * FLUSH_INTERVAL_S, elapsed_s / 20)
    end = schedule.wall(elapsed_s) + FLUSH_INTERVAL_S
    try:
        steps = q.buckets(store, "http.client.duration", None, step=step,
                          start=schedule.start_wall, end=end,
                          tags={"route": SPIKE_ROUTE}, run=run.id)
    except QueryError:
        return []
    values = [s.p99 for s in steps]
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return []
    low, high = min(known), max(known)
    lo, hi = schedule.wall(schedule.spike_s[0]), schedule.wall(schedule.spike_s[1])
    chars = []
    for s, v in zip(steps, values, strict=True):
        if v is None:
            chars.append(" ")
            continue
        char = SPARK[round((v - low) / (high - low or 1) * (len(SPARK) - 1))]
        in_spike = s.start_ns / 1e9 < hi and s.end_ns / 1e9 > lo
        chars.append(f"[red]{char}[/]" if in_spike else char)
    return [f"  p99 of {SPIKE_ROUTE} per {step:.0f} s: {''.join(chars)}  "
            f"({fmt_num(low, 'ms')} … {fmt_num(high, 'ms')}; red: the spike window)"]


def read_summary(path: str, outcome: Outcome) -> Summary:
    """Everything the summary shows, from the store at ``path``."""
    if outcome.run_id is None:
        raise StoreError(f"nothing was written to {path!r}; the demo recorded no data")
    store = Store.open(path, create=False)
    try:
        run = q.get_run(store, outcome.run_id)
        return Summary(
            run=run,
            rows=top_series_rows(store, run),
            totals=totals_lines(store, run),
            spike=spike_report(store, run, outcome.schedule, outcome.elapsed_s),
        )
    finally:
        store.close()


def next_commands(path: str, run_id: int) -> list[str]:
    """Commands worth running next (with ``--db`` when the store is not the default one)."""
    default = os.path.abspath(default_db())
    db = "" if os.path.abspath(path) == default else f" --db {shlex.quote(path)}"
    return [
        f"holter query http.client.duration --by route{db}",
        f"holter series --run {run_id}{db}",
        f"holter runs{db}",
    ]


def print_summary(path: str, outcome: Outcome, summary: Summary) -> None:
    """Print the summary: the table, totals, the spike, the store and next commands."""
    from rich.markup import escape

    out = console()
    how = "interrupted after" if outcome.interrupted else "recorded"
    out.print()
    out.print(f"[bold]holter demo[/]: {how} {outcome.elapsed_s:.1f} s of a simulated CLI tool "
              f"(run {summary.run.id}, app {APP})")
    out.print()
    table("Top series of this run (read back from the store)",
          ["series", "count", "rate/s", "p50", "p95", "p99", "max"], summary.rows)
    out.print()
    for line in summary.totals:
        out.print(escape(line))
    out.print()
    if summary.spike.rows:
        table(escape(summary.spike.head), ["window", "count", "p50", "p95", "p99", "max"],
              summary.spike.rows)
    else:
        out.print(escape(summary.spike.head))
    for line in summary.spike.notes:
        out.print(line)
    if not outcome.flushed:
        out.print("[yellow]warning[/]: the last flush did not complete; the store may miss "
                  "the final second")
    out.print()
    out.print(f"Store: {escape(path)}", soft_wrap=True)
    out.print("Next:")
    for command in next_commands(path, summary.run.id):
        out.print(f"  {escape(command)}", soft_wrap=True)


# -- entry point --------------------------------------------------------------------------


def resolve_store_path(db: str | None) -> str:
    """The absolute store path (``db``, ``$HOLTER_DB`` or ``./holter.db``), checked writable.

    Raises :class:`holter.errors.StoreError` (or ConfigError) with a one-line message.
    """
    raw = db if db is not None else default_db()
    if raw.strip() in ("", ":memory:"):
        raise ConfigError(
            f"holter demo needs a store file, not {raw!r}: its summary is read back from the file"
        )
    path = os.path.abspath(os.path.expanduser(raw))
    Store.open(path).close()  # fails now, in one line, rather than after the recording
    return path


def run_demo(duration: float, db: str | None, quiet: bool) -> None:
    """``holter demo``: record a simulated CLI tool for ``duration`` seconds, then summarise.

    Raises :class:`holter.errors.HolterError` for a bad store path (the CLI turns it into
    a one-line error, exit code 2) and ``SystemExit(130)`` after a Ctrl-C, once the
    summary of what was recorded is printed.
    """
    if not duration > 0 or math.isinf(duration):
        raise ConfigError(f"--duration must be a positive number of seconds, got {duration!r}")
    path = resolve_store_path(db)
    outcome = DemoSession(path, duration, make_view(quiet, duration)).run()
    print_summary(path, outcome, read_summary(path, outcome))
    if outcome.interrupted:
        raise SystemExit(130)


__all__ = ["match_route", "read_rss_bytes", "run_demo"]
