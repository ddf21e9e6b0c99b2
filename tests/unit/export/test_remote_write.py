"""Remote-write encoding: the protobuf and snappy bytes decoded back independently, totals,
timestamps, and the export cursor in the store."""

from __future__ import annotations

import struct

import cramjam
import pytest

import holter.testing
from holter.export.remote_write import RemoteWriteEncoder, encode_write_request
from holter.store import cursors
from holter.store import query as q


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def fields(data: bytes) -> list[tuple[int, object]]:
    """Decode protobuf fields (wire types 0, 1 and 2 only) of one message."""
    out = []
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
            if value >= 1 << 63:
                value -= 1 << 64
        elif wire == 1:
            value = struct.unpack("<d", data[i:i + 8])[0]
            i += 8
        elif wire == 2:
            length, i = read_varint(data, i)
            value = data[i:i + length]
            i += length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((number, value))
    return out


def decode(body: bytes) -> dict[tuple, list[tuple[float, int]]]:
    raw = bytes(cramjam.snappy.decompress_raw(body))
    series = {}
    for number, ts in fields(raw):
        assert number == 1
        labels, samples = [], []
        for n, part in fields(ts):  # type: ignore[arg-type]
            if n == 1:
                label = dict(fields(part))  # type: ignore[arg-type]
                labels.append((label[1].decode(), label[2].decode()))
            else:
                sample = dict(fields(part))  # type: ignore[arg-type]
                samples.append((sample[1], sample[2]))
        assert labels == sorted(labels), "labels must be sorted by name"
        series[tuple(labels)] = samples
    return series


def test_wire_format_round_trip() -> None:
    raw = encode_write_request([([("__name__", "x"), ("a", "é")], [(1.5, 1_700_000_000_000),
                                                                    (-2.0, -5)])])
    (number, ts), = fields(raw)
    assert number == 1
    decoded = fields(ts)  # type: ignore[arg-type]
    assert [dict(fields(v)) for n, v in decoded if n == 1] == [
        {1: b"__name__", 2: b"x"}, {1: b"a", 2: "é".encode()}]
    assert [dict(fields(v)) for n, v in decoded if n == 2] == [
        {1: 1.5, 2: 1_700_000_000_000}, {1: -2.0, 2: -5}]


def test_points_become_cumulative_samples(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "r.db"), app="a") as mon:
        mon.counter("c").inc(2, k="v")
        mon.gauge("g").set(3.5)
        mon.flush()
        mon.counter("c").inc(5, k="v")
        mon.histogram("h", unit="s").observe(0.25)
        mon.flush()
        rows, _ = q.points_after(mon.store, 0)
    encoder = RemoteWriteEncoder(labels={"job": "x"})
    body, n = encoder.encode(rows)
    series = decode(body)
    c = series[(("__name__", "c_total"), ("app", "a"), ("job", "x"), ("k", "v"))]
    assert [v for v, _ in c] == [2.0, 7.0]
    assert [t for _, t in c] == [rows[0].t_end_ns // 1_000_000, rows[-1].t_end_ns // 1_000_000]
    assert series[(("__name__", "g"), ("app", "a"), ("job", "x"))][0][0] == 3.5
    assert series[(("__name__", "h_seconds_count"), ("app", "a"), ("job", "x"))][0][0] == 1
    assert series[(("__name__", "h_seconds"), ("app", "a"), ("job", "x"),
                   ("quantile", "0.5"))][0][0] == 0.25
    assert n == sum(len(s) for s in series.values())


def test_late_points_get_later_timestamps_and_since_only_moves_totals(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "l.db"), app="a") as mon:
        for amount in (1, 2, 3):
            mon.counter("c").inc(amount)
            mon.flush()
        rows, _ = q.points_after(mon.store, 0)
    rows = [r for r in rows if r.name == "c"]
    encoder = RemoteWriteEncoder()
    body, _ = encoder.encode(rows[:1])
    first_ts = decode(body)[(("__name__", "c_total"), ("app", "a"))][0][1]
    late = rows[1]._replace(t_end_ns=rows[0].t_end_ns - 10**9)  # ended before the last sent
    body, _ = encoder.encode([late])
    (value, ts), = decode(body)[(("__name__", "c_total"), ("app", "a"))]
    assert value == 3.0 and ts == first_ts + 1  # never older than a sample already sent
    body, n = encoder.encode(rows[2:], since_ns=rows[2].t_end_ns)
    assert body is None and n == 0
    assert encoder._cum[(rows[0].series_id, "a")][1] == 6.0


def test_cursors_are_stored_and_forgotten(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "c.db")) as mon:
        store = mon.store
        fresh = cursors.load(store, "t")
        assert fresh.points_rowid == 0 and fresh.updated_ns is None
        fresh.points_rowid = 42
        fresh.span_chunk_id = 7
        fresh.state["last_ts"] = {"1|a": 5}
        cursors.save(store, fresh)
        back = cursors.load(store, "t")
        assert (back.points_rowid, back.span_chunk_id) == (42, 7)
        assert back.state == {"last_ts": {"1|a": 5}}
        assert [c.target for c in cursors.all_cursors(store)] == ["t"]
        assert cursors.delete(store, "t") is True
        assert cursors.load(store, "t").updated_ns is None


def test_remote_write_needs_a_url(tmp_path) -> None:
    from holter.errors import ConfigError
    from holter.export.push import StorePusher

    with holter.testing.monitor(db=str(tmp_path / "u.db")) as mon:
        with pytest.raises(ConfigError, match="remote write needs the receiver's URL"):
            StorePusher(mon.store, "remote-write", None)
        with pytest.raises(ConfigError, match="http:// or https://") as bad:
            StorePusher(mon.store, "remote-write", "ftp://user:pw@host/x")
        assert "pw" not in str(bad.value)
        with pytest.raises(ConfigError, match="unknown export target"):
            StorePusher(mon.store, "kafka", "http://127.0.0.1:1/")
