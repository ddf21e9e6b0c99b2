"""Alerting: rules over the query API, alert states, notifications, corrective actions.

Layer 4: reads the store through :mod:`holter.store.query` and writes its own tables
through :mod:`holter.store.alerts`. Nothing here is imported by ``import holter``; the
monitor imports it when alerts are configured.

* :mod:`holter.alerting.rules` — the expression grammar and :class:`Rule`.
* :mod:`holter.alerting.config` — settings, inhibition, rules files (TOML).
* :mod:`holter.alerting.engine` — evaluation, the state machine, grouping, silences.
* :mod:`holter.alerting.notifiers` — webhook, Alertmanager, log, Python callable.
* :mod:`holter.alerting.actions` — corrective actions (``gc``, :class:`Throttle`).
"""

from holter.alerting.actions import Throttle, collect_garbage
from holter.alerting.config import (
    InhibitRule,
    RulesFileError,
    Settings,
    check_rules_file,
    load_rules_file,
)
from holter.alerting.engine import AlertEngine
from holter.alerting.notifiers import (
    AlertmanagerNotifier,
    CallableNotifier,
    LogNotifier,
    Notification,
    Notifier,
    WebhookNotifier,
    make_notifier,
    mask_url,
)
from holter.alerting.rules import Rule, RuleError, make_rule, parse_expression

__all__ = [
    "AlertEngine",
    "AlertmanagerNotifier",
    "CallableNotifier",
    "InhibitRule",
    "LogNotifier",
    "Notification",
    "Notifier",
    "Rule",
    "RuleError",
    "RulesFileError",
    "Settings",
    "Throttle",
    "WebhookNotifier",
    "check_rules_file",
    "collect_garbage",
    "load_rules_file",
    "make_notifier",
    "make_rule",
    "mask_url",
    "parse_expression",
]
