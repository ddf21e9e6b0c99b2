"""``holter serve --prometheus`` and ``holter export remote-write|otlp`` over holter.export."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import click

from holter.cli._options import CliError, db_option, emit_json, holter_errors, json_option
from holter.config import parse_seconds
from holter.errors import ConfigError, HolterError

SINCE_HELP = ("On the first push to this target (no cursor yet), send only what is newer "
              "than this (30s, 5m, 1h, 24h).")


class ExportError(click.ClickException):
    """A push that failed after its retries: one line on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        """Print the one-line error."""
        click.echo(f"holter: error: {self.format_message()}", err=True)


def _seconds(value: str, what: str) -> float:
    try:
        return parse_seconds(value, what)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"bad {option} {item.split('=')[0]!r}=…: use KEY=VALUE")
        out[key.strip()] = value
    return out


# -- holter serve ------------------------------------------------------------------------


@click.command("serve")
@click.option("--prometheus", is_flag=True,
              help="Serve Prometheus exposition of the store at /metrics.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback prints a warning.")
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--token", default=None, envvar="HOLTER_PROMETHEUS_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' (or set $HOLTER_PROMETHEUS_TOKEN, "
                   "which keeps it out of the process list).")
@click.option("--window", default="10m", show_default=True,
              help="Window of the summaries' quantiles.")
@click.option("--histograms", type=click.Choice(["summary", "histogram"]), default="summary",
              show_default=True,
              help="Histograms as summaries (quantiles) or classic buckets from the sketch.")
@click.option("--buckets", default=None, metavar="LE,LE,...",
              help="Bucket bounds for --histograms histogram (default: powers of two).")
@db_option
@holter_errors
def serve_cmd(prometheus: bool, host: str, port: int, token: str | None, window: str,
              histograms: str, buckets: str | None, db: str) -> None:
    """Serve the store over HTTP: with --prometheus, /metrics for Prometheus to scrape.

    Counters, gauges and histograms of every run (long-lived or not), per app and tag
    set, read from the store at each scrape. Stops on Ctrl-C.
    """
    from holter.export.prometheus import Exposition, MetricsServer

    if not prometheus:
        raise CliError("holter serve needs --prometheus (the /metrics endpoint); "
                       "for example: holter serve --prometheus --port 9464")
    bounds = None
    if buckets:
        try:
            bounds = [float(b) for b in buckets.split(",") if b.strip()]
        except ValueError:
            raise CliError(f"bad --buckets {buckets!r}: use numbers separated by commas, "
                           "such as 0.01,0.1,1,10") from None
    exposition = Exposition(db, window_s=_seconds(window, "--window"), histograms=histograms,
                            buckets=bounds)
    server = MetricsServer(exposition, host=host, port=port, token=token,
                           warn=lambda text: click.echo(text, err=True))
    click.echo(f"holter: serving {db} at {server.url}"
               + (" (bearer token required)" if token else "") + "; Ctrl-C stops", err=True)
    with _stop_on_sigterm(server.stop):
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


@contextlib.contextmanager
def _stop_on_sigterm(stop: Any) -> Iterator[None]:
    """Run ``stop`` (in another thread) on SIGTERM, so ``kill`` ends a command cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=stop, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- holter export -----------------------------------------------------------------------


@click.group("export")
def export_group() -> None:
    """Push the store's points (and spans) to Prometheus remote write or OTLP/HTTP.

    Each target keeps a cursor in the store: a push sends what was written after the
    last one it delivered, so `--follow` resumes after a restart and sends nothing twice.
    """


def _common(fn: Any) -> Any:
    for decorator in reversed([
        click.option("--since", default="1h", show_default=True, help=SINCE_HELP),
        click.option("--follow", is_flag=True,
                     help="Keep pushing what gets written, every --interval, until Ctrl-C."),
        click.option("--interval", default="10s", show_default=True,
                     help="With --follow: time between pushes."),
        click.option("--header", "headers", multiple=True, metavar="KEY=VALUE",
                     help="An HTTP header to send (repeatable); values are never printed."),
        click.option("--timeout", default="5s", show_default=True,
                     help="Longest wait for one request."),
        click.option("--retries", type=click.IntRange(1, 100), default=3, show_default=True,
                     help="Tries of a request before giving up (without --follow) or "
                          "backing off (with it)."),
        click.option("--reset", is_flag=True,
                     help="Forget this target's cursor first (send again from --since)."),
        db_option,
        json_option,
        holter_errors,
    ]):
        fn = decorator(fn)
    return fn


@export_group.command("remote-write")
@click.argument("url")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label added to every series (repeatable), e.g. --label job=cli.")
@_common
def remote_write_cmd(url: str, labels: tuple[str, ...], since: str, follow: bool,
                     interval: str, headers: tuple[str, ...], timeout: str, retries: int,
                     reset: bool, db: str, as_json: bool) -> None:
    """Push points to a Prometheus remote-write receiver at URL (protobuf + snappy).

    For example http://127.0.0.1:9090/api/v1/write (Prometheus started with
    --web.enable-remote-write-receiver) or VictoriaMetrics' /api/v1/write.
    Credentials in the URL become a Basic Authorization header.
    """
    _run_export("remote-write", url, labels=_pairs(labels, "--label"), since=since,
                follow=follow, interval=interval, headers=headers, timeout=timeout,
                retries=retries, reset=reset, db=db, as_json=as_json)


@export_group.command("otlp")
@click.option("--endpoint", default=None, metavar="URL",
              help="OTLP/HTTP base URL (default $OTEL_EXPORTER_OTLP_ENDPOINT or "
                   "http://127.0.0.1:4318); /v1/metrics and /v1/traces are appended.")
@click.option("--temporality", type=click.Choice(["cumulative", "delta"]),
              default="cumulative", show_default=True, help="Aggregation temporality of sums "
              "and histograms.")
@click.option("--no-traces", is_flag=True, help="Push metrics only.")
@_common
def otlp_cmd(endpoint: str | None, temporality: str, no_traces: bool, since: str,
             follow: bool, interval: str, headers: tuple[str, ...], timeout: str, retries: int,
             reset: bool, db: str, as_json: bool) -> None:
    """Push metrics and spans over OTLP/HTTP (protobuf) to a collector or backend.

    Counters as monotonic sums, gauges, histograms as exponential histograms (the
    sketch's own buckets), spans with their ids, parents, times, status, attributes and
    events. Honours OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS and _COMPRESSION.
    """
    _run_export("otlp", endpoint, temporality=temporality, traces=not no_traces, since=since,
                follow=follow, interval=interval, headers=headers, timeout=timeout,
                retries=retries, reset=reset, db=db, as_json=as_json)


class _FailureCounts:
    """Counts failed tries in the store (``holter.export.failed``).

    A monitor (app ``holter-export``) is opened only when the first failure happens.
    """

    def __init__(self, db: str, target: str) -> None:
        self.db = db
        self.target = target
        self._mon: Any = None

    def _monitor(self) -> Any:
        if self._mon is None:
            from holter.config import Config
            from holter.monitor import Monitor

            self._mon = Monitor(Config.resolve(app="holter-export", db=self.db), start=False)
        return self._mon

    def failed(self, reason: str) -> None:
        with contextlib.suppress(HolterError):  # counting never adds an error of its own
            self._monitor().counter("holter.export.failed").inc(target=self.target,
                                                                reason=reason)

    def dropped(self, n: int, reason: str) -> None:
        with contextlib.suppress(HolterError):
            self._monitor().counter("holter.export.dropped").inc(n, target=self.target,
                                                                 reason=reason)

    def flush(self) -> None:
        if self._mon is not None:
            with contextlib.suppress(HolterError):
                self._mon.flush()

    def close(self) -> None:
        if self._mon is not None:
            with contextlib.suppress(HolterError):
                self._mon.stop()


def _run_export(kind: str, url: str | None, *, since: str, follow: bool, interval: str,
                headers: tuple[str, ...], timeout: str, retries: int, reset: bool, db: str,
                as_json: bool, **options: Any) -> None:
    from holter.cli._options import open_store
    from holter.export.http import ExportFailed, RetryPolicy
    from holter.export.push import PushResult, StorePusher

    since_s = _seconds(since, "--since")
    interval_s = _seconds(interval, "--interval")
    counts = _FailureCounts(db, kind)
    with open_store(db) as store:
        pusher = StorePusher(
            store, kind, url, headers=_pairs(headers, "--header"),
            timeout_s=_seconds(timeout, "--timeout"), since_s=since_s,
            policy=RetryPolicy(attempts=retries), on_failure=counts.failed,
            on_dropped=counts.dropped, **options,
        )
        if reset:
            pusher.reset()
        try:
            if not follow:
                try:
                    result = pusher.push()
                except ExportFailed as exc:
                    raise ExportError(
                        f"{kind} push failed after {retries} tries: {exc}; nothing was lost: "
                        "the next run resumes where this one stopped"
                    ) from None
                _report(pusher, result, as_json)
                return
            stop = threading.Event()

            def on_push(outcome: PushResult | ExportFailed) -> None:
                counts.flush()
                if isinstance(outcome, ExportFailed):
                    click.echo(f"holter: {kind}: {outcome}; retrying with backoff", err=True)
                elif outcome.requests or outcome.dropped:
                    _report(pusher, outcome, as_json)

            click.echo(f"holter: pushing {db} to {pusher.name} every {interval_s:g} s; "
                       "Ctrl-C stops", err=True)
            with _stop_on_sigterm(stop.set):
                try:
                    pusher.follow(interval_s, stop, on_push)
                except KeyboardInterrupt:
                    stop.set()
        finally:
            counts.close()


def _report(pusher: Any, result: Any, as_json: bool) -> None:
    if as_json:
        emit_json({"target": pusher.name, **result.as_dict(),
                   "cursor": {"points_rowid": pusher.cursor.points_rowid,
                              "span_chunk_id": pusher.cursor.span_chunk_id}})
        return
    what = f"{result.samples} samples" if pusher.kind == "remote-write" else (
        f"{result.samples} data points, {result.spans} spans")
    line = f"sent {what} from {result.points} points to {pusher.name} in {result.requests} requests"
    if result.dropped:
        line += f"; {result.dropped} rejected and dropped"
    click.echo(line)
