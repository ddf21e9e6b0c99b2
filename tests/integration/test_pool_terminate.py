"""Pool workers ended by ``terminate()`` (as ``with Pool():`` does) keep what they recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from holter.store import query as q
from holter.store.sqlite import Store

SCRIPT = str(Path(__file__).resolve().parent / "scripts" / "run_pool.py")


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "HOLTER_DB"}
    env["HOLTER_EXIT_TIMEOUT"] = "10"  # a loaded machine must not turn this into a timing test
    return subprocess.run([sys.executable, *argv], capture_output=True, timeout=120,
                          env=env, check=False)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_flush_before_terminate(tmp_path: Path, method: str) -> None:
    db = tmp_path / "pool.db"
    # an hour between flushes: nothing reaches the store unless the workers flush at the end
    done = run("-m", "holter", "run", "--db", str(db), "--interval", "1h", "--",
               "python", SCRIPT, method)
    plain = run(SCRIPT, method)
    assert done.returncode == plain.returncode == 0, done.stderr.decode()
    assert done.stdout == plain.stdout == b"%d\n" % sum(i * i for i in range(40))
    store = Store.open(str(db), create=False)
    try:
        assert q.stats(store, "pool.task", None, start=0).count == 40
        every = q.runs(store)
        parents = [r for r in every if r.parent_id is None]
        assert len(parents) == 1 and parents[0].exit_status == 0
        busy = [r for r in every if r.parent_id is not None
                and q.stats(store, "pool.task", None, start=0, run=r.id).count]
    finally:
        store.close()
    assert busy and all(r.parent_id == parents[0].id for r in busy)
    # a worker that worked has its end recorded: a clean exit (it had its sentinel), or
    # the SIGTERM of terminate(), which still ends it
    assert {r.exit_status for r in busy} <= {0, 128 + signal.SIGTERM}
