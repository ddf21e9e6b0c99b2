"""Prometheus, for real: a Prometheus server started by the test scrapes `holter serve
--prometheus`, and receives `holter export remote-write`; PromQL answers must equal what
holter recorded."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from export_support import free_port, http_get, prometheus

import holter.testing
from holter.cli.main import cli
from holter.store import query as q

pytestmark = pytest.mark.slow


def record_workload(db: str) -> dict[str, float]:
    """Two runs of a CLI app and one of a service into ``db``; the expected values."""
    for run in range(2):
        with holter.testing.monitor(db=db, app="cli") as mon:
            mon.counter("tool.runs").inc(3 + run, tool="fmt")
            mon.counter("bytes.sent", unit="By").inc(1000 * (run + 1))
            latency = mon.histogram("tool.latency", unit="ms")
            for i in range(1, 201):
                latency.observe(i * (run + 1) / 2.0, tool="fmt")
            mon.gauge("queue.depth").set(5 + run)
            mon.flush()
    with holter.testing.monitor(db=db, app="svc") as mon:
        mon.counter("tool.runs").inc(11, tool='we"ird\\tool\nname')
        mon.flush()
    with holter.testing.monitor(db=db, app="reader") as mon:
        store = mon.store
        latency = q.stats(store, "tool.latency", "1h", app="cli")
    return {
        "runs_fmt": 3 + 4, "runs_svc": 11, "bytes": 3000, "depth": 6,
        "lat_count": latency.count, "lat_sum": latency.sum, "lat_p50": latency.p50,
        "lat_p99": latency.p99,
    }


def value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("prometheus")
    scrape_port = free_port()
    with prometheus(workdir, [f"127.0.0.1:{scrape_port}"]) as server:
        server.scrape_port = scrape_port  # type: ignore[attr-defined]
        yield server


def test_prometheus_scrapes_holter_serve(prom, tmp_path: Path) -> None:
    db = str(tmp_path / "scrape.db")
    expected = record_workload(db)
    serve = subprocess.Popen(
        [sys.executable, "-m", "holter", "serve", "--prometheus", "--port",
         str(prom.scrape_port), "--db", db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        got = prom.wait_for('tool_runs_total{job="holter"}', min_results=2, timeout=40)
        by_app = {r["metric"]["app"]: float(r["value"][1]) for r in got}
        assert by_app == {"cli": expected["runs_fmt"], "svc": expected["runs_svc"]}
        weird = next(r for r in got if r["metric"]["app"] == "svc")["metric"]["tool"]
        assert weird == 'we"ird\\tool\nname'  # escaped on the wire, intact in Prometheus
        assert value(prom.query('bytes_sent_bytes_total{job="holter"}')) == expected["bytes"]
        assert value(prom.query('queue_depth{job="holter"}')) == expected["depth"]
        assert value(prom.query('tool_latency_milliseconds_count{job="holter"}')) \
            == expected["lat_count"]
        assert value(prom.query('tool_latency_milliseconds_sum{job="holter"}')) \
            == pytest.approx(expected["lat_sum"])
        for quantile, key in (("0.5", "lat_p50"), ("0.99", "lat_p99")):
            got_q = value(prom.query(
                f'tool_latency_milliseconds{{job="holter",quantile="{quantile}"}}'))
            assert got_q == pytest.approx(expected[key], rel=1e-9)
        # the scrape endpoint's own answer is valid 0.0.4 text with HELP and TYPE lines
        status, headers, body = http_get(f"http://127.0.0.1:{prom.scrape_port}/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"# TYPE tool_runs_total counter" in body
        # a new run's increase shows up in the next scrapes
        with holter.testing.monitor(db=db, app="cli") as mon:
            mon.counter("tool.runs").inc(5, tool="fmt")
            mon.flush()
        prom.wait_for('tool_runs_total{job="holter",app="cli"} == 12', timeout=20)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        _out, err = serve.communicate(timeout=15)
    assert serve.returncode in (0, -signal.SIGTERM), err
    assert b"serving" in err


def test_remote_write_into_prometheus(prom, tmp_path: Path) -> None:
    db = str(tmp_path / "rw.db")
    # distinct names from the scrape test: one Prometheus serves both
    with holter.testing.monitor(db=db, app="rwapp") as mon:
        mon.counter("rw.jobs").inc(4, queue="a")
        mon.flush()
        mon.counter("rw.jobs").inc(6, queue="a")
        mon.gauge("rw.temp", unit="Cel").set(21.5)
        h = mon.histogram("rw.wait", unit="s")
        for i in range(1, 101):
            h.observe(i / 100.0)
        mon.flush()
        stats = q.stats(mon.store, "rw.wait", "1h")
    url = f"{prom.url}/api/v1/write"
    runner = CliRunner()
    first = runner.invoke(cli, ["export", "remote-write", url, "--db", db, "--json",
                                "--label", "job=cli-push"])
    assert first.exit_code == 0, first.output
    import json

    summary = json.loads(first.output)
    assert summary["requests"] == 1 and summary["failures"] == 0
    assert value(prom.query('rw_jobs_total{app="rwapp",queue="a",job="cli-push"}')) == 10
    assert value(prom.query('rw_temp_celsius{app="rwapp"}')) == 21.5
    assert value(prom.query('rw_wait_seconds_count{app="rwapp"}')) == 100
    assert value(prom.query('rw_wait_seconds_sum{app="rwapp"}')) == pytest.approx(50.5)
    p99 = value(prom.query('rw_wait_seconds{app="rwapp",quantile="0.99"}'))
    assert math.isclose(p99, stats.p99, rel_tol=0.011)  # the last interval's own sketch
    # the counter's history: 4 at the first point, 10 at the second
    hist = prom.query('rw_jobs_total{app="rwapp"}[1h]')
    assert [float(v) for _t, v in hist[0]["values"]] == [4.0, 10.0]

    # nothing new: nothing sent (the cursor is in the store)
    again = runner.invoke(cli, ["export", "remote-write", url, "--db", db, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["samples"] == 0

    # a later run of the app continues the cumulative counter
    time.sleep(0.01)
    with holter.testing.monitor(db=db, app="rwapp") as mon:
        mon.counter("rw.jobs").inc(5, queue="a")
        mon.flush()
    third = runner.invoke(cli, ["export", "remote-write", url, "--db", db, "--json",
                                "--label", "job=cli-push"])
    assert third.exit_code == 0, third.output
    third_summary = json.loads(third.output)
    assert third_summary["points"] >= 1 and third_summary["samples"] >= 1  # and holter.* points
    assert value(prom.query('rw_jobs_total{app="rwapp",job="cli-push"}')) == 15
