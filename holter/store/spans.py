"""Span storage: columnar chunks plus one index row per trace and chunk.

Writing one SQLite row per span costs ~10 µs here, too slow for 100,000 spans a
second. Instead each flush writes its spans as chunks of up to :data:`CHUNK_SPANS`
spans: fixed-width columns in ``array`` form (ids, times, name and status codes)
and one JSON document for names, tags, events and errors, zlib-compressed — about
a microsecond of collector time per span. Alongside, one ``trace_parts`` row per
(trace, chunk) holds what listing traces needs: its time range, span and error
counts, and its local root span if the chunk has it. Reading a trace finds its
parts by trace id and decodes their chunks.

The format is versioned (first byte) and independent of the Python version.
"""

from __future__ import annotations

import json
import json.encoder
import sqlite3
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from holter.core.tracing import MAX_TAG_LEN, clean_tag

CHUNK_SPANS = 4096
"""Spans per stored chunk, at most (decoding one chunk to show a trace stays cheap)."""

FORMAT_VERSION = 1
STATUS_CODES = {"ok": 0, "error": 1, "unfinished": 2}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
ROOT = 2
"""``is_root`` of a span without a parent."""
REMOTE_ROOT = 1
"""``is_root`` of a span whose parent is in another process (the local root)."""

_M64 = (1 << 64) - 1
_BIG = sys.byteorder == "big"
_PLAIN = frozenset((str, int, bool))
# ensure_ascii: text with lone surrogates (undecodable file names) must still encode
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=repr).encode


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


def _u64(values: Iterable[int]) -> bytes:
    a = array("Q", values)
    if _BIG:  # pragma: no cover - stored little-endian everywhere
        a.byteswap()
    return a.tobytes()


def _i64(values: Iterable[int]) -> bytes:
    a = array("q", values)
    if _BIG:  # pragma: no cover
        a.byteswap()
    return a.tobytes()


def encode_chunk(records: Sequence[tuple[Any, ...]]) -> bytes:
    """Encode span records into one compressed chunk.

    Records are ``(trace_id, span_id, parent_id, name, start_ns, duration_ns, status,
    error_type, error_message, tags, events, remote_parent)`` with integer ids.
    """
    n = len(records)
    (traces, spans, parents, names, starts, durations, statuses, etypes, emsgs, tags, events,
     remotes) = zip(*records, strict=True)
    name_index: dict[str, int] = {}
    name_codes = [name_index.setdefault(name, len(name_index)) for name in names]
    status_codes = [STATUS_CODES.get(s, 0) for s in statuses]
    roots = [ROOT if p is None else (REMOTE_ROOT if r else 0) for p, r in zip(parents, remotes,
                                                                         strict=True)]
    meta = {
        "n": n,
        "names": list(name_index),
        "tags": [_clean_tags(t) if t else None for t in tags],
        "events": {i: _clean_events(e) for i, e in enumerate(events) if e},
        "errors": {i: [t, clean_tag(m) if m else m] for i, (t, m) in
                   enumerate(zip(etypes, emsgs, strict=True)) if t is not None},
    }
    meta_bytes = _encode(meta).encode("ascii")
    body = b"".join((
        _u64(t >> 64 for t in traces),
        _u64(t & _M64 for t in traces),
        _u64(spans),
        _u64(0 if p is None else p for p in parents),
        _i64(starts),
        _i64(durations),
        array("I", name_codes).tobytes() if not _BIG else _swapped("I", name_codes),
        bytes(status_codes),
        bytes(roots),
    ))
    header = bytes([FORMAT_VERSION]) + len(meta_bytes).to_bytes(4, "little")
    return zlib.compress(header + meta_bytes + body, 1)


def _swapped(code: str, values: list[int]) -> bytes:  # pragma: no cover - big-endian only
    a = array(code, values)
    a.byteswap()
    return a.tobytes()


def decode_chunk(blob: bytes) -> list[dict[str, Any]]:
    """Decode a chunk into span dicts with hex ids (as :func:`holter.store.query.trace`)."""
    raw = zlib.decompress(blob)
    if raw[0] != FORMAT_VERSION:
        raise ValueError(f"unsupported span chunk format {raw[0]}")
    meta_len = int.from_bytes(raw[1:5], "little")
    meta = json.loads(raw[5 : 5 + meta_len])
    n = meta["n"]
    pos = 5 + meta_len

    def take(code: str, width: int) -> array:
        nonlocal pos
        a = array(code)
        a.frombytes(raw[pos : pos + width * n])
        if _BIG:  # pragma: no cover
            a.byteswap()
        pos += width * n
        return a

    hi, lo, span_ids, parents = take("Q", 8), take("Q", 8), take("Q", 8), take("Q", 8)
    starts, durations = take("q", 8), take("q", 8)
    name_codes = take("I", 4)
    statuses = raw[pos : pos + n]
    roots = raw[pos + n : pos + 2 * n]
    names = meta["names"]
    tags = meta["tags"]
    events = meta["events"]
    errors = meta["errors"]
    out = []
    for i in range(n):
        error = errors.get(str(i))
        event_list = events.get(str(i))
        out.append({
            "trace_id": f"{(hi[i] << 64) | lo[i]:032x}",
            "span_id": f"{span_ids[i]:016x}",
            "parent_id": f"{parents[i]:016x}" if parents[i] else None,
            "name": names[name_codes[i]],
            "start_ns": starts[i],
            "duration_ns": durations[i],
            "status": STATUS_NAMES.get(statuses[i], "ok"),
            "error_type": error[0] if error else None,
            "error_message": error[1] if error else None,
            "tags": tags[i] or {},
            "events": [{"t_ns": e[0], "message": e[1], **({"fields": e[2]} if e[2] else {})}
                       for e in event_list] if event_list else [],
            "remote_parent": roots[i] == REMOTE_ROOT,
        })
    return out


def write_spans(conn: sqlite3.Connection, run_id: int, records: Sequence[tuple[Any, ...]]) -> None:
    """Store span records: chunks, and one ``trace_parts`` row per trace and chunk."""
    for i in range(0, len(records), CHUNK_SPANS):
        chunk = records[i : i + CHUNK_SPANS]
        starts = [r[4] for r in chunk]
        cur = conn.execute(
            "INSERT INTO span_chunks(run_id, min_start_ns, max_start_ns, spans, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (run_id, min(starts), max(starts), len(chunk), encode_chunk(chunk)),
        )
        chunk_id = cur.lastrowid
        parts: dict[int, list[Any]] = {}
        for (trace, span, parent, name, start, duration, status, _et, _em, _tags, _ev,
             remote) in chunk:
            part = parts.get(trace)
            end = start + duration
            if part is None:
                part = parts[trace] = [start, end, 0, 0, 0, None, None, 0, None]
            else:
                if start < part[0]:  # noqa: PLR1730 - min() costs a call per span
                    part[0] = start
                if end > part[1]:  # noqa: PLR1730
                    part[1] = end
            part[2] += 1
            if status != "ok":
                if status == "error":
                    part[3] += 1
                else:
                    part[4] += 1
            kind = ROOT if parent is None else (REMOTE_ROOT if remote else 0)
            if kind > part[7] or (kind and kind == part[7] and duration > part[8]):
                part[5] = span
                part[6] = name
                part[7] = kind
                part[8] = duration
        conn.executemany(
            "INSERT INTO trace_parts(trace_id, chunk_id, run_id, start_ns, end_ns, spans, errors, "
            "unfinished, root_span_id, root_name, root_kind, root_duration_ns) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                ("%032x" % trace, chunk_id, run_id, p[0], p[1], p[2], p[3], p[4],  # noqa: UP031
                 None if p[5] is None else "%016x" % p[5], safe_text(p[6]), p[7],  # noqa: UP031
                 p[8])
                for trace, p in parts.items()
            ],
        )
