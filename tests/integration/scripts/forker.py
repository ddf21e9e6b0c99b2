"""A process that records, forks, and lets the child record too (test_processes).

    forker.py DB FLUSH_BEFORE_FORK CHILD_EXIT

FLUSH_BEFORE_FORK ``1`` flushes (so the parent's run exists) before ``os.fork()``;
``0`` forks with everything still unflushed in memory. The child records its own
values, then CHILD_EXIT ``stop`` calls ``holter.stop()`` and ``sys.exit(0)``, ``atexit``
simply returns (the final flush happens at exit). The parent records more, waits for
the child, prints ``child PID STATUS`` and stops.

Recorded: ``fork.items{phase=pre}`` 1000 x 1 + 100 x 0.5 before the fork (1050);
``fork.items{phase=child}`` 300 in the child; ``fork.items{phase=parent}`` 200 in the
parent after the fork; ``fork.size`` 100 observations of 1.0 before the fork, 30 of
2.0 in the child.
"""

import os
import sys

import holter

db, flush_first, child_exit = sys.argv[1:4]
# a long interval: the only writes before the fork are the explicit flush (a fork during a
# collector write is a separate case, test_fork_during_a_write_transaction_...)
mon = holter.start(app="forker", db=db, flush_interval=60)
items = mon.counter("fork.items")
size = mon.histogram("fork.size")

for _ in range(1000):
    items.inc(phase="pre")
for _ in range(100):
    items.inc(0.5, phase="pre")
for _ in range(100):
    size.observe(1.0)
if flush_first == "1" and not mon.flush():
    sys.exit("flush before fork failed")

pid = os.fork()
if pid == 0:
    for _ in range(300):
        items.inc(phase="child")
    for _ in range(30):
        size.observe(2.0)
    if child_exit == "stop":
        holter.stop()
        sys.exit(0)
else:
    for _ in range(200):
        items.inc(phase="parent")
    _, status = os.waitpid(pid, 0)
    print("child", pid, os.waitstatus_to_exitcode(status), flush=True)
    holter.stop()
