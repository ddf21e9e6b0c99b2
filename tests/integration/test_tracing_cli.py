"""`holter ops`, `holter traces` and `holter trace` over real stores.

Counts come from recorded spans; durations that decide an ordering are written
through the store's batch API with exact values, so no test depends on timing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import holter
import holter.testing
from holter.cli.main import cli
from holter.model import Batch
from holter.store import query as q

MS = 1_000_000


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result


def run_json(*args: str):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def recorded(db_path: str) -> str:
    with holter.testing.monitor(db=db_path, app="svc") as mon:
        for _ in range(6):
            with mon.span("http.get /users"), mon.span("db.select"):
                pass
        for i in range(4):
            try:
                with mon.span("http.post /orders"), mon.span("db.insert"):
                    if i % 2:
                        raise ValueError("duplicate order")
            except ValueError:
                pass
        with mon.span("db.vacuum"):
            pass
        with mon.span("dbx.migrate"):
            pass
        mon.flush()
    return db_path


def test_ops_json_counts_and_error_rates(recorded: str) -> None:
    rows = run_json("ops", "--db", recorded)
    by_name = {r["name"]: r for r in rows}
    assert {n: r["count"] for n, r in by_name.items()} == {
        "http.get /users": 6, "db.select": 6, "http.post /orders": 4, "db.insert": 4,
        "db.vacuum": 1, "dbx.migrate": 1}
    assert [r["name"] for r in rows] == [
        "db.select", "http.get /users", "db.insert", "http.post /orders", "db.vacuum",
        "dbx.migrate"]  # busiest first, then by name
    for name in ("http.post /orders", "db.insert"):
        assert by_name[name]["errors"] == 2
        assert by_name[name]["error_rate"] == 0.5
    for name in ("http.get /users", "db.select", "db.vacuum"):
        assert by_name[name]["errors"] == 0
        assert by_name[name]["error_rate"] == 0.0
    for r in rows:
        assert 0 <= r["p50_s"] <= r["p95_s"] <= r["p99_s"]
        assert r["self_mean_s"] is not None and r["self_mean_s"] >= 0
    table = run("ops", "--db", recorded)
    assert table.exit_code == 0
    assert "http.post /orders" in table.output


def test_ops_of_a_short_lived_program(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, app="oneshot") as mon:
        for i in range(3):
            try:
                with mon.span("cli.main"), mon.span("cli.step"):
                    if i == 0:
                        raise ValueError("bad flag")
            except ValueError:
                pass
    rows = {r["name"]: r for r in run_json("ops", "--db", db_path)}
    assert {n: r["count"] for n, r in rows.items()} == {"cli.main": 3, "cli.step": 3}
    assert rows["cli.main"]["errors"] == 1


def test_traces_errors_and_name_filters(recorded: str) -> None:
    everything = run_json("traces", "--db", recorded)
    assert len(everything["traces"]) == 12
    assert everything["summary"]["completed"] == 12
    errors = run_json("traces", "--errors", "--db", recorded)["traces"]
    assert len(errors) == 2
    assert {t["root_name"] for t in errors} == {"http.post /orders"}
    assert all(t["errors"] == 2 and t["spans"] == 2 for t in errors)
    # a glob...
    assert {t["root_name"] for t in run_json("traces", "--name", "db.*", "--db",
                                             recorded)["traces"]} == {"db.vacuum"}
    assert len(run_json("traces", "--name", "http.*", "--db", recorded)["traces"]) == 10
    # ...or any name containing the text
    found = run_json("traces", "--name", "orders", "--db", recorded)["traces"]
    assert len(found) == 4 and {t["root_name"] for t in found} == {"http.post /orders"}
    assert {t["root_name"] for t in run_json("traces", "--name", "db", "--db",
                                             recorded)["traces"]} == {"db.vacuum", "dbx.migrate"}
    assert run_json("traces", "--name", "nothing-like-this", "--db", recorded)["traces"] == []
    ids = [t["trace_id"] for t in everything["traces"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 12


def write_traces(db_path: str, durations_ms: dict[str, int], errored: set[str]) -> dict[str, str]:
    """One root span per name (with one child) with exactly the given durations."""
    with holter.testing.monitor(db=db_path, app="exact") as mon:
        mon.counter("exact.marker").inc()
        mon.flush()  # creates the run
        now = time.time_ns() - 60 * 10**9
        records = []
        ids = {}
        for i, (name, ms) in enumerate(durations_ms.items()):
            trace_id, root_id = (0xABC << 100) + i + 1, 0x1000 + i
            start = now + i * 10**9
            status = "error" if name in errored else "ok"
            records.append((trace_id, root_id, None, name, start, ms * MS, "ok", None, None,
                            {}, None, False))
            records.append((trace_id, root_id + 0x100, root_id, f"{name}.child", start + MS,
                            ms * MS // 2, status, "E" if status == "error" else None,
                            "failed" if status == "error" else None, {}, None, False))
            ids[name] = f"{trace_id:032x}"
        mon.store.write_batch(mon.run_id, Batch(now, now, [], records))
    return ids


def test_traces_slowest_orders_by_duration(db_path: str) -> None:
    ids = write_traces(db_path, {"a": 50, "b": 10, "c": 120, "d": 5, "e": 80}, {"b"})
    slowest = run_json("traces", "--slowest", "3", "--db", db_path)["traces"]
    assert [t["root_name"] for t in slowest] == ["c", "e", "a"]
    assert [t["duration_ns"] for t in slowest] == [120 * MS, 80 * MS, 50 * MS]
    assert [t["trace_id"] for t in slowest] == [ids["c"], ids["e"], ids["a"]]
    newest = run_json("traces", "--db", db_path)["traces"]
    assert [t["root_name"] for t in newest] == ["e", "d", "c", "b", "a"]
    assert [t["root_name"] for t in run_json("traces", "--limit", "2", "--db",
                                             db_path)["traces"]] == ["e", "d"]
    errors = run_json("traces", "--errors", "--slowest", "5", "--db", db_path)["traces"]
    assert [(t["root_name"], t["errors"]) for t in errors] == [("b", 1)]
    summary = run_json("traces", "--db", db_path)["summary"]
    assert summary["completed"] == 5
    assert summary["with_errors"] == 1
    assert summary["mean_duration_ns"] == (50 + 10 + 120 + 5 + 80) * MS / 5


def test_traces_limit_counts_traces_not_root_parts(mon) -> None:
    for i in range(5):
        with mon.span(f"old.{i}"):
            pass
    mon.flush()
    with mon.span("busy"):
        for _ in range(30):  # a client calling a service that writes the same store
            with mon.span("serve", context=holter.extract(holter.inject({}))):
                pass
            mon.flush()  # the service flushes between the calls
    mon.flush()
    listed = q.traces(mon.store, "1h", limit=5)
    assert [t["root_name"] for t in listed] == ["busy", "old.4", "old.3", "old.2", "old.1"]
    assert listed[0]["spans"] == 31
    assert listed[0]["has_root"] is True


def test_a_trace_split_over_flushes_is_listed_once(mon) -> None:
    with mon.span("long.job") as job:
        for _ in range(3):
            with mon.span("step"):
                pass
            mon.flush()
    mon.flush()
    listed = q.traces(mon.store, "1h")
    assert len(listed) == 1
    assert (listed[0]["trace_id"], listed[0]["root_name"], listed[0]["spans"]) == (
        job.trace_id_hex, "long.job", 4)
    assert len(q.trace(mon.store, job.trace_id_hex)) == 4


def test_trace_json_has_the_critical_path(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, app="exact") as mon:
        mon.counter("exact.marker").inc()
        mon.flush()
        t0 = time.time_ns() - 60 * 10**9
        tid, root, a, b, c = 0xFEED << 100, 0x11, 0x22, 0x33, 0x44
        spans = [(root, None, "request", 0, 100), (a, root, "auth", 10, 40),
                 (b, root, "query", 50, 90), (c, root, "cache", 50, 70)]
        records = [(tid, sid, parent, name, t0 + start * MS, (end - start) * MS, "ok", None,
                    None, {}, None, False) for sid, parent, name, start, end in spans]
        mon.store.write_batch(mon.run_id, Batch(t0, t0, [], records))
    trace_id = f"{tid:032x}"
    tree = run_json("trace", trace_id, "--db", db_path)
    assert tree["trace_id"] == trace_id
    assert tree["duration_ns"] == 100 * MS
    path = tree["critical_path"]
    assert [step["span_id"] for step in path] == [f"{s:016x}" for s in (root, a, b)]
    assert [step["name"] for step in path] == ["request", "auth", "query"]
    assert [step["contribution_ns"] for step in path] == [30 * MS, 30 * MS, 40 * MS]
    assert sum(step["contribution_ns"] for step in path) == tree["duration_ns"]
    spans_by_name = {s["name"]: s for s in tree["spans"]}
    assert spans_by_name["cache"]["critical_ns"] == 0
    assert spans_by_name["request"]["self_ns"] == 30 * MS  # 100 - union(10..40, 50..90)
    # a unique prefix of 8+ digits finds it too
    assert run_json("trace", trace_id[:12], "--db", db_path)["trace_id"] == trace_id
    table = run("trace", trace_id, "--db", db_path)
    assert table.exit_code == 0
    assert "critical path:" in table.output
    assert "request" in table.output and "query" in table.output


@pytest.mark.parametrize("trace_id", ["0123456789abcdef0123456789abcdef", "nothex!!",
                                      "abc"])
def test_trace_not_found_is_a_one_line_error(recorded: str, trace_id: str) -> None:
    result = subprocess.run([sys.executable, "-m", "holter", "trace", trace_id, "--db", recorded,
                             "--json"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("holter: error:")
    assert "Traceback" not in result.stderr


def test_ops_of_a_long_span_name(db_path: str) -> None:
    name = "handler." + "x" * 250
    with holter.testing.monitor(db=db_path) as mon:
        for i in range(4):
            try:
                with mon.span(name):
                    if i % 2:
                        raise ValueError("odd")
            except ValueError:
                pass
        mon.flush()
    rows = run_json("ops", "--db", db_path)
    assert len(rows) == 1
    assert name.startswith(rows[0]["name"])
    assert rows[0]["count"] == 4
    assert rows[0]["errors"] == 2
    assert rows[0]["stored_spans"] == 4
