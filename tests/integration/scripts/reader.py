"""A reader process querying a store while others write it (test_processes).

    reader.py DB STOP_FILE

Reads the store through holter's query API and plain SQL in a loop, printing
``reading`` after the first round, until STOP_FILE exists (at most 60 s). Checks
that the total of ``work.items`` it sees never goes down.
Prints ``reads N max TOTAL`` and exits 0; any error is a traceback and a non-zero exit.
"""

import os
import sys
import time

from holter.store import query as q
from holter.store.schema import POINT_TABLES
from holter.store.sqlite import Store

db, stop_file = sys.argv[1:3]
store = Store.open(db, create=False)
union = " UNION ALL ".join(
    f"SELECT p.total FROM {t} p JOIN series s ON s.id = p.series_id WHERE s.name = 'work.items'"
    for t in POINT_TABLES
)
reads = 0
last = 0.0
deadline = time.monotonic() + 60
while True:
    q.runs(store)
    q.series(store)
    with store.reading() as conn:
        total = conn.execute(f"SELECT COALESCE(SUM(total), 0) FROM ({union})").fetchone()[0]
    if total < last:
        sys.exit(f"total went down from {last} to {total}")
    last = total
    if "work.items" in q.metric_names(store):
        q.grouped_stats(store, "work.items", "1h", by="writer")
    reads += 1
    if reads == 1:
        print("reading", flush=True)
    if os.path.exists(stop_file) or time.monotonic() > deadline:
        break
    time.sleep(0.002)
store.close()
print("reads", reads, "max", last, flush=True)
