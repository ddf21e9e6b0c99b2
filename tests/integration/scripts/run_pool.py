"""Count work in ``multiprocessing.Pool`` workers ended by the pool's own ``terminate()``.

``with Pool(...) as pool:`` terminates its workers (SIGTERM) on the way out; each task
counts ``pool.task`` once in the worker that runs it, so the store must hold exactly
``TASKS`` for the run's workers together.
"""

import multiprocessing
import sys

import holter

TASKS = 40


def task(i: int) -> int:
    mon = holter.get_monitor()  # None when run without holter
    if mon is not None:
        mon.counter("pool.task").inc(worker="any")
    return i * i


if __name__ == "__main__":
    method = sys.argv[1]
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map(task, range(TASKS), chunksize=1)
    print(sum(results), flush=True)
