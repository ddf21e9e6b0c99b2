"""OTLP/HTTP export against a receiver on 127.0.0.1 that decodes every request with the
official opentelemetry-proto package: every field checked, faults, cursors, --follow."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from export_support import OtlpReceiver, attrs, closed_port, otlp_bucket_bounds

import holter
import holter.testing
from holter.cli.main import cli
from holter.core.sketch import Sketch
from holter.export.http import RetryPolicy
from holter.store import query as q

VALUES = [-1.5, 0.0, 0.001, 0.5, 1.0, 2.0, 3.0, 1024.0, 1e6, 7.25]


def record(db: str, app: str = "otlpapp") -> dict:
    """A workload with every kind of metric and span; what was recorded."""
    with holter.testing.monitor(db=db, app=app, version="1.2.3") as mon:
        mon.counter("jobs.done").inc(2, queue="a")
        h = mon.histogram("job.size", unit="By")
        for v in VALUES[:5]:
            h.observe(v, queue="a")
        mon.gauge("queue.depth").set(4)
        mon.flush()
        mon.counter("jobs.done").inc(5, queue="a")
        for v in VALUES[5:]:
            h.observe(v, queue="a")
        mon.gauge("queue.depth").set(9)
        remote = holter.extract({"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
        with mon.span("handle", context=remote, route="/x", n=3, ratio=0.5, ok=True) as root:
            root.log("cache miss", key="k1", size=12)
            with mon.span("db.query", table="users"):
                pass
            try:
                with mon.span("fails"):
                    raise ValueError("bad row 7")
            except ValueError:
                pass
        with mon.span("plain.root"):
            pass
        mon.flush()
        return {"run_id": mon.run_id, "pid": os.getpid()}


def test_cli_otlp_sends_every_field(tmp_path: Path) -> None:
    db = str(tmp_path / "o.db")
    info = record(db)
    with OtlpReceiver() as receiver:
        result = CliRunner().invoke(cli, ["export", "otlp", "--endpoint", receiver.url,
                                          "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["failures"] == 0 and summary["spans"] == 4
        points = receiver.data_points()
        spans = receiver.spans()
    with holter.testing.monitor(db=db, app="reader") as mon:
        run = q.get_run(mon.store, info["run_id"])
        stored_spans = {s["span_id"]: s for t in q.traces(mon.store, "1h")
                        for s in q.trace(mon.store, t["trace_id"])}
    mine = [(r, m, dp) for r, m, dp in points if r["service.name"] == "otlpapp"]
    resource = mine[0][0]
    assert resource == {
        "service.name": "otlpapp", "service.version": "1.2.3", "process.pid": info["pid"],
        "host.name": run.host, "process.runtime.name": "cpython",
        "process.runtime.version": run.python, "telemetry.sdk.name": "holter",
        "holter.run_id": info["run_id"],
    }
    by_name: dict[str, list] = {}
    for _r, metric, dp in mine:
        by_name.setdefault(metric.name, []).append((metric, dp))

    # counter: monotonic cumulative sum starting at the run's start
    jobs = by_name["jobs.done"]
    assert [dp.as_double for _m, dp in jobs] == [2.0, 7.0]
    for metric, dp in jobs:
        assert metric.sum.is_monotonic
        assert metric.sum.aggregation_temporality == 2  # CUMULATIVE
        assert dp.start_time_unix_nano == run.started_ns
        assert attrs(dp.attributes) == {"queue": "a"}
    assert jobs[0][1].time_unix_nano < jobs[1][1].time_unix_nano

    # gauge: each interval's last value (a gauge is written at every flush, the final too)
    depth = [dp.as_double for _m, dp in by_name["queue.depth"]]
    assert depth[:2] == [4.0, 9.0] and set(depth[2:]) <= {9.0}

    # exponential histogram: the sketch's buckets, exactly
    metric, last = by_name["job.size"][-1]
    assert metric.unit == "By"
    assert metric.exponential_histogram.aggregation_temporality == 2
    assert last.scale == 6
    assert last.count == len(VALUES)
    assert last.sum == pytest.approx(math.fsum(VALUES))
    assert last.min == min(VALUES) and last.max == max(VALUES)
    assert last.zero_count == 1
    positives = sorted(v for v in VALUES if v > 0)
    got = []
    for i, c in enumerate(last.positive.bucket_counts):
        lo, hi = otlp_bucket_bounds(last.positive.offset + i)
        inside = [v for v in positives if lo < v <= hi]
        assert c == len(inside), (i, c, inside)
        got.extend(inside)
    assert got == positives  # every value counted once, in the bucket that holds it
    negatives = [-v for v in VALUES if v < 0]
    for i, c in enumerate(last.negative.bucket_counts):
        lo, hi = otlp_bucket_bounds(last.negative.offset + i)
        assert c == len([v for v in negatives if lo < v <= hi])
    assert sum(last.negative.bucket_counts) == len(negatives)

    # spans: ids, parents, times, status, attributes, events, kind, flags
    assert len(spans) == 4
    for res, span in spans:
        assert res["holter.run_id"] == info["run_id"]
        s = stored_spans[span.span_id.hex()]
        assert span.trace_id.hex() == s["trace_id"]
        assert (span.parent_span_id.hex() or None) == s["parent_id"]
        assert span.name == s["name"]
        assert span.start_time_unix_nano == s["start_ns"]
        assert span.end_time_unix_nano == s["start_ns"] + s["duration_ns"]
        remote = 0x200 if s["remote_parent"] else 0
        assert span.flags == 0x01 | 0x100 | remote
        expected_attrs = dict(s["tags"])
        if s["status"] == "error":
            assert span.status.code == 2 and span.status.message == "bad row 7"
            expected_attrs["error.type"] = "ValueError"
        else:
            assert span.status.code == 0
        assert attrs(span.attributes) == expected_attrs
        assert [(e.time_unix_nano, e.name, attrs(e.attributes)) for e in span.events] == [
            (e["t_ns"], e["message"], e.get("fields", {})) for e in s["events"]
        ]
    handle = next(span for _r, span in spans if span.name == "handle")
    assert handle.trace_id.hex() == "ab" * 16 and handle.parent_span_id.hex() == "cd" * 8
    assert attrs(handle.attributes) == {"route": "/x", "n": 3, "ratio": 0.5, "ok": True}


def test_in_process_export_pushes_each_flush(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver, holter.testing.monitor(
        db=str(tmp_path / "p.db"), app="inproc"
    ) as mon:
        pusher = mon.export("otlp", endpoint=receiver.url)
        mon.counter("hits").inc(3)
        with mon.span("work", k="v"):
            pass
        mon.flush()
        assert pusher.wait_idle(10)
        mon.counter("hits").inc(4)
        mon.flush()
        assert pusher.wait_idle(10)
        hits = [(r, dp) for r, m, dp in receiver.data_points() if m.name == "hits"]
        assert [dp.as_double for _r, dp in hits] == [3.0, 7.0]  # cumulative in this run
        assert hits[0][0]["service.name"] == "inproc"
        assert hits[0][0]["holter.run_id"] == mon.run_id
        assert hits[0][1].start_time_unix_nano == mon._started_ns
        (res, span), = receiver.spans()
        assert span.name == "work" and attrs(span.attributes) == {"k": "v"}
        assert res["holter.run_id"] == mon.run_id
        pusher.close()


def test_start_with_export_otlp_pushes_at_exit(tmp_path: Path) -> None:
    code = (
        "import holter\n"
        f"mon = holter.start(app='started', db={str(tmp_path / 's.db')!r}, export=['otlp'])\n"
        "mon.counter('started.jobs').inc(6, kind='x')\n"
    )
    with OtlpReceiver() as receiver:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "HOLTER_EXIT_TIMEOUT": "5"}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        jobs = [dp for _r, m, dp in receiver.data_points() if m.name == "started.jobs"]
        assert [dp.as_double for dp in jobs] == [6.0]
        assert attrs(jobs[0].attributes) == {"kind": "x"}


def failed_counts(db: str, reason: str | None = None) -> float:
    with holter.testing.monitor(db=db, app="reader") as mon:
        try:
            tags = {"reason": reason} if reason else {}
            return q.stats(mon.store, "holter.export.failed", "1h", tags=tags).count
        except holter.QueryError:
            return 0


def test_refused_endpoint_never_disturbs_the_program(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    with holter.testing.monitor(db=db, app="down") as mon:
        pusher = mon.export("otlp", endpoint=f"http://127.0.0.1:{closed_port()}",
                            policy=RetryPolicy(backoff_s=0.01, max_backoff_s=0.05))
        for i in range(5):
            mon.counter("work").inc(i + 1)
            assert mon.flush() is True
        deadline = time.monotonic() + 20
        while pusher._failures < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pusher._failures >= 2
        mon.flush()
        assert q.stats(mon.store, "work", "1h").count == 15  # the program's data is intact
        pusher.close()
    assert failed_counts(db, "refused") >= 2


def test_hanging_endpoint_costs_a_bounded_backlog(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    with OtlpReceiver(script=["hang"] * 50) as receiver, holter.testing.monitor(
        db=db, app="hang"
    ) as mon:
        pusher = mon.export("otlp", endpoint=receiver.url, timeout_s=0.2, max_backlog=3,
                            policy=RetryPolicy(backoff_s=0.01, max_backoff_s=0.02))
        for i in range(30):
            mon.counter("c").inc(1, i=i % 4)
            assert mon.flush() is True  # the hook only queues: the flush is not held up
        with pusher._cond:  # bounded: past 3 points only the newest batch is kept
            assert pusher._queued <= 3 or len(pusher._queue) == 1
        deadline = time.monotonic() + 20
        while failed_counts_live(mon, "timeout") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        pusher.close()
        mon.flush()
        dropped = q.stats(mon.store, "holter.export.dropped", "1h",
                          tags={"reason": "backlog_full"}).count
        assert dropped > 0
    assert failed_counts(db, "timeout") >= 1


def failed_counts_live(mon, reason: str) -> float:
    mon.flush()
    try:
        return q.stats(mon.store, "holter.export.failed", "1h", tags={"reason": reason}).count
    except holter.QueryError:
        return 0


def test_cli_retries_5xx_then_succeeds_and_counts_failures(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    record(db)
    with OtlpReceiver(script=[503, 503]) as receiver:
        result = CliRunner().invoke(cli, ["export", "otlp", "--endpoint", receiver.url,
                                          "--db", db, "--json", "--no-traces"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["failures"] == 2
        assert [r["action"] for r in receiver.requests][:3] == [503, 503, "ok"]
    assert failed_counts(db, "http_503") == 2


def test_cli_refused_exits_nonzero_without_secrets_and_loses_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    record(db)
    port = closed_port()
    result = CliRunner().invoke(cli, [
        "export", "otlp", "--endpoint", f"http://user:s3cretpw@127.0.0.1:{port}",
        "--header", "Authorization=Bearer T0PSECRET", "--db", db, "--retries", "2",
    ])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("holter: error: otlp push failed after 2")
    assert "refused" in lines[0].lower() and f"127.0.0.1:{port}" in lines[0]
    assert "s3cretpw" not in result.output and "T0PSECRET" not in result.output
    assert failed_counts(db, "refused") == 2
    with OtlpReceiver() as receiver:  # the failure moved no cursor: all is sent now, once
        ok = CliRunner().invoke(cli, ["export", "otlp", "--endpoint", receiver.url,
                                      "--db", db, "--json"])
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.output)["spans"] == 4
        again = CliRunner().invoke(cli, ["export", "otlp", "--endpoint", receiver.url,
                                         "--db", db, "--json"])
        assert json.loads(again.output)["samples"] == 0
        assert json.loads(again.output)["spans"] == 0


def test_cli_rejected_400_is_dropped_not_retried(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    record(db)
    with OtlpReceiver(script=[400]) as receiver:
        result = CliRunner().invoke(cli, ["export", "otlp", "--endpoint", receiver.url,
                                          "--db", db, "--json", "--no-traces"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["failures"] == 1 and summary["dropped"] > 0
        assert len(receiver.requests) == 1
    with holter.testing.monitor(db=db, app="reader") as mon:
        dropped = q.stats(mon.store, "holter.export.dropped", "1h",
                          tags={"reason": "http_400"}).count
    assert dropped == summary["dropped"]


def test_follow_resumes_after_restart_and_sends_nothing_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "follow.db")
    total = 0

    def write(n: int) -> None:
        nonlocal total
        with holter.testing.monitor(db=db, app="writer") as mon:
            for i in range(n):
                mon.counter("ticks").inc(i + 1)
                total += i + 1
                mon.flush()

    write(3)
    with OtlpReceiver() as receiver:
        def follow() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "holter", "export", "otlp", "--follow", "--interval",
                 "0.1s", "--temporality", "delta", "--endpoint", receiver.url, "--db", db],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def ticks() -> list:
            return [dp for _r, m, dp in receiver.data_points() if m.name == "ticks"]

        def wait_total(expected: int) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if sum(dp.as_double for dp in ticks()) >= expected:
                    return
                time.sleep(0.05)
            raise AssertionError(f"ticks sum {sum(dp.as_double for dp in ticks())} != {expected}")

        for round_ in range(2):
            proc = follow()
            try:
                wait_total(total)
                write(4)  # written while following
                wait_total(total)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                _out, err = proc.communicate(timeout=20)
            assert proc.returncode in (0, -signal.SIGTERM), err
            if round_ == 0:
                write(2)  # written while nothing follows: sent by the next one
        points = ticks()
        times = [dp.time_unix_nano for dp in points]
        assert len(times) == len(set(times)), "a point was sent twice"
        assert sum(dp.as_double for dp in points) == total
        assert all(m.sum.aggregation_temporality == 1 for _r, m, dp in receiver.data_points()
                   if m.name == "ticks")  # DELTA


def test_sketch_merge_equals_cumulative_histogram(tmp_path: Path) -> None:
    """The cumulative histogram sent equals the merge of every stored sketch."""
    db = str(tmp_path / "m.db")
    record(db)
    with OtlpReceiver() as receiver:
        CliRunner().invoke(cli, ["export", "otlp", "--endpoint", receiver.url, "--db", db,
                                 "--no-traces"])
        last = [dp for _r, m, dp in receiver.data_points() if m.name == "job.size"][-1]
    merged = Sketch()
    for v in VALUES:
        merged.add(v)
    assert {last.positive.offset + i + 1: c
            for i, c in enumerate(last.positive.bucket_counts) if c} == merged.pos
    assert {last.negative.offset + i + 1: c
            for i, c in enumerate(last.negative.bucket_counts) if c} == merged.neg


def test_forked_child_pushes_its_own_run_only(tmp_path: Path) -> None:
    code = f"""
import os, holter
mon = holter.start(app="forky", db={str(tmp_path / 'fork.db')!r}, export=["otlp"])
mon.counter("parent.c").inc(1)
mon.flush()
pid = os.fork()
if pid == 0:
    mon.counter("child.c").inc(2)
    mon.flush()
    holter.stop()
    os._exit(0)
os.waitpid(pid, 0)
mon.counter("parent.c").inc(1)
mon.flush()
print(pid, mon.run_id, flush=True)
"""
    with OtlpReceiver() as receiver:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "HOLTER_EXIT_TIMEOUT": "5"}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        child_pid, parent_run = (int(x) for x in done.stdout.split())
        points = receiver.data_points()
    parent = [(r, dp) for r, m, dp in points if m.name == "parent.c"]
    assert [dp.as_double for _r, dp in parent] == [1.0, 2.0]  # never sent again by the child
    assert {r["holter.run_id"] for r, _dp in parent} == {parent_run}
    child = [(r, dp) for r, m, dp in points if m.name == "child.c"]
    assert [dp.as_double for _r, dp in child] == [2.0]
    assert child[0][0]["process.pid"] == child_pid
    assert child[0][0]["holter.run_id"] != parent_run


def test_cli_remote_write_refused_exits_1(tmp_path: Path) -> None:
    db = str(tmp_path / "rw.db")
    record(db)
    result = CliRunner().invoke(cli, [
        "export", "remote-write", f"http://u:pa55word@127.0.0.1:{closed_port()}/api/v1/write",
        "--db", db, "--retries", "1",
    ])
    assert result.exit_code == 1
    assert result.output.startswith("holter: error: remote-write push failed after 1 tries")
    assert "pa55word" not in result.output
    assert failed_counts(db, "refused") == 1


def test_spans_written_early_by_busy_tracing_are_pushed_too(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver, holter.testing.monitor(
        db=str(tmp_path / "busy.db"), app="busy"
    ) as mon:
        pusher = mon.export("otlp", endpoint=receiver.url)
        for i in range(5):
            with mon.span("early", i=i):
                pass
        assert mon.collector.flush_spans()  # what the collector does when the buffer fills
        assert pusher.wait_idle(10)
        assert sorted(attrs(s.attributes)["i"] for _r, s in receiver.spans()) == list(range(5))
        pusher.close()
