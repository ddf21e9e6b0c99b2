"""`holter compare` on synthetic runs with and without a real regression."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
from report_support import T0, S, record_service

from holter.core.sketch import Sketch
from holter.errors import QueryError
from holter.reports.compare import compare, exceedance_test, parse_fail_on, rate_test
from holter.reports.json import schema
from holter.store.sqlite import Store

HOUR = 3600 * S


def holter_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holter", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def runs_db(tmp_path_factory) -> str:
    """Runs 1-5: the same service (different random draws); run 6: 50 % slower."""
    db = str(tmp_path_factory.mktemp("cmp") / "runs.db")
    for i in range(5):
        record_service(db, minutes=3, seed=i, start_ns=T0 + i * HOUR)
    record_service(db, minutes=3, seed=99, slow=1.5, start_ns=T0 + 5 * HOUR)
    return db


def test_same_service_twice_is_not_a_regression(runs_db: str) -> None:
    # (span durations are real time, not the fake clock's: they are not gated here)
    proc = holter_cli("compare", "1", "2", "--db", runs_db, "--fail-on",
                      "p95(http.server.duration)>+10%", "--fail-on",
                      "p99(http.server.duration)>+10%", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jsonschema.validate(data, schema("compare"), cls=jsonschema.Draft202012Validator)
    assert not data["failed"] and data["regressions"] == []
    latency = [r for r in data["rows"] if r["metric"] == "http.server.duration"]
    assert len(latency) == 4
    for row in latency:
        p95 = next(c for c in row["changes"] if c["stat"] == "p95")
        assert not p95["significant"], row
        assert abs(p95["change"]) < 0.25  # it does differ a little: that is the noise


def test_a_real_regression_fails_the_gate(runs_db: str, tmp_path) -> None:
    out = tmp_path / "cmp.md"
    proc = holter_cli("compare", "1", "6", "--db", runs_db, "--fail-on", "p95>+10%",
                      "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "regression" in proc.stderr and "p95" in proc.stderr
    text = out.read_text()
    assert "**FAILED**" in text and "## Significant changes" in text
    store = Store.open(runs_db, create=False)
    try:
        result = compare(store, 1, 6, fail_on=["p95>+10%"])
    finally:
        store.close()
    latency = [r for r in result.rows if r.metric == "http.server.duration"]
    for row in latency:
        p95 = next(c for c in row.changes if c.stat == "p95")
        assert p95.significant and p95.direction == "up"
        assert p95.change > 0.3  # 1.5x slower, seen through a 270-observation p95
        rate = next(c for c in row.changes if c.stat == "rate")
        assert not rate.significant  # the request rate did not change
    # a threshold above the change does not fire
    proc = holter_cli("compare", "1", "6", "--db", runs_db, "--fail-on", "p95>+200%")
    assert proc.returncode == 0, proc.stderr


def test_baseline_of_runs_before_the_latest(runs_db: str, tmp_path) -> None:
    proc = holter_cli("compare", "--baseline", "last 4 runs of app svc", "--db", runs_db,
                      "--fail-on", "p99(http.server.duration)>+10%", "-o",
                      str(tmp_path / "b.html"))
    assert proc.returncode == 1, proc.stderr
    html = (tmp_path / "b.html").read_text()
    assert "4 runs (2…5)" in html and "failed" in html
    # the baseline against a run like it: nothing beyond the run-to-run spread
    proc = holter_cli("compare", "5", "--baseline", "3", "--db", runs_db, "--fail-on",
                      "p95(http.server.duration)>+10%", "--fail-on",
                      "rate(http.server.requests)<-10%", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["a"]["runs"] == [2, 3, 4] and data["b"]["runs"] == [5]


def test_bad_compare_input_is_a_one_line_error(runs_db: str) -> None:
    for args in (["1"], ["1", "99"], ["1", "2", "--fail-on", "p95 up"],
                 ["--baseline", "some"], ["1", "2", "3"]):
        proc = holter_cli("compare", *args, "--db", runs_db)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("holter: error:") or "Error" in proc.stderr


def test_statistics() -> None:
    a, b, c = Sketch(), Sketch(), Sketch()
    for i in range(1, 2001):
        a.add(i / 1000)
        b.add(i / 1000 * 1.001)
        c.add(i / 1000 * 1.3)
    assert exceedance_test(a, b, 0.95)[2] > 0.5
    qa, qc, p = exceedance_test(a, c, 0.95)
    assert qc / qa == pytest.approx(1.3, rel=0.02) and p < 1e-6
    assert rate_test(1000, 100, 1010, 100) > 0.5
    assert rate_test(1000, 100, 1500, 100) < 1e-6
    gates = parse_fail_on(["p95>+10%", "rate(http.server.requests)<-20%"])
    assert gates[0].threshold == pytest.approx(0.1) and gates[1].name == "http.server.requests"
    for bad in ("p95>10", "p95<+10%", "p42>+1%"):
        with pytest.raises(QueryError):
            parse_fail_on([bad])
