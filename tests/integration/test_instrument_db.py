"""Database instrumentation: sqlite3 and psycopg 3 against a real PostgreSQL on 127.0.0.1.

Each statement is a span ``db.query`` with its statement shape (literals and parameters
never stored anywhere in the store file), operation, table and rows, feeding
``db.client.duration`` and ``db.client.errors``; results and exceptions are exactly what
the driver gives without holter; holter's own store is never recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import holter.instrument
import holter.testing
from holter.errors import QueryError
from holter.instrument import db_
from holter.instrument._common import original
from holter.store.spans import decode_chunk

SECRET_LITERAL = "hunter2-literal"
SECRET_PARAM = "hunter2-parameter"
HOLTER_TABLES = {"runs", "series", "points", "points_1m", "points_1h", "span_chunks",
                 "trace_parts", "slow_traces", "meta", "schema_version", "anomalies"}

SQLITE_CONNECT = sqlite3.connect
PSYCOPG_EXECUTE = psycopg.Cursor.__dict__["execute"]


@pytest.fixture(autouse=True)
def no_leaked_patches() -> Iterator[None]:
    yield
    assert holter.instrument.installed() == []
    assert sqlite3.connect is SQLITE_CONNECT
    assert psycopg.Cursor.__dict__["execute"] is PSYCOPG_EXECUTE
    assert db_._recorder is None


# -- reading the store -----------------------------------------------------------------------


def stored_spans(mon) -> list[dict[str, Any]]:
    mon.flush()
    with mon.store.reading() as conn:
        return [s for (blob,) in conn.execute("SELECT data FROM span_chunks ORDER BY id")
                for s in decode_chunk(blob)]


def db_spans(mon) -> list[dict[str, Any]]:
    return [s for s in stored_spans(mon) if s["name"] == "db.query"]


def count(mon, name: str, **tags: object) -> float:
    try:
        return mon.query(name, "1h", tags={k: str(v) for k, v in tags.items()}).count
    except QueryError:
        return 0


def assert_never_stored(mon, *secrets: str) -> None:
    """No secret anywhere in the store: file bytes (db, wal), span chunks, series tags."""
    mon.flush()
    with mon.store.reading() as conn:
        texts = [json.dumps(decode_chunk(blob)) for (blob,) in
                 conn.execute("SELECT data FROM span_chunks")]
        texts += [tags for (tags,) in conn.execute("SELECT tags FROM series")]
    db = Path(mon.config.db)
    files = [p.read_bytes() for p in db.parent.glob(db.name + "*")]
    for secret in secrets:
        assert not any(secret in t for t in texts), f"{secret!r} is in a span or series"
        assert not any(secret.encode() in b for b in files), f"{secret!r} is in the store file"


def monitor(tmp_path: Path):
    return holter.testing.monitor(db=str(tmp_path / "h.db"), instrument=["db"])


def by_statement(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["tags"]["db.statement"]: s for s in spans}


# -- sqlite3 -----------------------------------------------------------------------------------


def sqlite_workload(conn: sqlite3.Connection) -> list[Any]:
    """Every way of running a statement; returns everything the program saw."""
    seen: list[Any] = []
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, token TEXT)")
    cur = conn.cursor()
    seen.append(cur.execute("INSERT INTO users (name, token) VALUES (?, ?)",
                            ("ann", SECRET_PARAM)) is cur)
    seen.append(cur.lastrowid)
    seen.append(conn.executemany("INSERT INTO users (name, token) VALUES (?, ?)",
                                 [("bob", "t1"), ("cy", "t2"), ("di", "t3")]).rowcount)
    cur.executemany("INSERT INTO users (name, token) VALUES (:n, :t)",
                    [{"n": "ed", "t": "t4"}, {"n": "flo", "t": "t5"}])
    seen.append(cur.rowcount)
    seen.append(conn.execute(f"UPDATE users SET token = '{SECRET_LITERAL}' WHERE id IN (1, 2, 3)"
                             ).rowcount)
    seen.append(conn.execute("SELECT id, name FROM users WHERE id > ? ORDER BY id",
                             (1,)).fetchall())
    seen.append(cur.execute("SELECT count(*) FROM users").fetchone())
    conn.executescript("CREATE TABLE log (x); INSERT INTO log VALUES (1); "
                       "INSERT INTO log VALUES (2);")
    cur.executescript("INSERT INTO log VALUES (3);")
    seen.append(conn.execute("SELECT sum(x) FROM log").fetchone())
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT id, name FROM users WHERE name = 'bob'").fetchone()
    seen.append((type(row).__name__, row["id"], row["name"], list(row.keys())))
    conn.row_factory = None
    seen.append([r for r in conn.execute("SELECT name FROM users ORDER BY id LIMIT 2")])
    with conn:
        conn.execute("DELETE FROM users WHERE id = 6")
    seen.append(conn.total_changes)
    seen.append(list(conn.iterdump())[:3])
    return seen


def test_sqlite_statements_are_spans_with_shapes(tmp_path) -> None:
    baseline = sqlite_workload(SQLITE_CONNECT(":memory:"))
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(str(tmp_path / "app.db"))
        assert type(conn) is not sqlite3.Connection and isinstance(conn, sqlite3.Connection)
        try:
            assert sqlite_workload(conn) == baseline
        finally:
            conn.close()

        spans = db_spans(mon)
        shapes = by_statement(spans)
        assert {s["tags"]["db.system"] for s in spans} == {"sqlite"}
        insert = shapes["INSERT INTO users (name, token) VALUES (?)"]
        assert insert["tags"]["db.operation"] == "INSERT"
        assert insert["tags"]["db.table"] == "users"
        update = shapes["UPDATE users SET token = ? WHERE id IN (?)"]
        assert update["tags"]["db.rows"] == 3 and update["tags"]["db.table"] == "users"
        select = shapes["SELECT id, name FROM users WHERE id > ? ORDER BY id"]
        assert select["tags"]["db.operation"] == "SELECT"
        many = [s for s in spans if s["tags"].get("db.many")]
        # two executemany (3 and 2 rows) and two executescript calls
        assert sorted(s["tags"].get("db.rows", -1) for s in many) == [-1, -1, 2, 3]
        assert shapes["DELETE FROM users WHERE id = ?"]["tags"]["db.rows"] == 1
        assert "CREATE TABLE log (x); INSERT INTO log VALUES (?); INSERT INTO log VALUES (?);" \
            in shapes
        assert all(s["status"] == "ok" for s in spans)
        assert count(mon, "db.client.duration", system="sqlite", operation="INSERT",
                     table="users") == 3
        assert count(mon, "db.client.duration", system="sqlite") == len(spans)
        assert count(mon, "db.client.errors") == 0
        assert_never_stored(mon, SECRET_LITERAL, SECRET_PARAM, "'bob'")
        # holter's own connection is never recorded
        assert not {s["tags"].get("db.table") for s in spans} & HOLTER_TABLES


def test_sqlite_statements_inside_a_span_are_its_children(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:")
        with mon.span("job") as job:
            conn.execute("SELECT 1").fetchall()
        [span] = db_spans(mon)
        assert span["parent_id"] == f"{job.span_id:016x}"
        assert span["trace_id"] == f"{job.trace_id:032x}"


class AppConnection(sqlite3.Connection):
    """A program's own connection class (a factory), with its own behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements: list[str] = []

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.statements.append(sql)
        return super().execute(sql, parameters)

    def hello(self) -> str:
        return "hello"


def test_sqlite_with_a_custom_factory(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:", factory=AppConnection)
        assert isinstance(conn, AppConnection) and conn.hello() == "hello"
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (a)")
        cur.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        assert cur.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,)]
        assert {s["tags"]["db.statement"] for s in db_spans(mon)} == {
            "CREATE TABLE t (a)", "INSERT INTO t VALUES (?)", "SELECT a FROM t ORDER BY a"}


def test_sqlite_custom_factory_methods_still_run(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:", factory=AppConnection)
        conn.execute("SELECT 1")
        assert conn.statements == ["SELECT 1"]
        assert len(db_spans(mon)) == 1


def test_sqlite_factory_given_positionally(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:", 5.0, 0, "DEFERRED", True, AppConnection)
        assert isinstance(conn, AppConnection)
        conn.cursor().execute("SELECT 1")
        assert len(db_spans(mon)) == 1


def test_sqlite_custom_cursor_factory_is_left_alone(tmp_path) -> None:
    class AppCursor(sqlite3.Cursor):
        pass

    with monitor(tmp_path):
        conn = sqlite3.connect(":memory:")
        cur = conn.cursor(AppCursor)
        assert type(cur) is AppCursor
        assert cur.execute("SELECT 2").fetchone() == (2,)


def test_sqlite_quoted_table_names(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:")
        conn.execute('CREATE TABLE "users" ("id" INTEGER)')
        conn.execute('SELECT "id" FROM "users"').fetchall()
        shapes = by_statement(db_spans(mon))
        assert [s["tags"].get("db.table") for s in shapes.values()] == ["users", "users"]


def _error(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_sqlite_errors_are_recorded_and_raised_unchanged(tmp_path) -> None:
    def missing_table(conn: sqlite3.Connection) -> None:
        conn.execute(f"SELECT * FROM nowhere WHERE secret = '{SECRET_LITERAL}'")

    def duplicate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS u (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO u VALUES (?)", (1,))
        conn.cursor().execute("INSERT INTO u VALUES (?)", (1,))

    plain = SQLITE_CONNECT(":memory:")
    baselines = [_error(lambda: missing_table(plain)), _error(lambda: duplicate(plain))]
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:")
        errors = [_error(lambda: missing_table(conn)), _error(lambda: duplicate(conn))]
        for got, want in zip(errors, baselines, strict=True):
            assert type(got) is type(want)
            assert got.args == want.args
            assert got.sqlite_errorcode == want.sqlite_errorcode
            assert got.__cause__ is None and got.__context__ is None
        failed = [s for s in db_spans(mon) if s["status"] == "error"]
        assert {(s["tags"]["db.operation"], s["error_type"]) for s in failed} == {
            ("SELECT", "sqlite3.OperationalError"), ("INSERT", "sqlite3.IntegrityError")}
        assert count(mon, "db.client.errors", system="sqlite", operation="SELECT",
                     error="OperationalError") == 1
        assert count(mon, "db.client.errors", system="sqlite", operation="INSERT",
                     error="IntegrityError") == 1
        assert conn.execute("SELECT count(*) FROM u").fetchone() == (1,)  # still usable
        assert_never_stored(mon, SECRET_LITERAL)


def test_holters_own_store_is_never_recorded(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:")
        for i in range(5):
            mon.counter("app.work").inc(i)
            conn.execute("SELECT ?", (i,))
            mon.flush()
            mon.query("app.work", "1h")  # reading the store while recording
        from holter.store.sqlite import Store

        other = Store.open(str(tmp_path / "other.db"))  # a store opened while patched
        assert type(other.conn) is sqlite3.Connection
        other.close()
        spans = db_spans(mon)
        assert len(spans) == 5
        assert {s["tags"]["db.statement"] for s in spans} == {"SELECT ?"}
        assert [s.group for s in mon.query("db.client.duration", "1h", by="table")] == [
            {"table": ""}]


def test_any_dbapi_connection_through_wrap_connection(tmp_path) -> None:
    raw = original(sqlite3, "connect")(":memory:")  # a driver holter does not patch itself
    conn = db_.wrap_connection(raw, "mydb")
    with monitor(tmp_path) as mon:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (a, b)")
        cur.executemany("INSERT INTO t VALUES (?, ?)", [(1, SECRET_PARAM), (2, "x")])
        assert cur.rowcount == 2
        cur.execute("SELECT a FROM t WHERE b = ?", (SECRET_PARAM,))
        assert cur.fetchall() == [(1,)]
        assert list(cur.execute("SELECT a FROM t ORDER BY a")) == [(1,), (2,)]
        cur.arraysize = 7
        assert raw.cursor().arraysize == 1 and cur.arraysize == 7
        conn.commit()  # anything else passes through
        with pytest.raises(sqlite3.OperationalError):
            cur.execute("SELECT nope FROM t")
        spans = db_spans(mon)
        assert {s["tags"]["db.system"] for s in spans} == {"mydb"}
        assert len(spans) == 5
        assert count(mon, "db.client.errors", system="mydb", error="OperationalError") == 1
        assert_never_stored(mon, SECRET_PARAM)
    # uninstalled: the wrapper passes through and records nothing
    assert conn.cursor().execute("SELECT 1").fetchone() == (1,)


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(candidates[-1]) if candidates else None


def _install_postgres() -> str:
    """Install Debian's postgresql (CI machines); the reason it failed, or ''."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env,
                              check=False)
        if done.returncode != 0:
            return f"{' '.join(args)} failed: {done.stderr.strip()[-300:]}"
    return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, Any]]:
    """A PostgreSQL server on 127.0.0.1 run by an unprivileged user; its connection kwargs."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        why = _install_postgres()
        bin_dir = _pg_bin()
        if bin_dir is None:
            print(f"PostgreSQL unavailable: {why or 'initdb not found after install'}")
            pytest.skip(f"PostgreSQL unavailable: {why or 'initdb not found after install'}")
    folder = tempfile.mkdtemp(prefix="holter-pg-")
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("nobody")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data = os.path.join(folder, "data")
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "LC_ALL": "C", "TZ": "UTC"}

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([os.path.join(bin_dir, args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=folder, check=False,
                              **run_as)

    port = _free_port()
    started = False
    try:
        done = pg("initdb", "-D", data, "-U", "holter", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        done = pg("pg_ctl", "-D", data, "-l", os.path.join(folder, "server.log"), "-w",
                  "-t", "60", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off", "start")
        started = done.returncode == 0
        log = Path(folder, "server.log")
        assert started, f"pg_ctl start failed:\n{done.stderr}\n" + (
            log.read_text() if log.exists() else "")
        yield {"host": "127.0.0.1", "port": port, "user": "holter", "dbname": "postgres",
               "connect_timeout": 10}
    finally:
        if started:
            pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def pg_workload(conn: psycopg.Connection, table: str) -> list[Any]:
    seen: list[Any] = []
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text, token text)")
        cur.execute(f"INSERT INTO {table} (name, token) VALUES (%s, %s) RETURNING id",
                    ("ann", SECRET_PARAM))
        seen.append(cur.fetchone())
        cur.executemany(f"INSERT INTO {table} (name, token) VALUES (%(n)s, %(t)s)",
                        [{"n": "bob", "t": "x"}, {"n": "cy", "t": "y"}])
        seen.append(cur.rowcount)
        cur.execute(f"UPDATE {table} SET token = '{SECRET_LITERAL}' WHERE id IN (1, 2)")
        seen.append(cur.rowcount)
        cur.execute(f"SELECT id, name FROM {table} WHERE id >= %s ORDER BY id", (1,))
        seen.append(cur.fetchall())
        seen.append(cur.rowcount)
    seen.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone())
    conn.commit()
    return seen


def test_psycopg_statements_are_spans_with_shapes(postgres, tmp_path) -> None:
    with psycopg.connect(**postgres) as plain:
        baseline = pg_workload(plain, "users_plain")
    with monitor(tmp_path) as mon, psycopg.connect(**postgres) as conn:
        assert pg_workload(conn, "users_mon") == baseline
        spans = db_spans(mon)
        assert {s["tags"]["db.system"] for s in spans} == {"postgresql"}
        shapes = by_statement(spans)
        insert = shapes["INSERT INTO users_mon (name, token) VALUES (?) RETURNING id"]
        assert insert["tags"]["db.operation"] == "INSERT"
        assert insert["tags"]["db.table"] == "users_mon" and insert["tags"]["db.rows"] == 1
        many = shapes["INSERT INTO users_mon (name, token) VALUES (?)"]
        assert many["tags"]["db.many"] is True
        assert shapes["UPDATE users_mon SET token = ? WHERE id IN (?)"]["tags"]["db.rows"] == 2
        select = shapes["SELECT id, name FROM users_mon WHERE id >= ? ORDER BY id"]
        assert select["tags"]["db.rows"] == 3 and select["tags"]["db.operation"] == "SELECT"
        assert "SELECT count(*) FROM users_mon" in shapes  # the connection shortcut
        assert count(mon, "db.client.duration", system="postgresql", operation="SELECT",
                     table="users_mon") == 2
        assert count(mon, "db.client.errors") == 0
        assert_never_stored(mon, SECRET_LITERAL, SECRET_PARAM)
        assert not {s["tags"].get("db.table") for s in spans} & HOLTER_TABLES


def test_psycopg_errors_are_recorded_and_raised_unchanged(postgres, tmp_path) -> None:
    def fail(conn: psycopg.Connection) -> BaseException:
        try:
            with pytest.raises(psycopg.Error) as info:
                conn.execute("SELECT * FROM no_such_table WHERE token = %s", (SECRET_PARAM,))
            return info.value
        finally:
            conn.rollback()

    with psycopg.connect(**postgres) as plain:
        want = fail(plain)
    with monitor(tmp_path) as mon, psycopg.connect(**postgres) as conn:
        got = fail(conn)
        assert type(got) is type(want) is psycopg.errors.UndefinedTable
        assert got.sqlstate == want.sqlstate and str(got) == str(want)
        assert got.__cause__ is None and got.__context__ is None
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection goes on
        [failed] = [s for s in db_spans(mon) if s["status"] == "error"]
        assert failed["error_type"].endswith("UndefinedTable")
        assert failed["tags"]["db.statement"] == "SELECT * FROM no_such_table WHERE token = ?"
        assert count(mon, "db.client.errors", system="postgresql", operation="SELECT",
                     error="UndefinedTable") == 1
        assert_never_stored(mon, SECRET_PARAM)


def test_psycopg_async(postgres, tmp_path) -> None:
    async def work() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(**postgres) as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT %s::int + 1", (41,))
                first = await cur.fetchone()
                await cur.executemany("SELECT %s", [(1,), (2,)])
                with contextlib.suppress(psycopg.errors.DivisionByZero):
                    await cur.execute("SELECT 1 / 0")
            return [first]

    with monitor(tmp_path) as mon:
        assert asyncio.run(work()) == [(42,)]
        spans = db_spans(mon)
        assert len(spans) == 3
        assert {s["status"] for s in spans} == {"ok", "error"}
        assert count(mon, "db.client.errors", system="postgresql",
                     error="DivisionByZero") == 1


def test_psycopg_composed_queries_have_their_shape(postgres, tmp_path) -> None:
    query = sql.SQL("SELECT {} FROM {} WHERE {} = {}").format(
        sql.Identifier("datname"), sql.Identifier("pg_database"), sql.Identifier("datname"),
        sql.Literal(SECRET_LITERAL))
    with monitor(tmp_path) as mon, psycopg.connect(**postgres) as conn:
        assert conn.execute(query).fetchall() == []
        [span] = db_spans(mon)
        assert span["tags"]["db.operation"] == "SELECT"
        assert "pg_database" in span["tags"]["db.statement"]
        assert_never_stored(mon, SECRET_LITERAL)


def test_a_comment_never_lets_a_literal_through(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        conn = sqlite3.connect(":memory:")
        conn.execute(f"SELECT 1 -- the user's token\n WHERE '{SECRET_LITERAL}' <> ''").fetchall()
        assert len(db_spans(mon)) == 1
        assert_never_stored(mon, SECRET_LITERAL)


def test_wrap_connection_records_chained_calls_and_shortcuts(tmp_path) -> None:
    raw = original(sqlite3, "connect")(":memory:")
    conn = db_.wrap_connection(raw, "mydb")
    with monitor(tmp_path) as mon:
        cur = conn.cursor()
        assert cur.execute("SELECT 1") is cur  # as the driver returns its own cursor
        cur.execute("SELECT 2").execute("SELECT 3")
        conn.execute("SELECT 4")
        assert len(db_spans(mon)) == 4
