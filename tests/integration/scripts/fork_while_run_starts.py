"""Fork while another thread is creating the monitor's run (test_processes).

    fork_while_run_starts.py DB

A thread creates the run (what the first flush does) and is slowed down inside the
store call, holding the monitor's run lock, for 0.3 s. The main thread forks during
that time, so the fork handler must wait for the run rather than hold the store lock
the creating thread needs next. The child records ``child.items`` 5 times and stops;
the parent waits for it at most 10 s (then kills it) and prints ``child PID STATUS``.
"""

import os
import signal
import sys
import threading
import time

import holter

db = sys.argv[1]
mon = holter.start(app="fork-run-start", db=db, flush_interval=60)
store = mon._store
assert store is not None and mon.run_id is None, "the run must not exist yet"

inside = threading.Event()
create_run = store.create_run


def slow_create_run(**kwargs):
    inside.set()
    time.sleep(0.3)  # the monitor's run lock is held here
    return create_run(**kwargs)


store.create_run = slow_create_run
creator = threading.Thread(target=mon._ensure_run, args=(store,))
creator.start()
if not inside.wait(10):
    sys.exit("the run was never being created")

pid = os.fork()
if pid == 0:
    mon.counter("child.items").inc(5)
    holter.stop()
    os._exit(0)

deadline = time.monotonic() + 10
status = None
while time.monotonic() < deadline:
    done, raw = os.waitpid(pid, os.WNOHANG)
    if done:
        status = os.waitstatus_to_exitcode(raw)
        break
    time.sleep(0.05)
if status is None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
creator.join(10)
mon.counter("parent.items").inc(2)
print("child", pid, status)
holter.stop()
