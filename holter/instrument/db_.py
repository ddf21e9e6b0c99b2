"""Databases: ``sqlite3``, ``psycopg`` (3), and any DB-API 2 connection by wrapping it.

Each statement is a span ``db.query`` with ``db.system``, ``db.operation`` (``SELECT``,
``INSERT``...), ``db.table`` (the first table named), ``db.statement`` (the statement's
shape: literals and parameters replaced by ``?``, lists collapsed; parameters are never
recorded) and ``db.rows`` where the driver knows it. Metrics:
``db.client.duration{system,operation,table}`` (seconds) and
``db.client.errors{system,operation,error}``.

holter's own store opens its SQLite connections with the original ``sqlite3.connect``,
so recording never records itself.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
from typing import Any

from holter.core.tracing import Span
from holter.instrument._common import (
    failed,
    series_call,
    sql_operation,
    sql_shape,
    sql_table,
)

_recorder: _Recorder | None = None


MAX_STATEMENTS = 4096
"""Statement texts whose shape is remembered (per system); past that the memory starts over."""


class _Statement:
    """What one statement text tells, worked out once: its span tags and its series."""

    __slots__ = ("metric_tags", "observe", "operation", "system", "tags")

    def __init__(self, system: str, shape: str, many: bool) -> None:
        operation = sql_operation(shape)
        table = sql_table(shape)
        tags: dict[str, object] = {"db.system": system, "db.operation": operation,
                                   "db.statement": shape}
        if table:
            tags["db.table"] = table
        if many:
            tags["db.many"] = True
        self.system = system
        self.operation = operation
        self.tags = tags
        self.metric_tags = {"system": system, "operation": operation, "table": table}
        self.observe: Any = None  # the series' observe, once the first call created it

    def record(self, duration: Any, seconds: float) -> None:
        """Observe ``seconds`` in the statement's series of ``duration``."""
        observe = self.observe
        if observe is not None:
            observe(seconds)
            return
        duration.observe(seconds, **self.metric_tags)
        self.observe = series_call(duration, self.metric_tags)


class _Recorder:
    """The instruments of database calls in one monitor."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.tracer = monitor.tracer
        self.duration = monitor.histogram("db.client.duration", unit="s",
                                          description="Database statements, by operation.")
        self.errors = monitor.counter("db.client.errors",
                                      description="Database statements that raised.")
        self._statements: dict[tuple[str, bool], dict[object, _Statement]] = {}

    def statement(self, system: str, sql: object, many: bool, cursor: Any) -> _Statement:
        """The statement's shape and series, from the cache (or worked out once)."""
        cache = self._statements.get((system, many))
        if cache is None:
            cache = self._statements[(system, many)] = {}
        # texts by value; statement objects (psycopg's sql.Composed...) by their repr
        key = sql if sql.__class__ is str or sql.__class__ is bytes else repr(sql)
        known = cache.get(key)
        if known is not None:
            return known
        text = sql
        if not isinstance(sql, str | bytes) and hasattr(sql, "as_string"):
            try:  # psycopg's sql.Composed and friends: their text, not their repr
                text = sql.as_string(cursor)
            except Exception:
                text = str(sql)
        known = _Statement(system, sql_shape(text), many)
        if len(cache) >= MAX_STATEMENTS:  # bounded: a program inlining literals
            cache.clear()
        cache[key] = known
        return known

    def start(self, system: str, sql: object, many: bool = False,
              cursor: Any = None) -> tuple[Any, _Statement] | None:
        try:
            statement = self.statement(system, sql, many, cursor)
            return Span(self.tracer, "db.query", None, **statement.tags), statement
        except Exception as exc:
            failed("db.start", exc)
            return None

    def finish(self, state: tuple[Any, _Statement] | None, rows: int | None,
               error: BaseException | None) -> None:
        if state is None:
            return
        span, statement = state
        try:
            if rows is not None and rows >= 0:
                span.set_tag("db.rows", rows)
            if error is not None:
                span.set_error(error)
            span.end()
            statement.record(self.duration, span.duration_ns / 1e9)
            if error is not None:
                self.errors.inc(system=statement.system, operation=statement.operation,
                                error=type(error).__name__)
        except Exception as exc:
            failed("db.finish", exc)


def _rows(cursor: Any) -> int | None:
    try:
        count = cursor.rowcount
    except Exception:
        return None
    return count if isinstance(count, int) else None


def _timed(system: str, method: Any, many: bool = False) -> Any:
    """Wrap a cursor's ``execute``-like method (``self, sql, ...``)."""
    key = (system, many)

    @functools.wraps(method)
    def wrapper(self: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = _recorder
        if recorder is None:
            return method(self, sql, *args, **kwargs)
        # the common case inline (a statement text seen before): one cache lookup, one
        # span, one bound series; anything else goes through start()/finish()
        span = None
        try:
            statement = recorder._statements[key][sql]
            span = Span(recorder.tracer, "db.query", None, **statement.tags)
        except Exception:  # not seen yet, or not hashable: start() handles it
            pass
        if span is None:  # (never call the program's method inside an except block)
            state = recorder.start(system, sql, many, self)
            try:
                result = method(self, sql, *args, **kwargs)
            except BaseException as exc:
                recorder.finish(state, None, exc)
                raise
            recorder.finish(state, _rows(self), None)
            return result
        try:
            result = method(self, sql, *args, **kwargs)
        except BaseException as exc:
            recorder.finish((span, statement), None, exc)
            raise
        try:
            rows = self.rowcount
            if rows.__class__ is int and rows >= 0:
                span.tags["db.rows"] = rows  # set_tag, inline: the span is ours, open
            span.end()
            observe = statement.observe
            if observe is not None:
                observe(span.duration_ns / 1e9)
            else:
                statement.record(recorder.duration, span.duration_ns / 1e9)
        except Exception as exc:
            failed("db.finish", exc)
        return result

    return wrapper


def _timed_async(system: str, method: Any, many: bool = False) -> Any:
    @functools.wraps(method)
    async def wrapper(self: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = _recorder
        if recorder is None:
            return await method(self, sql, *args, **kwargs)
        state = recorder.start(system, sql, many, self)
        try:
            result = await method(self, sql, *args, **kwargs)
        except BaseException as exc:
            recorder.finish(state, None, exc)
            raise
        recorder.finish(state, _rows(self), None)
        return result

    return wrapper


# -- sqlite3 ---------------------------------------------------------------------------------


class InstrumentedCursor(sqlite3.Cursor):
    """An ``sqlite3.Cursor`` whose statements are recorded."""

    execute = _timed("sqlite", sqlite3.Cursor.execute)  # type: ignore[assignment]
    executemany = _timed("sqlite", sqlite3.Cursor.executemany, many=True)  # type: ignore[assignment]
    executescript = _timed("sqlite", sqlite3.Cursor.executescript, many=True)  # type: ignore[assignment]


_new_cursor = sqlite3.Connection.cursor


class InstrumentedConnection(sqlite3.Connection):
    """An ``sqlite3.Connection`` whose cursors (and shortcut methods) are recorded."""

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        """A recorded cursor (or one of ``factory``, recorded if it is a plain Cursor)."""
        if factory is None or factory is sqlite3.Cursor:
            factory = InstrumentedCursor
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        """As ``sqlite3.Connection.execute``, recorded."""
        # the C cursor() directly unless a program's own class may override cursor()
        cursor = (_new_cursor(self, InstrumentedCursor) if type(self) is InstrumentedConnection
                  else self.cursor())
        cursor.execute(sql, parameters)
        return cursor

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        """As ``sqlite3.Connection.executemany``, recorded."""
        cursor = self.cursor()
        cursor.executemany(sql, parameters)
        return cursor

    def executescript(self, script: str, /) -> Any:  # type: ignore[override]
        """As ``sqlite3.Connection.executescript``, recorded."""
        cursor = self.cursor()
        cursor.executescript(script)
        return cursor


_mixed: dict[type, type] = {}


def _instrumented_factory(factory: Any) -> Any:
    """A connection class recording statements, mixed into the program's own factory."""
    if factory is None or factory is sqlite3.Connection:
        return InstrumentedConnection
    if not (isinstance(factory, type) and issubclass(factory, sqlite3.Connection)):
        return factory  # a callable we cannot mix into: leave it alone
    mixed = _mixed.get(factory)
    if mixed is None:
        # the program's class first: its own methods still run (and reach ours by super())
        mixed = _mixed[factory] = type(
            f"Instrumented{factory.__name__}", (factory, InstrumentedConnection), {}
        )
    return mixed


def _install_sqlite(patches: Any) -> None:
    def make_connect(original: Any) -> Any:
        @functools.wraps(original)
        def connect(*args: Any, **kwargs: Any) -> Any:
            try:
                # connect(database, timeout, detect_types, isolation_level,
                #         check_same_thread, factory, ...): the factory is the 6th
                if len(args) >= 6:
                    args = (*args[:5], _instrumented_factory(args[5]), *args[6:])
                else:
                    kwargs["factory"] = _instrumented_factory(kwargs.get("factory"))
            except Exception as exc:
                failed("sqlite3.connect", exc)
            return original(*args, **kwargs)

        return connect

    patches.replace(sqlite3, "connect", make_connect)


# -- psycopg 3 -------------------------------------------------------------------------------


def _install_psycopg(patches: Any) -> None:
    import psycopg

    patches.replace(psycopg.Cursor, "execute", lambda m: _timed("postgresql", m))
    patches.replace(psycopg.Cursor, "executemany", lambda m: _timed("postgresql", m, True))
    patches.replace(psycopg.AsyncCursor, "execute", lambda m: _timed_async("postgresql", m))
    patches.replace(psycopg.AsyncCursor, "executemany",
                    lambda m: _timed_async("postgresql", m, True))


# -- any DB-API 2 connection ----------------------------------------------------------------


class _CursorProxy:
    """A DB-API cursor whose ``execute``/``executemany`` are recorded; the rest passes."""

    def __init__(self, cursor: Any, system: str) -> None:
        self.__dict__["_cursor"] = cursor
        self.__dict__["_system"] = system

    def execute(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        """As the driver's ``execute``, recorded (the proxy is returned where the cursor was)."""
        result = _timed(self._system, lambda _s, q, *a, **k: self._cursor.execute(q, *a, **k))(
            self, sql, *args, **kwargs)
        return self if result is self._cursor else result

    def executemany(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        """As the driver's ``executemany``, recorded."""
        result = _timed(self._system,
                        lambda _s, q, *a, **k: self._cursor.executemany(q, *a, **k), True)(
            self, sql, *args, **kwargs)
        return self if result is self._cursor else result

    @property
    def rowcount(self) -> Any:
        """The driver's rowcount."""
        return self._cursor.rowcount

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __enter__(self) -> Any:
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._cursor.__exit__(*exc)


class _ConnectionProxy:
    """A DB-API connection whose cursors are recorded; everything else passes through."""

    def __init__(self, conn: Any, system: str) -> None:
        self.__dict__["_conn"] = conn
        self.__dict__["_system"] = system

    def cursor(self, *args: Any, **kwargs: Any) -> _CursorProxy:
        """A recorded cursor."""
        return _CursorProxy(self._conn.cursor(*args, **kwargs), self._system)

    def execute(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        """The driver's connection-level ``execute`` (sqlite3, psycopg 3), recorded."""
        cursor = self.cursor()
        return cursor.execute(sql, *args, **kwargs)

    def executemany(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        """The driver's connection-level ``executemany``, recorded."""
        cursor = self.cursor()
        return cursor.executemany(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)

    def __enter__(self) -> Any:
        self._conn.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._conn.__exit__(*exc)


def wrap_connection(conn: Any, system: str) -> Any:
    """Record the statements of any DB-API 2 connection (``system``: e.g. ``mysql``).

    Needs the ``db`` instrumentation installed (``holter.start(instrument=["db"])``);
    before that, and after uninstall, the wrapper records nothing and passes through.
    """
    return _ConnectionProxy(conn, system)


# -- install -----------------------------------------------------------------------------------


def install(monitor: Any, patches: Any) -> None:
    """Patch sqlite3 now, and psycopg when (if ever) the program imports it."""
    recorder = _Recorder(monitor)
    patches.replace(sys.modules[__name__], "_recorder", lambda _none: recorder)
    _install_sqlite(patches)
    patches.when_imported("psycopg", lambda _module: _install_psycopg(patches))
