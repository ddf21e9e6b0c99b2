"""Overhead of ``holter run`` on a realistic program, against the same program alone.

The program is ``workload_app.py``: an HTTP server on 127.0.0.1 backed by sqlite, and a
client loop making requests with ``urllib.request`` and sqlite queries of its own. Each
round runs, in turn (the order alternating between rounds):

* ``bare``: ``python workload_app.py``;
* ``holter run``: ``holter run -- python workload_app.py`` with runtime metrics and all
  instrumentation on (every request, query and the server's queries become spans and
  metrics), which includes starting the ``holter`` command itself;
* ``in-process``: the same bootstrap, set up through the environment without the
  ``holter`` command, to show holter's cost inside the program alone.

Wall time is measured around each process; CPU time is the children's user + system
time (``resource.getrusage``). Medians over ``--rounds``; overhead = median ratio - 1.
Targets: ≤ 3 % wall and ≤ 5 % CPU. JSON on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP = str(HERE / "workload_app.py")
BOOTSTRAP = str(Path(importlib.import_module("holter._bootstrap").__file__).resolve().parent)


def _holter_cli() -> str:
    candidate = Path(sys.executable).with_name("holter")
    return str(candidate) if candidate.exists() else "holter"


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000,
                        help="HTTP requests the program makes per run")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 800 requests")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    requests = 800 if args.quick else args.requests
    folder = tempfile.mkdtemp(prefix="holter-bench-run-")
    db = os.path.join(folder, "run.db")
    base_env = dict(os.environ)
    base_env.pop("HOLTER_DB", None)
    app = [sys.executable, APP, "--requests", str(requests)]
    in_process_env = dict(base_env)
    in_process_env.update({
        "PYTHONPATH": BOOTSTRAP + os.pathsep + base_env.get("PYTHONPATH", ""),
        "HOLTER_BOOTSTRAP": "1", "HOLTER_DB": db, "HOLTER_RUNTIME": "1",
        "HOLTER_INSTRUMENT": "http,db,subprocess", "HOLTER_FLUSH_INTERVAL": "10s",
        "HOLTER_STRICT": "0",
    })
    run_env = dict(base_env)
    run_env["HOLTER_STRICT"] = "0"
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "bare": (app, base_env),
        "holter_run": ([_holter_cli(), "run", "--db", db, "--", *app], run_env),
        "in_process": (app, in_process_env),
    }
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in variants}
    measure(*variants["bare"])  # warm the file cache
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for key in order:
            wall, cpu = measure(*variants[key])
            samples[key]["wall"].append(wall)
            samples[key]["cpu"].append(cpu)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {samples[k]['wall'][-1]:.2f} s" for k in variants), file=sys.stderr)
    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}
    result: dict[str, Any] = {
        "benchmark": "holter bench_run",
        "requests_per_run": requests,
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "median_s": {k: {m: round(v, 4) for m, v in d.items()} for k, d in med.items()},
        "samples_s": {k: {m: [round(x, 4) for x in v] for m, v in s.items()}
                      for k, s in samples.items()},
        "overhead": {
            key: {
                "wall": round(med[key]["wall"] / med["bare"]["wall"] - 1, 4),
                "cpu": round(med[key]["cpu"] / med["bare"]["cpu"] - 1, 4),
            }
            for key in ("holter_run", "in_process")
        },
        "targets": {"wall": 0.03, "cpu": 0.05},
    }
    for key in ("holter_run", "in_process"):
        o = result["overhead"][key]
        print(f"{key:12s} wall {o['wall']:+.1%} (target <= +3%)  cpu {o['cpu']:+.1%} "
              f"(target <= +5%)", file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
