"""Where alert notifications go, and how they get there without touching the program.

Notifiers:

* :class:`WebhookNotifier` — POSTs each group notification as JSON in Prometheus
  Alertmanager's webhook format (``version`` 4: ``receiver``, ``status``, ``alerts``,
  ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``groupKey``...), so any
  receiver written for Alertmanager accepts it.
* :class:`AlertmanagerNotifier` — feeds an existing Prometheus Alertmanager through its
  ``/api/v2/alerts`` API, as Prometheus does: every firing alert, re-sent every
  ``resend_interval`` with an ``endsAt`` in the future, and each resolved alert once.
  Alertmanager then groups, deduplicates and routes.
* :class:`LogNotifier` — one line per alert to the ``holter.alerts`` logger, or to
  stderr.
* :class:`CallableNotifier` — calls a Python function with the :class:`Notification`.

Delivery (:class:`Courier`) happens on a daemon thread per notifier, never on the
program's threads: a timeout on every request, retries with exponential backoff for
failures that may pass (refused, timeout, 429, 5xx), a bounded queue (the oldest
notification is dropped when it is full), and every notification that could not be
delivered counted in ``holter.alerts.failed_deliveries{notifier, reason}``.

Secrets: a URL's ``user:password@`` becomes a Basic ``Authorization`` header, and a
URL is only ever shown as :func:`mask_url` gives it (scheme, host and port: webhook
paths often are the secret); header values are never shown.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from holter.errors import ConfigError, HolterError

logger = logging.getLogger("holter.alerts")

DEFAULT_TIMEOUT_S = 5.0
"""Longest wait for one request (connect, send, answer)."""
DEFAULT_RETRIES = 3
"""Tries after the first one, for failures that may pass."""
DEFAULT_BACKOFF_S = 1.0
"""Wait before the first retry; doubled for each next one, up to :data:`MAX_BACKOFF_S`."""
MAX_BACKOFF_S = 60.0
DEFAULT_MAX_QUEUE = 1000
"""Notifications one notifier keeps waiting while its endpoint is slow or down."""
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of an alert still firing."""


class DeliveryError(HolterError):
    """Raised by a notifier when a delivery failed.

    ``reason`` is a short label (``refused``, ``timeout``, ``http_500``, ``error``...)
    used in ``holter.alerts.failed_deliveries{reason=...}``; ``retryable`` says whether
    the same delivery may succeed later.
    """

    def __init__(self, message: str, *, reason: str, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


def mask_url(url: str) -> str:
    """``url`` reduced to scheme, host and port (``https://hooks.example.com/…``).

    Credentials, path and query are hidden: a webhook's path is often its secret.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    hidden = "/…" if (parts.path not in ("", "/") or parts.query or parts.username) else ""
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{hidden}"


def check_url(url: object, *, what: str = "webhook") -> str:
    """Validate an http(s) URL with a host; ConfigError (showing it masked) otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{what} URL must be a non-empty string, got {type(url).__name__}")
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{what} URL {mask_url(url)} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme}:" if parts.scheme else mask_url(url)
        raise ConfigError(
            f"{what} URL must start with http:// or https://, not {shown!r} "
            f"({mask_url(url) if parts.hostname else 'no host'})"
        )
    if not parts.hostname:
        raise ConfigError(f"{what} URL {mask_url(url)} has no host")
    return url


# -- what notifiers receive ----------------------------------------------------------------


def rfc3339(ns: int | None) -> str:
    """Epoch nanoseconds as RFC 3339 in UTC with milliseconds (``ZERO_TIME`` for None)."""
    if ns is None:
        return ZERO_TIME
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class NotifiedAlert:
    """One alert as a notification reports it."""

    id: int
    rule: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_ns: int
    ends_ns: int | None
    fingerprint: str
    value: float | None

    def as_webhook(self) -> dict[str, Any]:
        """The alert in Alertmanager's webhook format."""
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_ns),
            "endsAt": rfc3339(self.ends_ns) if self.status == "resolved" else ZERO_TIME,
            "generatorURL": "",
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification of one group: its firing alerts and those resolved since the last.

    ``status`` is ``firing`` when any alert fires, else ``resolved``; ``repeat`` is True
    for a reminder sent after ``repeat_interval`` with nothing new.
    """

    group_key: str
    group_labels: dict[str, str]
    status: str
    alerts: tuple[NotifiedAlert, ...]
    time_ns: int
    repeat: bool = False

    @property
    def firing(self) -> list[NotifiedAlert]:
        """The firing alerts."""
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[NotifiedAlert]:
        """The alerts resolved since the group's last notification."""
        return [a for a in self.alerts if a.status == "resolved"]

    def common_labels(self) -> dict[str, str]:
        """Labels every alert shares."""
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        """Annotations every alert shares."""
        return _common([a.annotations for a in self.alerts])

    def as_webhook(self, receiver: str) -> dict[str, Any]:
        """The body a webhook receives (Alertmanager's webhook format, version 4)."""
        return {
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": 0,
            "status": self.status,
            "receiver": receiver,
            "groupLabels": dict(self.group_labels),
            "commonLabels": self.common_labels(),
            "commonAnnotations": self.common_annotations(),
            "externalURL": "",
            "alerts": [a.as_webhook() for a in self.alerts],
        }


def _common(dicts: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dict(dicts[0])
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


# -- notifiers -------------------------------------------------------------------------------


class Notifier:
    """Base class: ``send`` delivers one item or raises :class:`DeliveryError`.

    ``grouped`` notifiers get :class:`Notification` objects (after grouping, waits,
    repeats, silences and inhibition); the others (Alertmanager) get lists of
    :class:`NotifiedAlert` to feed to a system that groups by itself.
    """

    grouped = True
    kind = "notifier"

    def __init__(self, name: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, backoff_s: float = DEFAULT_BACKOFF_S,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.name = name or self.kind
        if not timeout_s > 0:
            raise ConfigError(
                f"notifier {self.name!r}: timeout must be positive, got {timeout_s!r}"
            )
        if retries < 0:
            raise ConfigError(f"notifier {self.name!r}: retries must be 0 or more, got {retries!r}")
        if backoff_s < 0:
            raise ConfigError(f"notifier {self.name!r}: backoff must be 0 or more")
        if max_queue < 1:
            raise ConfigError(f"notifier {self.name!r}: max_queue must be at least 1")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_queue = int(max_queue)

    def send(self, item: Any) -> None:
        """Deliver ``item``; raise DeliveryError on failure."""
        raise NotImplementedError

    def describe(self) -> str:
        """A one-line description, safe to print (no secrets)."""
        return f"{self.kind} {self.name!r}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class _HttpNotifier(Notifier):
    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 name: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        url = check_url(url, what=self.kind)
        parts = urllib.parse.urlsplit(url)
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        for key, value in self._headers.items():
            if "\n" in key or "\r" in key or "\n" in value or "\r" in value:
                raise ConfigError(f"{self.kind} {self.name!r}: header {key!r} contains a "
                                  "line break")
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers.setdefault("Authorization", f"Basic {token}")
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = host + (f":{parts.port}" if parts.port else "")
            url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        self._url = url
        self.masked_url = mask_url(url)

    def describe(self) -> str:
        headers = f", headers {sorted(self._headers)} (values hidden)" if self._headers else ""
        return f"{self.kind} {self.name!r} → {self.masked_url}{headers}"

    def _post(self, body: Any) -> None:
        post_json(self._url, body, headers=self._headers, timeout_s=self.timeout_s,
                  shown=self.masked_url)


def post_json(url: str, body: Any, *, headers: Mapping[str, str] | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S, shown: str | None = None) -> int:
    """POST ``body`` as JSON; the HTTP status, or DeliveryError (classified, URL masked)."""
    import urllib.error
    import urllib.request

    data = json.dumps(body, allow_nan=False, default=str).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", "holter-alerting")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
    opener = urllib.request.build_opener(*handlers)
    where = shown or mask_url(url)
    try:
        with opener.open(request, timeout=timeout_s) as answer:
            answer.read(65536)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
        with contextlib.suppress(Exception):
            exc.read(1024)
            exc.close()
        retryable = code == 429 or code >= 500
        raise DeliveryError(f"{where} answered HTTP {code}", reason=f"http_{code}",
                            retryable=retryable) from None
    except urllib.error.URLError as exc:
        inner = exc.reason
        if isinstance(inner, ConnectionRefusedError):
            raise DeliveryError(f"{where} refused the connection", reason="refused",
                                retryable=True) from None
        if isinstance(inner, TimeoutError):
            raise DeliveryError(f"{where} did not answer within {timeout_s:g} s",
                                reason="timeout", retryable=True) from None
        raise DeliveryError(f"{where} unreachable: {type(inner).__name__}",
                            reason="unreachable", retryable=True) from None
    except TimeoutError:
        raise DeliveryError(f"{where} did not answer within {timeout_s:g} s", reason="timeout",
                            retryable=True) from None
    except (ConnectionError, OSError) as exc:
        raise DeliveryError(f"{where}: {type(exc).__name__}", reason="connection",
                            retryable=True) from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookNotifier(_HttpNotifier):
    """POSTs each group notification as Alertmanager webhook JSON to ``url``."""

    kind = "webhook"

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 name: str | None = None, receiver: str = "holter", **options: Any) -> None:
        super().__init__(url, headers=headers, name=name, **options)
        self.receiver = receiver

    def send(self, item: Notification) -> None:
        """POST one notification."""
        self._post(item.as_webhook(self.receiver))


class AlertmanagerNotifier(_HttpNotifier):
    """Feeds a Prometheus Alertmanager (``url`` is its base, e.g. http://127.0.0.1:9093).

    Firing alerts are re-sent every ``resend_interval_s`` (default 60 s, as Prometheus)
    with ``endsAt`` four intervals ahead, so Alertmanager resolves them by itself if
    this program stops for good; resolved alerts are sent once with their end time.
    """

    kind = "alertmanager"
    grouped = False

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 name: str | None = None, resend_interval_s: float = 60.0,
                 **options: Any) -> None:
        base = check_url(url, what="alertmanager").rstrip("/")
        if not base.endswith("/api/v2/alerts"):
            base += "/api/v2/alerts"
        super().__init__(base, headers=headers, name=name, **options)
        if not resend_interval_s > 0:
            raise ConfigError(f"alertmanager {self.name!r}: resend_interval must be positive")
        self.resend_interval_s = float(resend_interval_s)
        self._sent: dict[str, tuple[int, str]] = {}

    @staticmethod
    def label_name(key: str) -> str:
        """Alertmanager label names allow ``[a-zA-Z_][a-zA-Z0-9_]*``: dots become ``_``."""
        out = "".join(c if c.isalnum() or c == "_" else "_" for c in key)
        return out if out and not out[0].isdigit() else f"_{out}"

    def payload(self, alerts: Sequence[NotifiedAlert], now_ns: int,
                valid_s: float) -> list[dict[str, Any]]:
        """The ``/api/v2/alerts`` body for ``alerts``."""
        body = []
        for a in alerts:
            ends = a.ends_ns if a.status == "resolved" else now_ns + int(valid_s * 1e9)
            body.append({
                "labels": {self.label_name(k): v for k, v in a.labels.items()},
                "annotations": {self.label_name(k): v for k, v in a.annotations.items()},
                "startsAt": rfc3339(a.starts_ns),
                "endsAt": rfc3339(ends),
                "generatorURL": "",
            })
        return body

    def due(self, firing: Sequence[NotifiedAlert], resolved: Sequence[NotifiedAlert],
            now_ns: int) -> list[NotifiedAlert]:
        """Which alerts to send now (called by the engine in its evaluation).

        New or changed firing alerts, those due for a resend, and resolved ones once.
        """
        out = []
        resend_ns = int(self.resend_interval_s * 1e9)
        seen = set()
        for a in firing:
            seen.add(a.fingerprint)
            last = self._sent.get(a.fingerprint)
            stamp = json.dumps(a.annotations, sort_keys=True)
            if last is None or now_ns - last[0] >= resend_ns or last[1] != stamp:
                out.append(a)
                self._sent[a.fingerprint] = (now_ns, stamp)
        for a in resolved:
            self._sent.pop(a.fingerprint, None)
            out.append(a)
        for fp in [fp for fp in self._sent if fp not in seen]:
            del self._sent[fp]  # muted or gone: Alertmanager lets it expire at its endsAt
        return out

    def send(self, item: list[dict[str, Any]]) -> None:
        """POST a list of alerts to ``/api/v2/alerts``."""
        self._post(item)


class LogNotifier(Notifier):
    """One line per alert, to the ``holter.alerts`` logger or to standard error.

    Through the logger firing alerts are WARNING and resolved ones INFO; with
    ``stream="stderr"`` the lines go straight to standard error.
    """

    kind = "log"

    def __init__(self, name: str | None = None, *, stream: str | None = None,
                 **options: Any) -> None:
        if stream not in (None, "stderr", "stdout"):
            raise ConfigError(f"log notifier stream must be 'stderr' or 'stdout', got {stream!r}")
        super().__init__(name or (stream or "log"), **options)
        self.stream = stream

    def describe(self) -> str:
        """A one-line description."""
        return f"log {self.name!r} → {self.stream or 'logger holter.alerts'}"

    @staticmethod
    def lines(item: Notification) -> list[str]:
        """The text lines of a notification."""
        out = []
        for a in item.alerts:
            text = a.annotations.get("summary") or a.rule
            tags = " ".join(f"{k}={v}" for k, v in sorted(a.labels.items())
                            if k not in ("alertname", "alertgroup"))
            again = " (repeat)" if item.repeat and a.status == "firing" else ""
            out.append(f"holter alert {a.status.upper()}{again} [{a.rule}] {text} {{{tags}}}")
        return out

    def send(self, item: Notification) -> None:
        """Write the lines."""
        for line, alert in zip(self.lines(item), item.alerts, strict=True):
            if self.stream is not None:
                out = sys.stderr if self.stream == "stderr" else sys.stdout
                out.write(line + "\n")
                out.flush()
            else:
                logger.log(logging.WARNING if alert.status == "firing" else logging.INFO, line)


class CallableNotifier(Notifier):
    """Calls ``fn(notification)`` on the notifier's own thread.

    An exception counts as a failed delivery and is not retried.
    """

    kind = "python"

    def __init__(self, fn: Callable[[Notification], Any], name: str | None = None,
                 **options: Any) -> None:
        if not callable(fn):
            raise ConfigError(f"a python notifier needs a callable, got {type(fn).__name__}")
        options.setdefault("retries", 0)
        super().__init__(name or getattr(fn, "__name__", None) or "python", **options)
        self.fn = fn

    def describe(self) -> str:
        """A one-line description."""
        return f"python {self.name!r} → {getattr(self.fn, '__qualname__', repr(self.fn))}"

    def send(self, item: Notification) -> None:
        """Call the function."""
        try:
            self.fn(item)
        except Exception as exc:
            raise DeliveryError(f"{self.name}: {type(exc).__name__}: {exc}",
                                reason="exception", retryable=False) from None


def make_notifier(spec: Any) -> Notifier:
    """A notifier from a spec.

    A :class:`Notifier`, a callable, ``"log"``/``"stderr"``, an http(s) URL (a
    webhook), or a dict with ``type`` (``webhook``, ``alertmanager``, ``log``,
    ``stderr``, ``python``) and its options.
    """
    if isinstance(spec, Notifier):
        return spec
    if isinstance(spec, str):
        if spec in ("log", "stderr", "stdout"):
            return LogNotifier(stream=None if spec == "log" else spec)
        return WebhookNotifier(spec)
    if callable(spec):
        return CallableNotifier(spec)
    if isinstance(spec, Mapping):
        options = dict(spec)
        kind = str(options.pop("type", "webhook"))
        for key in ("timeout", "backoff", "resend_interval"):
            if key in options:
                options[f"{key}_s"] = _seconds(options.pop(key), key)
        try:
            if kind == "webhook":
                return WebhookNotifier(options.pop("url", None), **options)  # type: ignore[arg-type]
            if kind == "alertmanager":
                return AlertmanagerNotifier(options.pop("url", None), **options)  # type: ignore[arg-type]
            if kind in ("log", "stderr", "stdout"):
                stream = options.pop("stream", None if kind == "log" else kind)
                return LogNotifier(stream=stream, **options)
            if kind == "python":
                target = options.pop("target", None) or options.pop("function", None)
                return CallableNotifier(_import_target(target), **options)
        except TypeError as exc:
            raise ConfigError(f"{kind} notifier: {exc}") from None
        raise ConfigError(
            f"unknown notifier type {kind!r}: use webhook, alertmanager, log, stderr or python"
        )
    raise ConfigError(f"cannot make a notifier of {type(spec).__name__}")


def _seconds(value: Any, what: str) -> float:
    from holter.config import parse_seconds

    return parse_seconds(value, what)


def _import_target(target: Any) -> Callable[..., Any]:
    import importlib

    if callable(target):
        return target  # type: ignore[no-any-return]
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(f"python notifier target must be 'module:function', got {target!r}")
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"python notifier target {target!r} cannot be imported: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"python notifier target {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


# -- delivery ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    """One queued delivery: what to send, and what to report when done."""

    item: Any
    alert_ids: list[tuple[int, str, str]] = field(default_factory=list)
    """``(alert id, rule, status)`` of each alert it carries (for the history)."""
    tries: int = 0


Outcome = Callable[[Notifier, Delivery, "DeliveryError | None"], None]


class Courier:
    """Delivers to one notifier from a daemon thread of its own.

    ``submit`` never blocks: a full queue drops its oldest delivery (reported as failed
    with reason ``queue_full``). Failures that may pass are retried after
    ``backoff_s``, doubling up to :data:`MAX_BACKOFF_S`, ``retries`` times; then the
    delivery is given up and reported. Safe across ``fork``: a child starts empty.
    """

    def __init__(self, notifier: Notifier, on_outcome: Outcome) -> None:
        self.notifier = notifier
        self.on_outcome = on_outcome
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: collections.deque[Delivery] = collections.deque()
        self._busy = False
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery (from the engine); starts the thread on first use."""
        if os.getpid() != self._pid:
            self._setup()
        dropped: Delivery | None = None
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.notifier.max_queue:
                dropped = self._queue.popleft()
            self._queue.append(delivery)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"holter-notify-{self.notifier.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        if dropped is not None:
            self._report(dropped, DeliveryError("the notification queue is full",
                                                reason="queue_full", retryable=False))

    def _report(self, delivery: Delivery, error: DeliveryError | None) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
        try:
            self.on_outcome(self.notifier, delivery, error)
        except Exception as exc:  # reporting must never kill the courier
            logger.debug("holter: recording a delivery outcome failed: %r", exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait(1.0)
                if not self._queue:
                    self._busy = False
                    self._cond.notify_all()
                    return
                delivery = self._queue.popleft()
                self._busy = True
            self._deliver(delivery)

    def _deliver(self, delivery: Delivery) -> None:
        notifier = self.notifier
        wait = notifier.backoff_s
        while True:
            delivery.tries += 1
            try:
                notifier.send(delivery.item)
            except DeliveryError as exc:
                error: DeliveryError | None = exc
            except Exception as exc:  # a notifier bug must not kill the thread
                error = DeliveryError(f"{notifier.name}: {type(exc).__name__}: {exc}",
                                      reason="error", retryable=False)
            else:
                error = None
            if error is None:
                self._report(delivery, None)
                return
            if not error.retryable or delivery.tries > notifier.retries or self._stop.is_set():
                logger.warning("holter alerts: %s could not deliver a notification after %d "
                               "tries: %s", notifier.describe(), delivery.tries, error)
                self._report(delivery, error)
                return
            logger.debug("holter alerts: %s failed (%s); retrying in %.1f s",
                         notifier.describe(), error, wait)
            if self._stop.wait(wait):
                self._report(delivery, error)
                return
            wait = min(max(wait * 2, 0.001), MAX_BACKOFF_S)

    def idle(self) -> bool:
        """True when nothing is queued or being delivered."""
        with self._cond:
            return not self._queue and not self._busy

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every queued delivery is done; True if so."""
        deadline = time.monotonic() + timeout_s  # real time: a fake clock must not stall it
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float) -> bool:
        """Deliver what is queued within ``timeout_s``, then stop; True if all was done."""
        done = self.wait_idle(max(timeout_s, 0.0)) if timeout_s > 0 else self.idle()
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        return done


__all__ = [
    "DEFAULT_BACKOFF_S",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "AlertmanagerNotifier",
    "CallableNotifier",
    "Courier",
    "Delivery",
    "DeliveryError",
    "LogNotifier",
    "Notification",
    "NotifiedAlert",
    "Notifier",
    "WebhookNotifier",
    "check_url",
    "make_notifier",
    "mask_url",
    "post_json",
    "rfc3339",
]
