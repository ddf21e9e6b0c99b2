"""SQL statement shapes: literals and parameters become ``?``; the operation and table."""

from __future__ import annotations

import pytest

from holter.instrument._common import MAX_STATEMENT, sql_operation, sql_shape, sql_table


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("SELECT 1", "SELECT ?"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x'",
         "SELECT * FROM t WHERE id IN (?) AND name = ?"),
        ("select * from users where name = 'O''Brien'", "select * from users where name = ?"),
        ("SELECT col1 FROM t2 WHERE x = -5.5e3", "SELECT col1 FROM t2 WHERE x = ?"),
        ("SELECT a  ,\n\t b FROM   t", "SELECT a , b FROM t"),
        ("UPDATE t SET a = %s WHERE b = %(name)s AND c = :c AND d = $1",
         "UPDATE t SET a = ? WHERE b = ? AND c = ? AND d = ?"),
        ("SELECT * FROM t WHERE id IN (?, ?, ?, ?)", "SELECT * FROM t WHERE id IN (?)"),
        ("SELECT * FROM t WHERE id IN ( ? )", "SELECT * FROM t WHERE id IN (?)"),
        ("INSERT INTO t VALUES (?), (?), (?)", "INSERT INTO t VALUES (?)"),
        ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')", "INSERT INTO t (a, b) VALUES (?)"),
        ("INSERT INTO t (a, b) VALUES (%s, %s)", "INSERT INTO t (a, b) VALUES (?)"),
        (b"SELECT 1 FROM t", "SELECT ? FROM t"),
        ("  SELECT 1  ", "SELECT ?"),
    ],
)
def test_shapes(sql: str | bytes, shape: str) -> None:
    assert sql_shape(sql) == shape


def test_many_literal_lists_share_one_shape() -> None:
    shapes = {sql_shape(f"SELECT * FROM t WHERE id IN ({', '.join(map(str, range(n)))})")
              for n in range(1, 50)}
    assert shapes == {"SELECT * FROM t WHERE id IN (?)"}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM users WHERE password = 'hunter2'",
        "SELECT * FROM users WHERE password = \"hunter2\"",  # MySQL strings
        "INSERT INTO cards VALUES (4111111111111111, 'hunter2')",
        "UPDATE users SET pw = 'hunter2''s' WHERE id = 1",
        "SELECT * FROM t WHERE a = 'x' AND b = 'hunter2'",
        "SELECT * FROM t WHERE a = 'multi\nline hunter2'",
    ],
)
def test_literals_never_survive(sql: str) -> None:
    shape = sql_shape(sql)
    assert "hunter2" not in shape
    assert "4111111111111111" not in shape


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT 1 -- don't\nFROM t WHERE pw = 'hunter2'", id="line-comment-quote"),
        pytest.param("/* it's */ SELECT * FROM t WHERE pw = 'hunter2'", id="block-comment-quote"),
        pytest.param("SELECT $$hunter2$$", id="pg-dollar-quoted"),
        pytest.param("SELECT $body$hunter2$body$", id="pg-tagged-dollar-quoted"),
        pytest.param("SELECT E'it\\'s hunter2'", id="pg-escape-string"),
        pytest.param("SELECT * FROM t WHERE token = 0x68756e74657232", id="hex-integer"),
    ],
)
def test_literals_never_survive_in_other_syntaxes(sql: str) -> None:
    shape = sql_shape(sql)
    assert "hunter2" not in shape
    assert "68756e74657232" not in shape


def test_postgres_casts_are_not_parameters() -> None:
    assert sql_shape("SELECT created::date FROM t WHERE id = $1") == (
        "SELECT created::date FROM t WHERE id = ?")


def test_long_statements_are_cut() -> None:
    sql = "SELECT " + ", ".join(f"column_{chr(97 + i % 26)}" for i in range(200)) + " FROM t"
    shape = sql_shape(sql)
    assert len(shape) == MAX_STATEMENT
    assert shape.endswith("…")


@pytest.mark.parametrize(
    ("sql", "operation", "table"),
    [
        ("SELECT * FROM users WHERE id = 1", "SELECT", "users"),
        ("select * from main.users", "SELECT", "main.users"),
        ("INSERT INTO orders (a) VALUES (1)", "INSERT", "orders"),
        ("UPDATE accounts SET x = 1", "UPDATE", "accounts"),
        ("DELETE FROM sessions WHERE t < 5", "DELETE", "sessions"),
        ("CREATE TABLE IF NOT EXISTS kv (k, v)", "CREATE", "kv"),
        ("DROP TABLE IF EXISTS kv", "DROP", "kv"),
        ("SELECT a FROM x JOIN y ON x.i = y.i", "SELECT", "x"),
        ("BEGIN", "BEGIN", ""),
        ("COMMIT", "COMMIT", ""),
        ("PRAGMA journal_mode", "PRAGMA", ""),
        ("WITH c AS (SELECT 1) SELECT * FROM c", "WITH", "c"),
        ("SELECT * FROM `users`", "SELECT", "users"),
        ("SELECT * FROM [users]", "SELECT", "users"),
        ("", "OTHER", ""),
        ("(SELECT 1)", "OTHER", ""),
    ],
)
def test_operation_and_table(sql: str, operation: str, table: str) -> None:
    shape = sql_shape(sql)
    assert sql_operation(shape) == operation
    assert sql_table(shape) == table

