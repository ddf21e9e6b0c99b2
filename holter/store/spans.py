"""Span storage: compressed chunks plus one index row per trace and chunk.

Writing one SQLite row per span costs ~10 µs here, too slow for 100,000 spans a
second. Instead each flush writes its spans as chunks of up to :data:`CHUNK_SPANS`
spans, serialised in one C call (pickle protocol 4 of plain tuples, dicts and
strings) and zlib-compressed. Alongside, one ``trace_parts`` row per (trace, chunk)
holds what listing traces needs: its time range, span and error counts, and its local
root span if the chunk has it. Reading a trace finds its parts by trace id and
decodes their chunks with an unpickler that refuses every global, so a tampered store
cannot run code; pickle's format is the same across Python versions.
"""

from __future__ import annotations

import heapq
import io
import json
import operator
import pickle
import sqlite3
import zlib
from collections.abc import Sequence
from itertools import chain, compress
from typing import Any

from holter.core.tracing import MAX_TAG_LEN, STATUS_ERROR, STATUS_OK, clean_tag

CHUNK_SPANS = 4096
SLOW_PER_CHUNK = 50
"""Slowest roots of each chunk kept in ``slow_traces``: ``--slowest N`` up to this is exact."""
"""Spans per stored chunk, at most (decoding one chunk to show a trace stays cheap)."""

FORMAT_VERSION = 2
ROOT = 2
"""``is_root`` of a span without a parent."""
REMOTE_ROOT = 1
"""``is_root`` of a span whose parent is in another process (the local root)."""

_PLAIN = frozenset((str, int, bool))
_TWO_63 = 1 << 63
_TWO_64 = 1 << 64
# ensure_ascii: text with lone surrogates (undecodable file names) must still encode
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=repr).encode


def trace_key(trace_id: int) -> int:
    """The indexed key of a trace: the id's upper 64 bits as a signed 64-bit integer."""
    hi = trace_id >> 64
    return hi - (1 << 64) if hi >= (1 << 63) else hi


def key_of_hex(trace_hex: str) -> int:
    """:func:`trace_key` of a trace id in hex."""
    return trace_key(int(trace_hex, 16))


def safe_text(text: str | None) -> str | None:
    """``text`` with lone surrogates replaced, so SQLite can store it as UTF-8."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_tags(tags: dict[Any, Any]) -> dict[str, Any]:
    """Tags with str keys and plain values (others by repr), long strings cut."""
    for key, value in tags.items():
        cls = value.__class__
        if key.__class__ is not str or not (
            (cls in _PLAIN and (cls is not str or len(value) <= MAX_TAG_LEN))
            or (cls is float and value - value == 0.0)
        ):
            return {str(k)[:MAX_TAG_LEN]: clean_tag(v) for k, v in tags.items()}
    return tags


def _clean_events(events: list[tuple[int, str, dict[str, Any]]]) -> list[list[Any]]:
    return [[t, clean_tag(str(message)), _clean_tags(fields) if fields else None]
            for t, message, fields in events]


class _SafeUnpickler(pickle.Unpickler):
    """Loads only what holter writes (tuples, lists, dicts, str, int, float, bool, None).

    Every global is refused, so a tampered store file cannot make ``holter trace`` run
    code: building anything but plain data needs a global.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"span chunk refers to {module}.{name}: refused")


def _plain(tags: dict[Any, Any]) -> bool:
    """Whether tags need no cleaning: str keys; str (not too long), int, bool, finite float."""
    for key, value in tags.items():
        cls = value.__class__
        if key.__class__ is not str:
            return False
        if cls is str:
            if len(value) > MAX_TAG_LEN:
                return False
        elif cls is not int and cls is not bool and (cls is not float or value - value != 0.0):
            return False
    return True


def encode_chunk(records: Sequence[tuple[Any, ...]]) -> bytes:
    """Encode span records into one compressed chunk.

    Records are ``(trace_id, span_id, parent_id, name, start_ns, duration_ns, status,
    error_type, error_message, tags, events, remote_parent)`` with integer ids. The
    chunk is a version byte + zlib(pickle protocol 4 of plain data), loaded back with an
    unpickler that refuses every global (:class:`_SafeUnpickler`). Only records whose
    tags or events hold something other than plain values are rebuilt first.
    """
    rows: list[Any] | Sequence[Any] = records
    for i, record in enumerate(records):
        tags = record[9]
        if (tags and not _plain(tags)) or record[10]:
            if rows is records:
                rows = list(records)
            rows[i] = (*record[:9], _clean_tags(tags) if tags else None,  # type: ignore[index]
                       _clean_events(record[10]) if record[10] else None, record[11])
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=4)
    pickler.fast = True  # no memo: 3x faster, and these rows hold no shared references
    pickler.dump(rows)
    return bytes([FORMAT_VERSION]) + zlib.compress(buffer.getvalue(), 1)


def decode_chunk(blob: bytes) -> list[dict[str, Any]]:
    """Decode a chunk into span dicts with hex ids (as :func:`holter.store.query.trace`)."""
    if not blob or blob[0] != FORMAT_VERSION:
        raise ValueError(f"unsupported span chunk format {blob[:1]!r}")
    rows = _SafeUnpickler(io.BytesIO(zlib.decompress(blob[1:]))).load()
    out = []
    for (trace, span, parent, name, start, duration, status, etype, emsg, tags, events,
         remote) in rows:
        out.append({
            "trace_id": f"{trace:032x}",
            "span_id": f"{span:016x}",
            "parent_id": f"{parent:016x}" if parent is not None else None,
            "name": name,
            "start_ns": start,
            "duration_ns": duration,
            "status": status,
            "error_type": etype,
            "error_message": emsg,
            "tags": tags or {},
            "events": [{"t_ns": e[0], "message": e[1], **({"fields": e[2]} if e[2] else {})}
                       for e in events] if events else [],
            "remote_parent": bool(remote) and parent is not None,
        })
    return out


def write_spans(conn: sqlite3.Connection, run_id: int, records: Sequence[tuple[Any, ...]]) -> None:
    """Store span records: chunks, and one ``trace_parts`` row per trace and chunk."""
    for i in range(0, len(records), CHUNK_SPANS):
        chunk = records[i : i + CHUNK_SPANS]
        starts = list(map(_START, chunk))
        cur = conn.execute(
            "INSERT INTO span_chunks(run_id, min_start_ns, max_start_ns, spans, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (run_id, min(starts), max(starts), len(chunk), encode_chunk(chunk)),
        )
        rows = _trace_rows(chunk, cur.lastrowid, run_id)
        insert_rows(
            conn,
            "INSERT INTO trace_parts(trace_key, trace_id, chunk_id, run_id, start_ns, end_ns, "
            "spans, errors, unfinished, root_span_id, root_name, root_kind, root_duration_ns)",
            rows,
        )
        roots = list(compress(rows, map(_ROOT_KIND, rows)))
        if roots:
            slowest = heapq.nlargest(SLOW_PER_CHUNK, roots, key=_ROOT_DURATION)
            insert_rows(
                conn,
                "INSERT INTO slow_traces(trace_key, trace_id, start_ns, root_duration_ns, run_id)",
                [(r[0], r[1], r[4], r[12], run_id) for r in slowest],
            )


ROWS_PER_INSERT = 256
"""Rows bound into one multi-row ``INSERT`` at most (fewer if SQLite allows fewer variables)."""
_insert_sql: dict[tuple[str, int, int], str] = {}


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> None:
    """``INSERT`` rows of equal width in a few multi-row statements rather than one per row.

    Every call into SQLite releases the GIL and takes it back; with one step per row
    (``executemany``) a busy program thread makes the collector wait at each row. Here
    rows go in blocks of :data:`ROWS_PER_INSERT`, and the rest in blocks of decreasing
    powers of two, so at most a handful of statement texts are ever prepared (sqlite3
    caches them).
    """
    n = len(rows)
    if not n:
        return
    width = len(rows[0])
    try:
        most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    except (AttributeError, sqlite3.Error):  # pragma: no cover - not a plain connection
        most = 999 // width
    block = 1
    while block * 2 <= min(ROWS_PER_INSERT, most):
        block *= 2
    i = 0
    while i < n:
        while block > n - i:
            block //= 2
        sql = _insert_sql.get((head, width, block))
        if sql is None:
            values = "(" + ",".join("?" * width) + ")"
            sql = _insert_sql[head, width, block] = f"{head} VALUES {','.join([values] * block)}"
        conn.execute(sql, list(chain.from_iterable(rows[i : i + block])))
        i += block


_START = operator.itemgetter(4)
_ROOT_KIND = operator.itemgetter(11)
_ROOT_DURATION = operator.itemgetter(12)


def _trace_rows(
    chunk: Sequence[tuple[Any, ...]], chunk_id: int | None, run_id: int
) -> list[tuple[Any, ...]]:
    """One ``trace_parts`` row per trace of a chunk, in the order traces first appear.

    Per trace: first start, last end, spans, errors, other non-ok spans (unfinished), and
    its local root: a span without parent (kind 2) before one continuing a remote parent
    (kind 1); among equals the longest, the first of equally long ones.
    """
    # per trace: [first start, last end, spans, errors, unfinished, root id, root name,
    # root kind, root duration]
    parts: dict[int, list[Any]] = {}
    get = parts.get
    for trace, span_id, parent, name, start, duration, status, _, _, _, _, remote in chunk:
        end = start + duration
        part = get(trace)
        if part is None:
            part = parts[trace] = [start, end, 1, 0, 0, None, None, 0, 0]
        else:
            if start < part[0]:  # noqa: PLR1730 - min() costs a call per span
                part[0] = start
            if end > part[1]:  # noqa: PLR1730
                part[1] = end
            part[2] += 1
        if status != STATUS_OK:
            part[3 if status == STATUS_ERROR else 4] += 1
        if parent is None:
            kind = ROOT
        elif remote:
            kind = REMOTE_ROOT
        else:
            continue
        if kind > part[7] or (kind == part[7] and duration > part[8]):
            part[5] = span_id
            part[6] = name
            part[7] = kind
            part[8] = duration
    rows = []
    append = rows.append
    for trace, (start, end, spans, errors, unfinished, root, name, kind, duration) in (
        parts.items()
    ):
        hi = trace >> 64
        append((
            hi - _TWO_64 if hi >= _TWO_63 else hi, "%032x" % trace, chunk_id, run_id,  # noqa: UP031
            start, end, spans, errors, unfinished,
            None if root is None else "%016x" % root,  # noqa: UP031
            name if name is None or name.isascii() else safe_text(name), kind,
            duration if kind else None,
        ))
    return rows
