"""Sampling and the bounded span buffer.

Head sampling by ratio decides at a trace's root; the tail rule still stores a
sampled-out trace whole when any span errored or its root was slower than
``keep_slower_than_s``. Whatever is stored, ``span.duration{name=...}`` counts every
span, so operation statistics stay exact. A full span buffer drops and counts,
never blocks.
"""

from __future__ import annotations

import threading
import time

import pytest

import holter
import holter.testing
from holter.analysis.operations import operations
from holter.errors import ConfigError, QueryError
from holter.store import query as q

T = "4bf92f3577b34da6a3ce929d0e0e4736"
T2 = "5bf92f3577b34da6a3ce929d0e0e4737"
S = "00f067aa0ba902b7"


def names_in(mon, trace_id: str) -> list[str]:
    return sorted(r["name"] for r in q.trace(mon.store, trace_id))


def not_stored(mon, trace_id: str) -> bool:
    try:
        q.trace(mon.store, trace_id)
    except QueryError:
        return True
    return False


def durations_by_name(mon) -> dict[str, float]:
    return {g.group["name"]: g.count for g in mon.query("span.duration", "1h", by="name")}


def test_ratio_zero_keeps_only_errored_and_slow_traces_whole(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, sample_ratio=0.0, keep_slower_than_s=0.25) as mon:
        ordinary = []
        for _ in range(5):
            with mon.span("plain") as root, mon.span("plain.child"):
                pass
            ordinary.append(root)
        with mon.span("err.root") as err_root:
            with mon.span("err.ok"):
                pass
            try:
                with mon.span("err.child"):
                    with mon.span("err.grandchild"):
                        pass
                    raise KeyError("k")
            except KeyError:
                pass
        with pytest.raises(ValueError), mon.span("err.at.root") as err_at_root:
            raise ValueError("boom")
        with mon.span("slow.root") as slow_root:
            with mon.span("slow.child"):
                pass
            time.sleep(0.3)
        mon.flush()

        for root in ordinary:
            assert not_stored(mon, root.trace_id_hex)
        assert names_in(mon, err_root.trace_id_hex) == [
            "err.child", "err.grandchild", "err.ok", "err.root"]
        assert names_in(mon, err_at_root.trace_id_hex) == ["err.at.root"]
        assert names_in(mon, slow_root.trace_id_hex) == ["slow.child", "slow.root"]
        assert sorted(t["root_name"] for t in q.traces(mon.store, "1h")) == [
            "err.at.root", "err.root", "slow.root"]

        # every span fed the duration histogram, stored or not
        expected = {"plain": 5, "plain.child": 5, "err.root": 1, "err.ok": 1, "err.child": 1,
                    "err.grandchild": 1, "err.at.root": 1, "slow.root": 1, "slow.child": 1}
        assert durations_by_name(mon) == expected
        ops = {r["name"]: r for r in operations(mon.store, "1h")}
        assert {name: r["count"] for name, r in ops.items()} == expected
        assert ops["err.child"]["errors"] == 1
        assert ops["err.child"]["error_rate"] == 1.0
        assert ops["err.at.root"]["errors"] == 1
        assert ops["plain"]["errors"] == 0
        assert ops["plain"]["error_rate"] == 0.0
        assert ops["slow.root"]["max_s"] >= 0.3


def test_one_flush_writes_spans_and_their_durations(mon) -> None:
    for _ in range(4):
        with mon.span("op"), mon.span("op.child"):
            pass
    assert mon.flush() is True
    assert len(q.traces(mon.store, "1h")) == 4
    assert mon.query("span.duration", "1h", tags={"name": "op"}, flush=False).count == 4
    assert {r["name"]: r["count"] for r in operations(mon.store, "1h")} == {
        "op": 4, "op.child": 4}


def test_ratio_zero_without_a_slow_threshold_keeps_only_errors(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, sample_ratio=0.0, keep_slower_than_s=None) as mon:
        with mon.span("slowish") as slow:
            time.sleep(0.01)
        with mon.span("failing") as failing:
            failing.set_error("Timeout", "gave up")
        mon.flush()
        assert not_stored(mon, slow.trace_id_hex)
        assert names_in(mon, failing.trace_id_hex) == ["failing"]


def test_default_keeps_every_trace(mon) -> None:
    roots = []
    for _ in range(20):
        with mon.span("kept") as root, mon.span("kept.child"):
            pass
        roots.append(root)
    mon.flush()
    for root in roots:
        assert names_in(mon, root.trace_id_hex) == ["kept", "kept.child"]


def test_head_sampling_by_ratio(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, sample_ratio=0.5, keep_slower_than_s=None) as mon:
        for _ in range(1000):
            with mon.span("coin"):
                pass
        mon.flush()
        stored = len(q.traces(mon.store, "1h", limit=2000))
        assert mon.query("span.duration", "1h", tags={"name": "coin"}).count == 1000
    assert 350 <= stored <= 650  # binomial(1000, 0.5): 9 standard deviations either side


def test_the_remote_sampled_flag_decides_for_continued_traces(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, sample_ratio=0.0, keep_slower_than_s=None) as mon:
        sampled = holter.extract({"traceparent": f"00-{T}-{S}-01"})
        unsampled = holter.extract({"traceparent": f"00-{T2}-{S}-00"})
        with mon.span("serve.sampled", context=sampled), mon.span("db"):
            pass
        with mon.span("serve.unsampled", context=unsampled) as serve, mon.span("db"):
            out = holter.inject({})
        with mon.span("local") as local:
            local_out = holter.inject({})
        mon.flush()
        assert names_in(mon, T) == ["db", "serve.sampled"]
        assert not_stored(mon, T2)
        assert not_stored(mon, local.trace_id_hex)
    assert out["traceparent"].endswith("-00")  # the decision travels on
    assert serve.sampled is False
    assert local_out["traceparent"] == f"00-{local.trace_id_hex}-{local.span_id_hex}-00"


def test_a_sampled_out_trace_continued_remotely_is_kept_when_it_errs(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, sample_ratio=1.0) as mon:
        unsampled = holter.extract({"traceparent": f"00-{T2}-{S}-00"})
        with mon.span("serve", context=unsampled), mon.span("db") as db:
            db.set_error("IntegrityError", "duplicate key")
        mon.flush()
        assert names_in(mon, T2) == ["db", "serve"]


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_sample_ratio_outside_zero_one_is_a_config_error(db_path: str, ratio: float) -> None:
    with pytest.raises(ConfigError, match="ratio"), holter.testing.monitor(
            db=db_path, sample_ratio=ratio):
        pass


# -- the bounded buffer -----------------------------------------------------------------


def test_a_full_span_buffer_drops_and_counts_without_blocking(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, strict=False, span_buffer=10) as mon:
        done = threading.Event()

        def burst() -> None:
            for i in range(25):
                with mon.span("burst", i=i):
                    pass
            done.set()

        thread = threading.Thread(target=burst)
        thread.start()
        thread.join(30)
        assert done.is_set(), "recording blocked on a full span buffer"
        assert mon.tracer.pending() == 10
        mon.flush()
        kept = q.traces(mon.store, "1h", limit=100)
        assert len(kept) == 10
        assert sorted(q.trace(mon.store, t["trace_id"])[0]["tags"]["i"] for t in kept) == list(
            range(10))
        dropped = mon.query("holter.dropped", "1h", tags={"reason": "span_buffer_full"})
        assert dropped.count == 15
        assert 10 <= mon.query("span.duration", "1h", tags={"name": "burst"}).count <= 25
        # once flushed, the buffer takes spans again
        with mon.span("after.flush") as after:
            pass
        mon.flush()
        assert names_in(mon, after.trace_id_hex) == ["after.flush"]
        assert mon.query("holter.dropped", "1h", tags={"reason": "span_buffer_full"}).count == 15


def test_a_full_buffer_never_raises_in_strict_mode(db_path: str) -> None:
    with holter.testing.monitor(db=db_path, strict=True, span_buffer=2) as mon:
        for _ in range(5):
            with mon.span("strict.burst"):
                pass
        mon.flush()
        assert mon.query("holter.dropped", "1h", tags={"reason": "span_buffer_full"}).count == 3
