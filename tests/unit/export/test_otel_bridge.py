"""The OpenTelemetry API bridge: OpenTelemetry-instrumented code records into holter."""

from __future__ import annotations

import json
import subprocess
import sys

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import holter.otel
import holter.testing
from holter.store import query as q


def all_spans(mon) -> dict[str, dict]:
    mon.flush()
    return {s["name"]: s for t in q.traces(mon.store, "1h", limit=100)
            for s in q.trace(mon.store, t["trace_id"])}


def test_spans_nest_keep_ids_and_carry_attributes(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "t.db"), app="b") as mon:
        tracer = holter.otel.tracer_provider(mon).get_tracer("lib", "1.0")
        with tracer.start_as_current_span(
            "outer", kind=SpanKind.SERVER, attributes={"a": 1, "http-method": "GET", "f": 0.5,
                                                        "ok": True, "list": [1, 2]},
        ) as outer:
            outer.add_event("cache miss", {"key": "k"})
            outer.set_attribute("rows", 3)
            ctx = outer.get_span_context()
            assert ctx.is_valid and not ctx.is_remote and ctx.trace_flags.sampled
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers)  # OpenTelemetry sees holter's ids
            with mon.span("holter.inner") as inner:
                assert inner.trace_id == ctx.trace_id and inner.parent_id == ctx.span_id
                with tracer.start_as_current_span("otel.innermost"):
                    pass
            try:
                with tracer.start_as_current_span("failing"):
                    raise ValueError("boom")
            except ValueError:
                pass
            explicit = tracer.start_span("explicit")
            explicit.set_status(Status(StatusCode.ERROR, "went wrong"))
            explicit.update_name("renamed")
            explicit.end()
            assert not explicit.is_recording()
        spans = all_spans(mon)
    outer_s = spans["outer"]
    assert headers["traceparent"] == f"00-{outer_s['trace_id']}-{outer_s['span_id']}-01"
    assert outer_s["parent_id"] is None
    assert outer_s["tags"] == {"a": 1, "http_method": "GET", "f": 0.5, "ok": True,
                               "list": "[1, 2]", "rows": 3, "span.kind": "server"}
    assert outer_s["events"][0]["message"] == "cache miss"
    assert outer_s["events"][0]["fields"] == {"key": "k"}
    assert spans["holter.inner"]["parent_id"] == outer_s["span_id"]
    assert spans["otel.innermost"]["parent_id"] == spans["holter.inner"]["span_id"]
    failing = spans["failing"]
    assert failing["status"] == "error" and failing["error_type"] == "ValueError"
    assert failing["error_message"] == "boom"
    assert failing["events"][0]["fields"]["exception.type"] == "ValueError"
    assert spans["renamed"]["status"] == "error"
    assert spans["renamed"]["error_message"] == "went wrong"


def test_a_remote_parent_keeps_its_trace_id(tmp_path) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    carrier = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    with holter.testing.monitor(db=str(tmp_path / "r.db"), app="b") as mon:
        tracer = holter.otel.tracer_provider(mon).get_tracer("lib")
        ctx = TraceContextTextMapPropagator().extract(carrier)
        with tracer.start_as_current_span("server", context=ctx):
            pass
        token = otel_context.attach(ctx)  # the current context, as a framework would set it
        try:
            tracer.start_span("attached").end()
        finally:
            otel_context.detach(token)
        spans = all_spans(mon)
    for name in ("server", "attached"):
        assert spans[name]["trace_id"] == trace_id
        assert spans[name]["parent_id"] == span_id
        assert spans[name]["remote_parent"] is True


def test_instruments_record_into_holter(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "m.db"), app="b") as mon:
        meter = holter.otel.meter_provider(mon).get_meter("lib")
        meter.create_counter("jobs", unit="{job}").add(2, {"queue": "a"})
        meter.create_counter("jobs", unit="{job}").add(3, {"queue": "a"})  # the same counter
        meter.create_histogram("lat", unit="ms").record(5.0, {"route": "/x"})
        updown = meter.create_up_down_counter("inflight")
        updown.add(3)
        meter.create_up_down_counter("inflight").add(-1)
        meter.create_gauge("temp", unit="Cel").set(21.5)
        seen = {"n": 10}

        def observe(options):
            seen["n"] += 5
            return [Observation(seen["n"], {"x": "1"})]

        meter.create_observable_counter("obs.total", [observe])
        meter.create_observable_gauge("obs.level", [lambda options: [Observation(4.5)]])
        mon.flush()
        mon.flush()
        store = mon.store
        assert q.stats(store, "jobs", "1h", tags={"queue": "a"}).count == 5
        lat = q.stats(store, "lat", "1h")
        assert lat.count == 1 and lat.unit == "ms"
        assert q.stats(store, "inflight", "1h").last == 2
        assert q.stats(store, "temp", "1h").last == 21.5
        assert q.stats(store, "obs.total", "1h").count == 20  # cumulative 15 then 20
        assert q.stats(store, "obs.level", "1h").last == 4.5


def test_conflicting_instruments_become_no_ops(tmp_path, caplog) -> None:
    with holter.testing.monitor(db=str(tmp_path / "c.db"), app="b") as mon:
        mon.gauge("taken").set(1)
        counter = holter.otel.meter_provider(mon).get_meter("lib").create_counter("taken")
        counter.add(1)  # a no-op, never an error in the program
        assert "is not recorded" in caplog.text


def test_install_sets_the_global_providers(tmp_path) -> None:
    code = f"""
import json, holter, holter.otel
from opentelemetry import trace, metrics
mon = holter.start(app="g", db={str(tmp_path / "g.db")!r})
holter.otel.install()
holter.otel.install()  # twice is fine
with trace.get_tracer("x").start_as_current_span("global.span"):
    metrics.get_meter("x").create_counter("global.count").add(4)
from holter.store import query as q
mon.flush()
print(json.dumps([q.stats(mon.store, "global.count", "1h").count,
                  [t["root_name"] for t in q.traces(mon.store, "1h")]]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [4, ["global.span"]]


def test_install_refuses_when_another_provider_is_set(tmp_path) -> None:
    code = f"""
import holter, holter.otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
holter.start(app="g", db={str(tmp_path / "g2.db")!r})
try:
    holter.otel.install()
except holter.ConfigError as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: an OpenTelemetry TracerProvider is already installed" in done.stdout


def test_otel_is_not_imported_by_import_holter() -> None:
    code = ("import sys, holter; holter.otel; "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    assert trace is not None
