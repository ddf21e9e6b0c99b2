"""A writer that is killed with SIGKILL while it writes (test_faults).

    killed_writer.py DB

Starts holter (collector flushing every 0.05 s as well), then loops: increments 50
series of ``kill.items`` 20 times each, observes ``kill.batch``, calls ``mon.flush()``
and, when it returns True, prints the cumulative number of increments recorded so
far: every one of them is then in the store. Sleeps 0.05 s and repeats (at most 60 s).
"""

import sys
import time

import holter

db = sys.argv[1]
mon = holter.start(app="killed", db=db, flush_interval=0.05)
counter = mon.counter("kill.items")
shards = [counter.bind(shard=i) for i in range(50)]
batch = mon.histogram("kill.batch")
recorded = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for shard in shards:
        for _ in range(20):
            shard.inc()
    recorded += 50 * 20
    batch.observe(50 * 20)
    if mon.flush():
        print(recorded, flush=True)
    time.sleep(0.05)
