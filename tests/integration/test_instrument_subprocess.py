"""Subprocess instrumentation with real child processes (``sys.executable``).

Each child is a span ``subprocess`` from start to exit with the program's name only
(never its arguments) and its exit status, feeding ``subprocess.duration``,
``subprocess.runs`` and, for programs that could not start, ``subprocess.errors``; what
``run``, ``Popen``, ``check_output`` and asyncio's functions return and raise is unchanged.
"""

from __future__ import annotations

import asyncio
import asyncio.subprocess
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import holter.instrument
import holter.testing
from holter.errors import QueryError
from holter.store.spans import decode_chunk

SECRET = "hunter2-argument"
PY = os.path.basename(sys.executable)
POPEN_INIT = subprocess.Popen.__dict__["__init__"]
EXEC = asyncio.create_subprocess_exec


@pytest.fixture(autouse=True)
def no_leaked_patches() -> Iterator[None]:
    yield
    assert holter.instrument.installed() == []
    assert subprocess.Popen.__dict__["__init__"] is POPEN_INIT
    assert asyncio.create_subprocess_exec is EXEC
    assert asyncio.subprocess.create_subprocess_exec is EXEC


def stored_spans(mon) -> list[dict[str, Any]]:
    mon.flush()
    with mon.store.reading() as conn:
        return [s for (blob,) in conn.execute("SELECT data FROM span_chunks ORDER BY id")
                for s in decode_chunk(blob)]


def child_spans(mon) -> list[dict[str, Any]]:
    return [s for s in stored_spans(mon) if s["name"] == "subprocess"]


def count(mon, name: str, **tags: object) -> float:
    try:
        return mon.query(name, "1h", tags={k: str(v) for k, v in tags.items()}).count
    except QueryError:
        return 0


def assert_never_stored(mon, secret: str) -> None:
    mon.flush()
    with mon.store.reading() as conn:
        for (blob,) in conn.execute("SELECT data FROM span_chunks"):
            assert secret not in json.dumps(decode_chunk(blob)), "a span holds the secret"
        for (tags,) in conn.execute("SELECT tags FROM series"):
            assert secret not in tags, "a series holds the secret"
    db = Path(mon.config.db)
    for path in db.parent.glob(db.name + "*"):
        assert secret.encode() not in path.read_bytes(), f"{path.name} holds the secret"


def monitor(tmp_path: Path):
    return holter.testing.monitor(db=str(tmp_path / "h.db"), instrument=["subprocess"])


ECHO = "import sys; print(' '.join(sys.argv[1:])); sys.exit(int(sys.argv[1]))"


def workload() -> list[Any]:
    """Every way of starting a child; returns everything the program saw."""
    seen: list[Any] = []
    done = subprocess.run([sys.executable, "-c", ECHO, "0", SECRET], capture_output=True,
                          text=True, check=True)
    seen.append((type(done).__name__, done.args, done.returncode, done.stdout, done.stderr))
    seen.append(subprocess.check_output([sys.executable, "-c", ECHO, "0", "out"]))
    seen.append(subprocess.call([sys.executable, "-c", ECHO, "5"], stdout=subprocess.DEVNULL))
    with subprocess.Popen([sys.executable, "-c", ECHO, "0", "popen"],
                          stdout=subprocess.PIPE, text=True) as proc:
        seen.append((proc.communicate(), proc.returncode))
    cat = "import sys; sys.stdout.write(sys.stdin.read())"
    proc = subprocess.Popen([sys.executable, "-c", cat], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    seen.append(proc.communicate(b"through stdin"))
    seen.append(proc.poll())
    seen.append(proc.wait())  # waiting again changes nothing
    done = subprocess.run(f"{sys.executable} -c 'import sys; sys.exit(6)'", shell=True)
    seen.append(done.returncode)
    return seen


def test_children_are_spans_with_name_and_exit_status(tmp_path) -> None:
    baseline = workload()
    with monitor(tmp_path) as mon:
        with mon.span("job") as job:
            assert workload() == baseline
        spans = child_spans(mon)
        assert len(spans) == 6
        assert {s["tags"]["process.command"] for s in spans} == {PY}
        assert sorted(s["tags"]["process.exit_status"] for s in spans) == [0, 0, 0, 0, 5, 6]
        assert all(s["parent_id"] == f"{job.span_id:016x}" for s in spans)
        assert {s["status"] for s in spans if s["tags"]["process.exit_status"]} == {"error"}
        assert all(s["duration_ns"] > 0 for s in spans)
        duration = mon.query("subprocess.duration", "1h", tags={"command": PY})
        assert duration.count == 6 and duration.unit == "s"
        assert count(mon, "subprocess.runs", command=PY, exit_status=0) == 4
        assert count(mon, "subprocess.runs", command=PY, exit_status=5) == 1
        assert count(mon, "subprocess.errors") == 0
        assert_never_stored(mon, SECRET)


def _raised(fn) -> BaseException:
    with pytest.raises(BaseException) as info:
        fn()
    return info.value


def test_called_process_error_passes_through(tmp_path) -> None:
    def checked_run() -> None:
        subprocess.run([sys.executable, "-c", ECHO, "3", SECRET], check=True,
                       capture_output=True)

    def checked_output() -> None:
        subprocess.check_output([sys.executable, "-c", ECHO, "4"])

    baselines = [_raised(checked_run), _raised(checked_output)]
    with monitor(tmp_path) as mon:
        errors = [_raised(checked_run), _raised(checked_output)]
        for got, want in zip(errors, baselines, strict=True):
            assert type(got) is subprocess.CalledProcessError
            assert (got.returncode, got.cmd, got.output, got.stderr) == (
                want.returncode, want.cmd, want.output, want.stderr)
            assert got.__context__ is None
        assert sorted(s["tags"]["process.exit_status"] for s in child_spans(mon)) == [3, 4]
        assert count(mon, "subprocess.runs", command=PY, exit_status=3) == 1
        assert_never_stored(mon, SECRET)


def test_a_program_that_cannot_start(tmp_path) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    not_executable.chmod(stat.S_IRUSR | stat.S_IWUSR)
    missing = str(tmp_path / "no-such-program")

    def run_missing() -> None:
        subprocess.run([missing, SECRET])

    def run_not_executable() -> None:
        subprocess.Popen([str(not_executable)])

    baselines = [_raised(run_missing), _raised(run_not_executable)]
    assert [type(e) for e in baselines] == [FileNotFoundError, PermissionError]
    with monitor(tmp_path) as mon:
        errors = [_raised(run_missing), _raised(run_not_executable)]
        for got, want in zip(errors, baselines, strict=True):
            assert type(got) is type(want)
            assert (got.errno, got.strerror, got.filename) == (
                want.errno, want.strerror, want.filename)
            assert got.__context__ is None and got.__cause__ is None
        assert count(mon, "subprocess.errors", command="no-such-program",
                     error="FileNotFoundError") == 1
        assert count(mon, "subprocess.errors", command="script.sh",
                     error="PermissionError") == 1
        spans = child_spans(mon)
        assert all(s["status"] == "error" for s in spans)
        assert "process.exit_status" not in spans[0]["tags"]
        assert count(mon, "subprocess.runs") == 0
        assert_never_stored(mon, SECRET)


def test_killed_and_timed_out_children(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        with pytest.raises(subprocess.TimeoutExpired) as info:
            subprocess.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
        assert info.value.cmd[0] == sys.executable and info.value.timeout <= 0.5
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
        statuses = sorted(s["tags"]["process.exit_status"] for s in child_spans(mon))
        assert statuses == sorted([-signal.SIGKILL, -signal.SIGTERM])
        assert count(mon, "subprocess.runs", exit_status=-signal.SIGTERM) == 1


def test_asyncio_subprocesses(tmp_path) -> None:
    async def work() -> list[Any]:
        seen = []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ECHO, "0", SECRET, stdout=asyncio.subprocess.PIPE)
        seen.append((await proc.communicate(), proc.returncode))
        proc = await asyncio.subprocess.create_subprocess_exec(sys.executable, "-c", ECHO, "7")
        seen.append(await proc.wait())
        proc = await asyncio.create_subprocess_shell(
            f"{sys.executable} -c 'import sys; sys.exit(2)'")
        seen.append(await proc.wait())
        try:
            await asyncio.create_subprocess_exec("/nonexistent/holter-missing", SECRET)
        except FileNotFoundError as exc:
            seen.append((type(exc).__name__, exc.errno, exc.filename))
        return seen

    baseline = asyncio.run(work())
    with monitor(tmp_path) as mon:
        assert asyncio.run(work()) == baseline
        spans = child_spans(mon)
        assert len(spans) == 4  # each child once, not again through Popen
        exits = sorted(s["tags"].get("process.exit_status", 99) for s in spans)
        assert exits == [0, 2, 7, 99]
        assert {s["tags"]["process.command"] for s in spans} == {PY, "holter-missing"}
        assert count(mon, "subprocess.errors", command="holter-missing",
                     error="FileNotFoundError") == 1
        assert count(mon, "subprocess.runs", command=PY) == 3
        assert_never_stored(mon, SECRET)


def test_a_shell_command_with_a_secret_in_the_environment(tmp_path) -> None:
    with monitor(tmp_path) as mon:
        assert subprocess.run(f"API_TOKEN={SECRET} true", shell=True).returncode == 0
        assert [s["tags"]["process.command"] for s in child_spans(mon)] == ["true"]
        assert_never_stored(mon, SECRET)
