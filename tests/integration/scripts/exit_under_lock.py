"""A program that exits while another connection holds the store's write lock (test_faults).

    exit_under_lock.py DB MODE FLUSH_INTERVAL GO_FILE

Starts holter with ``exit_timeout=0.5``. MODE ``fresh``: records and exits (its run
was never written; the lock is already held). MODE ``flushed``: records, flushes (its
run exists), prints ``flushed``, waits for GO_FILE (the test then holds the lock) and
records more. Either way it then sleeps 0.5 s (a collector with a short interval is
by then waiting for the lock), prints ``exiting`` and exits normally, leaving the
final flush to the exit handler.
"""

import os
import sys
import time

import holter

db, mode, interval, go_file = sys.argv[1:5]
mon = holter.start(app=f"locked-{mode}", db=db, flush_interval=float(interval), exit_timeout=0.5)
counter = mon.counter("x")
counter.inc(2)
if mode == "flushed":
    if not mon.flush():
        sys.exit("first flush failed")
    print("flushed", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            sys.exit("go file never appeared")
        time.sleep(0.005)
    for _ in range(10):
        counter.inc()
    mon.histogram("h").observe(1.0)
time.sleep(0.5)  # a collector with a short interval is now waiting for the lock
print("exiting", flush=True)
