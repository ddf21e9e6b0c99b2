"""POSTing to an export endpoint: timeouts, classified failures, retries with backoff.

Only the standard library (``urllib``). Credentials never leave this module in text:
a URL's ``user:password@`` becomes a Basic ``Authorization`` header and every message
shows :func:`redact` of the URL; header values (bearer tokens, API keys) are never
printed or logged.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from holter._version import __version__
from holter.errors import ConfigError, HolterError

USER_AGENT = f"holter/{__version__}"
DEFAULT_TIMEOUT_S = 5.0
"""Longest wait for one request (connect, send, answer)."""


class ExportFailed(HolterError):
    """Raised when an endpoint refused, timed out or rejected what was sent.

    ``reason`` is a short label (``refused``, ``timeout``, ``http_503``...) used in
    ``holter.export.failed{reason=...}``; ``retryable`` says whether sending the same
    request again later may succeed (connection problems, 429 and 5xx answers).
    """

    def __init__(
        self, message: str, *, reason: str, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def redact(url: str) -> str:
    """``url`` without credentials or query string: safe to print and log."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparsable URL>"
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpTarget:
    """One endpoint: its URL (credentials moved into a header), headers and timeout."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        what: str = "endpoint",
    ) -> None:
        try:
            parts = urllib.parse.urlsplit(str(url))
            port = parts.port
        except ValueError:
            raise ConfigError(
                f"bad {what} URL {redact(str(url))!r}: it is not a valid URL; use "
                "http://HOST:PORT/PATH"
            ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"bad {what} URL {redact(str(url))!r}: use http:// or https:// with a host, "
                "for example http://127.0.0.1:9090/api/v1/write"
            )
        if not timeout_s > 0:
            raise ConfigError(f"bad timeout {timeout_s!r}: use a positive number of seconds")
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers.setdefault("Authorization", f"Basic {token}")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host + (f":{port}" if port else "")
        self.url = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path or "/", parts.query, "")
        )
        self.display = redact(self.url)
        self.timeout_s = float(timeout_s)
        handlers: list[urllib.request.BaseHandler] = []
        if _is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # never proxy 127.0.0.1
        self._opener = urllib.request.build_opener(*handlers)

    def post(
        self,
        body: bytes,
        content_type: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """POST ``body``; return the answer's body. Raises :class:`ExportFailed`."""
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", content_type)
        request.add_header("User-Agent", USER_AGENT)
        for key, value in {**self.headers, **(headers or {})}.items():
            request.add_header(key, value)
        timeout = self.timeout_s if timeout_s is None else max(timeout_s, 0.05)
        try:
            with self._opener.open(request, timeout=timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            detail = ""
            with contextlib.suppress(Exception):
                detail = exc.read(300).decode("utf-8", "replace").strip()
            retryable = status == 429 or status >= 500
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise ExportFailed(
                f"{self.display} answered HTTP {status}"
                + (f": {detail.splitlines()[0][:200]}" if detail else "")
                + ("" if retryable else " (not retried: the endpoint rejected the data)"),
                reason=f"http_{status}",
                retryable=retryable,
                retry_after_s=retry_after,
            ) from None
        except TimeoutError:
            raise ExportFailed(
                f"{self.display} did not answer within {timeout:g} s", reason="timeout",
                retryable=True,
            ) from None
        except urllib.error.URLError as exc:
            inner = exc.reason
            if isinstance(inner, TimeoutError):
                raise ExportFailed(
                    f"{self.display} did not answer within {timeout:g} s", reason="timeout",
                    retryable=True,
                ) from None
            reason = "refused" if isinstance(inner, ConnectionRefusedError) else "unreachable"
            text = getattr(inner, "strerror", None) or str(inner)
            raise ExportFailed(
                f"cannot reach {self.display}: {text}", reason=reason, retryable=True
            ) from None
        except (ConnectionError, OSError) as exc:
            raise ExportFailed(
                f"connection to {self.display} failed: {exc.strerror or exc}",
                reason="connection", retryable=True,
            ) from None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per request and the backoff between them (doubling, with jitter)."""

    attempts: int = 3
    """Tries of one request before giving up on it for now."""
    backoff_s: float = 0.5
    """Wait before the second try; doubled before each next one."""
    max_backoff_s: float = 30.0
    """Longest wait between two tries (also caps a server's Retry-After)."""

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 = the first)."""
        base = min(self.backoff_s * 2 ** max(failures - 1, 0), self.max_backoff_s)
        jittered = base * (0.8 + 0.4 * random.random())
        if retry_after_s is not None:
            jittered = max(jittered, min(retry_after_s, self.max_backoff_s))
        return min(jittered, self.max_backoff_s)


def send_with_retries(
    send: Callable[[], bytes],
    policy: RetryPolicy,
    *,
    on_failure: Callable[[ExportFailed], None] | None = None,
    stop: threading.Event | None = None,
) -> bytes:
    """Call ``send`` until it succeeds, a failure is not retryable, or attempts run out.

    Each failure is reported to ``on_failure`` (to count it). Waits between tries use
    ``stop.wait`` so a stop request ends them at once. Raises the last :class:`ExportFailed`.
    """
    stop = stop or threading.Event()
    failures = 0
    while True:
        try:
            return send()
        except ExportFailed as exc:
            failures += 1
            if on_failure is not None:
                on_failure(exc)
            if not exc.retryable or failures >= policy.attempts or stop.is_set():
                raise
            if stop.wait(policy.delay(failures, exc.retry_after_s)):
                raise
