"""A program run under ``holter run`` that records a little, then ends as MODE says.

    run_exit.py MODE

Before ending it counts ``app.work`` 5 times inside a span ``app.job`` and runs one
sqlite query (recorded by the automatic instrumentation). MODE: ``ok`` (exit 0),
``three`` (``sys.exit(3)``), ``systemexit`` (``raise SystemExit(3)``), ``crash`` (an
uncaught RuntimeError), ``osexit`` (``os._exit(5)``), ``sigterm`` (kills itself with
SIGTERM), ``sigkill`` (sleeps past a flush, then kills itself with SIGKILL).
"""

import os
import signal
import sqlite3
import sys
import time

mode = sys.argv[1]
if sys.argv[2:3] == ["--sleep-first"]:  # let a periodic flush happen before the work
    time.sleep(0.3)

import holter  # noqa: E402 - the program's own import, after holter run started it

mon = holter.get_monitor()  # started by holter run; None when run without it
if mon is None and os.environ.get("HOLTER_BOOTSTRAP") == "1":
    sys.exit("holter run did not start a monitor in this program")
with sqlite3.connect(":memory:") as conn:
    conn.execute("SELECT 42").fetchall()
if mon is not None:
    with mon.span("app.job"):
        for _ in range(5):
            mon.counter("app.work").inc()
print(f"working {mode}", flush=True)

if mode == "ok":
    pass
elif mode == "three":
    sys.exit(3)
elif mode == "systemexit":
    raise SystemExit(3)
elif mode == "crash":
    raise RuntimeError("the program crashed")
elif mode == "osexit":
    os._exit(5)
elif mode == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
elif mode == "sigkill":
    time.sleep(0.5)  # past a periodic flush (run with --interval 100ms)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)
else:
    sys.exit(f"unknown mode {mode}")
