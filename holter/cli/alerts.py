"""`holter alerts`, `holter silence`, `holter silences` and `holter rules check`."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Any

import click

from holter import _clock
from holter.alerting.config import check_rules_file
from holter.cli._options import (
    CliError,
    db_option,
    default_db,
    emit_json,
    fmt_num,
    fmt_tags,
    fmt_time,
    holter_errors,
    json_option,
    open_store,
    parse_tags,
    table,
)
from holter.errors import HolterError
from holter.store import alerts as astore
from holter.store import query as q
from holter.store.sqlite import Store

_HIDDEN_LABELS = ("alertname", "alertgroup", "severity")


def _tags_of(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in _HIDDEN_LABELS}


@click.command("alerts")
@click.option("--state", type=click.Choice(["pending", "firing", "resolved"]), default=None,
              help="Only alerts in this state.")
@click.option("--since", default="24h", show_default=True,
              help="Resolved alerts (and events) of this window: 1h, 24h, 7d...")
@click.option("--rule", "rule", default=None, help="Only alerts of this rule.")
@click.option("--events", is_flag=True,
              help="The history instead: fired, resolved, notified, failed, silenced, actions.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Most alerts (or events) to show.")
@db_option
@json_option
@holter_errors
def alerts_cmd(state: str | None, since: str, rule: str | None, events: bool, limit: int,
               db: str, as_json: bool) -> None:
    """Alerts: pending and firing ones, and those resolved in the window, newest first."""
    since_ns = _clock.time_ns() - q.parse_window(since)
    with open_store(db) as store:
        if events:
            found_events = q.alert_events(store, since_ns=since_ns, rule=rule, limit=limit)
        else:
            found = q.alerts(store, state=state, since_ns=since_ns, rule=rule, limit=limit)
    if events:
        if as_json:
            emit_json([e.as_dict() for e in found_events])
            return
        table(
            f"{len(found_events)} alert events in the last {since}",
            ["time", "alert", "rule", "event", "detail"],
            [[fmt_time(e.time_ns), str(e.alert_id or "-"), e.rule, e.kind, _detail(e.detail)]
             for e in found_events],
        )
        return
    if as_json:
        emit_json([a.as_dict() for a in found])
        return
    rows = []
    for a in found:
        muted = a.muted.split(":")[0] if a.muted else "-"
        rows.append([
            str(a.id), a.rule, a.state, a.labels.get("severity", "-"), fmt_tags(_tags_of(a.labels)),
            fmt_num(a.value), fmt_time(a.active_ns), fmt_time(a.fired_ns),
            fmt_time(a.resolved_ns), muted, a.annotations.get("summary", "")[:80],
        ])
    what = f"{state} alerts" if state else "alerts"
    table(f"{len(found)} {what} (resolved: last {since})",
          ["id", "rule", "state", "severity", "tags", "value", "since", "fired", "resolved",
           "muted", "summary"], rows)


def _detail(detail: dict[str, Any]) -> str:
    parts = []
    for key, value in detail.items():
        if value is None or value == "":
            continue
        if isinstance(value, float):
            shown = fmt_num(value)
        elif isinstance(value, dict | list):
            shown = json.dumps(value, separators=(",", ":"))[:80]
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts) or "-"


@click.command("silence")
@click.argument("rule")
@click.option("--for", "duration", default="1h", show_default=True,
              help="How long: 30m, 1h, 2h30m, 1d.")
@click.option("--tag", "-t", "tags", multiple=True, metavar="KEY=VALUE",
              help="Only alerts with this tag or label value (repeatable).")
@click.option("--comment", default="", help="Why (shown by holter silences).")
@db_option
@json_option
@holter_errors
def silence_cmd(rule: str, duration: str, tags: tuple[str, ...], comment: str, db: str,
                as_json: bool) -> None:
    """Mute the notifications of RULE (* for every rule) for a while.

    Alerts still change state and are recorded; corrective actions still run. Only
    notifications stop, for alerts whose labels match every --tag.
    """
    seconds = q.parse_window(duration) / 1e9
    matchers = parse_tags(tags)
    with open_store(db) as store:
        silence = astore.add_silence(store, rule, matchers=matchers, duration_s=seconds,
                                     comment=comment, author=_author())
        known = rule == "*" or bool(q.alerts(store, rule=rule, limit=1)) or bool(
            q.alert_events(store, rule=rule, limit=1))
    if as_json:
        emit_json(silence.as_dict())
        return
    scope = "every rule" if rule == "*" else f"rule {rule!r}"
    where = f" with {fmt_tags(matchers)}" if matchers else ""
    click.echo(f"silence {silence.id}: {scope}{where} until {fmt_time(silence.ends_ns)}")
    if not known:
        click.echo(f"note: no alert of rule {rule!r} has been recorded in {db} yet", err=True)


def _author() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


@click.command("silences")
@click.option("--all", "include_expired", is_flag=True, help="Expired silences too.")
@click.option("--expire", "expire_id", type=int, default=None, metavar="ID",
              help="End silence ID now.")
@db_option
@json_option
@holter_errors
def silences_cmd(include_expired: bool, expire_id: int | None, db: str, as_json: bool) -> None:
    """Silences in force (or all of them), and ending one with --expire."""
    with open_store(db) as store:
        if expire_id is not None:
            ended = astore.expire_silence(store, expire_id)
            if not as_json:
                click.echo(f"silence {ended.id} ended at {fmt_time(ended.ends_ns)}")
        found = q.silences(store, include_expired=include_expired)
    if as_json:
        emit_json([s.as_dict() for s in found])
        return
    now = _clock.time_ns()
    table(
        f"{len(found)} silences" + ("" if include_expired else " in force"),
        ["id", "rule", "tags", "from", "until", "state", "by", "comment"],
        [[str(s.id), s.rule, fmt_tags(s.matchers), fmt_time(s.starts_ns), fmt_time(s.ends_ns),
          "active" if s.active(now) else ("pending" if s.starts_ns > now else "expired"),
          s.author or "-", s.comment or "-"] for s in found],
    )


@click.group("rules")
def rules_group() -> None:
    """Alert rules files (TOML): check them before a program uses them."""


@rules_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--db", "db", default=None, metavar="PATH",
              help="Store whose metric names the rules are checked against "
                   "(default $HOLTER_DB or ./holter.db, when it exists).")
@json_option
def rules_check_cmd(file: str, db: str | None, as_json: bool) -> None:
    """Validate a rules file: every error with its line (exit 2), and warnings.

    Rules naming a metric that the store has not recorded are accepted (they stay
    inactive until it is) and reported as warnings. Notifier URLs are shown without
    their secrets.
    """
    result = check_rules_file(file)
    warnings = [p for p in result.problems if p.level == "warning"]
    errors = result.errors
    extra: list[str] = []
    store_path = db or default_db()
    if result.rules:
        extra = _metric_warnings(result.rules, store_path, explicit=db is not None)
    if as_json:
        emit_json({
            "file": file,
            "ok": not errors,
            "rules": [r.as_dict() for r in result.rules],
            "notifiers": [n.describe() for n in result.notifiers],
            "problems": [{"line": p.line, "level": p.level, "message": p.message}
                         for p in result.problems] + [
                {"line": None, "level": "warning", "message": w} for w in extra],
        })
    else:
        for problem in errors + warnings:
            click.echo(problem.format(file), err=True)
        for warning in extra:
            click.echo(f"{file}: warning: {warning}", err=True)
        if not errors:
            kinds = ", ".join(f"{r.name} ({r.describe()})" for r in result.rules) or "none"
            click.echo(f"{file}: {len(result.rules)} rules: {kinds}")
            for notifier in result.notifiers:
                click.echo(f"  notifier: {notifier.describe()}")
    if errors:
        sys.exit(2)


def _metric_warnings(rules: list[Any], store_path: str, *, explicit: bool) -> list[str]:
    if not os.path.exists(store_path):
        if explicit:
            raise CliError(f"no holter store at {store_path!r}")
        return [f"no store at {store_path!r}: metric names not checked (pass --db)"]
    try:
        store = Store.open(store_path, create=False)
    except HolterError as exc:
        return [f"metric names not checked: {exc}"]
    try:
        names = set(q.metric_names(store))
    finally:
        store.close()
    return [
        f"rule {r.name!r}: metric {r.metric!r} is not recorded in {store_path} yet; the rule "
        "stays inactive until it is"
        for r in rules if r.metric not in names
    ]


__all__ = ["alerts_cmd", "rules_group", "silence_cmd", "silences_cmd"]
