"""`holter demo` end to end: a real recording, read back through holter.store.query."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from holter.cli.demo import ROUTES, match_route, read_rss_bytes, run_demo
from holter.store import query as q
from holter.store.sqlite import Store

TOOLS = {"search", "read_file", "edit", "bash"}
SPIKE_ROUTE = "/users/{id}"


def demo(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "holter", "demo", *args],
        capture_output=True, text=True, timeout=120, **kwargs,
    )


def only_run(store: Store):
    runs = q.runs(store)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_demo_records_every_part_and_summarises_from_the_store(db_path: str) -> None:
    proc = demo("--duration", "3", "--db", db_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout

    # The summary: where the store is, the key series, the spike, what to run next.
    assert f"Store: {db_path}" in out
    for text in ("Top series", "http.client.duration route=/users/{id}", "tool.duration tool=bash",
                 "db.query op=select table=files", "queue.wait", "Injected spike",
                 f"holter query http.client.duration --by route --db {db_path}",
                 "holter runs", "holter series"):
        assert text in out, text
    # Not a terminal: no live redraws, no colour codes, at most a header before the summary.
    assert "\x1b[" not in out
    assert out.index("Top series") < 1000

    store = Store.open(db_path, create=False)
    try:
        run = only_run(store)
        assert run.app == "holter-demo"
        assert run.exit_status == 0
        assert run.ended_ns is not None

        def stats(name: str, **kwargs):
            return q.stats(store, name, "1h", run=run.id, **kwargs)

        def grouped(name: str, by):
            return q.grouped_stats(store, name, "1h", by=by, run=run.id)

        # HTTP: every route was called, tagged with its template (never a raw id).
        requests = {g.group["route"]: g.count for g in grouped("http.client.requests", "route")}
        assert set(requests) == set(ROUTES)
        assert all(n > 0 for n in requests.values()), requests
        for series in q.series(store, "http.client.duration", run=run.id):
            assert series.tags["route"] in ROUTES, series.tags
            assert not any(ch.isdigit() for ch in series.tags["route"])
            assert series.tags["status"].isdigit() or series.tags["status"] == "error"
        durations = stats("http.client.duration")
        assert durations.unit == "ms"
        assert durations.count == sum(requests.values())

        # Tools: all four ran, each run timed and counted (with a status).
        runs = {g.group["tool"]: g.count for g in grouped("tool.runs", "tool")}
        assert set(runs) == TOOLS
        assert all(n > 0 for n in runs.values()), runs
        assert {g.group["status"] for g in grouped("tool.runs", "status")} <= {"ok", "error"}
        assert stats("tool.duration").count == sum(runs.values())

        # The tool's own sqlite database, timed per table and statement kind.
        queries = {(g.group["table"], g.group["op"]): g.count
                   for g in grouped("db.query", ["table", "op"])}
        assert queries[("files", "select")] > 0
        assert queries[("files", "scan")] > 0
        assert stats("db.query").unit == "ms"

        # Gauges: the queue depth and the process's resident memory.
        depth = stats("queue.depth")
        assert depth.kind == "gauge"
        assert depth.count >= 1
        assert depth.max is not None and depth.max >= 0
        assert stats("queue.wait").count == sum(runs.values())
        rss = stats("process.rss")
        assert rss.kind == "gauge"
        assert rss.last is not None and rss.last > 2**20
        cache = stats("cache.size")
        assert cache.last is not None and cache.last > 0

        # The injected spike (5x slower for a fifth of the run): the spiked route's worst
        # call is far above its median.
        spiked = stats("http.client.duration", tags={"route": SPIKE_ROUTE})
        assert spiked.count > 0
        assert spiked.max > 2.5 * spiked.p50, (spiked.p50, spiked.max)
    finally:
        store.close()


def test_bad_db_directory_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "holter.db"
    proc = demo("--duration", "2", "--db", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("holter: error:")
    assert proc.stderr.count("\n") == 1
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not path.parent.exists()


@pytest.mark.parametrize("bad", [":memory:", "DIR"])
def test_unusable_db_is_a_one_line_error(tmp_path: Path, bad: str) -> None:
    target = str(tmp_path) if bad == "DIR" else bad
    proc = demo("--duration", "2", "--db", target)
    assert proc.returncode == 2
    assert proc.stderr.startswith("holter: error:")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_in_process_run_leaves_no_threads_and_quiet_prints_only_the_summary(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(threading.enumerate())

    def started_here() -> list[str]:
        return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]

    run_demo(duration=2.0, db=db_path, quiet=True)
    # The demo's own threads (workers, server, request handlers) are joined before it returns.
    ours = [name for name in started_here() if "holter-demo" in name or "process_request" in name]
    assert ours == []
    # holter's collector thread is stopped by Monitor.stop() (joined with a short timeout).
    deadline = time.monotonic() + 5.0
    while started_here() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started_here() == []
    out = capsys.readouterr().out
    assert "recording a simulated CLI tool" not in out  # no header or progress with --quiet
    assert out.lstrip().startswith("holter demo: recorded")
    assert f"Store: {db_path}" in out
    store = Store.open(db_path, create=False)
    try:
        run = only_run(store)
        assert run.exit_status == 0
        assert q.stats(store, "http.client.requests", "1h", run=run.id).count > 0
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_stops_cleanly_flushes_and_summarises(db_path: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # `python -m holter demo ...`, with Python's Ctrl-C handler installed even when this test
    # runs with SIGINT ignored (a backgrounded shell job passes SIG_IGN on to its children).
    launcher = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['holter', *sys.argv[1:]]; runpy.run_module('holter', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, "demo", "--duration", "120", "--db", db_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        header = proc.stdout.readline()  # printed once the workload is running
        assert "recording a simulated CLI tool" in header, header
        threading.Event().wait(1.5)  # let it record something
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted after" in out
    assert "Injected spike" in out  # not reached: said so, not crashed
    assert f"Store: {db_path}" in out
    store = Store.open(db_path, create=False)
    try:
        run = only_run(store)
        assert run.exit_status == 130
        assert run.ended_ns is not None
        assert q.stats(store, "http.client.requests", "1h", run=run.id).count > 0
        assert q.stats(store, "tool.runs", "1h", run=run.id).count > 0
    finally:
        store.close()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/users", ("/users", {})),
        ("/users/", ("/users", {})),
        ("/users/42", ("/users/{id}", {"id": "42"})),
        ("/users/42?fields=name", ("/users/{id}", {"id": "42"})),
        ("/search?q=cache", ("/search", {})),
        ("/users/abc", None),
        ("/nope", None),
    ],
)
def test_routes_are_matched_to_templates(path: str, expected) -> None:
    assert match_route(path) == expected


def test_rss_is_read() -> None:
    rss = read_rss_bytes()
    assert rss is not None
    assert rss > 2**20
