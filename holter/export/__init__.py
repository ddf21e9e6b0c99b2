"""Export: the store's data over the standard wires teams scale out on.

* :mod:`holter.export.prometheus` — Prometheus text exposition (0.0.4 and OpenMetrics)
  built from the store, and the ``/metrics`` server.
* :mod:`holter.export.remote_write` — Prometheus remote write 1.0 (protobuf + snappy).
* :mod:`holter.export.otlp` — OTLP/HTTP metrics and traces (``opentelemetry-proto``).
* :mod:`holter.export.push` — retries, backoff, bounded backlogs, failure counting, and
  the two ways of pushing: from the collector after each flush, or from the store
  following a cursor (``holter export ... --follow``).

Nothing here is imported by ``import holter``; optional libraries (``cramjam``,
``opentelemetry-proto``) are imported when a push is built.
"""
