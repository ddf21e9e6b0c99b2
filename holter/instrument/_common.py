"""Shared pieces of automatic instrumentation: low-cardinality tags and safe patching.

Everything here runs on the program's threads, inside calls the program made, so it
must be cheap and must never change what the call returns or raises: holter's own
failures are caught, counted in ``holter.dropped{reason="instrumentation_error"}`` and
logged once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from holter.instrument._hooks import (  # noqa: F401 - re-exported: the shared pieces
    Failures,
    _after_import,
    cancel_import_hooks,
    failed,
    original,
    when_imported,
)

_ID_SEGMENT = re.compile(
    r"""^(
        \d+                                           # 123
      | [0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}  # uuid
      | [0-9a-fA-F]{16,}                              # long hex (hashes, object ids)
      | (?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}        # long tokens with digits
    )$""",
    re.VERBOSE,
)
MAX_PATH_SEGMENTS = 8
"""Deeper paths are cut, with ``/…`` at the end, to keep templates few."""


_templates: dict[str, str] = {}


def path_template(path: str) -> str:
    """The path as a template, cached (see :func:`make_path_template`)."""
    known = _templates.get(path)
    if known is None:
        known = make_path_template(path)
        if len(_templates) >= 8192:  # bounded: ids make paths unique
            _templates.clear()
        _templates[path] = known
    return known


def make_path_template(path: str) -> str:
    """``/users/123/orders/9f3c…`` → ``/users/{id}/orders/{id}`` (no query, no fragment).

    Numbers, UUIDs, long hex strings and long digit-bearing tokens become ``{id}``, so a
    metric tagged with the template has as many series as the API has routes, not as
    many as it has users.
    """
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    parts = path.split("/")
    if len(parts) <= MAX_PATH_SEGMENTS + 1 and not any(map(str.isdigit, path)):
        return path if path.startswith("/") else "/" + path  # no ids: its own template
    out = ["{id}" if _ID_SEGMENT.match(p) else p for p in parts[: MAX_PATH_SEGMENTS + 1]]
    text = "/".join(out)
    if len(parts) > MAX_PATH_SEGMENTS + 1:
        text += "/…"
    return text if text.startswith("/") else "/" + text


# One pass over the statement, so a quote inside a comment (or a comment marker inside a
# string) cannot shift what is taken for a literal. Order matters: comments and quoted
# text first, then numbers and parameters.
_TOKEN_PATTERN = r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<string>'(?:[^']|'')*(?:'|\Z))
    | (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<hex>(?<![\w$])0[xX][0-9a-fA-F]+\b|(?<![\w$])[xX]'[0-9a-fA-F]*')
    | (?P<number>(?<![\w$])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\b)
    | (?P<param>%\(\w+\)s|%s|(?<![:\w]):[A-Za-z_]\w*|\$\d+|\?\d*)
    """
_NAME_PART = r"(?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|\w+)"


class _SqlPatterns:
    """The statement-shape patterns, compiled at the first statement shaped.

    Compiling them costs a few milliseconds, which a program that never runs SQL (or
    only ever http) should not pay at start-up.
    """

    def __init__(self) -> None:
        self.token = re.compile(_TOKEN_PATTERN, re.VERBOSE | re.DOTALL)
        self.name_before = re.compile(r"(?:\b(?:FROM|INTO|UPDATE|TABLE|JOIN|EXISTS)|\.)$",
                                      re.IGNORECASE)
        self.in_list = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
        self.one = re.compile(r"\(\s*\?\s*\)")
        self.values_list = re.compile(r"(VALUES\s*\(\?\))(?:\s*,\s*\(\?\))+", re.IGNORECASE)
        self.space = re.compile(r"\s+")
        self.table = re.compile(
            rf"\b(?:FROM|INTO|UPDATE|TABLE|JOIN)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
            rf"({_NAME_PART}(?:\.{_NAME_PART})*)",
            re.IGNORECASE,
        )
        self.quotes = re.compile(r'["`\[\]]')


_patterns: list[_SqlPatterns] = []


def _sql() -> _SqlPatterns:
    if not _patterns:
        _patterns.append(_SqlPatterns())  # (two threads may both compile: harmless)
    return _patterns[0]


MAX_STATEMENT = 300
"""Longest statement shape stored, in characters."""


def _shape_token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "comment":
        return " "
    if kind == "ident":
        text = match.group(0)
        before = match.string[: match.start()].rstrip()
        after = match.string[match.end() : match.end() + 1]
        # a quoted name where a table or column name goes is kept; anything else may be a
        # string literal (MySQL's double quotes) and is hidden
        if _sql().name_before.search(before) or after == "." or len(text) <= 2:
            return text
        return "?"
    return "?"


def sql_shape(sql: object) -> str:
    """The statement's shape: literals and parameters as ``?``, lists collapsed, spaces squeezed.

    ``SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x'`` →
    ``SELECT * FROM t WHERE id IN (?) AND name = ?``. Strings (standard, ``E''``,
    dollar-quoted), numbers (decimal and hex), parameters and comments never survive;
    quoted names survive where a table name goes. Parameters are never stored.
    """
    raw = isinstance(sql, bytes | bytearray)
    text = bytes(sql).decode("utf-8", "replace") if raw else str(sql)  # type: ignore[arg-type]
    patterns = _sql()
    text = patterns.token.sub(_shape_token, text)
    text = patterns.space.sub(" ", text).strip()
    text = patterns.in_list.sub("(?)", text)
    text = patterns.one.sub("(?)", text)
    text = patterns.values_list.sub(r"\1", text)
    if len(text) > MAX_STATEMENT:
        text = text[: MAX_STATEMENT - 1] + "…"
    return text


def sql_operation(shape: str) -> str:
    """The statement's first keyword, upper case (``SELECT``, ``INSERT``, ``BEGIN``...)."""
    word = shape.split(" ", 1)[0].upper() if shape else ""
    return word if word.isalpha() and len(word) <= 12 else "OTHER"


def sql_table(shape: str) -> str:
    """The first table the statement names (without its quotes), or ``""``."""
    patterns = _sql()
    match = patterns.table.search(shape)
    if not match:
        return ""
    return patterns.quotes.sub("", match.group(1))[:64]


def series_call(instrument: Any, tags: dict[str, object]) -> Callable[..., None] | None:
    """The recording function of ``instrument``'s series ``tags``, to call without tags.

    It is the instrument's own hot-path function (a counter's +1, a histogram's
    ``observe``), there once a tagged call created the series. None while there is
    none, and for the overflow series, whose every recording the instrument counts:
    keep calling the instrument with the tags then.
    """
    return instrument._fast.get(tuple(tags.items()))
