"""Export cursors: how far each export target has sent, kept in the store.

A cursor is one row of ``export_cursors`` per target (``"remote-write
http://host:9090/api/v1/write"``, ``"otlp http://127.0.0.1:4318"``): the last interval
point row (``points.rowid``) and span chunk (``span_chunks.id``) that reached the
target, and a small JSON state the exporter needs to go on exactly where it stopped
(for remote write, the last timestamp sent per series, since Prometheus refuses a
sample older than one it has). A cursor moves only after the target accepted what was
sent, in one short transaction, so a push that is stopped and started again never sends
a point twice and skips none.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from holter import _clock
from holter.errors import StoreError
from holter.store.sqlite import Store, StoreBusy


@dataclass(slots=True)
class Cursor:
    """Where a target stands: last point row and span chunk sent, and its state."""

    target: str
    points_rowid: int = 0
    span_chunk_id: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    updated_ns: int | None = None
    """When the cursor last moved (None: never saved)."""


def load(store: Store, target: str) -> Cursor:
    """The saved cursor of ``target``, or a fresh one (nothing sent yet)."""
    with store.reading() as conn:
        row = conn.execute(
            "SELECT points_rowid, span_chunk_id, state, updated_ns FROM export_cursors "
            "WHERE target = ?",
            (target,),
        ).fetchone()
    if row is None:
        return Cursor(target)
    try:
        state = json.loads(row[2])
    except ValueError:
        state = {}
    return Cursor(target, int(row[0]), int(row[1]), state if isinstance(state, dict) else {},
                  row[3])


def save(store: Store, cursor: Cursor) -> None:
    """Store ``cursor`` (insert or replace), in one write transaction.

    Raises :class:`StoreError` (or :class:`StoreBusy`) when the store cannot be written.
    """
    now = _clock.time_ns()
    try:
        with store.atomic() as conn:
            conn.execute(
                "INSERT INTO export_cursors(target, points_rowid, span_chunk_id, state, "
                "updated_ns) VALUES (?, ?, ?, ?, ?) ON CONFLICT(target) DO UPDATE SET "
                "points_rowid = excluded.points_rowid, span_chunk_id = excluded.span_chunk_id, "
                "state = excluded.state, updated_ns = excluded.updated_ns",
                (cursor.target, int(cursor.points_rowid), int(cursor.span_chunk_id),
                 json.dumps(cursor.state, separators=(",", ":")), now),
            )
    except StoreError:
        raise
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise StoreBusy(f"store {store.path!r} is busy: {text}") from None
        raise StoreError(f"store {store.path!r}: cannot save the export cursor: {text}") from None
    cursor.updated_ns = now


def delete(store: Store, target: str) -> bool:
    """Forget the cursor of ``target`` (the next push starts afresh); True if there was one."""
    try:
        with store.atomic() as conn:
            return conn.execute(
                "DELETE FROM export_cursors WHERE target = ?", (target,)
            ).rowcount > 0
    except sqlite3.Error as exc:
        raise StoreError(f"store {store.path!r}: cannot delete the export cursor: {exc}") from None


def all_cursors(store: Store) -> list[Cursor]:
    """Every saved cursor, by target."""
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT target FROM export_cursors ORDER BY target"
        ).fetchall()
    return [load(store, r[0]) for r in rows]
