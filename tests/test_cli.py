"""The CLI over a real store: tables, JSON, filters and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import holter.testing
from holter.cli.main import cli


@pytest.fixture
def recorded(db_path: str) -> str:
    with holter.testing.monitor(db=db_path, app="svc") as mon:
        c = mon.counter("http.requests")
        h = mon.histogram("http.latency", unit="ms")
        for i in range(200):
            route = "/users" if i % 4 else "/search"
            c.inc(route=route, status=200)
            h.observe(10.0 + i % 50, route=route)
        mon.gauge("queue.depth").set(4)
        mon.flush()
    return db_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_query_json(recorded: str) -> None:
    result = run("query", "http.latency", "--db", recorded, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["count"] == 200
    assert data["kind"] == "histogram"
    assert data["unit"] == "ms"
    assert data["min"] == 10.0
    assert data["max"] == 59.0
    assert 10.0 <= data["p50"] <= 59.0


def test_query_by_and_tag(recorded: str) -> None:
    result = run("query", "http.requests", "--db", recorded, "--by", "route", "--json")
    groups = json.loads(result.output)
    assert {g["group"]["route"]: g["count"] for g in groups} == {"/users": 150, "/search": 50}
    result = run("query", "http.requests", "--db", recorded, "--tag", "route=/search", "--json")
    assert json.loads(result.output)["count"] == 50


def test_query_table(recorded: str) -> None:
    result = run("query", "http.latency", "--db", recorded, "--window", "1h")
    assert result.exit_code == 0
    assert "http.latency (histogram, ms)" in result.output
    assert "p99" in result.output
    assert "200" in result.output


def test_series_and_runs(recorded: str) -> None:
    series = json.loads(run("series", "--db", recorded, "--json").output)
    names = {(s["name"], json.dumps(s["tags"], sort_keys=True)) for s in series}
    assert ("http.requests", json.dumps({"route": "/users", "status": "200"})) in names
    assert ("queue.depth", "{}") in names
    runs = json.loads(run("runs", "--db", recorded, "--json").output)
    assert len(runs) == 1
    assert runs[0]["app"] == "svc"
    assert runs[0]["ended_ns"] is not None
    table = run("runs", "--db", recorded)
    assert "svc" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "nope"], "no metric named 'nope'"),
        (["query", "http.latency", "--window", "5 minutes"], "bad window"),
        (["query", "http.latency", "--tag", "route"], "bad --tag"),
        (["query", "http.latency", "--run", "42"], "no run with id 42"),
    ],
)
def test_bad_input_is_a_one_line_error(recorded: str, args, message: str) -> None:
    result = run(*args, "--db", recorded)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_store_exits_2_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "holter", "runs", "--db", str(tmp_path / "none.db")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "no holter store" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "none.db").exists()


def test_version_and_help() -> None:
    assert run("--version").output.startswith("holter, version")
    result = run("--help")
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed >= {"demo", "query", "series", "runs", "run", "traces", "trace", "ops",
                      "serve", "export", "anomalies", "baselines", "top", "alerts", "silence",
                      "silences", "rules", "report", "compare"}, listed


def test_a_command_loads_only_its_own_code() -> None:
    """``holter run`` does not import the report, alerting, export or dashboard code."""
    code = (
        "import sys, json\n"
        "from holter.cli.main import cli\n"
        "try:\n"
        "    cli(['run', '--help'], prog_name='holter')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('holter.'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = json.loads(proc.stdout.splitlines()[-1])
    assert "holter.cli.run" in loaded
    unrelated = [m for m in loaded if m.split(".")[1] in {"reports", "alerting", "export",
                                                            "dashboard"}
                 or m in {"holter.cli.report", "holter.cli.alerts", "holter.cli.export",
                          "holter.cli.top", "holter.cli.demo"}]
    assert unrelated == [], unrelated
