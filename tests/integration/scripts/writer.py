"""One of several processes writing one store at once (test_processes).

    writer.py DB LABEL COUNT CHUNK GO_FILE

Starts holter (flush every 0.05 s), prints ``ready PID``, waits until GO_FILE exists,
then increments ``work.items{writer=LABEL}`` COUNT times in chunks of CHUNK with a
short pause after each chunk (and observes each chunk's size in ``work.chunk``),
prints ``done COUNT`` and exits normally: the final flush happens at exit.
"""

import os
import sys
import time

import holter

db, label, count, chunk, go_file = sys.argv[1:6]
count = int(count)
chunk = int(chunk)

mon = holter.start(app=f"writer-{label}", db=db, flush_interval=0.05)
items = mon.counter("work.items").bind(writer=label)
sizes = mon.histogram("work.chunk")
print("ready", os.getpid(), flush=True)

deadline = time.monotonic() + 60
while not os.path.exists(go_file):
    if time.monotonic() > deadline:
        sys.exit("go file never appeared")
    time.sleep(0.005)

done = 0
while done < count:
    step = min(chunk, count - done)
    for _ in range(step):
        items.inc()
    sizes.observe(step, writer=label)
    done += step
    time.sleep(0.01)
print("done", done, flush=True)
