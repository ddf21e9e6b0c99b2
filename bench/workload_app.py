"""A plain program (no holter in it) for bench_run.py: an HTTP server and a client loop.

It starts a small JSON API on 127.0.0.1 (``/users/{id}``, ``/search``) backed by an
in-memory sqlite database, each request costing the backend 2 to 6 ms as the demo's
server does, then makes ``--requests`` HTTP calls to it with
``urllib.request`` (a new connection each, as CLI tools do), running a couple of sqlite
queries of its own around each call. It prints a checksum so the work cannot be skipped.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    db.executemany("INSERT INTO users VALUES (?, ?, ?)",
                   [(i, f"user{i}", i * 0.5) for i in range(2000)])
    return db


LATENCY_S = (0.002, 0.003, 0.004, 0.005, 0.006)
"""What each request costs the backend, like the demo's server (milliseconds)."""


class Handler(BaseHTTPRequestHandler):
    db: sqlite3.Connection
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        time.sleep(LATENCY_S[len(path) % len(LATENCY_S)])  # the backend's own work
        with self.lock:
            if path.startswith("/users/"):
                uid = int(path.rsplit("/", 1)[1])
                rows = self.db.execute("SELECT id, name, score FROM users WHERE id = ?",
                                       (uid,)).fetchall()
            else:
                rows = self.db.execute("SELECT id, name FROM users WHERE score > ? LIMIT 20",
                                       (len(path) * 37.0,)).fetchall()
        body = json.dumps({"rows": rows}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    Handler.db = make_db()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    local = make_db()
    rng = random.Random(7)
    checksum = 0
    for i in range(args.requests):
        path = f"/users/{rng.randrange(2000)}" if i % 3 else "/search?q=x"
        with urllib.request.urlopen(base + path) as response:
            checksum += len(response.read())
        checksum += local.execute("SELECT COUNT(*) FROM users WHERE score > ?",
                                  (rng.random() * 1000,)).fetchone()[0]
        local.execute("UPDATE users SET score = score + 1 WHERE id = ?", (rng.randrange(2000),))
    server.shutdown()
    print(checksum)


if __name__ == "__main__":
    main()
