"""Webhooks: which ones a finished job owes, and a signed POST to the URL a client gave.

Whoever moves a job to its final state calls ``finished_notifications`` once — the worker, or the API when it
cancels a queued job — and sends each ``Notification`` as an ``imgrestore.notify`` task.

The body is JSON. ``X-Imgrestore-Signature: sha256=<hex>`` is HMAC-SHA256 over ``<timestamp>.<body>`` with
``IMGRESTORE_CALLBACK_SECRET`` and ``X-Imgrestore-Timestamp`` carries the timestamp, so a receiver can check both
origin and freshness.

Egress rules (issue 11), because the URL is chosen by a client and the request leaves from inside the cluster:
- the host is resolved and *every* address must be public: loopback, private, link-local (cloud metadata),
  multicast, unspecified, reserved and other non-global addresses are refused, unless they lie in
  ``IMGRESTORE_CALLBACK_ALLOWED_NETWORKS`` (in-cluster receivers). The check runs again at connect time on the
  addresses actually connected to, so a name that re-resolves elsewhere (DNS rebinding) gets nowhere;
- redirects are never followed (a 3xx is a refusal, not a retry);
- one overall deadline per attempt (``IMGRESTORE_CALLBACK_TIMEOUT``), however slowly the receiver trickles bytes,
  and at most ``IMGRESTORE_CALLBACK_MAX_RESPONSE_BYTES`` of its answer are read.

Delivery happens off the restore path: the ``imgrestore.notify`` task hands the attempt to a small bounded pool of
sender threads (``CallbackSender``) and returns at once, so no receiver can hold a restore slot.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .jobs import Job

if TYPE_CHECKING:  # celery and the Redis stores are imported where a webhook is queued, not by every user of the
    # egress rules (Settings checks IMGRESTORE_CALLBACK_ALLOWED_NETWORKS with them, in every command)
    from celery import Celery

    from .queue.batch_store import BatchStore
    from .queue.job_store import JobStore

SIGNATURE_HEADER = "X-Imgrestore-Signature"
TIMESTAMP_HEADER = "X-Imgrestore-Timestamp"
EVENT_HEADER = "X-Imgrestore-Event"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)


class CallbackFailed(Exception):
    """Worth another try (network error, deadline, 5xx, 429)."""


class CallbackRefused(Exception):
    """The target is not allowed (a forbidden address, a bad URL): never retried."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age: float = 300.0) -> bool:
    """What a receiver does: constant-time compare, and refuse stale timestamps (replays)."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def parse_networks(spec: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, fd00::/8"`` → networks; raises ValueError naming the bad entry."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP network (e.g. 10.0.0.0/8): {exc}") from None
    return tuple(networks)


def forbidden_reason(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> str | None:
    """Why a webhook may not go to ``address`` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in allowed):
        return None
    for reason, hit in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                        ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
                        ("private", address.is_private), ("reserved", address.is_reserved),
                        ("not globally routable", not address.is_global)):
        if hit:
            return reason
    return None


def resolve_allowed(host: str, port: int, allowed: tuple[IPNetwork, ...] = ()) -> list[tuple]:
    """getaddrinfo results for ``host``, refused (``CallbackRefused``) if *any* address is forbidden: a name that
    answers both a public and a private address must not get a chance to reach the private one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CallbackFailed(f"{host} does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        reason = forbidden_reason(address, allowed)
        if reason is not None:
            raise CallbackRefused(f"{host} resolves to {address}, a {reason} address: webhooks go to public "
                                  "addresses only (IMGRESTORE_CALLBACK_ALLOWED_NETWORKS lists exceptions)")
    return infos


def target_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; ``CallbackRefused`` for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("must be an http:// or https:// URL with a host")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_target(url: str, allowed: tuple[IPNetwork, ...] = ()) -> None:
    """Submission-time check (the API): refuses forbidden literals and names resolving to forbidden addresses.
    A name that does not resolve yet is let through; delivery checks again, at connect time."""
    _, host, port = target_of(url)
    try:
        resolve_allowed(host, port, allowed)
    except CallbackFailed:
        pass


def redact_url(url: str | None) -> str | None:
    """What logs may show of a callback URL: no credentials, no query string (tokens often live there)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?…" if parts.query else "")


@dataclass(frozen=True)
class Egress:
    """Where and how a webhook may be sent (from settings)."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    timeout: float = 5.0
    max_response_bytes: int = 65536


def _pinned_connector(host: str, allowed: tuple[IPNetwork, ...]) -> Callable[..., socket.socket]:
    """Replaces http.client's ``socket.create_connection``: resolves, checks every address, connects to a checked
    one. The TLS layer (https) still verifies the certificate against ``host``."""

    def connect(address: tuple[str, int], timeout: float | None = None, source_address=None) -> socket.socket:
        last: OSError | None = None
        for family, kind, proto, _, sockaddr in resolve_allowed(host, address[1], allowed):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(f"{host}: no address to connect to")

    return connect


def post(url: str, event: str, payload: dict, secret: str | None, egress: Egress) -> int:
    """One delivery attempt within ``egress.timeout`` seconds in all; returns the HTTP status.

    Raises ``CallbackFailed`` when another try may help (network error, deadline, 5xx, 429) and ``CallbackRefused``
    when it cannot (forbidden target)."""
    scheme, host, port = target_of(url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = json.dumps(payload, default=str, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", EVENT_HEADER: event, TIMESTAMP_HEADER: timestamp,
               "User-Agent": "imgrestore-webhook/1"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = kind(host, port, timeout=egress.timeout)
    conn._create_connection = _pinned_connector(host, egress.allowed_networks)  # type: ignore[attr-defined]
    # A per-read timeout lets a receiver that trickles a byte every few seconds hold the sender for ever: the
    # watchdog shuts the socket when the attempt's deadline passes, whatever it is doing.
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(egress.timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(egress.max_response_bytes)  # the answer's body means nothing to us: read a little, drop it
        status = response.status
    except CallbackRefused:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set():
            raise CallbackFailed(f"{redact_url(url)}: no complete answer within {egress.timeout:g} s "
                                 "(IMGRESTORE_CALLBACK_TIMEOUT)") from None
        raise CallbackFailed(f"{redact_url(url)}: {type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        raise CallbackFailed(f"{redact_url(url)}: no complete answer within {egress.timeout:g} s "
                             "(IMGRESTORE_CALLBACK_TIMEOUT)")
    if status >= 500 or status == 429:
        raise CallbackFailed(f"{redact_url(url)} answered {status}")
    return status  # 2xx delivered; 3xx (redirects are not followed) and 4xx: the receiver refuses, retrying won't help


@dataclass
class CallbackSender:
    """A bounded pool of sender threads in a worker process: ``offer`` never blocks; it returns False when
    ``threads + backlog`` attempts are already running or waiting, and the caller tries again later."""

    deliver: Callable[..., None]
    threads: int = 4
    backlog: int = 64
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="webhook")
        self._slots = threading.BoundedSemaphore(self.threads + self.backlog)

    def offer(self, *args: object) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        try:
            future = self._pool.submit(self._run, *args)
        except RuntimeError:  # shut down
            self._slots.release()
            return False
        future.add_done_callback(lambda _: self._slots.release())
        return True

    def _run(self, *args: object) -> None:
        try:
            self.deliver(*args)
        except Exception:  # a sender thread must survive anything a delivery does
            log.exception("webhook delivery crashed")

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=False)


@dataclass(frozen=True)
class Notification:
    url: str
    event: str  # "job.finished" or "batch.finished"
    payload: dict

    def queue(self, app: Celery, queue: str) -> None:
        """Hands the webhook to the notify task (delivered off the restore path, with its own retries)."""
        from .queue.celery_app import NOTIFY_TASK, send

        send(app, NOTIFY_TASK, [self.url, self.event, self.payload], queue)


def finished_notifications(store: JobStore, batches: BatchStore, job: Job) -> list[Notification]:
    """The webhooks owed once ``job`` reached its final state: its own, and its batch's if it was the last one.

    Whoever finished the job calls this once (the worker, or the API when it cancels a queued job).
    """
    notes = []
    if job.callback_url:
        final = store.get(job.id)
        notes.append(Notification(job.callback_url, "job.finished", final.model_dump(mode="json")))
    if job.batch_id:
        notes += batch_finished_notifications(batches, job.batch_id)
    return notes


def batch_finished_notifications(batches: BatchStore, batch_id: str) -> list[Notification]:
    """The batch's webhook when it has just finished (once, whoever asks first: a job's finish or a cancel)."""
    if not batches.mark_finished_once(batch_id):
        return []
    batch = batches.get(batch_id)
    if not batch.callback_url:
        return []
    payload = batch.model_dump(mode="json") | {"state": batch.state.value}
    return [Notification(batch.callback_url, "batch.finished", payload)]
