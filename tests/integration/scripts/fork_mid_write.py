"""Fork while the parent's store connection is inside a write transaction (test_processes).

    fork_mid_write.py DB

The parent records and flushes (its run exists), then a thread opens a write
transaction on the monitor's store (``mon.store.atomic()``, what the collector does
during every flush) and holds it for 0.3 s, committing by itself. The main thread
forks while it is held. The child records ``after.items{who=child}`` 7 times and
stops holter; the parent waits for the child at most 4 s (then kills it), records
``after.items{who=parent}`` 3 times, prints ``child PID STATUS`` and stops.
"""

import os
import signal
import sys
import threading
import time

import holter

db = sys.argv[1]
mon = holter.start(app="fork-mid-write", db=db, flush_interval=60)
mon.counter("before.items").inc(4)
if not mon.flush():
    sys.exit("first flush failed")

held = threading.Event()


def hold() -> None:
    with mon.store.atomic():
        held.set()
        time.sleep(0.3)


holder = threading.Thread(target=hold)
holder.start()
if not held.wait(10):
    sys.exit("the transaction never started")

pid = os.fork()
if pid == 0:
    for _ in range(7):
        mon.counter("after.items").inc(who="child")
    holter.stop()
    sys.exit(0)

holder.join()
deadline = time.monotonic() + 4
status = None
while status is None:
    done, raw = os.waitpid(pid, os.WNOHANG)
    if done:
        status = os.waitstatus_to_exitcode(raw)
    elif time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = "killed"
    else:
        time.sleep(0.01)
for _ in range(3):
    mon.counter("after.items").inc(who="parent")
print("child", pid, status, flush=True)
holter.stop()
