"""Storage of alerting: alerts and their history, silences, notification groups.

Four tables (schema version 5, :mod:`holter.store.schema`):

* ``alerts``: one row per alert *instance*: a rule and a set of labels from the moment
  its condition became true (``pending``) through ``firing`` to ``resolved``. At most
  one open (pending or firing) row exists per rule and fingerprint; a condition that
  comes back after a resolution opens a new row. The row is the persisted state of the
  state machine, so a restarted program neither re-fires nor forgets a firing alert.
* ``alert_events``: the history: ``pending``, ``firing``, ``resolved``, ``cancelled``
  (pending that never fired), ``notified`` and ``failed`` (per notifier), ``silenced``,
  ``inhibited``, ``unmuted`` and ``action`` (a corrective action's outcome), with a
  small JSON detail.
* ``silences``: a rule (``*`` for every rule) and label matchers, valid from
  ``starts_ns`` to ``ends_ns``.
* ``alert_groups``: per notification group, when its first alert arrived, when it was
  last notified and which alerts that notification reported as firing (so repeat and
  resolved notices survive a restart, and processes sharing a store do not notify
  twice).

The alerting engine writes these tables through the functions below, inside one
transaction per evaluation; everything else reads them through
:mod:`holter.store.query` (which re-exports the readers).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from holter import _clock
from holter.errors import QueryError
from holter.store import schema
from holter.store.sqlite import Store, _busy_or_error

STATES = ("pending", "firing", "resolved")
"""States of a stored alert (``inactive`` alerts have no row)."""

EVENT_KINDS = (
    "pending", "firing", "resolved", "cancelled", "notified", "failed", "silenced",
    "inhibited", "unmuted", "action",
)
"""Kinds of history events."""

_ALERT_COLUMNS = (
    "id, rule, fingerprint, labels, annotations, state, value, active_ns, fired_ns, "
    "last_true_ns, evaluated_ns, resolved_ns, muted, run_id"
)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One stored alert instance (times in nanoseconds since the epoch).

    ``active_ns``: when its condition first held (pending since); ``fired_ns``: when it
    started firing; ``last_true_ns``: the last evaluation at which the condition held;
    ``resolved_ns``: when it resolved. ``muted`` is ``""``, ``"silenced:ID"`` or
    ``"inhibited"``. ``value`` is the last evaluated value of its expression.
    """

    id: int
    rule: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    value: float | None
    active_ns: int
    fired_ns: int | None
    last_true_ns: int
    evaluated_ns: int
    resolved_ns: int | None
    muted: str
    run_id: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One history event: what happened to an alert (or a rule) and when."""

    id: int
    time_ns: int
    alert_id: int | None
    rule: str
    kind: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes the notifications of alerts of ``rule`` (``*``: any) whose labels match.

    Active from ``starts_ns`` until ``ends_ns``.
    """

    id: int
    rule: str
    matchers: dict[str, str]
    starts_ns: int
    ends_ns: int
    created_ns: int
    comment: str
    author: str

    def active(self, now_ns: int) -> bool:
        """True while the silence is in force."""
        return self.starts_ns <= now_ns < self.ends_ns

    def matches(self, rule: str, labels: Mapping[str, str]) -> bool:
        """True when it applies to an alert of ``rule`` with ``labels``."""
        if self.rule not in ("*", rule):
            return False
        return all(labels.get(k) == v for k, v in self.matchers.items())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class GroupState:
    """The notification state of one group of alerts (same group labels).

    ``first_ns``: when its first alert to notify arrived (``group_wait`` counts from
    there); ``last_notify_ns``: its last notification; ``notified``: ids of the alerts
    that notification reported as firing.
    """

    key: str
    labels: dict[str, str]
    first_ns: int | None = None
    last_notify_ns: int | None = None
    notified: list[int] | None = None


# -- tables -------------------------------------------------------------------------------


def ensure_tables(store: Store) -> None:
    """Create the tables if this store lacks them (their statements are ``IF NOT EXISTS``)."""
    with store.reading() as conn:
        if has_tables(conn):
            return
    try:
        with store.atomic() as conn:
            for statement in schema.MIGRATIONS[5]:  # type: ignore[union-attr]
                conn.execute(statement)
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None


def has_tables(conn: sqlite3.Connection) -> bool:
    """True when the alerting tables exist (a store opened read-only may predate them)."""
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
    ).fetchone() is not None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# -- reading ------------------------------------------------------------------------------


def _alert(row: Sequence[Any]) -> AlertRecord:
    return AlertRecord(
        id=row[0], rule=row[1], fingerprint=row[2], labels=json.loads(row[3]),
        annotations=json.loads(row[4]), state=row[5], value=row[6], active_ns=row[7],
        fired_ns=row[8], last_true_ns=row[9], evaluated_ns=row[10], resolved_ns=row[11],
        muted=row[12], run_id=row[13],
    )


def alerts(
    store: Store,
    *,
    state: str | Sequence[str] | None = None,
    since_ns: int | None = None,
    rule: str | None = None,
    ids: Iterable[int] | None = None,
    limit: int | None = None,
) -> list[AlertRecord]:
    """Stored alerts, newest first: every open one, and resolved ones since ``since_ns``.

    ``state`` keeps one state (or several); ``rule`` one rule; ``ids`` those ids only
    (whatever their age). Without ``since_ns`` every resolved alert is included.
    """
    states = [state] if isinstance(state, str) else list(state or STATES)
    bad = [s for s in states if s not in STATES]
    if bad:
        raise QueryError(f"bad alert state {bad[0]!r}: use one of {', '.join(STATES)}")
    sql = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state IN ({','.join('?' * len(states))})"
    args: list[Any] = list(states)
    if since_ns is not None and ids is None:
        sql += " AND (state != 'resolved' OR resolved_ns > ?)"
        args.append(int(since_ns))
    if rule is not None:
        sql += " AND rule = ?"
        args.append(rule)
    if ids is not None:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        sql += f" AND id IN ({','.join('?' * len(wanted))})"
        args.extend(wanted)
    sql += " ORDER BY COALESCE(resolved_ns, fired_ns, active_ns) DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    with store.reading() as conn:
        if not has_tables(conn):
            return []
        rows = conn.execute(sql, args).fetchall()
    return [_alert(r) for r in rows]


def alert_events(
    store: Store,
    *,
    since_ns: int | None = None,
    rule: str | None = None,
    alert_id: int | None = None,
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[AlertEvent]:
    """History events, newest first."""
    sql = "SELECT id, time_ns, alert_id, rule, kind, detail FROM alert_events WHERE 1"
    args: list[Any] = []
    if since_ns is not None:
        sql += " AND time_ns > ?"
        args.append(int(since_ns))
    if rule is not None:
        sql += " AND rule = ?"
        args.append(rule)
    if alert_id is not None:
        sql += " AND alert_id = ?"
        args.append(int(alert_id))
    if kinds:
        sql += f" AND kind IN ({','.join('?' * len(kinds))})"
        args.extend(kinds)
    sql += " ORDER BY time_ns DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    with store.reading() as conn:
        if not has_tables(conn):
            return []
        rows = conn.execute(sql, args).fetchall()
    return [AlertEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def silences(
    store: Store, *, now_ns: int | None = None, include_expired: bool = False
) -> list[Silence]:
    """Silences in force at ``now_ns`` (default now), or all of them; newest first."""
    now = _clock.time_ns() if now_ns is None else now_ns
    sql = (
        "SELECT id, rule, matchers, starts_ns, ends_ns, created_ns, comment, author "
        "FROM silences"
    )
    args: list[Any] = []
    if not include_expired:
        sql += " WHERE starts_ns <= ? AND ends_ns > ?"
        args.extend([now, now])
    sql += " ORDER BY created_ns DESC, id DESC"
    with store.reading() as conn:
        if not has_tables(conn):
            return []
        rows = conn.execute(sql, args).fetchall()
    return [Silence(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]


def groups(store: Store) -> dict[str, GroupState]:
    """Notification state of every group, by group key."""
    with store.reading() as conn:
        if not has_tables(conn):
            return {}
        rows = conn.execute(
            "SELECT group_key, labels, first_ns, last_notify_ns, notified FROM alert_groups"
        ).fetchall()
    return {
        r[0]: GroupState(r[0], json.loads(r[1]), r[2], r[3], json.loads(r[4])) for r in rows
    }


# -- writing (the alerting engine, inside its transaction) ---------------------------------


def insert_alert(
    conn: sqlite3.Connection,
    *,
    rule: str,
    fingerprint: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    state: str,
    value: float | None,
    now_ns: int,
    run_id: int | None,
) -> int:
    """Open a new alert (pending, or firing when its rule has no ``for``); return its id."""
    cur = conn.execute(
        "INSERT INTO alerts(rule, fingerprint, labels, annotations, state, value, active_ns, "
        "fired_ns, last_true_ns, evaluated_ns, resolved_ns, muted, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '', ?)",
        (rule, fingerprint, _json(dict(labels)), _json(dict(annotations)), state, value,
         now_ns, now_ns if state == "firing" else None, now_ns, now_ns, run_id),
    )
    return int(cur.lastrowid)  # type: ignore[arg-type]


def update_alert(conn: sqlite3.Connection, alert_id: int, **fields: Any) -> None:
    """Change some columns of an alert (``labels``/``annotations`` given as dicts)."""
    allowed = {"annotations", "state", "value", "active_ns", "fired_ns", "last_true_ns",
               "evaluated_ns", "resolved_ns", "muted", "labels"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown alert columns {sorted(unknown)}")
    if not fields:
        return
    values = [
        _json(v) if k in ("annotations", "labels") else v for k, v in fields.items()
    ]
    conn.execute(
        f"UPDATE alerts SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
        (*values, alert_id),
    )


def delete_alert(conn: sqlite3.Connection, alert_id: int) -> None:
    """Remove an alert that never fired (pending whose condition went away)."""
    conn.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))


def add_events(
    conn: sqlite3.Connection,
    events: Iterable[tuple[int, int | None, str, str, Mapping[str, Any]]],
) -> None:
    """Append history events ``(time_ns, alert_id, rule, kind, detail)``."""
    conn.executemany(
        "INSERT INTO alert_events(time_ns, alert_id, rule, kind, detail) VALUES (?, ?, ?, ?, ?)",
        [(t, a, r, k, _json(dict(d))) for t, a, r, k, d in events],
    )


def record_events(
    store: Store, events: Sequence[tuple[int, int | None, str, str, Mapping[str, Any]]]
) -> None:
    """Append history events in a transaction of their own (delivery and action outcomes)."""
    if not events:
        return
    try:
        with store.atomic() as conn:
            add_events(conn, events)
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None


def save_group(conn: sqlite3.Connection, group: GroupState) -> None:
    """Insert or replace one group's notification state."""
    conn.execute(
        "INSERT INTO alert_groups(group_key, labels, first_ns, last_notify_ns, notified) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(group_key) DO UPDATE SET labels = excluded.labels, "
        "first_ns = excluded.first_ns, last_notify_ns = excluded.last_notify_ns, "
        "notified = excluded.notified",
        (group.key, _json(group.labels), group.first_ns, group.last_notify_ns,
         _json(sorted(group.notified or []))),
    )


def delete_group(conn: sqlite3.Connection, key: str) -> None:
    """Forget a group (all its alerts resolved and reported)."""
    conn.execute("DELETE FROM alert_groups WHERE group_key = ?", (key,))


def add_silence(
    store: Store,
    rule: str,
    *,
    matchers: Mapping[str, str] | None = None,
    duration_s: float,
    starts_ns: int | None = None,
    comment: str = "",
    author: str = "",
) -> Silence:
    """Create a silence of ``rule`` (``*``: every rule) for ``duration_s`` seconds."""
    if not rule:
        raise QueryError("a silence needs a rule name (or * for every rule)")
    if not duration_s > 0:
        raise QueryError(f"a silence must last a positive time, got {duration_s!r} s")
    now = _clock.time_ns()
    start = now if starts_ns is None else int(starts_ns)
    end = start + int(duration_s * 1e9)
    clean = {str(k): str(v) for k, v in (matchers or {}).items()}
    ensure_tables(store)
    try:
        with store.atomic() as conn:
            cur = conn.execute(
                "INSERT INTO silences(rule, matchers, starts_ns, ends_ns, created_ns, comment, "
                "author) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rule, _json(clean), start, end, now, comment, author),
            )
            sid = int(cur.lastrowid)  # type: ignore[arg-type]
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None
    return Silence(sid, rule, clean, start, end, now, comment, author)


def expire_silence(store: Store, silence_id: int, *, now_ns: int | None = None) -> Silence:
    """End a silence now; QueryError when there is no such silence."""
    now = _clock.time_ns() if now_ns is None else now_ns
    found = [s for s in silences(store, include_expired=True) if s.id == silence_id]
    if not found:
        raise QueryError(f"no silence with id {silence_id}; `holter silences --all` lists them")
    try:
        with store.atomic() as conn:
            conn.execute(
                "UPDATE silences SET ends_ns = MIN(ends_ns, ?) WHERE id = ?", (now, silence_id)
            )
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None
    old = found[0]
    return Silence(old.id, old.rule, old.matchers, old.starts_ns, min(old.ends_ns, now),
                   old.created_ns, old.comment, old.author)


def expire_history(store: Store, before_ns: int) -> int:
    """Delete events, resolved alerts and silences that ended before ``before_ns``."""
    try:
        with store.atomic() as conn:
            n = conn.execute("DELETE FROM alert_events WHERE time_ns < ?", (before_ns,)).rowcount
            n += conn.execute(
                "DELETE FROM alerts WHERE state = 'resolved' AND resolved_ns < ?", (before_ns,)
            ).rowcount
            n += conn.execute("DELETE FROM silences WHERE ends_ns < ?", (before_ns,)).rowcount
            return n
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None


__all__ = [
    "EVENT_KINDS", "STATES", "AlertEvent", "AlertRecord", "GroupState", "Silence",
    "add_events", "add_silence", "alert_events", "alerts", "delete_alert", "delete_group",
    "ensure_tables", "expire_history", "expire_silence", "groups", "has_tables",
    "insert_alert", "record_events", "save_group", "silences", "update_alert",
]
