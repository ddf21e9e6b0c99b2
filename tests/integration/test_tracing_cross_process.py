"""Traces across processes: a client span and a server subprocess exchanging a request
over HTTP on 127.0.0.1 make one trace in the shared store, shown as one tree by
``python -m holter``; and a process exiting with a span open stores it as unfinished.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import holter
import holter.testing
from holter.store import query as q
from holter.store.sqlite import Store

SCRIPTS = Path(__file__).resolve().parent / "scripts"
TIMEOUT_S = 30


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("HOLTER_DB", None)
    out["HOLTER_STRICT"] = "1"
    return out


def holter_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holter", *args], capture_output=True,
                          text=True, timeout=TIMEOUT_S, env=env(), check=False)


def read_line(proc: subprocess.Popen[str]) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT_S)
    assert ready, "the subprocess printed nothing in time"
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line:
        proc.wait(TIMEOUT_S)
        pytest.fail(f"subprocess ended early: {proc.stderr.read()}")  # type: ignore[union-attr]
    return line


def test_two_processes_make_one_trace(db_path: str) -> None:
    server = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "tracing_server.py"), db_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )
    try:
        port = int(read_line(server))
        with holter.testing.monitor(db=db_path, app="tracing-client") as mon:
            with mon.span("client.call", peer="tracing-server") as call:
                # room between the two starts, so clock anchors of the two processes
                # (each maps its monotonic clock to wall time) cannot swap them
                time.sleep(0.02)
                headers = holter.inject({"Accept": "application/json"})
                request = urllib.request.Request(f"http://127.0.0.1:{port}/users/1",
                                                 headers=headers)
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    reply = json.load(response)
            mon.flush()
            client_run = mon.run_id
        assert server.wait(TIMEOUT_S) == 0, server.stderr.read()  # type: ignore[union-attr]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(TIMEOUT_S)
        server.stdout.close()  # type: ignore[union-attr]
        server.stderr.close()  # type: ignore[union-attr]

    trace_id = call.trace_id_hex
    assert reply["extracted"] is True
    assert reply["trace_id"] == trace_id
    assert reply["run_id"] != client_run

    # the store: one trace, spans of two runs
    store = Store.open(db_path, create=False)
    try:
        rows = {r["name"]: r for r in q.trace(store, trace_id)}
        listed = q.traces(store, "1h")
    finally:
        store.close()
    assert set(rows) == {"client.call", "serve", "db"}
    assert rows["client.call"]["run_id"] == client_run
    assert rows["serve"]["run_id"] == rows["db"]["run_id"] == reply["run_id"]
    assert rows["client.call"]["parent_id"] is None
    assert rows["serve"]["parent_id"] == call.span_id_hex
    assert rows["serve"]["span_id"] == reply["span_id"]
    assert rows["serve"]["remote_parent"] is True
    assert rows["serve"]["tags"] == {"path": "/users/1"}
    assert rows["db"]["parent_id"] == rows["serve"]["span_id"]
    assert len(listed) == 1

    # `holter trace ID --json`: one tree, server spans under the client span
    result = holter_cli("trace", trace_id, "--db", db_path, "--json")
    assert result.returncode == 0, result.stderr
    tree = json.loads(result.stdout)
    assert tree["trace_id"] == trace_id
    assert [(s["name"], s["depth"]) for s in tree["spans"]] == [
        ("client.call", 0), ("serve", 1), ("db", 2)]
    assert {s["run_id"] for s in tree["spans"]} == {client_run, reply["run_id"]}
    path = tree["critical_path"]
    assert isinstance(path, list) and path
    assert path[0]["span_id"] == call.span_id_hex
    ids = {s["span_id"] for s in tree["spans"]}
    for step in path:
        assert step["span_id"] in ids
        assert step["contribution_ns"] > 0
    assert sum(step["contribution_ns"] for step in path) <= tree["duration_ns"]

    # `holter traces --json`: listed once, under the client's root name
    result = holter_cli("traces", "--db", db_path, "--json")
    assert result.returncode == 0, result.stderr
    traces = json.loads(result.stdout)["traces"]
    assert len(traces) == 1
    assert traces[0]["trace_id"] == trace_id
    assert traces[0]["root_name"] == "client.call"
    assert traces[0]["has_root"] is True
    assert traces[0]["spans"] == 3


@pytest.mark.parametrize(("mode", "code"), [("normal", 0), ("exit", 3), ("raise", 1)])
def test_a_process_exiting_with_a_span_open_stores_it(db_path: str, mode: str,
                                                       code: int) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "tracing_unfinished.py"), db_path, mode],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env(), check=False,
    )
    assert result.returncode == code, result.stderr
    trace_id = result.stdout.split()[0]
    store = Store.open(db_path, create=False)
    try:
        rows = {r["name"]: r for r in q.trace(store, trace_id)}
        listed = q.traces(store, "1h")
    finally:
        store.close()
    job, step = rows["job"], rows["job.step"]
    assert step["status"] == "ok"
    assert step["parent_id"] == job["span_id"]
    assert job["tags"] == {"mode": mode}
    assert job["duration_ns"] >= 2_000_000
    if mode == "raise":
        assert (job["status"], job["error_type"], job["error_message"]) == (
            "error", "RuntimeError", "fatal in job")
        assert listed[0]["unfinished"] == 0
    else:
        assert job["status"] == "unfinished"
        assert job["duration_ns"] >= 4_000_000  # its duration so far
        assert listed[0]["unfinished"] == 1
    assert [t["trace_id"] for t in listed] == [trace_id]
