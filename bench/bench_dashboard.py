"""What ``holter top`` costs while it watches a busy store (issue 7: < 5 % of one core).

    python bench/bench_dashboard.py [--seconds 30] [--out bench/results/dashboard.json]

1. Builds a store with 500 series (five minutes of 1-second points of an earlier run:
   150,000 points) and 100,000 spans (25,000 traces of 4 spans).
2. Starts a writer process (``dashboard_writer.py``): the same 500 series flushed every
   second, and 200 spans a second.
3. Runs ``holter top --refresh 1s`` in a pseudo-terminal (120×40, then 80×24), lets it
   load its window, then measures its CPU time (user + system, psutil) over
   ``--seconds``: the figure is percent of one core. The bytes it wrote to the terminal
   show that it redraws only what changed.
4. Measures the model alone (:class:`holter.dashboard.model.LiveModel`) in this
   process: the first load of the window, and each incremental refresh (CPU time) with
   30 rows of the series panel on screen, as in a 120×40 terminal.

Prints JSON (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import random
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil

from holter.core.sketch import Sketch
from holter.dashboard.model import LiveModel
from holter.model import Batch, Point, SeriesKey
from holter.store.sqlite import Store

HERE = Path(__file__).resolve().parent
NS = 1_000_000_000


def prefill(db: str, *, minutes: int = 5, traces: int = 25_000) -> dict[str, int]:
    """An earlier run's 500 series over ``minutes`` (1 s points) and 4-span traces."""
    rng = random.Random(1)
    store = Store.open(db)
    now = time.time_ns()
    start = now - minutes * 60 * NS
    run = store.create_run(app="bench-history", version=None, argv=["history"], pid=1,
                           host="bench", python=platform.python_version(), started_ns=start)
    keys = ([SeriesKey(f"bench.count.{i % 20}", "counter", "", (("shard", str(i)),))
             for i in range(200)]
            + [SeriesKey(f"bench.level.{i % 15}", "gauge", "", (("shard", str(i)),))
               for i in range(150)]
            + [SeriesKey(f"bench.latency.{i % 15}", "histogram", "ms", (("shard", str(i)),))
               for i in range(150)])
    sketches = []
    for _ in range(16):  # a few distinct sketches, reused (building them is not the point)
        sk = Sketch()
        for _ in range(10):
            sk.add(rng.lognormvariate(3, 1))
        sketches.append(sk.to_bytes())
    points = 0
    for second in range(minutes * 60):
        t0 = start + second * NS
        batch = Batch(t0, t0 + NS)
        for key in keys:
            if key.kind == "counter":
                batch.points.append(Point(key, t0, t0 + NS, total=float(rng.randint(1, 5))))
            elif key.kind == "gauge":
                v = rng.random() * 100
                batch.points.append(Point(key, t0, t0 + NS, count=1, total=v, min=v, max=v,
                                          last=v))
            else:
                batch.points.append(Point(key, t0, t0 + NS, count=10, total=200.0, min=1.0,
                                          max=90.0, m2=50.0, sketch=rng.choice(sketches)))
        points += len(batch.points)
        store.write_batch(run, batch)
    spans = 0
    per_second = traces // (minutes * 60) + 1
    for second in range(minutes * 60):
        t0 = start + second * NS
        records = []
        for _ in range(per_second):
            trace = (rng.getrandbits(32) << 96) | rng.getrandbits(96)
            root = rng.getrandbits(63)
            begin = t0 + rng.randrange(NS)
            total = rng.randrange(1_000_000, 50_000_000)
            records.append((trace, root, None, "request", begin, total, "ok", None, None,
                            None, None, False))
            for i, name in enumerate(("auth", "db.query", "render")):
                records.append((trace, rng.getrandbits(63), root, name,
                                begin + i * total // 3, total // 3,
                                "error" if rng.random() < 0.01 else "ok", None, None, None,
                                None, False))
        spans += len(records)
        store.write_batch(run, Batch(t0, t0 + NS, [], records))
        if spans >= traces * 4:
            break
    store.end_run(run, now, 0, None)
    store.close()
    return {"series": len(keys), "points": points, "spans": spans}


def watch_in_pty(db: str, seconds: float, size: tuple[int, int],
                 warmup_s: float = 8.0) -> dict[str, float]:
    """Run ``holter top`` in a pseudo-terminal; its CPU use over ``seconds``."""
    cols, rows = size
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "holter", "top", "--db", db,
                             "--refresh", "1s"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)
    os.close(slave)
    written = [0]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            written[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    time.sleep(warmup_s)
    cpu0 = ps.cpu_times()
    bytes0 = written[0]
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = ps.cpu_times()
    elapsed = time.monotonic() - t0
    out_bytes = written[0] - bytes0
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    os.write(master, b"q")
    try:
        code = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
    stop.set()
    os.close(master)
    return {
        "terminal": f"{cols}x{rows}",
        "seconds": round(elapsed, 1),
        "cpu_seconds": round(used, 3),
        "percent_of_one_core": round(100 * used / elapsed, 2),
        "terminal_bytes_per_second": round(out_bytes / elapsed),
        "exit_status_after_q": code,
    }


def model_costs(db: str, refreshes: int) -> dict[str, float]:
    """The model alone: first load of the 5-minute window, then 1-second refreshes."""
    model = LiveModel(db, window="5m")
    t = time.process_time()
    snap = model.refresh()
    first = time.process_time() - t
    # as the screen does: 30 rows of the series panel in view, the other panels hidden
    model.visible = {name: frozenset() for name in model.visible}
    model.visible["series"] = frozenset(snap.panels["series"].order[:30])
    costs = []
    for _ in range(refreshes):
        time.sleep(1.0)
        t = time.process_time()
        snap = model.refresh()
        costs.append(time.process_time() - t)
    model.close()
    costs.sort()
    return {
        "first_load_ms": round(first * 1000, 1),
        "refresh_ms_median": round(statistics.median(costs) * 1000, 2),
        "refresh_ms_p95": round(costs[int(len(costs) * 0.95) - 1] * 1000, 2),
        "series_shown": snap.panels["series"].total if snap.panels["series"] else 0,
        "status": snap.status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="holter-bench-top-") as folder:
        db = os.path.join(folder, "bench.db")
        t = time.monotonic()
        store = prefill(db)
        print(f"prefilled {store} in {time.monotonic() - t:.1f} s", file=sys.stderr)
        writer = subprocess.Popen([sys.executable, str(HERE / "dashboard_writer.py"), db],
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(3)
            model = model_costs(db, refreshes=int(args.seconds // 2))
            print(f"model: {model}", file=sys.stderr)
            runs = []
            for size in ((120, 40), (80, 24)):
                runs.append(watch_in_pty(db, args.seconds, size))
                print(f"holter top: {runs[-1]}", file=sys.stderr)
        finally:
            writer.send_signal(signal.SIGTERM)
            writer.wait(10)
    result = {
        "benchmark": "holter top watching a busy store",
        "store": store,
        "writer": "500 series flushed every 1 s + 200 spans/s",
        "refresh": "1s",
        "holter_top": runs,
        "model": model,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "target": "< 5 % of one core",
        "pass": all(r["percent_of_one_core"] < 5 for r in runs),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
