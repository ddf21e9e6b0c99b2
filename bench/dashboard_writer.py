"""The live writer of bench_dashboard.py: 500 series and spans, flushed every second.

    dashboard_writer.py DB

200 counters, 150 gauges and 150 histograms (ten observations each per second), and
50 traces of 4 spans per second, until it is killed.
"""

import random
import sys
import time

import holter

mon = holter.start(app="bench-writer", db=sys.argv[1], flush_interval=1.0, anomalies=False)
rng = random.Random(7)
counters = [mon.counter(f"bench.count.{i % 20}").bind(shard=str(i)) for i in range(200)]
gauges = [mon.gauge(f"bench.level.{i % 15}").bind(shard=str(i)) for i in range(150)]
hists = [mon.histogram(f"bench.latency.{i % 15}", unit="ms").bind(shard=str(i))
         for i in range(150)]
while True:
    started = time.monotonic()
    for c in counters:
        c.inc(rng.randint(1, 5))
    for g in gauges:
        g.set(rng.random() * 100)
    for h in hists:
        for _ in range(10):
            h.observe(rng.lognormvariate(3, 1))
    for _ in range(50):
        with mon.span("request"):
            with mon.span("auth"):
                pass
            with mon.span("db.query"):
                pass
            with mon.span("render"):
                pass
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
