"""The alert engine against a real store: states (pending → firing → resolved), `for` and
`keep_firing_for`, Alertmanager timing (group_wait, group_interval, repeat_interval) on a
fake clock, exactly one resolved notice, grouping, silences, inhibition, restarts,
anomaly rules and corrective actions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import holter.testing
from holter.alerting.notifiers import Notification
from holter.store import anomalies as astore_anomalies
from holter.store import query as q
from holter.testing import FakeClock

START_NS = 1_700_000_000 * 10**9


class Inbox:
    """A Python-callable notifier that keeps what it gets (and on which thread)."""

    def __init__(self) -> None:
        self.got: list[Notification] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, notification: Notification) -> None:
        with self.lock:
            self.got.append(notification)
            self.threads.add(threading.current_thread().name)

    def take(self) -> list[Notification]:
        with self.lock:
            out, self.got = self.got, []
        return out


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with FakeClock(start_ns=START_NS) as c:
        yield c


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


def settle(mon: Any) -> None:
    """Flush (which evaluates) and wait until the notifier threads are done."""
    mon.flush()
    assert mon.alerting.wait_idle(10)


def advance(mon: Any, clock: FakeClock, seconds: float, step: float = 10.0) -> None:
    """Move time forward, flushing every ``step`` seconds as the collector would."""
    left = seconds
    while left > 0:
        d = min(step, left)
        clock.advance(d)
        left -= d
        settle(mon)


def states(mon: Any) -> list[tuple[str, str, dict[str, str]]]:
    return sorted((a.rule, a.state, {k: v for k, v in a.labels.items()
                                     if k not in ("alertname", "alertgroup", "severity")})
                  for a in mon.alerts(since="30d"))


def events(mon: Any, kind: str) -> list[Any]:
    return list(reversed(q.alert_events(mon.store, kinds=[kind])))


# -- states --------------------------------------------------------------------------------


def test_pending_then_firing_after_for(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m", for_="2m", summary="{value:.0f}°")
        mon.gauge("temp").set(60)
        settle(mon)
        assert states(mon) == [("hot", "pending", {})]
        advance(mon, clock, 110)
        assert states(mon) == [("hot", "pending", {})]
        assert inbox.take() == []
        advance(mon, clock, 10)  # 2 minutes after the condition started
        assert states(mon) == [("hot", "firing", {})]
        got = inbox.take()
        assert [n.status for n in got] == ["firing"]
        assert got[0].alerts[0].annotations["summary"] == "60°"
        assert inbox.threads and "MainThread" not in inbox.threads
        assert [e.detail["pending_s"] for e in events(mon, "firing")] == [120.0]


def test_pending_that_clears_never_fires(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox]) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m", for_="2m")
        temp = mon.gauge("temp")
        temp.set(60)
        advance(mon, clock, 60)
        temp.set(20)
        advance(mon, clock, 300)
        assert states(mon) == []
        assert [e.kind for e in events(mon, "cancelled")] == ["cancelled"]
        assert inbox.take() == []


def test_keep_firing_for_holds_through_a_dip(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0, "group_interval": "10s"}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m", keep_firing_for="1m")
        temp = mon.gauge("temp")
        temp.set(60)
        settle(mon)
        assert [n.status for n in inbox.take()] == ["firing"]
        temp.set(20)  # a short dip: still firing
        advance(mon, clock, 30)
        temp.set(70)
        advance(mon, clock, 30)
        temp.set(20)
        advance(mon, clock, 50)
        assert states(mon) == [("hot", "firing", {})]
        assert inbox.take() == []
        advance(mon, clock, 10)  # a full minute without the condition
        assert states(mon) == [("hot", "resolved", {})]
        assert [n.status for n in inbox.take()] == ["resolved"]


def test_metric_not_recorded_yet_keeps_the_rule_inactive(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0}) as mon:
        rule = mon.alert("errors", "rate(http.errors) > 0.1", window="1m")
        assert rule.metric == "http.errors"
        mon.counter("other").inc()
        settle(mon)
        report = mon.alerting.last_report
        assert report.inactive_rules == ["errors"] and report.errors == {}
        assert states(mon) == []
        mon.counter("http.errors").inc(100)
        advance(mon, clock, 10)
        assert states(mon) == [("errors", "firing", {})]


def test_evaluation_problems_leave_state_and_program_alone(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox]) as mon:
        mon.counter("twice").inc()
        mon.gauge("twice.g").set(1)
        settle(mon)
        # a metric recorded as two kinds cannot be evaluated: counted, state unchanged
        store = mon.store
        with store.atomic() as conn:
            conn.execute("UPDATE series SET name = 'twice' WHERE name = 'twice.g'")
        mon.alert("amb", "max(twice) > 0")
        settle(mon)
        assert "several kinds" in mon.alerting.last_report.errors["amb"]
        settle(mon)
        counted = mon.query("holter.alerts.evaluation_errors", window="1h")
        assert counted.count == 2


# -- notification timing -------------------------------------------------------------------


def test_group_wait_interval_and_repeat_follow_alertmanagers_defaults(db_path, clock,
                                                                        inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox]) as mon:
        settings = mon.alerting.settings
        assert (settings.group_wait_s, settings.group_interval_s,
                settings.repeat_interval_s) == (30, 300, 4 * 3600)
        mon.alert("hot", "last(temp) by (room) > 50", window="1m")
        temp = mon.gauge("temp")
        temp.set(60, room="a")
        settle(mon)  # t=0: firing, waiting group_wait
        advance(mon, clock, 20)
        assert inbox.take() == []
        advance(mon, clock, 10)  # t=30
        first = inbox.take()
        assert [(n.status, len(n.alerts), n.repeat) for n in first] == [("firing", 1, False)]
        assert first[0].group_labels == {"alertgroup": "hot"}

        # a new alert of the group waits for group_interval after the last notification
        advance(mon, clock, 60)
        temp.set(70, room="b")
        advance(mon, clock, 230)  # t=320: 290 s after the first notification
        assert inbox.take() == []
        advance(mon, clock, 10)  # t=330
        second = inbox.take()
        assert [(n.status, sorted(a.labels["room"] for a in n.alerts)) for n in second] == [
            ("firing", ["a", "b"])]

        # nothing new: the same firing alerts again only after repeat_interval (4 h)
        advance(mon, clock, 4 * 3600 - 10, step=600)
        assert inbox.take() == []
        advance(mon, clock, 10)
        repeat = inbox.take()
        assert [(n.repeat, len(n.alerts)) for n in repeat] == [(True, 2)]

        # room b cools: one resolved notice at the next group_interval, then silence
        temp.set(10, room="b")
        advance(mon, clock, 10)
        assert inbox.take() == []  # only 10 s since the repeat: waits for group_interval
        advance(mon, clock, 290)
        changes = inbox.take()
        assert [(n.status, [(a.labels["room"], a.status) for a in n.alerts]) for n in changes] == [
            ("firing", [("a", "firing"), ("b", "resolved")])]
        temp.set(10, room="a")
        advance(mon, clock, 300)
        last = inbox.take()
        assert [(n.status, [(a.labels["room"], a.status) for a in n.alerts]) for n in last] == [
            ("resolved", [("a", "resolved")])]
        assert last[0].alerts[0].ends_ns is not None
        advance(mon, clock, 5 * 3600, step=600)
        assert inbox.take() == []  # exactly one resolved notice per alert
        assert q.alert_groups(mon.store) == {}


def test_resolved_before_the_first_notification_sends_nothing(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox]) as mon:
        mon.alert("blip", "last(temp) > 50", window="1m")
        temp = mon.gauge("temp")
        temp.set(60)
        settle(mon)
        temp.set(10)
        advance(mon, clock, 20)
        assert states(mon) == [("blip", "resolved", {})]
        advance(mon, clock, 600)
        assert inbox.take() == []
        # and the next occurrence waits a full group_wait again
        temp.set(60)
        advance(mon, clock, 10)  # fires again
        advance(mon, clock, 20)
        assert inbox.take() == []
        advance(mon, clock, 10)
        assert [n.status for n in inbox.take()] == ["firing"]


def test_group_by_tags_splits_notifications(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox], alerting={
            "group_wait": "0s", "group_by": ["alertgroup", "room"]}) as mon:
        mon.alert("hot", "last(temp) by (room) > 50", window="1m")
        mon.gauge("temp").set(60, room="a")
        mon.gauge("temp").set(60, room="b")
        settle(mon)
        got = inbox.take()
        assert sorted(n.group_labels["room"] for n in got) == ["a", "b"]
        assert all(len(n.alerts) == 1 for n in got)


# -- silences and inhibition ----------------------------------------------------------------


def test_silence_by_rule_and_tags_with_expiry(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0, "group_interval": "10s"}) as mon:
        mon.alert("hot", "last(temp) by (room) > 50", window="1m")
        silence = mon.silence("hot", for_="10m", tags={"room": "a"}, comment="maintenance")
        assert silence.matchers == {"room": "a"}
        temp = mon.gauge("temp")
        temp.set(60, room="a")
        temp.set(60, room="b")
        settle(mon)
        got = inbox.take()
        assert [[a.labels["room"] for a in n.alerts] for n in got] == [["b"]]
        muted = {a.labels["room"]: a.muted for a in mon.alerts(state="firing")}
        assert muted == {"a": f"silenced:{silence.id}", "b": ""}
        assert [e.detail for e in events(mon, "silenced")] == [{"silence": silence.id}]
        advance(mon, clock, 590)
        assert inbox.take() == []
        advance(mon, clock, 10)  # the silence expired: room a is notified now
        got = inbox.take()
        assert [sorted(a.labels["room"] for a in n.alerts) for n in got] == [["a", "b"]]
        assert [e.kind for e in events(mon, "unmuted")] == ["unmuted"]


def test_silenced_when_it_resolves_means_no_resolved_notice(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0, "group_interval": "10s"}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m")
        temp = mon.gauge("temp")
        temp.set(60)
        settle(mon)
        assert [n.status for n in inbox.take()] == ["firing"]
        mon.silence("*", for_="1h")
        advance(mon, clock, 10)
        temp.set(10)
        advance(mon, clock, 60)
        assert states(mon) == [("hot", "resolved", {})]
        assert inbox.take() == []
        assert q.alert_groups(mon.store) == {}


def test_critical_inhibits_warning_of_the_same_group(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox], alerting={
            "group_wait": 0, "group_interval": "10s"}) as mon:
        mon.alert("lat-warn", "p95(lat) > 100", group="latency", window="1m")
        mon.alert("lat-crit", "p95(lat) > 500", group="latency", severity="critical",
                  window="1m")
        mon.alert("other-warn", "p95(lat) > 100", window="1m")  # another group
        lat = mon.histogram("lat")
        lat.observe(200)
        settle(mon)
        got = inbox.take()
        assert sorted(a.rule for n in got for a in n.alerts) == ["lat-warn", "other-warn"]
        clock.advance(61)
        lat.observe(900)
        settle(mon)
        got = inbox.take()
        # the critical alert fires; the warning of its group is muted, the other is not
        assert sorted(a.rule for n in got for a in n.alerts) == ["lat-crit"]
        muted = {a.rule: a.muted for a in mon.alerts(state="firing")}
        assert muted == {"lat-crit": "", "lat-warn": "inhibited", "other-warn": ""}
        assert [e.detail["by_rule"] for e in events(mon, "inhibited")] == ["lat-crit"]


# -- restarts --------------------------------------------------------------------------------


def test_restart_in_the_middle_of_pending_keeps_the_for_clock(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path) as mon:
        mon.alert("hot", "last(temp) > 50", window="5m", for_="2m")
        mon.gauge("temp").set(60)
        settle(mon)
        advance(mon, clock, 60)
        assert states(mon) == [("hot", "pending", {})]
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0}) as mon:  # a new process
        mon.alert("hot", "last(temp) > 50", window="5m", for_="2m")
        mon.gauge("temp").set(60)
        advance(mon, clock, 50)
        assert states(mon) == [("hot", "pending", {})]
        advance(mon, clock, 10)  # 2 minutes after it started, in the first process
        assert states(mon) == [("hot", "firing", {})]
        assert len(inbox.take()) == 1
        assert len(q.alerts(mon.store)) == 1


def test_restart_in_the_middle_of_firing_neither_refires_nor_forgets(db_path, clock,
                                                                      inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m")
        mon.gauge("temp").set(60)
        settle(mon)
        assert [n.status for n in inbox.take()] == ["firing"]
    later = Inbox()
    with holter.testing.monitor(db=db_path, notifiers=[later],
                                alerting={"group_wait": 0}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m")
        temp = mon.gauge("temp")
        temp.set(60)
        advance(mon, clock, 600)
        assert states(mon) == [("hot", "firing", {})]
        assert later.take() == []  # no second "firing", no early repeat
        assert len(events(mon, "firing")) == 1
        temp.set(10)
        advance(mon, clock, 300)
        assert [n.status for n in later.take()] == ["resolved"]
        advance(mon, clock, 600)
        assert later.take() == []


def test_pending_not_seen_for_longer_than_the_outage_tolerance_starts_again(db_path, clock,
                                                                              inbox) -> None:
    with holter.testing.monitor(db=db_path, alerting={"outage_tolerance": "10m"}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1h", for_="5m")
        mon.gauge("temp").set(60)
        settle(mon)
    clock.advance(3600)  # the program was down for an hour
    with holter.testing.monitor(db=db_path, alerting={"outage_tolerance": "10m"}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1h", for_="5m")
        mon.gauge("temp").set(60)
        settle(mon)
        assert states(mon) == [("hot", "pending", {})]
        advance(mon, clock, 290)
        assert states(mon) == [("hot", "pending", {})]
        advance(mon, clock, 10)
        assert states(mon) == [("hot", "firing", {})]


def test_processes_sharing_a_store_notify_once(db_path, clock, inbox) -> None:
    other = Inbox()
    with holter.testing.monitor(db=db_path, notifiers=[inbox], alerting={"group_wait": 0}
                                ) as one, holter.testing.monitor(
            db=db_path, notifiers=[other], alerting={"group_wait": 0}) as two:
        for mon in (one, two):
            mon.alert("hot", "last(temp) > 50", window="1m")
        one.gauge("temp").set(60)
        settle(one)
        settle(two)
        assert len(inbox.take()) + len(other.take()) == 1


# -- anomaly rules ---------------------------------------------------------------------------


def test_anomaly_rule_fires_on_stored_anomalies(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox], anomalies=False,
                                alerting={"group_wait": 0, "group_interval": "10s"}) as mon:
        mon.alert("lat-anomaly", anomaly="http.latency", min_severity="high",
                  summary="{kind} {value:.0f} vs {expected:.0f} ({anomaly_severity})")
        mon.histogram("http.latency", unit="ms").observe(20, route="/a")
        settle(mon)
        assert states(mon) == []
        (sid,) = [s.id for s in q.series(mon.store, "http.latency")]
        now = clock.now_ns
        # what the detector stores: a medium one (too mild) and a high one
        astore_anomalies.save(mon.store, [], [
            (sid, "p95", mon.run_id, now - 5 * 10**9, now, now, 300.0, 20.0, 10.0, 30.0, 0.55,
             "medium", "spike", "learning", 1),
            (sid, "p99", mon.run_id, now - 5 * 10**9, now, now, 900.0, 25.0, 10.0, 40.0, 0.7,
             "high", "spike", "learning", 1),
        ], [])
        settle(mon)
        firing = mon.alerts(state="firing")
        assert [(a.labels["stat"], a.labels["route"], a.value) for a in firing] == [
            ("p99", "/a", 900.0)]
        got = inbox.take()
        assert got[0].alerts[0].annotations["summary"] == "spike 900 vs 25 (high)"
        advance(mon, clock, 70)  # no anomaly in the last minute: resolved
        assert states(mon) == [("lat-anomaly", "resolved", {"route": "/a", "stat": "p99"})]


def test_anomaly_rule_end_to_end_with_the_detector(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0}) as mon:
        mon.alert("queue-anomaly", anomaly="queue.depth", min_severity="medium", window="5m")
        depth = mon.gauge("queue.depth")
        for i in range(120):  # a steady, slightly noisy baseline
            depth.set(100 + (i % 5))
            advance(mon, clock, 10)
        assert mon.alerts(state="firing") == []
        depth.set(100_000)
        advance(mon, clock, 10)
        found = mon.anomalies(window="1h", metric="queue.depth", flush=False)
        assert found, "the detector found no anomaly in a 1000x jump"
        settle(mon)
        assert [a.rule for a in mon.alerts(state="firing")] == ["queue-anomaly"]


# -- corrective actions ----------------------------------------------------------------------


def test_actions_run_once_per_firing_and_errors_are_recorded(db_path, clock, inbox) -> None:
    calls: list[tuple[int, str]] = []

    def shed_load(alert: Any) -> dict[str, int]:
        calls.append((alert.id, threading.current_thread().name))
        return {"shed": 3}

    def broken(alert: Any) -> None:
        raise RuntimeError("no permission")

    with holter.testing.monitor(db=db_path, notifiers=[inbox], alerting={
            "group_wait": 0, "repeat_interval": "1m"}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m")
        mon.on_alert("hot", shed_load)
        mon.on_alert("hot", broken)
        mon.on_alert("hot", "gc")
        temp = mon.gauge("temp")
        temp.set(60)
        settle(mon)
        advance(mon, clock, 300)  # repeats are sent, actions do not run again
        assert len(inbox.take()) > 1
        assert len(calls) == 1 and calls[0][1] != "MainThread"
        results = {e.detail["action"]: e.detail for e in events(mon, "action")}
        assert results["shed_load"]["ok"] and results["shed_load"]["result"] == {"shed": 3}
        assert not results["broken"]["ok"]
        assert "no permission" in results["broken"]["error"]
        gc_result = results["gc"]["result"]
        assert gc_result["rss_before"] > 0 and gc_result["rss_after"] > 0
        assert isinstance(gc_result["collected"], int)
        temp.set(10)
        advance(mon, clock, 60)
        temp.set(60)
        advance(mon, clock, 10)  # a new firing: the action runs again
        assert len(calls) == 2
        assert mon.query("holter.alerts.action_errors", window="1h").count == 2


def test_throttle_is_engaged_while_firing(db_path, clock) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[Inbox()]) as mon:
        mon.alert("overload", "last(cpu) > 90", window="1m")
        throttle = mon.throttle("overload", delay_s=0.0)
        cpu = mon.gauge("cpu")
        cpu.set(50)
        settle(mon)
        assert not throttle.engaged
        cpu.set(99)
        advance(mon, clock, 10)
        assert throttle.engaged and throttle.pause() == 0.0
        cpu.set(40)
        advance(mon, clock, 10)
        assert not throttle.engaged
        assert [e.detail["phase"] for e in events(mon, "action")] == ["firing", "resolved"]


def test_failing_notifier_is_counted_and_harmless(db_path, clock) -> None:
    def broken(notification: Notification) -> None:
        raise ValueError("boom")

    with holter.testing.monitor(db=db_path, notifiers=[broken],
                                alerting={"group_wait": 0}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m")
        mon.gauge("temp").set(60)
        settle(mon)
        settle(mon)
        failed = mon.query("holter.alerts.failed_deliveries", window="1h", by="reason")
        assert [(g.group["reason"], g.count) for g in failed] == [("exception", 1)]
        assert [e.detail["reason"] for e in events(mon, "failed")] == ["exception"]
        assert mon.query("holter.alerts.firing", window="1h").last == 1


def test_default_notifier_is_the_log(db_path, clock, caplog) -> None:
    with caplog.at_level("WARNING", logger="holter.alerts"), holter.testing.monitor(
            db=db_path, alerting={"group_wait": 0}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m", summary="too hot: {value:.0f}")
        mon.gauge("temp").set(60)
        settle(mon)
    assert any("FIRING [hot] too hot: 60" in r.getMessage() for r in caplog.records)


def test_history_and_listing(db_path, clock, inbox) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[inbox],
                                alerting={"group_wait": 0}) as mon:
        mon.alert("hot", "last(temp) > 50", window="1m")
        temp = mon.gauge("temp")
        temp.set(60)
        settle(mon)
        temp.set(10)
        advance(mon, clock, 300)
        kinds = [e.kind for e in reversed(q.alert_events(mon.store))]
        assert kinds == ["pending", "firing", "notified", "resolved", "notified"]
        assert [a.state for a in mon.alerts()] == ["resolved"]
        assert mon.alerts(state="firing") == []
        assert mon.alerts(since="1m") == []  # resolved longer ago than that
