"""The alert engine: rules → alerts (pending → firing → resolved) → notifications.

It runs after each flush, in the collector thread (:meth:`AlertEngine.after_flush`):

1. **Evaluate** every rule through the query API (:mod:`holter.store.query`): a
   threshold rule's aggregate over its window, per tag group; an anomaly rule's recent
   anomalies, per series and statistic. A rule whose metric is not recorded yet is
   simply inactive.
2. **Move each alert's state**, in one store transaction: a condition that starts
   holding opens an alert, ``pending`` until it has held for ``for`` (``firing`` at once
   without ``for``); a pending alert whose condition stops is cancelled; a firing alert
   whose condition stopped ``keep_firing_for`` ago is ``resolved``. The state lives in
   the store, so a restart neither fires again nor forgets (a pending alert not
   evaluated for longer than ``outage_tolerance`` starts its ``for`` again).
3. **Mute** firing alerts that a silence matches, or that an inhibition rule mutes
   (by default a ``critical`` alert mutes ``warning``/``info`` alerts of its group).
4. **Notify** per group (the ``group_by`` labels, by default the rule's group), with
   Alertmanager's timing: the first notification ``group_wait`` after the group's first
   alert, then changes (new firing alerts, resolutions) at most every
   ``group_interval``, and the same firing alerts again every ``repeat_interval``. Each
   alert reported as firing gets exactly one resolved notice (none when it is silenced
   as it resolves). Group state is stored too, so processes sharing a store do not
   notify twice and a restart does not repeat early.
5. **Act**: corrective actions of a rule run once per firing (and hear the resolution).

Notifications and actions are handed to :class:`holter.alerting.notifiers.Courier`
threads; nothing here waits for a network or for the program's code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from holter import _clock
from holter.alerting import actions as builtin_actions
from holter.alerting.config import Settings
from holter.alerting.notifiers import (
    Courier,
    Delivery,
    DeliveryError,
    LogNotifier,
    Notification,
    NotifiedAlert,
    Notifier,
)
from holter.alerting.rules import Rule, format_duration, render, template_fields
from holter.errors import HolterError
from holter.model import Batch
from holter.store import alerts as astore
from holter.store import query as q
from holter.store.alerts import AlertRecord, GroupState
from holter.store.sqlite import Store

logger = logging.getLogger("holter.alerts")

NS = 1_000_000_000
_RETENTION_EVERY_NS = 3600 * NS

Event = tuple[int, "int | None", str, str, Mapping[str, Any]]


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit id of a label set (as Alertmanager shows fingerprints)."""
    text = json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule's condition holding for one label set at one evaluation."""

    labels: dict[str, str]
    value: float | None
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change made by an evaluation.

    ``to`` is ``pending``, ``firing``, ``resolved`` or ``cancelled``.
    """

    alert_id: int
    rule: str
    labels: dict[str, str]
    to: str
    value: float | None


@dataclass
class Action:
    """A corrective action bound to a rule.

    ``fn(alert)`` runs when an alert of the rule fires and, if given,
    ``on_resolved(alert)`` when it resolves.
    """

    name: str
    fn: Callable[[AlertRecord], Any]
    on_resolved: Callable[[AlertRecord], Any] | None = None


@dataclass
class _ActionJob:
    action: Action
    alert: AlertRecord
    phase: str
    result: Any = None


class _ActionRunner(Notifier):
    """Runs corrective actions on a thread of their own (a courier with no retries)."""

    kind = "action"

    def __init__(self) -> None:
        super().__init__("actions", retries=0, max_queue=1000)

    def send(self, item: _ActionJob) -> None:
        fn = item.action.fn if item.phase == "firing" else item.action.on_resolved
        if fn is None:  # pragma: no cover - only queued when present
            return
        try:
            item.result = fn(item.alert)
        except Exception as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", reason="exception",
                                retryable=False) from None


@dataclass
class EvaluationReport:
    """What one evaluation did (for tests and debugging)."""

    time_ns: int
    transitions: list[Transition] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    inactive_rules: list[str] = field(default_factory=list)
    """Rules whose metric is not recorded yet."""


class AlertEngine:
    """Rules, alert states, notification groups, notifiers and actions of one monitor.

    ``store`` returns the open store; ``meter`` (the monitor) gives ``counter`` and
    ``gauge`` for holter's own metrics (``holter.alerts.*``); ``run_id`` the current run.
    """

    def __init__(
        self,
        *,
        store: Callable[[], Store],
        settings: Settings | None = None,
        notifiers: Sequence[Notifier] = (),
        meter: Any = None,
        run_id: Callable[[], int | None] | None = None,
        flush_interval_s: float = 10.0,
    ) -> None:
        self._store = store
        self.settings = settings or Settings()
        self._meter = meter
        self._run_id = run_id or (lambda: None)
        self.flush_interval_s = flush_interval_s
        self._rules: dict[str, Rule] = {}
        self._actions: dict[str, tuple[Action, ...]] = {}
        self._throttles: dict[str, builtin_actions.Throttle] = {}
        self._couriers: dict[str, Courier] = {}
        self._lock = threading.Lock()
        self._tables_ready = False
        self._last_retention_ns = 0
        self._logged: set[tuple[str, str]] = set()
        self._action_courier = Courier(_ActionRunner(), self._action_outcome)
        self._fallback: Courier | None = None
        for notifier in notifiers:
            self.add_notifier(notifier)
        self.last_report: EvaluationReport | None = None

    # -- configuration (copy-on-write: evaluation reads a snapshot) ---------------------

    @property
    def rules(self) -> dict[str, Rule]:
        """The rules by name (a snapshot)."""
        return dict(self._rules)

    @property
    def notifiers(self) -> list[Notifier]:
        """The notifiers."""
        return [c.notifier for c in self._couriers.values()]

    def add_rule(self, rule: Rule) -> Rule:
        """Add a rule, or replace the rule of that name."""
        rules = dict(self._rules)
        rules[rule.name] = rule
        self._rules = rules
        for name in rule.actions:
            if name == "gc":
                self.add_action(rule.name, builtin_actions.collect_garbage, name="gc")
            elif name == "throttle":
                self.throttle(rule.name)
        return rule

    def remove_rule(self, name: str) -> None:
        """Stop evaluating a rule (its open alerts resolve once stale)."""
        rules = dict(self._rules)
        rules.pop(name, None)
        self._rules = rules

    def add_notifier(self, notifier: Notifier) -> Notifier:
        """Send notifications to ``notifier`` too (names are made unique)."""
        base = notifier.name
        n = 2
        while notifier.name in self._couriers:
            notifier.name = f"{base}-{n}"
            n += 1
        couriers = dict(self._couriers)
        couriers[notifier.name] = Courier(notifier, self._delivery_outcome)
        self._couriers = couriers
        return notifier

    def add_action(
        self,
        rule: str,
        fn: Callable[[AlertRecord], Any],
        *,
        name: str | None = None,
        on_resolved: Callable[[AlertRecord], Any] | None = None,
    ) -> Action:
        """Bind a corrective action to a rule (the rule may be added later)."""
        if not callable(fn):
            raise HolterError(f"the action for rule {rule!r} must be callable")
        resolved = on_resolved if on_resolved is not None else getattr(fn, "on_resolved", None)
        action = Action(name or getattr(fn, "__name__", None) or type(fn).__name__, fn,
                        resolved if callable(resolved) else None)
        actions = dict(self._actions)
        actions[rule] = (*actions.get(rule, ()), action)
        self._actions = actions
        return action

    def throttle(self, rule: str, delay_s: float = 0.1) -> builtin_actions.Throttle:
        """The :class:`Throttle` engaged while alerts of ``rule`` fire (created once)."""
        found = self._throttles.get(rule)
        if found is None:
            found = builtin_actions.Throttle(delay_s)
            self._throttles[rule] = found
            self.add_action(rule, found, name="throttle")
        return found

    def after_fork_child(self) -> None:
        """In a forked child: a fresh lock (the couriers restart by themselves)."""
        self._lock = threading.Lock()

    # -- evaluation --------------------------------------------------------------------

    def after_flush(self, batches: list[Batch]) -> None:
        """The monitor's after-flush hook (collector thread): evaluate every rule.

        A store that is busy or failing skips this evaluation; the next flush tries again.
        """
        if not self._rules:
            return
        try:
            self.evaluate()
        except HolterError as exc:
            self._count("holter.alerts.evaluation_errors", rule="*")
            self._log_once("*", str(exc), "holter alerts: evaluation skipped: %s", exc,
                           level=logging.DEBUG)

    def evaluate(self) -> EvaluationReport:
        """Evaluate every rule now, move states, mute, decide and queue notifications."""
        with self._lock:
            now = _clock.time_ns()
            report = EvaluationReport(now)
            rules = self._rules
            store = self._store()
            if not self._tables_ready:
                astore.ensure_tables(store)
                self._tables_ready = True
            hits = self._evaluate_rules(store, rules, now, report)
            deliveries: list[tuple[Courier, Delivery]] = []
            jobs: list[_ActionJob] = []
            with store.atomic() as conn:
                events: list[Event] = []
                fired, resolved = self._transition(conn, store, rules, hits, now, events, report)
                firing = [a for a in q.alerts(store, state="firing") if a.rule in rules]
                self._mute(conn, firing, store, now, events)
                firing = [a for a in q.alerts(store, state="firing") if a.rule in rules]
                self._notify(conn, store, rules, firing, now, deliveries, report)
                astore.add_events(conn, events)
            self._feed_raw(firing, resolved, now, deliveries)
            actions = self._actions
            for alert in fired:
                jobs.extend(_ActionJob(a, alert, "firing") for a in actions.get(alert.rule, ()))
            for alert in resolved:
                jobs.extend(_ActionJob(a, alert, "resolved") for a in actions.get(alert.rule, ())
                            if a.on_resolved is not None)
            self._set_gauge(len(firing))
            self.last_report = report
        for courier, delivery in deliveries:
            courier.submit(delivery)
        for job in jobs:
            self._action_courier.submit(Delivery(job, [(job.alert.id, job.alert.rule, job.phase)]))
        self._expire(store, now)
        return report

    def _evaluate_rules(self, store: Store, rules: Mapping[str, Rule], now: int,
                        report: EvaluationReport) -> dict[str, dict[str, Hit] | None]:
        names = set(q.metric_names(store)) if rules else set()
        out: dict[str, dict[str, Hit] | None] = {}
        for rule in rules.values():
            if rule.metric not in names:
                out[rule.name] = {}
                report.inactive_rules.append(rule.name)
                self._log_once(rule.name, "missing",
                               "holter alerts: rule %r stays inactive: metric %r is not "
                               "recorded yet", rule.name, rule.metric, level=logging.DEBUG)
                continue
            try:
                if rule.expr is not None:
                    out[rule.name] = self._threshold_hits(store, rule, now)
                else:
                    out[rule.name] = self._anomaly_hits(store, rule, now)
            except (HolterError, ValueError, TypeError, ArithmeticError) as exc:
                out[rule.name] = None  # state unchanged until it can be evaluated again
                report.errors[rule.name] = str(exc)
                self._count("holter.alerts.evaluation_errors", rule=rule.name)
                self._log_once(rule.name, str(exc), "holter alerts: rule %r cannot be "
                               "evaluated: %s", rule.name, exc)
        return out

    def _labels(self, rule: Rule, tags: Mapping[str, str]) -> dict[str, str]:
        labels = {str(k): str(v) for k, v in tags.items()}
        labels.update(rule.labels)
        labels.update(alertname=rule.name, alertgroup=rule.group, severity=rule.severity)
        return labels

    def _annotations(self, rule: Rule, value: float | None, labels: Mapping[str, str],
                     extra: Mapping[str, Any] | None, default: str) -> dict[str, str]:
        fields = template_fields(rule, value, labels, extra)
        out = {"summary": render(rule.summary, fields) if rule.summary is not None else default}
        if rule.description is not None:
            out["description"] = render(rule.description, fields)
        return out

    def _threshold_hits(self, store: Store, rule: Rule, now: int) -> dict[str, Hit]:
        expr = rule.expr
        assert expr is not None
        groups = q.grouped_stats(
            store, expr.metric, rule.window_s, tags=dict(expr.filters),
            by=list(expr.by) or None,
        )
        out: dict[str, Hit] = {}
        for stats in groups:
            if not stats.series:
                continue
            value = getattr(stats, expr.field, None)
            if value is None or not expr.holds(value):
                continue
            labels = self._labels(rule, stats.group)
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            default = (f"{expr.aggregate}({expr.metric}) is {shown}{_unit(stats.unit)} "
                       f"({expr.op} {expr.threshold:g}) over {format_duration(rule.window_s)}")
            out[fingerprint(labels)] = Hit(
                labels, float(value), self._annotations(rule, float(value), labels, None, default)
            )
        return out

    def _anomaly_hits(self, store: Store, rule: Rule, now: int) -> dict[str, Hit]:
        cond = rule.anomaly
        assert cond is not None
        found = q.anomalies(
            store, now - int(rule.window_s * NS), now, metric=cond.metric,
            tags=dict(cond.tags) or None, min_severity=cond.min_severity,
        )
        out: dict[str, Hit] = {}
        for anomaly in found:  # newest first: the first per series and statistic wins
            if cond.stat is not None and anomaly.stat != cond.stat:
                continue
            labels = self._labels(rule, {**anomaly.tags, "stat": anomaly.stat})
            fp = fingerprint(labels)
            if fp in out:
                continue
            expected = anomaly.expected
            extra = {
                "expected": expected if expected is not None else math.nan,
                "score": anomaly.score, "anomaly_severity": anomaly.severity,
                "kind": anomaly.kind, "stat": anomaly.stat,
            }
            exp_text = f", expected {expected:.4g}" if expected is not None else ""
            default = (f"{anomaly.kind} in {anomaly.stat} of {cond.metric}: "
                       f"{anomaly.value:.4g}{_unit(anomaly.unit)}{exp_text} "
                       f"({anomaly.severity}, score {anomaly.score:.2f})")
            out[fp] = Hit(labels, float(anomaly.value),
                          self._annotations(rule, float(anomaly.value), labels, extra, default))
        return out

    def _transition(  # noqa: PLR0917 - private step of evaluate()
        self, conn: Any, store: Store, rules: Mapping[str, Rule],
        hits: Mapping[str, dict[str, Hit] | None], now: int, events: list[Event],
        report: EvaluationReport,
    ) -> tuple[list[AlertRecord], list[AlertRecord]]:
        open_alerts = q.alerts(store, state=("pending", "firing"))
        by_rule: dict[str, dict[str, AlertRecord]] = {}
        for alert in open_alerts:
            by_rule.setdefault(alert.rule, {})[alert.fingerprint] = alert
        fired_ids: list[int] = []
        resolved_ids: list[int] = []
        run_id = self._run_id()
        tolerance_ns = int(self.settings.outage_tolerance_s * NS)

        def note(  # noqa: PLR0917
            alert_id: int, rule: str, labels: dict[str, str], to: str,
            value: float | None, detail: Mapping[str, Any] | None = None,
        ) -> None:
            report.transitions.append(Transition(alert_id, rule, labels, to, value))
            events.append((now, alert_id, rule, to, {"value": _finite(value), **(detail or {})}))

        for name, rule in rules.items():
            rule_hits = hits.get(name)
            if rule_hits is None:
                continue
            current = by_rule.get(name, {})
            for_ns = int(rule.for_s * NS)
            for fp, hit in rule_hits.items():
                alert = current.get(fp)
                if alert is None:
                    state = "firing" if for_ns == 0 else "pending"
                    alert_id = astore.insert_alert(
                        conn, rule=name, fingerprint=fp, labels=hit.labels,
                        annotations=hit.annotations, state=state, value=_finite(hit.value),
                        now_ns=now, run_id=run_id,
                    )
                    note(alert_id, name, hit.labels, "pending", hit.value)
                    if state == "firing":
                        note(alert_id, name, hit.labels, "firing", hit.value)
                        fired_ids.append(alert_id)
                    continue
                changes: dict[str, Any] = {
                    "value": _finite(hit.value), "annotations": hit.annotations,
                    "last_true_ns": now, "evaluated_ns": now,
                }
                if alert.state == "pending":
                    active = alert.active_ns
                    if now - alert.evaluated_ns > tolerance_ns:
                        active = changes["active_ns"] = now  # too long unobserved: start again
                    if now - active >= for_ns:
                        changes.update(state="firing", fired_ns=now)
                        note(alert.id, name, alert.labels, "firing", hit.value,
                             {"pending_s": (now - active) / NS})
                        fired_ids.append(alert.id)
                astore.update_alert(conn, alert.id, **changes)
            keep_ns = int(rule.keep_firing_for_s * NS)
            for fp, alert in current.items():
                if fp in rule_hits:
                    continue
                if alert.state == "pending":
                    astore.delete_alert(conn, alert.id)
                    note(alert.id, name, alert.labels, "cancelled", alert.value)
                elif now - alert.last_true_ns >= keep_ns:
                    astore.update_alert(conn, alert.id, state="resolved", resolved_ns=now,
                                        evaluated_ns=now)
                    note(alert.id, name, alert.labels, "resolved", alert.value,
                         {"firing_s": (now - (alert.fired_ns or now)) / NS})
                    resolved_ids.append(alert.id)
                else:
                    astore.update_alert(conn, alert.id, evaluated_ns=now)
        # alerts of rules no process evaluates any more (removed from the config)
        for name, current in by_rule.items():
            if name in rules:
                continue
            for alert in current.values():
                if now - alert.evaluated_ns <= tolerance_ns:
                    continue
                if alert.state == "pending":
                    astore.delete_alert(conn, alert.id)
                    note(alert.id, name, alert.labels, "cancelled", alert.value,
                         {"reason": "rule no longer evaluated"})
                else:
                    astore.update_alert(conn, alert.id, state="resolved", resolved_ns=now,
                                        evaluated_ns=now)
                    note(alert.id, name, alert.labels, "resolved", alert.value,
                         {"reason": "rule no longer evaluated"})
        changed = q.alerts(store, ids=[*fired_ids, *resolved_ids])
        by_id = {a.id: a for a in changed}
        return ([by_id[i] for i in fired_ids if i in by_id],
                [by_id[i] for i in resolved_ids if i in by_id])

    def _mute(self, conn: Any, firing: Sequence[AlertRecord], store: Store, now: int,
              events: list[Event]) -> None:
        silences = q.silences(store, now_ns=now)
        inhibit = self.settings.inhibit
        group_by = self.settings.group_by
        for alert in firing:
            muted = ""
            inhibitor: AlertRecord | None = None
            for silence in silences:
                if silence.matches(alert.rule, alert.labels):
                    muted = f"silenced:{silence.id}"
                    break
            if not muted:
                for rule in inhibit:
                    if not rule.target_matches(alert.labels):
                        continue
                    equal = rule.equal if rule.equal is not None else group_by
                    inhibitor = next(
                        (s for s in firing if s.id != alert.id and rule.source_matches(s.labels)
                         and all(s.labels.get(k) == alert.labels.get(k) for k in equal)),
                        None,
                    )
                    if inhibitor is not None:
                        muted = "inhibited"
                        break
            if muted == alert.muted:
                continue
            astore.update_alert(conn, alert.id, muted=muted)
            if muted.startswith("silenced:"):
                events.append((now, alert.id, alert.rule, "silenced",
                               {"silence": int(muted.split(":", 1)[1])}))
            elif muted == "inhibited" and inhibitor is not None:
                events.append((now, alert.id, alert.rule, "inhibited",
                               {"by": inhibitor.id, "by_rule": inhibitor.rule}))
            else:
                events.append((now, alert.id, alert.rule, "unmuted", {}))

    def _group_key(self, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        group = {k: labels.get(k, "") for k in self.settings.group_by}
        return json.dumps(group, sort_keys=True, separators=(",", ":")), group

    def _notify(  # noqa: PLR0917 - private step of evaluate()
        self, conn: Any, store: Store, rules: Mapping[str, Rule], firing: Sequence[AlertRecord],
        now: int, deliveries: list[tuple[Courier, Delivery]], report: EvaluationReport,
    ) -> None:
        grouped = [c for c in self._couriers.values() if c.notifier.grouped]
        if not self._couriers:  # nothing configured: say it in the log rather than nowhere
            if self._fallback is None:
                self._fallback = Courier(LogNotifier(), self._delivery_outcome)
            grouped = [self._fallback]
        settings = self.settings
        by_group: dict[str, list[AlertRecord]] = {}
        group_labels: dict[str, dict[str, str]] = {}
        for alert in firing:
            if alert.muted:
                continue
            key, labels = self._group_key(alert.labels)
            by_group.setdefault(key, []).append(alert)
            group_labels[key] = labels
        states = q.alert_groups(store)
        notified_ids = {i for g in states.values() for i in (g.notified or [])}
        known = {a.id: a for a in q.alerts(store, ids=notified_ids)} if notified_ids else {}
        mine = {key for key, g in states.items()
                if (g.last_notify_ns is None and not g.notified)  # waiting: reset when empty
                or any(known.get(i) is None or known[i].rule in rules for i in g.notified or [])}
        for key in sorted(set(by_group) | mine):
            state = states.get(key) or GroupState(key, group_labels.get(key, {}))
            if key in group_labels:
                state.labels = group_labels[key]
            current = by_group.get(key, [])
            firing_ids = [a.id for a in current]
            notified = list(state.notified or [])
            keep: list[int] = []  # notified alerts still firing but muted, or of other rules
            resolved: list[AlertRecord] = []
            for alert_id in notified:
                alert = known.get(alert_id)
                if alert is None or alert_id in firing_ids:
                    continue
                if alert.rule not in rules:
                    keep.append(alert_id)
                elif alert.state == "resolved":
                    if not alert.muted:
                        resolved.append(alert)
                elif alert.state == "firing":
                    keep.append(alert_id)
            new = [i for i in firing_ids if i not in notified]
            send = repeat = False
            if state.last_notify_ns is None:
                if current:
                    if state.first_ns is None:
                        state.first_ns = now
                    send = now - state.first_ns >= int(settings.group_wait_s * NS)
            elif (new or resolved) and now - state.last_notify_ns >= int(
                settings.group_interval_s * NS
            ):
                send = True
            elif current and now - state.last_notify_ns >= int(settings.repeat_interval_s * NS):
                send = repeat = True
            if send:
                notification = Notification(
                    group_key=f"{{}}:{_braces(state.labels)}",
                    group_labels=dict(state.labels),
                    status="firing" if current else "resolved",
                    alerts=tuple([_notified(a, "firing") for a in current]
                                 + [_notified(a, "resolved") for a in resolved]),
                    time_ns=now,
                    repeat=repeat,
                )
                report.notifications.append(notification)
                carried = [(a.id, a.rule, "firing") for a in current] + [
                    (a.id, a.rule, "resolved") for a in resolved]
                for courier in grouped:
                    deliveries.append((courier, Delivery(notification, carried)))
                state.last_notify_ns = now
                state.notified = firing_ids + keep
            else:
                state.notified = [i for i in notified if i in firing_ids or i in keep
                                  or i in {a.id for a in resolved}]
            if not state.notified and not current:
                if key in states:
                    astore.delete_group(conn, key)
            else:
                astore.save_group(conn, state)

    def _feed_raw(self, firing: Sequence[AlertRecord], resolved: Sequence[AlertRecord],
                  now: int, deliveries: list[tuple[Courier, Delivery]]) -> None:
        raw = [c for c in self._couriers.values() if not c.notifier.grouped]
        if not raw:
            return
        live = [_notified(a, "firing") for a in firing if not a.muted]
        ended = [_notified(a, "resolved") for a in resolved if not a.muted]
        for courier in raw:
            notifier: Any = courier.notifier
            due = notifier.due(live, ended, now)
            if not due:
                continue
            valid_s = 4 * max(notifier.resend_interval_s, self.flush_interval_s)
            deliveries.append((courier, Delivery(
                notifier.payload(due, now, valid_s),
                [(a.id, a.rule, a.status) for a in due],
            )))

    # -- outcomes (courier threads) ----------------------------------------------------

    def _record(self, events: Sequence[Event]) -> None:
        try:
            store = self._store()
            astore.record_events(store, events)
        except Exception as exc:  # the store may be closed or busy: history is best effort
            logger.debug("holter alerts: could not record %d events: %r", len(events), exc)

    def _delivery_outcome(self, notifier: Notifier, delivery: Delivery,
                          error: DeliveryError | None) -> None:
        now = _clock.time_ns()
        repeat = bool(getattr(delivery.item, "repeat", False))
        if error is None:
            for status in {s for _, _, s in delivery.alert_ids}:
                self._count("holter.alerts.notifications", notifier=notifier.name, status=status)
            detail = {"notifier": notifier.name, "tries": delivery.tries, "repeat": repeat}
            kind = "notified"
        else:
            self._count("holter.alerts.failed_deliveries", notifier=notifier.name,
                        reason=error.reason)
            detail = {"notifier": notifier.name, "tries": delivery.tries, "reason": error.reason,
                      "error": str(error)}
            kind = "failed"
        self._record([(now, aid, rule, kind, {**detail, "status": status})
                      for aid, rule, status in delivery.alert_ids])

    def _action_outcome(self, runner: Notifier, delivery: Delivery,
                        error: DeliveryError | None) -> None:
        job: _ActionJob = delivery.item
        detail: dict[str, Any] = {"action": job.action.name, "phase": job.phase,
                                  "ok": error is None}
        if error is not None:
            detail["error"] = str(error)
            self._count("holter.alerts.action_errors", rule=job.alert.rule)
            logger.warning("holter alerts: action %r of rule %r failed: %s", job.action.name,
                           job.alert.rule, error)
        elif job.result is not None:
            detail["result"] = _jsonable(job.result)
        self._record([(_clock.time_ns(), job.alert.id, job.alert.rule, "action", detail)])

    # -- metrics, logs, retention ---------------------------------------------------------

    def _count(self, name: str, **tags: str) -> None:
        if self._meter is None:
            return
        try:
            self._meter.counter(name).inc(**tags)
        except Exception as exc:  # never let holter's own metrics break alerting
            logger.debug("holter alerts: metric %s not recorded: %r", name, exc)

    def _set_gauge(self, value: int) -> None:
        if self._meter is None:
            return
        try:
            self._meter.gauge("holter.alerts.firing").set(value)
        except Exception as exc:
            logger.debug("holter alerts: gauge not recorded: %r", exc)

    def _log_once(self, rule: str, key: str, message: str, *args: Any,
                  level: int = logging.WARNING) -> None:
        if (rule, key) in self._logged:
            return
        self._logged.add((rule, key))
        logger.log(level, message, *args)

    def _expire(self, store: Store, now: int) -> None:
        if now - self._last_retention_ns < _RETENTION_EVERY_NS:
            return
        self._last_retention_ns = now
        try:
            astore.expire_history(store, now - int(self.settings.history_retention_s * NS))
        except HolterError as exc:
            logger.debug("holter alerts: history retention failed: %s", exc)

    # -- reading and control ----------------------------------------------------------------

    def silence(self, rule: str, *, duration_s: float = 3600.0,
                tags: Mapping[str, object] | None = None, comment: str = "") -> Any:
        """Silence ``rule`` (``*``: all) for ``duration_s``, for alerts with these tags."""
        return astore.add_silence(self._store(), rule, duration_s=duration_s,
                                  matchers={k: str(v) for k, v in (tags or {}).items()},
                                  comment=comment)

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued notification and action is done (tests, shutdown)."""
        deadline = _clock_now() + timeout_s
        for courier in self._all_couriers():
            if not courier.wait_idle(max(deadline - _clock_now(), 0.0)):
                return False
        return True

    def _all_couriers(self) -> list[Courier]:
        extra = [self._fallback] if self._fallback is not None else []
        return [*self._couriers.values(), self._action_courier, *extra]

    def close(self, timeout_s: float = 0.0) -> bool:
        """Deliver what is queued within ``timeout_s`` and stop the threads."""
        deadline = _clock_now() + max(timeout_s, 0.0)
        ok = True
        for courier in self._all_couriers():
            ok = courier.close(max(deadline - _clock_now(), 0.0)) and ok
        return ok


def _clock_now() -> float:
    return time.monotonic()  # real time: waiting for threads must not follow a fake clock


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""


def _braces(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _notified(alert: AlertRecord, status: str) -> NotifiedAlert:
    return NotifiedAlert(
        id=alert.id, rule=alert.rule, status=status, labels=dict(alert.labels),
        annotations=dict(alert.annotations), starts_ns=alert.fired_ns or alert.active_ns,
        ends_ns=alert.resolved_ns if status == "resolved" else None,
        fingerprint=alert.fingerprint, value=alert.value,
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:500]


def rules_metrics(rules: Iterable[Rule]) -> set[str]:
    """The metric names a set of rules reads."""
    return {rule.metric for rule in rules}


__all__ = ["Action", "AlertEngine", "EvaluationReport", "Hit", "Transition", "fingerprint",
           "rules_metrics"]
