"""Overhead of ``holter run`` on a realistic program, against the same program alone.

The program is ``workload_app.py``: an HTTP server on 127.0.0.1 backed by sqlite, and a
client loop making requests with ``urllib.request`` and sqlite queries of its own. Each
round runs, in turn (the order alternating between rounds):

* ``bare``: ``python workload_app.py``;
* ``holter run``: ``holter run -- python workload_app.py`` with runtime metrics and all
  instrumentation on (every request, query and the server's queries become spans and
  metrics), which includes starting the ``holter`` command itself;
* ``in-process``: the same bootstrap, set up through the environment without the
  ``holter`` command, to show holter's cost inside the program alone;

and the same three with ``--requests 0`` (the program starts its server and exits), so
the fixed cost (start-up and exit) and the steady-state cost (per request) can be told
apart: steady-state overhead = (holter(N) - holter(0)) / (bare(N) - bare(0)) - 1.

Wall time is measured around each process; CPU time is the children's user + system
time (``resource.getrusage``). Overhead = median over rounds / median of ``bare`` - 1;
``paired`` gives the median (and quartiles) of the per-round ratios too, which a loaded
machine disturbs less. Targets: ≤ 3 % wall and ≤ 5 % CPU. JSON on stdout.

Byte code: an installed holter has its ``.pyc`` files (pip compiles them). A development
environment with ``PYTHONDONTWRITEBYTECODE=1`` recompiles holter's modules in every run
(~0.1 s of CPU for the program, more for the ``holter`` command). By default every
variant, ``bare`` included, runs with ``PYTHONPYCACHEPREFIX`` set to a fresh folder and
byte code written (the warm-up round writes it); ``--bytecode none`` measures the
environment as it is.
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


def _spread(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": round(statistics.median(values), 4), "q1": round(q[0], 4),
            "q3": round(q[2], 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000,
                        help="HTTP requests the program makes per run")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 800 requests")
    parser.add_argument("--bytecode", choices=("cached", "none"), default="cached",
                        help="cached: .pyc files as an installed package has them (default); "
                             "none: as the environment is (PYTHONDONTWRITEBYTECODE honoured)")
    parser.add_argument("--no-fixed", action="store_true",
                        help="skip the --requests 0 runs (no fixed / steady-state split)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    requests = 800 if args.quick else args.requests
    folder = tempfile.mkdtemp(prefix="holter-bench-run-")
    db = os.path.join(folder, "run.db")
    base_env = dict(os.environ)
    base_env.pop("HOLTER_DB", None)
    if args.bytecode == "cached":
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        base_env["PYTHONPYCACHEPREFIX"] = os.path.join(folder, "pycache")
    in_process_env = dict(base_env)
    in_process_env.update({
        "PYTHONPATH": BOOTSTRAP + os.pathsep + base_env.get("PYTHONPATH", ""),
        "HOLTER_BOOTSTRAP": "1", "HOLTER_DB": db, "HOLTER_RUNTIME": "1",
        "HOLTER_INSTRUMENT": "http,db,subprocess", "HOLTER_FLUSH_INTERVAL": "10s",
        "HOLTER_STRICT": "0",
    })
    run_env = dict(base_env)
    run_env["HOLTER_STRICT"] = "0"
    variants: dict[str, tuple[list[str], dict[str, str]]] = {}
    for n, suffix in ((requests, ""), (0, "_0")):
        if n == 0 and args.no_fixed:
            continue
        app = [sys.executable, APP, "--requests", str(n)]
        variants["bare" + suffix] = (app, base_env)
        variants["holter_run" + suffix] = ([_holter_cli(), "run", "--db", db, "--", *app],
                                           run_env)
        variants["in_process" + suffix] = (app, in_process_env)
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in variants}
    for key in variants:  # warm the file cache (and write the byte code)
        measure(*variants[key])
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for key in order:
            wall, cpu = measure(*variants[key])
            samples[key]["wall"].append(wall)
            samples[key]["cpu"].append(cpu)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {samples[k]['wall'][-1]:.2f} s" for k in variants if not k.endswith("_0")),
            file=sys.stderr)
    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}

    def paired(key: str, metric: str, bare: str = "bare") -> dict[str, float]:
        return _spread([x / y - 1 for x, y in zip(samples[key][metric],
                                                  samples[bare][metric], strict=True)])

    holters = ("holter_run", "in_process")
    result: dict[str, Any] = {
        "benchmark": "holter bench_run",
        "requests_per_run": requests,
        "rounds": rounds,
        "bytecode": args.bytecode,
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
            for key in holters
        },
        "paired": {key: {m: paired(key, m) for m in ("wall", "cpu")} for key in holters},
        "targets": {"wall": 0.03, "cpu": 0.05},
    }
    if not args.no_fixed:
        result["fixed_s"] = {  # start-up and exit: the cost of a run with no requests
            key: {m: round(med[key + "_0"][m] - med["bare_0"][m], 4) for m in ("wall", "cpu")}
            for key in holters
        }
        result["steady_state"] = {  # per-request cost, the fixed cost taken out
            key: {m: round((med[key][m] - med[key + "_0"][m])
                           / (med["bare"][m] - med["bare_0"][m]) - 1, 4)
                  for m in ("wall", "cpu")}
            for key in holters
        }
    for key in holters:
        o = result["overhead"][key]
        p = result["paired"][key]
        line = (f"{key:12s} wall {o['wall']:+.1%} (paired {p['wall']['median']:+.1%}, "
                f"target <= +3%)  cpu {o['cpu']:+.1%} (paired {p['cpu']['median']:+.1%}, "
                f"target <= +5%)")
        if not args.no_fixed:
            f = result["fixed_s"][key]
            s = result["steady_state"][key]
            line += (f"\n{'':12s} fixed: +{f['wall']:.3f} s wall, +{f['cpu']:.3f} s cpu;  "
                     f"steady state: wall {s['wall']:+.1%}, cpu {s['cpu']:+.1%}")
        print(line, file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
