"""Started by Python at start-up in programs run under ``holter run``.

It starts holter from the environment ``holter run`` prepared (``HOLTER_BOOTSTRAP=1``,
``HOLTER_DB``, ``HOLTER_APP``, ``HOLTER_INSTRUMENT``, ``HOLTER_RUNTIME``...), then runs
the ``sitecustomize`` that this one shadows, if there is one. It never stops the
program: if holter cannot start, it says so once on stderr and the program runs
unmonitored.
"""

from __future__ import annotations

import os
import sys


def _start_holter() -> None:
    try:
        import holter
        from holter.config import HOLTER_PARENT_RUN

        monitor = holter.start()
        store = monitor.store
        run_id = monitor._ensure_run(store)
        # programs this one starts are runs of their own, linked to this one
        os.environ[HOLTER_PARENT_RUN] = str(run_id)
        report = os.environ.get("HOLTER_RUN_REPORT")
        if report and os.environ.get("HOLTER_RUN_PID") == str(os.getppid()):
            with open(report, "w") as fh:
                fh.write(f"{run_id}\n")
    except Exception as exc:
        sys.stderr.write(f"holter: not monitoring this program: {exc}\n")


def _chain_original() -> None:
    """Run the sitecustomize module this file shadows (found further along sys.path)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the original's failure is reported as Python would
        sys.stderr.write(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{exc}\n")


if os.environ.get("HOLTER_BOOTSTRAP") == "1":
    _start_holter()
_chain_original()
