"""``holter run`` end to end: real programs, their exit statuses, signals, streams and children.

Every program here runs under ``python -m holter run``; what it prints, reads, returns
and how it dies must be exactly what it would be without holter, and its run in the
store must carry the true exit status, its data up to the end, and its children.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from holter.store.spans import decode_chunk

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("HOLTER_DB", None)
    out["PYTHONUNBUFFERED"] = "1"
    return out


def holter_run(db: Path, *args: str, stdin: bytes = b"", cwd: Path | None = None,
               options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "holter", "run", "--db", str(db), *options, *args],
        input=stdin, capture_output=True, timeout=120, env=env(), cwd=cwd, check=False)


def plain_run(*args: str, stdin: bytes = b"", cwd: Path | None = None
              ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True,
                          timeout=120, env=env(), cwd=cwd, check=False)


def runs(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    finally:
        conn.close()


def counter_total(db: Path, name: str, run_id: int | None = None) -> float:
    conn = sqlite3.connect(db)
    try:
        sql = ("SELECT coalesce(sum(p.total), 0) FROM points p JOIN series s "
               "ON s.id = p.series_id WHERE s.name = ?")
        args: list[Any] = [name]
        if run_id is not None:
            sql += " AND p.run_id = ?"
            args.append(run_id)
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def span_names(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {s["name"] for (blob,) in conn.execute("SELECT data FROM span_chunks")
                for s in decode_chunk(blob)}
    finally:
        conn.close()


def script(name: str) -> str:
    return str(SCRIPTS / name)


# -- exit statuses, crashes, signals ---------------------------------------------------------


@pytest.mark.parametrize(("mode", "status"), [
    ("ok", 0), ("three", 3), ("systemexit", 3), ("crash", 1), ("osexit", 5)])
def test_exit_status_passes_through_and_is_recorded(mode, status, tmp_path) -> None:
    db = tmp_path / "h.db"
    done = holter_run(db, "--", "python", script("run_exit.py"), mode)
    direct = plain_run(script("run_exit.py"), mode)
    assert done.returncode == status, done.stderr.decode()
    assert direct.returncode == status
    assert done.stdout == f"working {mode}\n".encode()
    if mode == "crash":  # the traceback, exactly as Python prints it
        assert done.stderr == direct.stderr
        assert done.stderr.decode().rstrip().endswith("RuntimeError: the program crashed")
    else:
        assert done.stderr == b""
    [run] = runs(db)
    assert run["exit_status"] == status  # the true status, even for SystemExit and os._exit
    assert run["ended_ns"] is not None and run["parent_id"] is None
    assert json.loads(run["argv"]) == [script("run_exit.py"), mode]
    assert run["app"] == "run_exit"
    if mode == "crash":
        assert "RuntimeError" in run["exit_info"]
    if mode != "osexit":  # everything up to the end (or the crash) reached the store
        assert counter_total(db, "app.work") == 5
        assert {"app.job", "db.query"} <= span_names(db)


def test_a_program_killed_by_a_signal_ends_holter_run_the_same_way(tmp_path) -> None:
    db = tmp_path / "h.db"
    done = holter_run(db, "--", "python", script("run_exit.py"), "sigterm")
    assert done.returncode == -signal.SIGTERM
    assert plain_run(script("run_exit.py"), "sigterm").returncode == -signal.SIGTERM
    assert done.stdout == b"working sigterm\n"
    [run] = runs(db)
    assert run["exit_status"] == 128 + signal.SIGTERM
    assert run["exit_info"] == "killed by SIGTERM"


@pytest.fixture(scope="module")
def sigkilled(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[bytes]]:
    """A program that records, lets a periodic flush happen, then is killed by SIGKILL."""
    db = tmp_path_factory.mktemp("sigkill") / "h.db"
    done = holter_run(db, "--", "python", script("run_exit.py"), "sigkill",
                      options=("--interval", "100ms"))
    return db, done


def test_data_up_to_a_hard_crash_is_in_the_store(sigkilled) -> None:
    db, done = sigkilled
    assert done.stdout == b"working sigkill\n"
    [run] = runs(db)
    assert run["exit_status"] == 128 + signal.SIGKILL
    assert run["exit_info"] == "killed by SIGKILL"
    assert counter_total(db, "app.work") == 5  # flushed periodically before the kill
    assert {"app.job", "db.query"} <= span_names(db)


def test_a_program_killed_by_sigkill_ends_holter_run_by_sigkill(sigkilled) -> None:
    _db, done = sigkilled
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == -signal.SIGKILL


def test_holter_run_forwards_sigterm_to_the_program(tmp_path) -> None:
    db = tmp_path / "h.db"
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('got it', flush=True),"
            " sys.exit(7)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-m", "holter", "run", "--db", str(db), "--",
                             "python", "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env())
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)  # to holter run, which passes it on
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 7, err.decode()
    assert out == b"got it\n"
    [run] = runs(db)
    assert run["exit_status"] == 7


# -- streams, argv, modules --------------------------------------------------------------------


def test_stdin_stdout_and_argv_pass_through(tmp_path) -> None:
    data = "line one\nünïcödé ✓\n".encode() + bytes(range(256)) + b"\nno newline at the end"
    args = ["a b", "", "--db", "x.db", "-m", "ünï", "--", "--help", "$HOME", "*"]
    done = holter_run(tmp_path / "h.db", "--", "python", script("run_echo.py"), *args,
                      stdin=data)
    direct = plain_run(script("run_echo.py"), *args, stdin=data)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == data == direct.stdout
    assert json.loads(done.stderr) == [script("run_echo.py"), *args] == json.loads(direct.stderr)
    [run] = runs(tmp_path / "h.db")
    assert json.loads(run["argv"]) == [script("run_echo.py"), *args]


def test_dash_m_runs_a_module(tmp_path) -> None:
    db = tmp_path / "h.db"
    done = holter_run(db, "-m", "run_module", "a", "--flag", "b c", cwd=SCRIPTS)
    direct = plain_run("-m", "run_module", "a", "--flag", "b c", cwd=SCRIPTS)
    assert done.returncode == direct.returncode == 4, done.stderr.decode()
    assert json.loads(done.stdout) == json.loads(direct.stdout) == {
        "name": "__main__", "argv": [str(SCRIPTS / "run_module.py"), "a", "--flag", "b c"]}
    [run] = runs(db)
    assert run["exit_status"] == 4
    assert json.loads(run["argv"])[1:] == ["a", "--flag", "b c"]


def test_a_missing_script_gets_pythons_own_error(tmp_path) -> None:
    missing = str(tmp_path / "no_such_script.py")
    done = holter_run(tmp_path / "h.db", "--", "python", missing)
    direct = plain_run(missing)
    assert direct.returncode == 2
    assert done.returncode == 2
    assert done.stderr == direct.stderr
    assert b"can't open file" in done.stderr and done.stdout == b""


def test_a_missing_module_gets_pythons_own_error(tmp_path) -> None:
    done = holter_run(tmp_path / "h.db", "-m", "holter_no_such_module")
    direct = plain_run("-m", "holter_no_such_module")
    assert done.returncode == direct.returncode == 1
    assert done.stderr == direct.stderr


def test_a_missing_command_is_a_one_line_error(tmp_path) -> None:
    done = holter_run(tmp_path / "h.db", "--", "holter-no-such-command", "--secret")
    err = done.stderr.decode()
    assert done.returncode == 127  # as a shell gives
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "holter-no-such-command" in err and "Traceback" not in err
    assert done.stdout == b""


def test_nothing_to_run_is_a_one_line_error(tmp_path) -> None:
    done = holter_run(tmp_path / "h.db")
    assert done.returncode == 2
    assert done.stderr.decode().count("\n") == 1


# -- children --------------------------------------------------------------------------------


def test_child_processes_are_runs_linked_to_their_parent(tmp_path) -> None:
    db = tmp_path / "h.db"
    done = holter_run(db, "--", "python", script("run_children.py"))
    assert done.returncode == 0, done.stderr.decode()
    pids = {kind: int(pid) for kind, pid in
            (line.split() for line in done.stdout.decode().splitlines())}
    assert set(pids) == {"parent", "python", "fork", "spawn"}
    by_pid = {r["pid"]: r for r in runs(db)}
    parent = by_pid[pids["parent"]]
    assert parent["parent_id"] is None and parent["exit_status"] == 0
    for kind in ("python", "fork", "spawn"):
        child = by_pid[pids[kind]]
        assert child["parent_id"] == parent["id"], kind
        assert child["ended_ns"] is not None, kind
        conn = sqlite3.connect(db)
        try:
            [(total,)] = conn.execute(
                "SELECT coalesce(sum(p.total), 0) FROM points p JOIN series s "
                "ON s.id = p.series_id WHERE s.name = 'child.work' AND p.run_id = ? "
                "AND s.tags LIKE ?", (child["id"], f'%"{kind}"%')).fetchall()
        finally:
            conn.close()
        assert total == 1, kind  # each child's data is in its own run
    assert counter_total(db, "child.work", parent["id"]) == 1


def test_options_app_instrument_and_runtime(tmp_path) -> None:
    db = tmp_path / "h.db"
    done = holter_run(db, "--", sys.executable, script("run_exit.py"), "ok",  # named in full
                      options=("--app", "my-tool", "--instrument", "none", "--no-runtime"))
    assert done.returncode == 0, done.stderr.decode()
    [run] = runs(db)
    assert run["app"] == "my-tool"
    assert "db.query" not in span_names(db) and "app.job" in span_names(db)
    conn = sqlite3.connect(db)
    try:
        names = {n for (n,) in conn.execute("SELECT DISTINCT name FROM series")}
    finally:
        conn.close()
    assert "app.work" in names
    assert not {n for n in names if n.startswith(("process.", "system.", "python.gc"))}


def test_the_programs_own_sitecustomize_still_runs(tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import builtins\nbuiltins.SITE_MARK = 'mine'\n")
    code = "import builtins, holter; print(builtins.SITE_MARK, holter.get_monitor() is not None)"
    run_env = {**env(), "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "holter", "run", "--db", str(tmp_path / "h.db"),
                           "--", "python", "-c", code], capture_output=True, timeout=120,
                          env=run_env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"mine True\n"
    assert done.stderr == b""


def test_a_bad_interval_is_a_one_line_error_before_the_program_runs(tmp_path) -> None:
    done = holter_run(tmp_path / "h.db", "--", "python", "-c", "print('ran')",
                      options=("--interval", "1x"))
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().count("\n") == 1


def test_a_bad_instrument_name_is_a_one_line_error_before_the_program_runs(tmp_path) -> None:
    done = holter_run(tmp_path / "h.db", "--", "python", "-c", "print('ran')",
                      options=("--instrument", "http,ftp"))
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode().count("\n") == 1 and b"ftp" in done.stderr
