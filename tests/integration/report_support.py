"""A realistic recorded workload for the report and compare tests (not a test module).

A small HTTP service recorded with ``holter.testing.monitor`` and a fake clock: every
10 s, 60 requests over four routes with log-normal latency and a 2 % slow tail, a few
5xx, a trace per request (handler span with a database child that dominates it),
process CPU and resident memory that grows linearly, and garbage-collection pauses.
"""

from __future__ import annotations

import math
import random
from typing import Any

import holter.testing

T0 = 1_800_000_000 * 10**9
S = 10**9
ROUTES = ("/users", "/users/{id}", "/search", "/orders")
HOSTILE = (
    "<script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "javascript:window.__pwned=3",
    "';window.__pwned=4;//",
    "</script><script>window.__pwned=5</script>",
    "<svg onload=window.__pwned=6>",
)


def record_service(
    db: str,
    *,
    minutes: float = 10,
    seed: int = 0,
    slow: float = 1.0,
    start_ns: int = T0,
    app: str = "svc",
    routes: tuple[str, ...] = ROUTES,
    traces_per_step: int = 3,
    setup: Any = None,
) -> int:
    """Record one run of the service; return the fake clock's end time (ns).

    ``setup(mon)`` runs first (to define alert rules, for example).
    """
    rng = random.Random(seed)
    steps = int(minutes * 6)
    with holter.testing.FakeClock(start_ns=start_ns) as clock, \
            holter.testing.monitor(db=db, app=app) as mon:
        latency = mon.histogram("http.server.duration", unit="s")
        requests = mon.counter("http.server.requests")
        rss = mon.gauge("process.memory.rss", unit="By")
        cpu = mon.gauge("process.cpu.utilization", unit="%")
        pauses = mon.histogram("python.gc.pause", unit="s")
        queue = mon.gauge("queue.depth")
        if setup is not None:
            setup(mon)
        for step in range(steps):
            used = 0.0
            for _ in range(60):
                route = rng.choice(routes)
                value = rng.lognormvariate(math.log(0.02), 0.4) * slow
                if rng.random() < 0.02:
                    value *= 15
                latency.observe(value, route=route, method="GET")
                status = 500 if route == routes[-1] and rng.random() < 0.15 else 200
                requests.inc(route=route, method="GET", status=status)
            for i in range(traces_per_step):
                route = routes[i % len(routes)]
                with mon.span(f"GET {route}", route=route):
                    clock.advance(0.002)
                    with mon.span("db.query", table=route):
                        clock.advance(0.03 * slow)
                    clock.advance(0.001)
                used += 0.033 * slow
            rss.set(80e6 + step * 2e5 + rng.uniform(-2e4, 2e4))
            cpu.set(rng.uniform(20, 40), mode="user")
            cpu.set(rng.uniform(2, 6), mode="system")
            queue.set(rng.randint(0, 20))
            for _ in range(5):
                pauses.observe(rng.uniform(0.05, 0.07), generation=2)
            clock.advance(10 - used)
            mon.flush()
        return clock.now_ns
