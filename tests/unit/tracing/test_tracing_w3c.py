"""W3C Trace Context: ``holter.inject`` writes traceparent/tracestate, ``holter.extract``
reads them, validated as https://www.w3.org/TR/trace-context/ says.

Bad headers are ignored (a new trace starts) and never raise. The spec's rules used
here: ids and flags are lowercase hex (HEXDIGLC); all-zero ids are invalid; version
``ff`` is invalid; version ``00`` has exactly four fields; a higher version is parsed
by its first four fields when what follows the flags starts with ``-``.
"""

from __future__ import annotations

import email.message
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import holter
import holter.testing
from holter.core.tracing import SpanContext, parse_traceparent
from holter.store import query as q

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
VALID = f"00-{T}-{S}-01"
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")


@pytest.fixture(scope="module")
def shared_mon(tmp_path_factory):
    """One monitor for the many bad-header cases (they only create spans)."""
    with holter.testing.monitor(db=tmp_path_factory.mktemp("w3c") / "w3c.db") as m:
        yield m


# -- inject -----------------------------------------------------------------------------


def test_inject_writes_the_current_span(mon) -> None:
    assert holter.inject({}) == {}
    assert holter.inject() == {}
    with mon.span("client") as span:
        headers = {"accept": "application/json"}
        out = holter.inject(headers)
        assert out is headers
        assert headers["accept"] == "application/json"
        assert TRACEPARENT.match(headers["traceparent"])
        assert headers["traceparent"] == f"00-{span.trace_id_hex}-{span.span_id_hex}-01"
        assert "tracestate" not in headers  # a trace started here has none
        with mon.span("nested") as nested:
            assert holter.inject({})["traceparent"].split("-")[2] == nested.span_id_hex
    # an explicit span, after it ended
    assert holter.inject({}, span=span)["traceparent"] == headers["traceparent"]


def test_inject_extract_round_trip(mon) -> None:
    with mon.span("client") as span:
        ctx = holter.extract(holter.inject({}))
    assert isinstance(ctx, SpanContext)
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.remote) == (
        span.trace_id, span.span_id, True, True)
    assert ctx.trace_id_hex == span.trace_id_hex


def test_extracted_context_continues_the_trace_with_its_tracestate(mon) -> None:
    ctx = holter.extract({"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE,rojo=00f0"})
    assert ctx is not None
    assert (ctx.trace_id_hex, ctx.span_id_hex, ctx.sampled) == (T, S, True)
    assert ctx.tracestate == "congo=t61rcWkgMzE,rojo=00f0"
    with mon.span("serve", context=ctx) as serve, mon.span("db") as db:
        out = holter.inject({})
    assert serve.trace_id_hex == T
    assert serve.parent_id == int(S, 16)
    assert db.parent_id == serve.span_id
    assert out["traceparent"] == f"00-{T}-{db.span_id_hex}-01"
    assert out["tracestate"] == "congo=t61rcWkgMzE,rojo=00f0"
    mon.flush()
    rows = {r["name"]: r for r in q.trace(mon.store, T)}
    assert rows["serve"]["parent_id"] == S
    assert rows["serve"]["remote_parent"] is True
    assert rows["db"]["remote_parent"] is False
    listed = q.traces(mon.store, "1h")
    assert [t["root_name"] for t in listed] == ["serve"]
    assert listed[0]["has_root"] is False  # the true root lives in the caller


@pytest.mark.parametrize("key", ["traceparent", "TRACEPARENT", "Traceparent", "TraceParent"])
def test_extract_accepts_any_case(key: str) -> None:
    ctx = holter.extract({key: VALID, key.replace("parent", "state").replace(
        "PARENT", "STATE").replace("Parent", "State"): "k=v"})
    assert ctx is not None
    assert (ctx.trace_id_hex, ctx.span_id_hex, ctx.tracestate) == (T, S, "k=v")


def test_extract_reads_an_http_message() -> None:
    message = email.message.Message()  # what http.server gives a handler as self.headers
    message["Content-Type"] = "text/plain"
    message["TraceParent"] = VALID
    ctx = holter.extract(message)
    assert ctx is not None and ctx.trace_id_hex == T


@pytest.mark.parametrize(("flags", "sampled"), [("01", True), ("00", False), ("03", True),
                                                ("02", False), ("ff", True)])
def test_sampled_flag(flags: str, sampled: bool) -> None:
    ctx = parse_traceparent(f"00-{T}-{S}-{flags}")
    assert ctx is not None and ctx.sampled is sampled


@pytest.mark.parametrize("header", [
    f"01-{T}-{S}-01-extra",
    f"cc-{T}-{S}-01",
    f"cc-{T}-{S}-01-what-the-future-will-be-like",
    f"fe-{T}-{S}-00-",
], ids=["01 with extra field", "cc", "cc with several extra fields", "fe trailing dash"])
def test_a_future_version_is_read_by_its_first_four_fields(header: str) -> None:
    ctx = holter.extract({"traceparent": header})
    assert ctx is not None
    assert (ctx.trace_id_hex, ctx.span_id_hex) == (T, S)


@pytest.mark.parametrize("header", [f" {VALID}", f"{VALID} ", f"\t{VALID}\t"])
def test_optional_whitespace_around_the_value_is_allowed(header: str) -> None:
    ctx = holter.extract({"traceparent": header})
    assert ctx is not None and ctx.trace_id_hex == T


BAD_HEADERS = {
    "empty": "",
    "blank": "   ",
    "garbage": "not a traceparent",
    "dashes only": "---",
    "only version": "00",
    "three fields": f"00-{T}-{S}",
    "short trace id": f"00-{T[:-1]}-{S}-01",
    "long trace id": f"00-{T}a-{S}-01",
    "short span id": f"00-{T}-{S[:-1]}-01",
    "long span id": f"00-{T}-{S}0-01",
    "short flags": f"00-{T}-{S}-1",
    "long flags": f"00-{T}-{S}-001",
    "short version": f"0-{T}-{S}-01",
    "long version": f"000-{T}-{S}-01",
    "uppercase trace id": f"00-{T.upper()}-{S}-01",
    "uppercase span id": f"00-{T}-{S.upper()}-01",
    "uppercase flags": f"00-{T}-{S}-0F",
    "uppercase version": f"0A-{T}-{S}-01",
    "all-zero trace id": f"00-{'0' * 32}-{S}-01",
    "all-zero span id": f"00-{T}-{'0' * 16}-01",
    "version ff": f"ff-{T}-{S}-01",
    "non-hex trace id": f"00-{T[:-1]}g-{S}-01",
    "non-hex span id": f"00-{T}-{S[:-1]}z-01",
    "non-hex flags": f"00-{T}-{S}-0x",
    "non-hex version": f"0g-{T}-{S}-01",
    "signed trace id": f"00-+{T[1:]}-{S}-01",
    "non-ascii digit": f"00-{T[:-1]}\u0663-{S}-01",
    "v00 extra field": f"00-{T}-{S}-01-extra",
    "v00 trailing dash": f"00-{T}-{S}-01-",
    "future version, flags run on": f"cc-{T}-{S}-01.extra",
    "underscores": f"00_{T}_{S}_01",
    "spaces around dashes": f"00 - {T} - {S} - 01",
    "two headers joined": f"{VALID},{VALID}",
}


@pytest.mark.parametrize("header", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_bad_traceparent_is_ignored_and_starts_a_new_trace(shared_mon, header: str) -> None:
    assert parse_traceparent(header) is None
    assert parse_traceparent(header, "k=v") is None
    ctx = holter.extract({"traceparent": header, "tracestate": "k=v"})
    assert ctx is None
    with shared_mon.span("serve", context=ctx) as span:
        pass
    assert span.parent_id is None
    assert span.trace_id_hex != T
    assert span.tracestate is None


class ItemsFail(dict):
    def items(self):
        raise RuntimeError("broken mapping")


class KeyStrFails:
    def __str__(self) -> str:
        raise RuntimeError("no str")


NOT_HEADERS = {
    "None": None,
    "int": 42,
    "float": 3.5,
    "str": "traceparent",
    "bytes": VALID.encode(),
    "object": object(),
    "list of ints": [1, 2, 3],
    "mapping whose items() raises": ItemsFail(traceparent=VALID),
    "key whose str() raises": {KeyStrFails(): VALID},
    "traceparent None": {"traceparent": None},
    "traceparent int": {"traceparent": 123},
    "traceparent bytes": {"traceparent": VALID.encode()},
    "traceparent list": {"traceparent": [VALID]},
    "no traceparent": {"tracestate": "k=v"},
    "empty": {},
}


@pytest.mark.parametrize("headers", list(NOT_HEADERS.values()), ids=list(NOT_HEADERS))
def test_extract_never_raises(headers: object) -> None:
    assert holter.extract(headers) is None


@pytest.mark.parametrize("state", [None, 5, b"k=v", ["k=v"], "", "   "])
def test_a_bad_tracestate_is_dropped_but_the_traceparent_kept(state: object) -> None:
    ctx = holter.extract({"traceparent": VALID, "tracestate": state})
    assert ctx is not None and ctx.trace_id_hex == T
    assert ctx.tracestate is None


@pytest.mark.parametrize("header", [None, 0, 1.5, b"00", ["00"], object()])
def test_parse_traceparent_takes_only_strings(header: object) -> None:
    assert parse_traceparent(header) is None  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parse_traceparent_never_raises_on_any_text(text: str) -> None:
    ctx = parse_traceparent(text)
    assert ctx is None or (ctx.trace_id != 0 and ctx.span_id != 0)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.characters())
def test_one_changed_character_is_valid_only_if_still_lowercase_hex(
    index: int, char: str
) -> None:
    header = VALID[:index] + char + VALID[index + 1:]
    ctx = parse_traceparent(header)
    if char == VALID[index]:
        assert ctx is not None
    elif VALID[index] == "-" or char not in "0123456789abcdef":
        assert ctx is None
    elif index < 2:
        assert (ctx is None) == (header[:2] == "ff")
    else:
        assert ctx is not None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.one_of(st.text(max_size=12), st.sampled_from(["traceparent", "TraceParent",
                                                     "tracestate"])),
    st.one_of(st.none(), st.integers(), st.binary(max_size=8), st.text(max_size=60),
              st.just(VALID)),
    max_size=4,
))
def test_extract_never_raises_on_any_mapping(headers: dict) -> None:
    ctx = holter.extract(headers)
    assert ctx is None or isinstance(ctx, SpanContext)
