"""Options shared by every command (``--db``, ``--json``) and output helpers."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from holter.config import DEFAULT_DB, HOLTER_DB
from holter.errors import HolterError

if TYPE_CHECKING:
    from holter.store.sqlite import Store

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A one-line error with exit code 2 (bad input, unreadable store)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"holter: error: {self.format_message()}", err=True)


def default_db() -> str:
    """``$HOLTER_DB`` or ``./holter.db``."""
    return os.environ.get(HOLTER_DB) or DEFAULT_DB


def db_option(fn: F) -> F:
    """``--db PATH``: the store to read (default ``$HOLTER_DB`` or ``./holter.db``)."""
    return click.option(
        "--db",
        "db",
        default=default_db,
        show_default="$HOLTER_DB or ./holter.db",
        metavar="PATH",
        help="Store file to read.",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: print machine-readable JSON instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
    )(fn)


def holter_errors(fn: F) -> F:
    """Turn holter's errors into one-line CLI errors with exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HolterError as exc:
            raise CliError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_store(path: str) -> Iterator[Store]:
    """Open an existing store for reading; CliError if it is missing or not a store."""
    from holter.store.sqlite import Store

    try:
        store = Store.open(path, create=False)
    except HolterError as exc:
        raise CliError(str(exc)) from None
    try:
        yield store
    finally:
        store.close()


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """``("route=/users", "method=GET")`` → ``{"route": "/users", "method": "GET"}``."""
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"bad --tag {item!r}: use KEY=VALUE, for example --tag route=/users")
        tags[key] = value
    return tags


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON (NaN and infinities become null)."""
    click.echo(json.dumps(_clean(data), indent=2, sort_keys=False))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def fmt_num(value: float | None, unit: str = "") -> str:
    """A short human form of a number (3 significant digits), with its unit."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        text = "0"
    elif magnitude >= 1e6:
        text = f"{value / 1e6:.3g}M"
    elif magnitude >= 1e4 or (magnitude >= 1e3 and not float(value).is_integer()):
        text = f"{value / 1e3:.3g}k"
    elif float(value).is_integer():
        text = str(int(value))
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip() if unit else text


def fmt_time(ns: int | None) -> str:
    """Local date and time of an epoch-nanoseconds value."""
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def fmt_tags(tags: dict[str, str]) -> str:
    """``{"a": "1", "b": "x"}`` → ``a=1 b=x``."""
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"


def console() -> Any:
    """A rich console on stdout (no colour when NO_COLOR is set or not a terminal)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table with right-aligned numeric columns."""
    from rich.table import Table

    out = console()
    if title:
        out.print(title, style="bold")
    t = Table(header_style="bold", box=None, pad_edge=False)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 or not rows else _justify(rows, i),
                     overflow="fold")
    for row in rows:
        t.add_row(*row)
    out.print(t)


def _justify(rows: Sequence[Sequence[str]], i: int) -> str:
    sample = [r[i] for r in rows if r[i] not in ("-", "")]
    numeric = all(s[:1].isdigit() or s[:1] == "-" for s in sample) if sample else False
    return "right" if numeric else "left"
