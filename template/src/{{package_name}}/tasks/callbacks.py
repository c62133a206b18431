"""Completion callbacks: a signed POST to the URL a task was scheduled with, once it is final.

    tasks.add_task(build_report.options(callback_url="https://hooks.example.com/done"), "Q1")

The URL is checked when the task is scheduled (422 saying why): its host must be one that
CALLBACK_ALLOWED_HOSTS lists, over https (http only where the entry says `http://` itself), with
no user or password in it. No request is ever made to a host outside the list, and redirects are
never followed.

When the task reaches `succeeded`, `failed` or `cancelled`, its status (the JSON of
`GET /tasks/{id}`) is POSTed with three headers:
- `Webhook-Id`: the task id (the same for every attempt: a receiver drops repeats with it);
- `Webhook-Timestamp`: Unix seconds of this attempt;
- `Webhook-Signature`: `v1=<hex HMAC-SHA256(CALLBACK_SECRET, f"{timestamp}.{body}")>`.
Any answer but a 2xx is tried again with backoff, up to CALLBACK_MAX_ATTEMPTS attempts; each
attempt is added to the record's `callback_deliveries` (shown by `GET /tasks/{id}`).

Long-running processes (the API, a Celery worker) hand the record to a thread of their own
(`CallbackDispatcher`), so no runner waits for a receiver; a Lambda invocation may be frozen once
it returns, so there the attempts run before it does, within a bounded time (`InlineCallbacks`).
A process that dies with a delivery pending does not make it.
"""

import copy
import hashlib
import heapq
import hmac
import itertools
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..logs import task_context
from ..redaction import client_text
from .models import CallbackDelivery, TaskRecord, utcnow
from .retry import RetryPolicy
from .store import TaskStore

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
# Printable ASCII without spaces: anything else is refused rather than re-encoded.
_URL_CHARACTERS = re.compile(r"[\x21-\x7e]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A Lambda invocation spends at most this long on one task's callback attempts.
INLINE_BUDGET = 10.0
_USER_AGENT = "task-callbacks/1"


class CallbackUrlError(ValueError):
    """A callback URL refused at scheduling; the message says why (not repeating the URL)."""


@dataclass(frozen=True)
class AllowedHost:
    scheme: str  # "https", or "http" when the entry says so
    host: str
    port: int | None  # None: the scheme's default port only

    def admits(self, scheme: str, host: str, port: int) -> bool:
        return (
            host == self.host
            and port == (self.port or _DEFAULT_PORTS[self.scheme])
            and (scheme == self.scheme or (scheme == "https" and self.scheme == "http"))
        )


def parse_allowed_hosts(text: str) -> tuple[AllowedHost, ...]:
    """CALLBACK_ALLOWED_HOSTS: comma-separated `host`, `host:port` (https) or `http://host:port`
    (plain http to that host, as for a receiver on the same network); ValueError says what is
    wrong with an entry."""
    allowed = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        url = entry if "://" in entry else f"https://{entry}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise ValueError(f"CALLBACK_ALLOWED_HOSTS entry {entry!r}: {error}") from error
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                f"CALLBACK_ALLOWED_HOSTS entry {entry!r} must be host, host:port or "
                "http(s)://host[:port]"
            )
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"CALLBACK_ALLOWED_HOSTS entry {entry!r} must name a host only")
        allowed.append(AllowedHost(parts.scheme, parts.hostname.lower(), port))
    return tuple(allowed)


@dataclass(frozen=True)
class CallbackPolicy:
    """Where callbacks may go and how they are sent (from the CALLBACK_* settings)."""

    allowed: tuple[AllowedHost, ...] = ()
    secret: bytes = b""
    max_attempts: int = 5
    timeout: float = 5.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> "CallbackPolicy":
        secret = settings.callback_secret
        return cls(
            allowed=parse_allowed_hosts(settings.callback_allowed_hosts or ""),
            secret=secret.get_secret_value().encode() if secret is not None else b"",
            max_attempts=settings.callback_max_attempts,
            timeout=settings.callback_timeout,
            backoff_base=settings.callback_backoff_base,
            backoff_max=max(settings.callback_backoff_base, 60.0),
        )

    def check(self, url: str) -> str:
        """`url` if a callback may be sent there, else CallbackUrlError saying why."""
        if not self.allowed:
            raise CallbackUrlError("callbacks are off: CALLBACK_ALLOWED_HOSTS lists no host")
        if len(url) > MAX_URL_LENGTH:
            raise CallbackUrlError(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
        if not _URL_CHARACTERS.fullmatch(url):
            raise CallbackUrlError(
                "the callback URL may hold printable ASCII only (no spaces or control characters)"
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise CallbackUrlError("the callback URL is not a valid URL") from error
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise CallbackUrlError("the callback URL must be https (or http where allowed)")
        if "@" in parts.netloc:
            raise CallbackUrlError("the callback URL must not carry a user name or password")
        if parts.fragment:
            raise CallbackUrlError("the callback URL must not have a fragment (#...)")
        host = (parts.hostname or "").lower()
        if not host:
            raise CallbackUrlError("the callback URL names no host")
        effective_port = port or _DEFAULT_PORTS[scheme]
        if not any(entry.admits(scheme, host, effective_port) for entry in self.allowed):
            if scheme == "http" and any(
                entry.admits("https", host, effective_port) for entry in self.allowed
            ):
                raise CallbackUrlError(
                    "the callback URL must be https: its host is allowed over https only"
                )
            raise CallbackUrlError(
                "the callback URL's host (and port) is not in CALLBACK_ALLOWED_HOSTS"
            )
        return url

    def admits(self, url: str) -> bool:
        try:
            self.check(url)
        except CallbackUrlError:
            return False
        return True

    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
        )


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `Webhook-Signature` header of a callback: `v1=<hex HMAC-SHA256>` over
    f"{timestamp}.{body}". A receiver computes it again and compares in constant time."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def callback_body(record: TaskRecord) -> bytes:
    """The JSON the callback carries: the task's status, as `GET /tasks/{id}` shows it."""
    from ..api.routes.tasks import TaskStatus  # the API's model; imported late (no cycle)

    return TaskStatus.of(record).model_dump_json().encode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        # A 3xx is the receiver's answer, recorded as a failed attempt; its Location (which
        # may name any host) is never requested.
        return None


# No proxies from the environment (they would send the request elsewhere) and no redirects.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def post_once(policy: CallbackPolicy, record: TaskRecord, attempt: int) -> CallbackDelivery:
    """One signed POST of `record`'s status to its callback URL; never raises."""
    at = utcnow()
    url = record.callback_url or ""
    if not policy.admits(url):
        # The settings changed since the task was scheduled: the host is not allowed any more.
        return CallbackDelivery(attempt, at, error="the callback URL is not allowed (any more)")
    body = callback_body(record)
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked (http/https)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "Webhook-Id": record.task_id,
            "Webhook-Timestamp": timestamp,
            "Webhook-Signature": signature(policy.secret, timestamp, body),
        },
    )
    try:
        with _OPENER.open(request, timeout=policy.timeout) as response:
            response.read(64 * 1024)
            return CallbackDelivery(attempt, at, status=response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return CallbackDelivery(attempt, at, status=error.code)
    except Exception as error:  # refused, timed out, TLS, DNS: no answer
        reason = getattr(error, "reason", error)
        return CallbackDelivery(
            attempt, at, error=f"{type(error).__name__}: {client_text(str(reason))}"[:300]
        )


def _record_attempt(store: TaskStore, record: TaskRecord, delivery: CallbackDelivery) -> None:
    record.callback_deliveries.append(delivery)
    record.version += 1
    try:
        store.save(record)
    except Exception:
        logger.warning("could not store a callback attempt", exc_info=True)
    level = logging.INFO if delivery.delivered else logging.WARNING
    logger.log(
        level,
        "callback delivered" if delivery.delivered else "callback attempt failed",
        extra={"attempt": delivery.attempt, "status": delivery.status, "reason": delivery.error},
    )


class InlineCallbacks:
    """Delivers at once, in the calling thread, within INLINE_BUDGET seconds (Lambda: the
    process may be frozen as soon as the invocation returns)."""

    def __init__(self, policy: CallbackPolicy, store: TaskStore) -> None:
        self.policy = policy
        self.store = store

    def __call__(self, record: TaskRecord) -> None:
        if not record.callback_url:
            return
        record = copy.deepcopy(record)
        retry = self.policy.retry()
        deadline = time.monotonic() + INLINE_BUDGET
        with task_context(record):
            for attempt in itertools.count(len(record.callback_deliveries) + 1):
                delivery = post_once(self.policy, record, attempt)
                _record_attempt(self.store, record, delivery)
                if delivery.delivered or not retry.should_retry(attempt):
                    return
                delay = retry.delay(attempt)
                if time.monotonic() + delay + self.policy.timeout > deadline:
                    logger.warning("callback not delivered within this invocation's budget")
                    return
                time.sleep(delay)


class CallbackDispatcher:
    """Delivers on a thread of its own, with retries waiting in a timer queue."""

    def __init__(self, policy: CallbackPolicy, store: TaskStore) -> None:
        self.policy = policy
        self.store = store
        self._retry = policy.retry()
        self._queue: list[tuple[float, int, TaskRecord]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __call__(self, record: TaskRecord) -> None:
        if not record.callback_url:
            return
        self._put(time.monotonic(), copy.deepcopy(record))

    def _put(self, due: float, record: TaskRecord) -> None:
        with self._ready:
            if self._stopping:
                with task_context(record):
                    logger.warning("shutting down: a callback is not delivered")
                return
            heapq.heappush(self._queue, (due, next(self._order), record))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="task-callbacks", daemon=True
                )
                self._thread.start()
            self._ready.notify()

    def _next(self) -> TaskRecord | None:
        with self._ready:
            while True:
                if self._stopping:
                    return None
                if self._queue:
                    wait = self._queue[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._queue)[2]
                    self._ready.wait(wait)
                else:
                    self._ready.wait()

    def _work(self) -> None:
        while (record := self._next()) is not None:
            with task_context(record):
                attempt = len(record.callback_deliveries) + 1
                delivery = post_once(self.policy, record, attempt)
                _record_attempt(self.store, record, delivery)
                if not delivery.delivered and self._retry.should_retry(attempt):
                    self._put(time.monotonic() + self._retry.delay(attempt), record)

    def close(self, timeout: float = 5.0) -> None:
        """Stop: the attempt under way ends (within the timeout), pending ones are dropped."""
        with self._ready:
            self._stopping = True
            dropped = len(self._queue)
            self._queue.clear()
            self._ready.notify_all()
            thread = self._thread
        if dropped:
            logger.warning("shutting down: callbacks not delivered", extra={"count": dropped})
        if thread is not None:
            thread.join(timeout)


def final_listener(sink: Callable[[TaskRecord], None]) -> Callable[[TaskRecord], None]:
    """What the ledger calls after it saved a final state: `sink`, never raising into it."""

    def listener(record: TaskRecord) -> None:
        if not record.callback_url:
            return
        try:
            sink(record)
        except Exception:
            with task_context(record):
                logger.exception("could not hand over a task's callback")

    return listener
