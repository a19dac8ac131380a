"""``Idempotency-Key``: a retried submission returns what the first one created instead of a duplicate.

One Redis key per (token name, Idempotency-Key) holds the fingerprint of the request and, once created, the id of
the job or batch. The first request claims the key atomically (SET NX) before it creates anything, so two
concurrent retries cannot both create; the loser waits briefly for the winner's id. Same key with a different body
→ 409 ``idempotency_key_reused``; same key while the first request is still running → 409
``idempotency_key_in_progress`` (a conflict with an earlier request either way).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import redis

from .errors import ApiError

KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, no spaces

# Delete the claim only if it is still ours and still pending (the submission failed): the client may then retry.
_RELEASE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local claim = cjson.decode(raw)
if claim['nonce'] == ARGV[1] and claim['id'] == nil then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Claim:
    key: str
    nonce: str
    record: dict


def fingerprint(kind: str, body: str) -> str:
    return hashlib.sha256(f"{kind}\n{body}".encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int, wait_seconds: float = 10.0) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.wait_seconds = wait_seconds
        self._release = client.register_script(_RELEASE)

    def redis_key(self, owner: str, key: str) -> str:
        # Hashed: client keys may be long or odd; scoped per token so two clients' keys never collide.
        return f"{self.prefix}api:idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"

    def claim(self, owner: str, key: str, kind: str, print_: str) -> Claim | str:
        """A new ``Claim`` (go on and create), or the id the key already created (replay)."""
        rkey = self.redis_key(owner, key)
        nonce = uuid.uuid4().hex
        record = {"kind": kind, "fingerprint": print_, "nonce": nonce}  # no "id" while pending
        deadline = time.monotonic() + self.wait_seconds
        while True:
            if self.redis.set(rkey, json.dumps(record), nx=True, ex=self.ttl):
                return Claim(rkey, nonce, record)
            raw = self.redis.get(rkey)
            if raw is None:
                continue  # expired or released between the two calls: try to claim again
            existing = json.loads(raw)
            if existing.get("fingerprint") != print_:
                raise ApiError(409, "idempotency_key_reused",
                               "this Idempotency-Key was already used with a different request; use a new key "
                               "for a different request")
            if existing.get("id"):
                return str(existing["id"])
            if time.monotonic() > deadline:
                raise ApiError(409, "idempotency_key_in_progress",
                               "a request with this Idempotency-Key is still being processed; retry shortly")
            time.sleep(0.05)

    def complete(self, claim: Claim, created_id: str) -> None:
        self.redis.set(claim.key, json.dumps(claim.record | {"id": created_id}), xx=True, keepttl=True)

    def release(self, claim: Claim) -> None:
        self._release(keys=[claim.key], args=[claim.nonce])
