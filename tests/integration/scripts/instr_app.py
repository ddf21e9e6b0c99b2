"""A program instrumented from code: ``holter.start(instrument=[...], runtime=True)``.

    instr_app.py DB

It serves HTTP on 127.0.0.1 in a thread, calls itself with urllib, runs a sqlite query,
a child process and a garbage collection, prints ``done`` and exits normally (the final
flush happens at exit).
"""

import gc
import http.server
import sqlite3
import subprocess
import sys
import threading
import urllib.request

import holter

holter.start(app="instr-app", db=sys.argv[1], instrument=["http", "db", "subprocess"],
             runtime=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
thread.start()
try:
    url = f"http://127.0.0.1:{server.server_address[1]}/items/3"
    assert urllib.request.urlopen(url, timeout=10).read() == b"ok"
finally:
    server.shutdown()
    server.server_close()
    thread.join(10)
assert sqlite3.connect(":memory:").execute("SELECT 1").fetchone() == (1,)
subprocess.run([sys.executable, "-c", "pass"], check=True)
gc.collect()
print("done")
