"""Start a child Python process, and multiprocessing children with fork and spawn.

Each process counts ``child.work{kind=...}`` once and prints ``KIND PID`` on stdout,
so the test can find every run by pid and check its parent.
"""

import multiprocessing
import os
import subprocess
import sys

import holter


def work(kind: str) -> None:
    holter.get_monitor().counter("child.work").inc(kind=kind)
    print(f"{kind} {os.getpid()}", flush=True)


if __name__ == "__main__":
    work("parent")
    child = ("import holter, os; holter.get_monitor().counter('child.work').inc(kind='python');"
             " print('python', os.getpid(), flush=True)")
    subprocess.run([sys.executable, "-c", child], check=True)
    for method in ("fork", "spawn"):
        process = multiprocessing.get_context(method).Process(target=work, args=(method,))
        process.start()
        process.join(60)
        if process.exitcode != 0:
            sys.exit(f"{method} child exited with {process.exitcode}")
