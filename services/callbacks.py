"""Webhooks: a signed POST to the URL a client gave, when its job or batch finishes.

The body is JSON. ``X-Imgrestore-Signature: sha256=<hex>`` is HMAC-SHA256 over ``<timestamp>.<body>`` with
``IMGRESTORE_CALLBACK_SECRET`` and ``X-Imgrestore-Timestamp`` carries the timestamp, so a receiver can check both
origin and freshness. Delivery runs as its own Celery task and is retried with backoff on errors and 5xx answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

SIGNATURE_HEADER = "X-Imgrestore-Signature"
TIMESTAMP_HEADER = "X-Imgrestore-Timestamp"
EVENT_HEADER = "X-Imgrestore-Event"


class CallbackFailed(Exception):
    """Worth another try (network error, timeout, 5xx, 429)."""


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


def post(url: str, event: str, payload: dict, secret: str | None, timeout: float) -> int:
    """One delivery attempt; returns the HTTP status, raises CallbackFailed when a retry may help."""
    body = json.dumps(payload, default=str, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", EVENT_HEADER: event, TIMESTAMP_HEADER: timestamp,
               "User-Agent": "imgrestore-webhook/1"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise CallbackFailed(f"{url} answered {exc.code}") from None
        return exc.code  # 4xx: the receiver refuses; retrying would not change its mind
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise CallbackFailed(f"{url}: {exc}") from None
