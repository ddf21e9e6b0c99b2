"""A one-request HTTP server on 127.0.0.1 that continues its caller's trace.

Usage: ``python tracing_server.py DB``. Prints its port, serves one GET (span
"serve" under the caller's W3C traceparent, with a child "db"), flushes, replies
with the ids it recorded as JSON, and exits.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import holter


def main() -> int:
    mon = holter.start(app="tracing-server", db=sys.argv[1])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ctx = holter.extract(self.headers)
            with mon.span("serve", context=ctx, path=self.path) as serve, mon.span(
                    "db", table="users"):
                time.sleep(0.005)
            mon.flush()
            body = json.dumps({
                "trace_id": serve.trace_id_hex,
                "span_id": serve.span_id_hex,
                "run_id": mon.run_id,
                "extracted": ctx is not None,
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 30  # one request, or give up
    print(server.server_address[1], flush=True)
    server.handle_request()
    server.server_close()
    holter.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
