"""Installing and removing automatic instrumentation: every original comes back."""

from __future__ import annotations

import asyncio
import asyncio.subprocess
import gc
import http.client
import json
import sqlite3
import subprocess
import sys
import textwrap

import aiohttp
import httpx
import psycopg
import pytest

import holter.instrument
import holter.testing
from holter.errors import ConfigError
from holter.instrument import Patches, db_
from holter.instrument._common import _after_import, original
from holter.sources import loop, runtime


def patchable() -> dict[str, object]:
    """Every attribute the instrumentation replaces, as it is now."""
    return {
        "HTTPConnection.putrequest": http.client.HTTPConnection.__dict__["putrequest"],
        "HTTPConnection.endheaders": http.client.HTTPConnection.__dict__["endheaders"],
        "HTTPConnection.getresponse": http.client.HTTPConnection.__dict__["getresponse"],
        "sqlite3.connect": sqlite3.connect,
        "Popen.__init__": subprocess.Popen.__dict__["__init__"],
        "Popen._handle_exitstatus": subprocess.Popen.__dict__["_handle_exitstatus"],
        "asyncio.create_subprocess_exec": asyncio.create_subprocess_exec,
        "asyncio.create_subprocess_shell": asyncio.create_subprocess_shell,
        "asyncio.subprocess.create_subprocess_exec": asyncio.subprocess.create_subprocess_exec,
        "asyncio.subprocess.create_subprocess_shell": asyncio.subprocess.create_subprocess_shell,
        "Process.wait": asyncio.subprocess.Process.__dict__["wait"],
        "httpx.HTTPTransport.handle_request": httpx.HTTPTransport.__dict__["handle_request"],
        "httpx.AsyncHTTPTransport.handle_async_request":
            httpx.AsyncHTTPTransport.__dict__["handle_async_request"],
        "aiohttp.ClientSession._request": aiohttp.ClientSession.__dict__["_request"],
        "psycopg.Cursor.execute": psycopg.Cursor.__dict__["execute"],
        "psycopg.Cursor.executemany": psycopg.Cursor.__dict__["executemany"],
        "psycopg.AsyncCursor.execute": psycopg.AsyncCursor.__dict__["execute"],
        "psycopg.AsyncCursor.executemany": psycopg.AsyncCursor.__dict__["executemany"],
    }


ORIGINALS = patchable()  # taken at collection, before any test ran


def assert_pristine() -> None:
    now = patchable()
    changed = sorted(k for k in ORIGINALS if now[k] is not ORIGINALS[k])
    assert not changed, f"instrumentation left patched: {changed}"
    assert holter.instrument.installed() == []
    assert db_._recorder is None
    assert runtime._gc_callback not in gc.callbacks
    assert not runtime._GC_STATE["sinks"]
    assert len(loop._monitors) == 0
    assert not _after_import.hooks, f"import hooks left waiting: {list(_after_import.hooks)}"


def test_originals_before_any_instrumentation() -> None:
    for name, value in ORIGINALS.items():
        assert not hasattr(value, "__holter_original__"), name
    assert_pristine()


def test_install_patches_everything_and_stop_puts_it_back(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "h.db"), instrument=["http", "db", "subprocess"],
                                runtime=True) as mon:
        assert holter.instrument.installed() == ["db", "http", "subprocess"]
        now = patchable()
        for name, value in now.items():
            assert value is not ORIGINALS[name], f"{name} is not instrumented"
            assert value.__holter_original__ is ORIGINALS[name], name
        assert db_._recorder is not None
        assert runtime._gc_callback in gc.callbacks
        # holter's store connection is opened with the original connect
        assert type(mon.store.conn) is sqlite3.Connection
        assert original(sqlite3, "connect") is ORIGINALS["sqlite3.connect"]
    assert_pristine()


def test_uninstall_by_name(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "h.db")) as mon:
        assert holter.instrument.install(["http", "db"], monitor=mon) == ["db", "http"]
        assert holter.instrument.install(["http"], monitor=mon) == ["db", "http"]  # idempotent
        holter.instrument.uninstall(["http"])
        assert holter.instrument.installed() == ["db"]
        now = patchable()
        assert now["HTTPConnection.putrequest"] is ORIGINALS["HTTPConnection.putrequest"]
        assert now["httpx.HTTPTransport.handle_request"] is ORIGINALS[
            "httpx.HTTPTransport.handle_request"]
        assert now["sqlite3.connect"] is not ORIGINALS["sqlite3.connect"]
        holter.instrument.uninstall()
        holter.instrument.uninstall()  # twice is harmless
    assert_pristine()


def test_bad_names_and_a_missing_monitor_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown instrumentation"):
        holter.instrument.install(["http", "ftp"], monitor=object())
    with pytest.raises(ConfigError, match="monitor"):
        holter.instrument.install(["http"])
    with pytest.raises(ConfigError, match="unknown instrumentation"), \
            holter.testing.monitor(db=str(tmp_path / "h.db"), instrument=["gopher"]):
        pass
    assert_pristine()


def test_a_monitor_that_fails_to_start_leaves_nothing_behind(tmp_path) -> None:
    try:
        with pytest.raises(ConfigError, match="unknown instrumentation"), \
                holter.testing.monitor(db=str(tmp_path / "h.db"), instrument=["gopher"],
                                       runtime=True):
            pass
        assert runtime._gc_callback not in gc.callbacks
        assert len(loop._monitors) == 0
    finally:  # clean up what leaked, for the tests that follow
        runtime._GC_STATE["sinks"].clear()
        if runtime._gc_callback in gc.callbacks:
            gc.callbacks.remove(runtime._gc_callback)
        for leaked in list(loop._monitors):
            loop.uninstall(leaked)


def test_patches_restore_inherited_and_own_attributes() -> None:
    class Base:
        def f(self) -> str:
            return "base"

    class Child(Base):
        def g(self) -> str:
            return "own"

    module = type(sys)("fake_module")
    module.value = 1
    patches = Patches()
    patches.replace(Child, "f", lambda orig: lambda self: "patched " + orig(self))
    patches.replace(Child, "g", lambda orig: lambda self: "patched " + orig(self))
    patches.replace(module, "value", lambda orig: orig + 1)
    assert Child().f() == "patched base"
    assert Child().g() == "patched own"
    assert module.value == 2
    assert Base().f() == "base"
    patches.undo()
    assert "f" not in Child.__dict__  # inherited again, not copied down
    assert Child().f() == "base" and Child().g() == "own"
    assert module.value == 1


def test_libraries_are_patched_only_when_the_program_imports_them(tmp_path) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        import holter.instrument, holter.testing
        out = {{}}
        with holter.testing.monitor(db={str(tmp_path / "h.db")!r},
                                    instrument=["http", "db"]) as mon:
            out["imported_by_install"] = sorted(
                m for m in ("httpx", "aiohttp", "psycopg") if m in sys.modules)
            import httpx, aiohttp, psycopg
            out["patched"] = [
                hasattr(httpx.HTTPTransport.handle_request, "__holter_original__"),
                hasattr(aiohttp.ClientSession._request, "__holter_original__"),
                hasattr(psycopg.Cursor.execute, "__holter_original__"),
            ]
        out["after"] = [
            hasattr(httpx.HTTPTransport.handle_request, "__holter_original__"),
            hasattr(aiohttp.ClientSession._request, "__holter_original__"),
            hasattr(psycopg.Cursor.execute, "__holter_original__"),
        ]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out == {"imported_by_install": [], "patched": [True, True, True],
                   "after": [False, False, False]}


def test_a_library_imported_after_uninstall_is_left_alone(tmp_path) -> None:
    code = textwrap.dedent(f"""
        import sys
        import holter.testing
        with holter.testing.monitor(db={str(tmp_path / "h.db")!r}, instrument=["http"]):
            pass
        import httpx
        assert not hasattr(httpx.HTTPTransport.handle_request, "__holter_original__")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_stopping_one_monitor_leaves_another_monitors_instrumentation(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "a.db"), instrument=["http"]):
        with holter.testing.monitor(db=str(tmp_path / "b.db"), instrument=["db"]):
            assert holter.instrument.installed() == ["db", "http"]
        try:
            assert holter.instrument.installed() == ["http"]
        finally:
            holter.instrument.uninstall()


def test_nothing_leaks_into_later_tests() -> None:
    assert_pristine()
