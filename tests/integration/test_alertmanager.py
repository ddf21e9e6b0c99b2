"""holter feeding a real Prometheus Alertmanager: an alert holter sends reaches
Alertmanager's own webhook receiver, firing and then resolved."""

from __future__ import annotations

from pathlib import Path

import alerting_support as sup

import holter.testing
from holter.alerting.notifiers import AlertmanagerNotifier


def test_alert_reaches_alertmanagers_webhook_receiver(tmp_path: Path, db_path: str) -> None:
    # real clocks here: Alertmanager judges endsAt against its own (real) time
    with sup.Receiver() as hook, sup.alertmanager(tmp_path, hook.url) as am:
        notifier = AlertmanagerNotifier(am.url, retries=5, backoff_s=0.2)
        with holter.testing.monitor(db=db_path, notifiers=[notifier]) as mon:
            mon.alert("queue-backlog", "last(queue.depth) by (queue) > 100", window="1m",
                      severity="critical", labels={"team": "jobs"},
                      summary="queue depth is {value:.0f}")
            depth = mon.gauge("queue.depth")
            depth.set(250, queue="emails")
            mon.flush()
            assert mon.alerting.wait_idle(15)

            firing = sup.wait_for(
                lambda: [b for b in hook.bodies() if b and b.get("status") == "firing"], 30)
            assert firing, f"Alertmanager sent nothing; its log: {am.log_path.read_text()[-1500:]}"
            body = firing[0]
            assert body["receiver"] == "hook"
            alert = body["alerts"][0]
            assert alert["status"] == "firing"
            assert alert["labels"]["alertname"] == "queue-backlog"
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["team"] == "jobs"
            assert alert["labels"]["queue"] == "emails"
            assert alert["annotations"]["summary"] == "queue depth is 250"
            assert [a["labels"]["alertname"] for a in am.alerts()] == ["queue-backlog"]

            # the condition clears: holter sends the resolution, Alertmanager passes it on
            depth.set(3, queue="emails")
            mon.flush()
            assert mon.alerting.wait_idle(15)
            resolved = sup.wait_for(
                lambda: [b for b in hook.bodies() if b and b.get("status") == "resolved"], 30)
            assert resolved, f"no resolved notice; log: {am.log_path.read_text()[-1500:]}"
            assert resolved[0]["alerts"][0]["labels"]["alertname"] == "queue-backlog"
            assert resolved[0]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
