"""Exposition from the store: values, both text formats (checked with prometheus_client's
parsers), empty stores, incremental refresh, buckets, and the /metrics server."""

from __future__ import annotations

import logging
import math
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

import holter.testing
from holter.core.sketch import Sketch
from holter.errors import ConfigError
from holter.export.prometheus import (
    Exposition,
    MetricsServer,
    cumulative_count,
    is_loopback,
)
from holter.store import query as q


def samples(text: str, openmetrics: bool = False) -> dict[tuple[str, tuple], float]:
    families = parse_om(text) if openmetrics else parse_text(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families
            for s in f.samples}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_missing_and_empty_stores_give_an_empty_valid_exposition(tmp_path) -> None:
    assert Exposition(str(tmp_path / "none.db")).render() == ""
    with holter.testing.monitor(db=str(tmp_path / "empty.db")) as mon:
        mon.store  # created, nothing recorded
        text = Exposition(mon.config.db).render()
        assert list(parse_text(text)) == []
        om = Exposition(mon.config.db).render(openmetrics=True)
        assert om in ("", "# EOF\n")
        assert list(parse_om(om or "# EOF\n")) == []


def test_values_per_app_and_tags_across_runs(tmp_path) -> None:
    db = str(tmp_path / "v.db")
    for run in range(3):
        with holter.testing.monitor(db=db, app="cli") as mon:
            mon.counter("tool.runs").inc(run + 1, tool="fmt")
            mon.gauge("depth").set(10 + run)
            h = mon.histogram("lat", unit="ms")
            for i in range(1, 101):
                h.observe(float(i), route='/a"b')
            mon.flush()
    with holter.testing.monitor(db=db, app="svc") as mon:
        mon.counter("tool.runs").inc(100, tool="fmt")
        mon.flush()
        stats = q.stats(mon.store, "lat", "1h", app="cli")
    exposition = Exposition(db)
    got = samples(exposition.render())
    assert got[("tool_runs_total", (("app", "cli"), ("tool", "fmt")))] == 6
    assert got[("tool_runs_total", (("app", "svc"), ("tool", "fmt")))] == 100
    assert got[("depth", (("app", "cli"),))] == 12  # the newest value
    base = (("app", "cli"), ("route", '/a"b'))
    assert got[("lat_milliseconds_count", base)] == 300
    assert got[("lat_milliseconds_sum", base)] == 3 * 5050
    for quantile, expected in (("0.5", stats.p50), ("0.9", stats.p90), ("0.99", stats.p99)):
        key = tuple(sorted((*base, ("quantile", quantile))))
        assert got[("lat_milliseconds", key)] == expected
    # the same data as OpenMetrics
    om = exposition.render(openmetrics=True)
    assert om.endswith("# EOF\n")
    assert "# UNIT lat_milliseconds milliseconds" in om
    got_om = samples(om, openmetrics=True)
    assert got_om[("tool_runs_total", (("app", "cli"), ("tool", "fmt")))] == 6

    # incremental: a new run is added to what the exposition already had
    with holter.testing.monitor(db=db, app="cli") as mon:
        mon.counter("tool.runs").inc(4, tool="fmt")
        mon.flush()
    again = samples(exposition.render())
    assert again[("tool_runs_total", (("app", "cli"), ("tool", "fmt")))] == 10
    assert samples(Exposition(db).render()) == again  # a fresh reader agrees


def test_summary_quantiles_cover_only_the_window(tmp_path) -> None:
    db = str(tmp_path / "w.db")
    with holter.testing.FakeClock() as clock, holter.testing.monitor(db=db, app="a") as mon:
        mon.histogram("lat").observe(1.0)
        mon.flush()
        clock.advance(3600)
        exposition = Exposition(db, window_s=600)
        got = samples(exposition.render())
        assert math.isnan(got[("lat", (("app", "a"), ("quantile", "0.5")))])
        assert got[("lat_count", (("app", "a"),))] == 1  # counts stay cumulative
        mon.histogram("lat").observe(8.0)
        mon.flush()
        got = samples(exposition.render())
        assert got[("lat", (("app", "a"), ("quantile", "0.5")))] == 8.0
        assert got[("lat_count", (("app", "a"),))] == 2


def test_classic_buckets_from_the_sketch(tmp_path) -> None:
    values = [0.003, 0.01, 0.2, 0.2, 0.5, 1.0, 1.5, 4.0, 9.0]
    with holter.testing.monitor(db=str(tmp_path / "b.db"), app="a") as mon:
        h = mon.histogram("wait", unit="s")
        for v in values:
            h.observe(v)
        mon.flush()
        text = Exposition(mon.config.db, histograms="histogram").render(openmetrics=True)
        got = samples(text, openmetrics=True)
        buckets = {float(dict(k[1])["le"]): v for k, v in got.items()
                   if k[0] == "wait_seconds_bucket"}
        for le, n in buckets.items():
            if le != math.inf:
                assert n == len([v for v in values if v <= le]), le  # exact at powers of two
        assert buckets[math.inf] == len(values)
        explicit = Exposition(mon.config.db, histograms="histogram", buckets=[0.1, 1, 5])
        got = samples(explicit.render())
        assert got[("wait_seconds_bucket", (("app", "a"), ("le", "1.0")))] == 6
        assert got[("wait_seconds_bucket", (("app", "a"), ("le", "5.0")))] == 8


def test_cumulative_count_is_exact_at_powers_of_two_and_zero() -> None:
    sketch = Sketch()
    for v in (-4.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0):
        sketch.add(v)
    assert cumulative_count(sketch, 0.0) == 3
    assert cumulative_count(sketch, 1.0) == 5
    assert cumulative_count(sketch, 2.0) == 6
    assert cumulative_count(sketch, -1.0) == 2
    assert cumulative_count(sketch, -2.0) == 1
    assert cumulative_count(sketch, 100.0) == 7


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="histogram mode"):
        Exposition("x.db", histograms="both")
    with pytest.raises(ConfigError, match="finite"):
        Exposition("x.db", buckets=[1.0, math.inf])


def test_server_tokens_paths_and_formats(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "s.db"), app="a") as mon:
        mon.counter("c").inc(2)
        mon.flush()
        server = mon.serve_prometheus(port=0, token="s3cret")
        try:
            assert server.url.startswith("http://127.0.0.1:")
            status, headers, body = get(server.url)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert b"s3cret" not in body
            assert get(server.url, {"Authorization": "Bearer wrong"})[0] == 401
            auth = {"Authorization": "Bearer s3cret"}
            status, headers, body = get(server.url, auth)
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            assert samples(body.decode())[("c_total", (("app", "a"),))] == 2
            status, headers, body = get(
                server.url, {**auth, "Accept": "application/openmetrics-text; version=1.0.0"})
            assert headers["Content-Type"].startswith("application/openmetrics-text")
            assert body.endswith(b"# EOF\n")
            assert get(server.url.replace("/metrics", "/other"), auth)[0] == 404
        finally:
            server.stop()
            server.stop()  # idempotent


def test_listening_beyond_loopback_warns(caplog) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    caplog.set_level(logging.WARNING, logger="holter")
    # 192.0.2.1 (TEST-NET-1) is on no interface: the bind fails after the warning
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1"):
        MetricsServer(Exposition("x.db"), host="192.0.2.1", port=0)
    assert "reachable from other machines" in caplog.text
    assert "bearer token" in caplog.text


def test_bad_port_and_token() -> None:
    with pytest.raises(ConfigError, match="bad port"):
        MetricsServer(Exposition("x.db"), port=70000)
    with pytest.raises(ConfigError, match="bearer token"):
        MetricsServer(Exposition("x.db"), port=0, token="has space")
