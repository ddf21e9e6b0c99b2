"""Notifications over real HTTP on 127.0.0.1: Alertmanager's webhook JSON, credentials,
retries, and receivers that are down or hang — which never slow or break the program."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import alerting_support as sup
import pytest

import holter.testing
from holter.alerting.notifiers import WebhookNotifier
from holter.store import query as q
from holter.testing import FakeClock

START_NS = 1_700_000_000 * 10**9


def fire(mon: Any, value: float = 60) -> None:
    """A rule that fires at once, and a value that makes it fire."""
    mon.alert("hot", "last(temp) by (room) > 50", window="1m", severity="critical",
              labels={"team": "ops"}, summary="room {labels[room]} at {value:.0f}°",
              description="threshold {threshold:g}")
    mon.gauge("temp").set(value, room="a")
    mon.flush()


def test_webhook_receives_alertmanager_webhook_json(db_path: str) -> None:
    with sup.Receiver() as hook, FakeClock(start_ns=START_NS) as clock:
        url = hook.url.replace("http://", "http://bot:s3cret@") + "?token=abc"
        notifier = WebhookNotifier(url, headers={"X-Api-Key": "k3y"}, receiver="ops-hook")
        with holter.testing.monitor(db=db_path, notifiers=[notifier],
                                    alerting={"group_wait": 0, "group_interval": "10s"}) as mon:
            fire(mon)
            assert mon.alerting.wait_idle(10)
            clock.advance(10)
            mon.gauge("temp").set(20, room="a")
            mon.flush()
            assert mon.alerting.wait_idle(10)
    firing, resolved = hook.requests
    assert firing["path"] == "/hook?token=abc"
    assert firing["headers"]["Content-Type"] == "application/json"
    assert firing["headers"]["X-Api-Key"] == "k3y"
    assert firing["headers"]["Authorization"] == "Basic Ym90OnMzY3JldA=="  # bot:s3cret
    body = firing["body"]
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                         "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                         "alerts"}
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["receiver"] == "ops-hook"
    assert body["groupLabels"] == {"alertgroup": "hot"}
    assert body["groupKey"] == '{}:{alertgroup="hot"}'
    assert body["commonLabels"] == {"alertname": "hot", "alertgroup": "hot",
                                    "severity": "critical", "team": "ops", "room": "a"}
    assert body["commonAnnotations"] == {"summary": "room a at 60°",
                                         "description": "threshold 50"}
    (alert,) = body["alerts"]
    assert alert["status"] == "firing"
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert len(alert["fingerprint"]) == 16
    body = resolved["body"]
    assert body["status"] == "resolved"
    assert body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2023-11-14T22:13:30.000Z"
    assert body["alerts"][0]["fingerprint"] == alert["fingerprint"]


def test_retries_with_backoff_after_a_server_error(db_path: str) -> None:
    with sup.Receiver(statuses=[503, 500]) as hook:
        notifier = WebhookNotifier(hook.url, retries=3, backoff_s=0.01)
        with holter.testing.monitor(db=db_path, notifiers=[notifier],
                                    alerting={"group_wait": 0}) as mon:
            fire(mon)
            assert mon.alerting.wait_idle(10)
            notified = q.alert_events(mon.store, kinds=["notified"])
    assert [r["status"] for r in hook.requests] == [503, 500, 200]
    assert [e.detail["tries"] for e in notified] == [3]


def test_a_client_error_is_not_retried(db_path: str) -> None:
    with sup.Receiver(statuses=[400]) as hook:
        notifier = WebhookNotifier(hook.url, retries=3, backoff_s=0.01)
        with holter.testing.monitor(db=db_path, notifiers=[notifier],
                                    alerting={"group_wait": 0}) as mon:
            fire(mon)
            assert mon.alerting.wait_idle(10)
            mon.flush()
            failed = mon.query("holter.alerts.failed_deliveries", window="1h", by="reason")
    assert len(hook.requests) == 1
    assert [(g.group["reason"], g.count) for g in failed] == [("http_400", 1)]


def test_receiver_down_costs_the_program_nothing(db_path: str, caplog) -> None:
    port = sup.closed_port()
    secret_url = f"http://127.0.0.1:{port}/services/T0/SECRETPATH"
    notifier = WebhookNotifier(secret_url, headers={"Authorization": "Bearer TOKEN123"},
                               retries=2, backoff_s=0.01)
    with caplog.at_level(logging.DEBUG, logger="holter"), holter.testing.monitor(
            db=db_path, notifiers=[notifier], alerting={"group_wait": 0}) as mon:
        fire(mon)
        mon.counter("work").inc()  # the program goes on recording and flushing
        assert mon.flush()
        assert mon.alerting.wait_idle(10)
        mon.flush()
        failed = mon.query("holter.alerts.failed_deliveries", window="1h", by="reason")
        events = q.alert_events(mon.store, kinds=["failed"])
        assert mon.query("work", window="1h").count == 1
    assert [(g.group["reason"], g.count) for g in failed] == [("refused", 1)]
    assert [(e.detail["reason"], e.detail["tries"]) for e in events] == [("refused", 3)]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in logged
    for secret in ("SECRETPATH", "TOKEN123", "T0"):
        assert secret not in logged
        assert all(secret not in str(e.detail) for e in events)


def test_receiver_that_hangs_never_blocks_the_program(db_path: str) -> None:
    with sup.HangingServer() as hang, sup.Receiver() as good:
        slow = WebhookNotifier(hang.url, name="slow", timeout_s=30, retries=0)
        fast = WebhookNotifier(good.url, name="fast")
        with holter.testing.monitor(db=db_path, notifiers=[slow, fast],
                                    alerting={"group_wait": 0}) as mon:
            fire(mon)
            assert hang.accepted.wait(10)  # the slow notifier is inside its request now...
            # ...and the program records, flushes and evaluates as usual meanwhile
            for i in range(5):
                mon.counter("work").inc()
                assert mon.flush()
            assert mon.query("work", window="1h").count == 5
            assert not hang.released.is_set()
            # the other notifier has its own thread: it delivered already
            assert sup.wait_for(lambda: good.bodies(), 10)
            hang.release()
            assert mon.alerting.wait_idle(10)
            mon.flush()
            failed = mon.query("holter.alerts.failed_deliveries", window="1h", by="notifier")
    assert [(g.group["notifier"], g.count) for g in failed] == [("slow", 1)]


def test_a_timeout_is_counted(db_path: str) -> None:
    with sup.HangingServer() as hang:
        slow = WebhookNotifier(hang.url, timeout_s=0.2, retries=1, backoff_s=0.01)
        with holter.testing.monitor(db=db_path, notifiers=[slow],
                                    alerting={"group_wait": 0}) as mon:
            fire(mon)
            assert mon.alerting.wait_idle(20)
            mon.flush()
            failed = mon.query("holter.alerts.failed_deliveries", window="1h", by="reason")
    assert [(g.group["reason"], g.count) for g in failed] == [("timeout", 1)]


def test_the_queue_is_bounded(db_path: str) -> None:
    with sup.HangingServer() as hang, FakeClock(start_ns=START_NS) as clock:
        slow = WebhookNotifier(hang.url, timeout_s=30, retries=0, max_queue=2)
        with holter.testing.monitor(db=db_path, notifiers=[slow], alerting={
                "group_wait": 0, "group_interval": "1s", "repeat_interval": "1s"}) as mon:
            fire(mon)
            assert hang.accepted.wait(10)  # one delivery in flight, hanging
            for _ in range(6):  # six more notifications: two fit in the queue
                clock.advance(1)
                mon.flush()
            hang.release()
            assert mon.alerting.wait_idle(20)
            mon.flush()
            failed = {g.group["reason"]: g.count for g in mon.query(
                "holter.alerts.failed_deliveries", window="1h", by="reason")}
    assert failed["queue_full"] == 4


def test_stop_with_a_hanging_receiver_is_bounded(db_path: str, tmp_path: Path) -> None:
    with sup.HangingServer() as hang:
        slow = WebhookNotifier(hang.url, timeout_s=60, retries=0)
        with holter.testing.monitor(db=db_path, notifiers=[slow],
                                    alerting={"group_wait": 0}) as mon:
            fire(mon)
            assert hang.accepted.wait(10)
            done = threading.Event()

            def stop() -> None:
                mon.stop()
                done.set()

            threading.Thread(target=stop, daemon=True).start()
            # stop() returns while the receiver still holds the request (exit_timeout)
            assert done.wait(30)
            assert not hang.released.is_set()


def test_collector_thread_evaluates_and_delivers(tmp_path: Path) -> None:
    with sup.Receiver() as hook:
        mon = holter.start(app="svc", db=str(tmp_path / "x.db"), flush_interval="100ms",
                           webhook=hook.url, alerting={"group_wait": "0s"})
        try:
            mon.alert("hot", "last(temp) > 50", window="1m")
            mon.gauge("temp").set(60)
            bodies = sup.wait_for(hook.bodies, 20)
            assert bodies and bodies[0]["alerts"][0]["labels"]["alertname"] == "hot"
            handler_threads = {r["thread"] for r in hook.requests}
            assert handler_threads  # delivered by holter's notifier thread, not by us
        finally:
            holter.stop()


def test_program_thread_never_delivers(db_path: str) -> None:
    seen: list[str] = []
    with holter.testing.monitor(db=db_path, notifiers=[
            lambda n: seen.append(threading.current_thread().name)],
            alerting={"group_wait": 0}) as mon:
        fire(mon)
        assert mon.alerting.wait_idle(10)
    assert seen and seen[0].startswith("holter-notify-")
    assert threading.current_thread().name not in seen


@pytest.mark.parametrize("stream", ["stderr"])
def test_stderr_notifier(db_path: str, capfd, stream: str) -> None:
    with holter.testing.monitor(db=db_path, notifiers=[stream],
                                alerting={"group_wait": 0}) as mon:
        fire(mon)
        assert mon.alerting.wait_idle(10)
    err = capfd.readouterr().err
    assert "holter alert FIRING [hot] room a at 60°" in err
    assert "room=a" in err and "team=ops" in err
    time.sleep(0)  # nothing else: the notifier wrote synchronously on its thread
