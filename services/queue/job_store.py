"""Job records in Redis: one hash per job (TTL'd), so status works without the Celery result backend.

Keys (all under ``settings.key_prefix``):
- ``job:<id>``     hash of the job's fields (nested ones as JSON), and ``queue``: the queue it was created on
- ``lease:<id>``   the process currently running the job (``lease_owner``); it expires unless that process's
                   node keeps renewing it
- ``jobs:recent``  sorted set of job ids by creation time (trimmed), for status pages
- ``dead``         sorted set of permanently failed job ids by failure time (the dead-letter record)
- ``stats:finished`` hash: count of finished jobs by final state
- ``jobs:unfinished`` sorted set of ``queued`` and ``running`` job ids by the time of their last change (created,
  started, re-queued): where the orphan sweep looks for jobs nobody holds and no message carries
- ``sweep:turn`` which process runs the next orphan sweep (one per interval across all workers)
- ``stats:recovery`` hash: deliveries interrupted by a Redis outage, orphans re-queued
- ``jobs:state:succeeded`` / ``jobs:state:failed`` sorted sets of finished job ids by finish time, trimmed to the
  record TTL: listing by state finds any finished job still kept
- ``jobs:owner:<token name>`` / ``jobs:unowned`` sorted sets of job ids by creation time, one per API token and one
  for jobs created outside the API, trimmed to the record TTL: a token's listing reads its own jobs only, so
  another token's jobs never hide them (``owner_pages``)
- ``tokens:unfinished`` hash: API token name (a job's ``owner``) → its ``queued`` and ``running`` jobs, the per-token
  quota. Counted up where a record becomes unfinished (create, requeue) and down in the finish script, so every way
  out — success, failure, cancel, dead letter — keeps it right; a record that expires or is evicted unfinished is
  dropped from it when the quota next refuses the token (``recount_unfinished``)
- ``tokens:recounted:<token name>`` present while a recount of that token is not due again

Every Lua script declares every key it touches (tests/unit/test_job_store_scripts.py checks it under MONITOR), as
Redis Cluster and cluster-mode proxies require. The keys of one script share a slot when ``IMGRESTORE_KEY_PREFIX``
and ``IMGRESTORE_QUEUE_PREFIX`` carry one hash tag (``{imgrestore}:`` and ``{imgrestore}.``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Collection, Iterator

import redis

from ..errors import JobNotFoundError, QueueFullError, QuotaExceededError
from ..jobs import Job, JobError, JobState, OutputInfo, StageTimings, utcnow

_JSON_FIELDS = ("options", "error", "timings", "result")
RECENT_LIMIT = 10_000

SWEEP_OWNER = "sweep:"  # lease owners that are an orphan sweep's claim, not a worker running the job

# Atomically: refuse when another live process holds the lease (an orphan sweep's claim is not one); otherwise take
# it and count the delivery. When the previous delivery never finished (state still ``running``) and was not
# re-queued as an orphan, it was interrupted — its process (ARGV[8]) is this one (alive: only an outage ends a
# delivery without an end), or it began under a Redis server (run id ARGV[7]; '' when INFO is refused) that has
# restarted since — or else its worker was lost. The record names the node (``worker``), the holder (``holder``) and
# the server; the job's entry in the unfinished index is refreshed.
_START_SCRIPT = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing'} end
if state == 'succeeded' or state == 'failed' then return {'finished', state} end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] and string.sub(owner, 1, string.len(ARGV[5])) ~= ARGV[5] then
  return {'leased', owner}
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local lost = tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
local interrupted = 0
if state == 'running' and redis.call('HGET', KEYS[1], 'orphan_pending') ~= '1' then
  local began_under = redis.call('HGET', KEYS[1], 'redis_run')
  local restarted = ARGV[7] ~= '' and began_under and began_under ~= '' and began_under ~= ARGV[7]
  local previous = redis.call('HGET', KEYS[1], 'holder')
  local same_process = previous and (previous == ARGV[2] or
    (ARGV[8] ~= '' and string.sub(previous, 1, string.len(ARGV[8]) + 1) == ARGV[8] .. ':'))
  if same_process or restarted then
    redis.call('HINCRBY', KEYS[1], 'interrupted', 1)
    redis.call('HINCRBY', KEYS[4], 'interrupted', 1)
    interrupted = 1
  else
    lost = lost + 1
    redis.call('HSET', KEYS[1], 'lost', lost)
  end
end
redis.call('HDEL', KEYS[1], 'orphan_pending')
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1], 'worker', ARGV[6], 'holder', ARGV[2],
           'redis_run', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[4], redis.call('HGET', KEYS[1], 'id'))
return {'started', attempts, lost, interrupted}
"""

# Whether lease owner ``owner`` is ``node`` or one of its slots (``<node>:<pid>:<token>:<thread>``): a node's lease
# keeper renews and hands back the leases of its pool processes.
_OWNED_BY_NODE = """
local function owned_by_node(owner, node)
  return owner == node or string.sub(owner, 1, string.len(node) + 1) == node .. ':'
end
"""

# A delivery that ended because Redis went away (its worker is alive): back to ``queued`` without counting a lost
# delivery, lease released. Only the node that was running it (ARGV[1]) may say so, and only while no other node
# holds it. Its message is still in the broker (unacknowledged), so the unfinished index keeps the time it last
# started.
_INTERRUPT_SCRIPT = _OWNED_BY_NODE + """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 0 end
local owner = redis.call('GET', KEYS[2])
if owner and not owned_by_node(owner, ARGV[1]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'queued')
redis.call('HINCRBY', KEYS[1], 'interrupted', 1)
redis.call('HINCRBY', KEYS[3], 'interrupted', 1)
return 1
"""

# An orphan — ``queued`` or ``running``, nobody's lease, unchanged since ARGV[3] — is claimed by exactly one sweeper:
# its claim is a lease of its own (so a second sweeper loses, and a sweeper that dies before re-publishing lets the
# claim lapse and the job be found again), the next start will not count a lost delivery, and it is counted.
_CLAIM_ORPHAN_SCRIPT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' and state ~= 'queued' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
local seen = redis.call('ZSCORE', KEYS[3], id)
if seen and tonumber(seen) > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'orphan_pending', '1')
redis.call('HINCRBY', KEYS[1], 'orphaned', 1)
redis.call('ZADD', KEYS[3], ARGV[4], id)
redis.call('HINCRBY', KEYS[4], 'orphans_requeued', 1)
return 1
"""

# Drops unfinished-index entries whose job has finished or whose record expired.
_PRUNE_UNFINISHED_SCRIPT = """
local removed = 0
for i = 2, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state ~= 'running' and state ~= 'queued' then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
"""

# A new job's record and its queue message, as one unit: both are written or neither (a record with no message would
# stay ``queued`` and never run, and the client that got an error would retry it as another job). Caps on waiting messages are
# checked first: ARGV[4] for KEYS[4] (the job's queue), ARGV[5] for the sum over KEYS[5..n-2] (every task queue); 0
# is no cap; then the per-token quota (KEYS[n-1], ``tokens:unfinished``; ARGV[10] the owner, ARGV[11] its cap). HSET
# is the first write: when Redis refuses writes (OOM under noeviction, read-only replica, min-replicas) it fails
# before anything is written, and a script that has written is never cut short by OOM.
# ARGV[6] = '0' keeps an existing record and pushes nothing: a record written here was queued with it. The last key
# is the owner's index (``JobStore.owner_key``), trimmed to the record TTL.
_CREATE_QUEUED_SCRIPT = """
local cap = tonumber(ARGV[4])
if cap > 0 then
  local waiting = redis.call('LLEN', KEYS[4])
  if waiting >= cap then return {'full', KEYS[4], waiting, cap} end
end
local total_cap = tonumber(ARGV[5])
if total_cap > 0 then
  local waiting = 0
  for i = 5, #KEYS - 2 do waiting = waiting + redis.call('LLEN', KEYS[i]) end
  if waiting >= total_cap then return {'full', 'global', waiting, total_cap} end
end
if ARGV[6] == '0' and redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', 0} end
-- per-token quota: KEYS[#KEYS - 1] counts each owner's unfinished jobs; ARGV[10] the owner ('' none), ARGV[11] its cap
local owner, owner_cap = ARGV[10], tonumber(ARGV[11])
local before = redis.call('HGET', KEYS[1], 'state')
local owner_counts = owner ~= '' and before ~= 'queued' and before ~= 'running'
if owner_counts and owner_cap > 0 then
  local unfinished = tonumber(redis.call('HGET', KEYS[#KEYS - 1], owner) or '0')
  if unfinished >= owner_cap then return {'full', 'token', unfinished, owner_cap} end
end
-- end of the per-token quota check
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
-- an overwritten record (a re-submitted id) keeps none of the old fields the new one lacks
local keep = {}
for i = 12, #ARGV, 2 do keep[ARGV[i]] = true end
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not keep[name] then redis.call('HDEL', KEYS[1], name) end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[9])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[2]) - 1)
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[9])
redis.call('ZADD', KEYS[#KEYS], ARGV[7], ARGV[9])
redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS], '-inf', tonumber(ARGV[8]) - tonumber(ARGV[1]))
redis.call('LPUSH', KEYS[4], ARGV[3])
if owner_counts then redis.call('HINCRBY', KEYS[#KEYS - 1], owner, 1) end  -- per-token quota
return {'queued', 1}
"""

# Atomically move a job to a final state, once: a second finish (a duplicate delivery) changes nothing. Every key is
# declared (Redis Cluster and cluster-mode proxies route a script by its declared keys): KEYS[1] the job, [2] the
# finished counts, [3] the unfinished index, [4] the final state's set, [5] the dead-letter set, and for a job of a
# batch [6] the batch hash and [7] its failed set; the last key is the per-token unfinished counts. A failure that
# ARGV[4] marks as dead-lettered enters the
# dead-letter set here, with the state change; a batch job counts towards its batch's totals here too, so none of
# them can disagree with the record.
_FINISH_SCRIPT = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'succeeded' or state == 'failed' then return 0 end
if ARGV[3] ~= '' and state ~= ARGV[3] then return 0 end
local batch = redis.call('HGET', KEYS[1], 'batch_id')
if batch and batch ~= '' and #KEYS < 8 then
  return redis.error_reply('job of batch ' .. batch .. ': its batch keys were not declared')
end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] == 'succeeded' then redis.call('HDEL', KEYS[1], 'error') end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[3], id)
local clock = redis.call('TIME')  -- to the microsecond: failures in one second keep their order
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[2]))
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[5], now, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[2]))  -- their records have expired
end
if batch and batch ~= '' then
  redis.call('HINCRBY', KEYS[6], ARGV[1], 1)
  if ARGV[1] == 'failed' then redis.call('ZADD', KEYS[7], now, id) end
end
-- per-token quota: the owner has one unfinished job less (never below 0: jobs from before the count began)
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and redis.call('HINCRBY', KEYS[#KEYS], owner, -1) <= 0 then
  redis.call('HDEL', KEYS[#KEYS], owner)
end
return 1
"""

# The per-token count recomputed (``JobStore.recount_unfinished``): KEYS[1] ``tokens:unfinished``, [2] the owner's
# index, [3] the unfinished index, [4] a scratch key, [5..] the records of ARGV[2..], the owner's unfinished ids as
# the caller read them (ARGV[1] is the owner). Those ids are checked to be still exactly the owner's unfinished ones
# (else -1: a job of the owner was created or finished meanwhile, the caller reads again), so the count set is exact:
# the ids whose record is ``queued`` or ``running`` (an expired or evicted record no longer counts).
_RECOUNT_UNFINISHED_SCRIPT = """
redis.call('ZINTERSTORE', KEYS[4], 2, KEYS[3], KEYS[2], 'WEIGHTS', 1, 0)
local same = redis.call('ZCARD', KEYS[4]) == #ARGV - 1
for i = 2, #ARGV do
  if not same then break end
  same = redis.call('ZSCORE', KEYS[4], ARGV[i]) ~= false
end
redis.call('DEL', KEYS[4])
if not same then return -1 end
local count = 0
for i = 5, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state == 'queued' or state == 'running' then count = count + 1 end
end
if count > 0 then redis.call('HSET', KEYS[1], ARGV[1], count) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return count
"""

# ARGV[1]: the owner, or the node whose lease keeper renews for all its processes.
_RENEW_SCRIPT = _OWNED_BY_NODE + """
local owner = redis.call('GET', KEYS[1])
if owner and owned_by_node(owner, ARGV[1]) then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_PROCESS_TOKEN: tuple[int, str] | None = None  # (pid, token): drawn again in a forked child


def lease_owner(node: str) -> str:
    """Who holds a lease taken here, on worker node ``node``: ``<node>:<pid>:<token>:<thread>``. The process part is
    fixed for the process's life (the random token tells a restarted process from a dead one that had the same pid);
    the thread tells apart the slots of a ``--pool threads`` worker. Two slots are two owners, so a redelivery
    reaching one while another runs the job finds it leased."""
    global _PROCESS_TOKEN
    pid = os.getpid()
    if _PROCESS_TOKEN is None or _PROCESS_TOKEN[0] != pid:
        _PROCESS_TOKEN = (pid, secrets.token_hex(4))
    return f"{node}:{pid}:{_PROCESS_TOKEN[1]}:{threading.get_native_id()}"


_LEASE_OWNER = re.compile(r"(?P<process>(?P<node>.+):\d+:[0-9a-f]+):\d+")


def node_of(owner: str) -> str:
    """The node of a ``lease_owner`` (any other owner names itself)."""
    match = _LEASE_OWNER.fullmatch(owner)
    return match["node"] if match else owner


def process_of(owner: str) -> str:
    """The process part of a ``lease_owner`` ('' for any other owner)."""
    match = _LEASE_OWNER.fullmatch(owner)
    return match["process"] if match else ""


@dataclass(frozen=True)
class StartOutcome:
    """What ``JobStore.start`` found: ``started``, ``finished`` (a duplicate delivery), ``leased`` or ``missing``.
    ``interrupted``: this start found the previous delivery ended by a Redis outage (counted as such, not lost)."""

    status: str
    attempts: int = 0
    lost: int = 0
    detail: str | None = None
    interrupted: bool = False


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str = "imgrestore:", ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl = ttl_seconds
        self._start = client.register_script(_START_SCRIPT)
        self._finish = client.register_script(_FINISH_SCRIPT)
        self._renew = client.register_script(_RENEW_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._interrupt = client.register_script(_INTERRUPT_SCRIPT)
        self._claim_orphan = client.register_script(_CLAIM_ORPHAN_SCRIPT)
        self._prune_unfinished = client.register_script(_PRUNE_UNFINISHED_SCRIPT)
        self._create_queued = client.register_script(_CREATE_QUEUED_SCRIPT)
        self._recount_unfinished = client.register_script(_RECOUNT_UNFINISHED_SCRIPT)
        self._run_id: str | None = None  # the server's, learned on first need after each (re)connection
        _on_each_connect(client, self._forget_server_run_id)

    @classmethod
    def from_url(cls, url: str, prefix: str = "imgrestore:", ttl_seconds: int = 7 * 24 * 3600) -> "JobStore":
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30, socket_timeout=30)
        return cls(client, prefix, ttl_seconds)

    # --- keys ---
    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def lease_key(self, job_id: str) -> str:
        return f"{self.prefix}lease:{job_id}"

    @property
    def recent_key(self) -> str:
        return f"{self.prefix}jobs:recent"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}dead"

    @property
    def stats_key(self) -> str:
        """Hash of jobs finished since Redis started, by final state (what ``imgrestore monitor`` rates)."""
        return f"{self.prefix}stats:finished"

    def finished_counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.redis.hgetall(self.stats_key).items()}

    @property
    def state_prefix(self) -> str:
        """``<prefix>jobs:state:<succeeded|failed>``: finished jobs by finish time (see ``ids_in_state``)."""
        return f"{self.prefix}jobs:state:"

    def owner_key(self, owner: str | None) -> str:
        """Jobs of API token ``owner`` by creation time; ``None``: the jobs created outside the API."""
        return f"{self.prefix}jobs:owner:{owner}" if owner is not None else f"{self.prefix}jobs:unowned"

    @property
    def unfinished_key(self) -> str:
        return f"{self.prefix}jobs:unfinished"

    def take_sweep_turn(self, sweeper: str, seconds: float) -> bool:
        """True for one caller per ``seconds`` across all processes: the sweep reads every queue, once is enough."""
        return bool(self.redis.set(f"{self.prefix}sweep:turn", sweeper, nx=True, px=max(1, int(seconds * 1000))))

    @property
    def recovery_key(self) -> str:
        """Hash: ``interrupted`` (deliveries ended by a Redis outage), ``orphans_requeued``."""
        return f"{self.prefix}stats:recovery"

    @property
    def owners_unfinished_key(self) -> str:
        """Hash: token name → its ``queued`` and ``running`` jobs (the per-token quota)."""
        return f"{self.prefix}tokens:unfinished"

    def unfinished_of(self, owner: str) -> int:
        """How many jobs of token ``owner`` are queued or running."""
        return int(self.redis.hget(self.owners_unfinished_key, owner) or 0)

    def recount_unfinished(self, owner: str, attempts: int = 3) -> int:
        """Recomputes token ``owner``'s count from its jobs' records and returns it. The count is kept by the job
        scripts, but a queued job whose record expires (the record TTL) or is evicted never finishes, and would
        hold a place in the quota for ever. O(the owner's jobs in its index), so run when the quota refuses
        (``recount_unfinished_if_due``), not per submission. Jobs re-queued after their creation left the owner's
        index (older than the record TTL) are not counted: the count errs low, never high."""
        scratch = f"{self.prefix}tmp:recount:{secrets.token_hex(8)}"
        for _ in range(attempts):
            with self.redis.pipeline() as pipe:  # MULTI: the scratch key never outlives its expiry
                pipe.zinterstore(scratch, {self.unfinished_key: 1, self.owner_key(owner): 0})
                pipe.expire(scratch, 60)
                pipe.zrange(scratch, 0, -1)
                pipe.delete(scratch)
                ids = pipe.execute()[2]
            count = int(self._recount_unfinished(
                keys=[self.owners_unfinished_key, self.owner_key(owner), self.unfinished_key, scratch,
                      *map(self.job_key, ids)],
                args=[owner, *ids]))
            if count >= 0:
                return count
        return self.unfinished_of(owner)  # the owner's jobs kept changing: the next refusal tries again

    def recount_unfinished_if_due(self, owner: str, interval: float) -> int | None:
        """``recount_unfinished`` at most once per ``interval`` seconds per token, across all API processes (a
        token at its quota retrying must not make each refusal a scan); None when not due (or ``interval`` 0)."""
        if interval <= 0:
            return None
        due = self.redis.set(f"{self.prefix}tokens:recounted:{owner}", "1", nx=True, px=max(1, int(interval * 1000)))
        return self.recount_unfinished(owner) if due else None

    def recovery_counts(self) -> dict[str, int]:
        counts = {"interrupted": 0, "orphans_requeued": 0}
        counts.update({k: int(v) for k, v in self.redis.hgetall(self.recovery_key).items()})
        return counts

    # --- records ---
    def create(self, job: Job, overwrite: bool = True, queue: str | None = None) -> bool:
        """Writes the record; with ``overwrite=False`` an existing record is kept. True when written. ``queue``: the
        queue its message is on (``create_queued`` records it too), so only that deployment's sweep re-queues it."""
        key = self.job_key(job.id)
        if not overwrite and self.redis.exists(key):
            return False
        with self.redis.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encode(job) | ({"queue": queue} if queue else {}))
            pipe.expire(key, self.ttl)
            pipe.zadd(self.recent_key, {job.id: job.created_at.timestamp()})
            pipe.zremrangebyrank(self.recent_key, 0, -RECENT_LIMIT - 1)
            if not job.state.finished:
                pipe.zadd(self.unfinished_key, {job.id: utcnow().timestamp()})
                if job.owner:  # per-token quota (a record written here has no earlier one: see overwrite)
                    pipe.hincrby(self.owners_unfinished_key, job.owner, 1)
            pipe.zadd(self.owner_key(job.owner), {job.id: job.created_at.timestamp()})
            pipe.zremrangebyscore(self.owner_key(job.owner), "-inf", utcnow().timestamp() - self.ttl)
            pipe.execute()
        return True

    def create_queued(self, job: Job, queue: str, message: str, all_queues: list[str], queue_cap: int = 0,
                      total_cap: int = 0, overwrite: bool = True, owner_cap: int = 0) -> bool:
        """Writes the record and pushes ``message`` (``celery_app.encode_message``) onto ``queue`` in one script:
        both or neither. Raises ``QueueFullError`` when ``queue`` holds ``queue_cap`` waiting messages or
        ``all_queues`` together ``total_cap`` (0: no cap), with nothing written. With ``overwrite=False`` an
        existing record is kept and nothing is pushed (it was queued with its message): False then. ``owner_cap``:
        the per-token quota of ``job.owner``'s unfinished jobs (``QuotaExceededError``; 0: none)."""
        keys, args = self._create_queued_call(job, queue, message, all_queues, queue_cap, total_cap, overwrite,
                                              owner_cap)
        return _queued_reply(self._create_queued(keys=keys, args=args), job.owner)

    def create_queued_many(self, entries: list[tuple[Job, str, str]], all_queues: list[str],
                           overwrite: bool = True) -> list[bool]:
        """``create_queued`` for each ``(job, queue, message)``, uncapped, in one round trip (a pipeline of the same
        script: each job is still all-or-nothing on its own). For batches, which check the caps and the per-token
        quota once up front; each job still counts towards its token's unfinished jobs."""
        if not entries:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job, queue, message in entries:
                keys, args = self._create_queued_call(job, queue, message, all_queues, 0, 0, overwrite, 0)
                self._create_queued(keys=keys, args=args, client=pipe)
            return [_queued_reply(reply, job.owner) for (job, _, _), reply in zip(entries, pipe.execute())]

    def _create_queued_call(self, job: Job, queue: str, message: str, all_queues: list[str], queue_cap: int,
                            total_cap: int, overwrite: bool, owner_cap: int) -> tuple[list[str], list[Any]]:
        fields: list[str] = ["queue", queue]  # whose sweep may re-queue it (``unheld_unfinished``)
        for name, value in _encode(job).items():
            fields += [name, value]
        keys = [self.job_key(job.id), self.recent_key, self.unfinished_key, queue, *all_queues,
                self.owners_unfinished_key, self.owner_key(job.owner)]
        args = [self.ttl, RECENT_LIMIT, message, queue_cap, total_cap, 1 if overwrite else 0,
                job.created_at.timestamp(), utcnow().timestamp(), job.id, job.owner or "", owner_cap, *fields]
        return keys, args

    def ids_in_state(self, state: JobState, start: int, stop: int) -> list[str]:
        """Ids of jobs in ``state``, newest first (ranks ``start``..``stop``): finished ones from their index (any
        job still within the record TTL), unfinished ones from the unfinished index (by last change). Entries may
        have moved on since (a re-queued job): callers check the records."""
        key = self.unfinished_key if not state.finished else self.state_prefix + state.value
        return list(self.redis.zrevrange(key, start, stop))

    def owner_pages(self, owner: str | None, state: JobState | None, page: int,
                    max_entries: int) -> Iterator[list[tuple[str, float]]]:
        """Pages of ``(id, score)`` of ``owner``'s jobs (``owner_key``), newest first, at most ``max_entries`` in
        all. Without ``state``: by creation time. With it: those also in that state's index (``ids_in_state``), by
        its time, intersected in Redis into a key of the request's own (dropped at the end, or expiring). Like
        ``ids_in_state``, entries may have moved on since: callers check the records."""
        if state is None:
            yield from self._pages(self.owner_key(owner), page, max_entries)
            return
        scratch = f"{self.prefix}tmp:listing:{secrets.token_hex(8)}"
        state_key = self.unfinished_key if not state.finished else self.state_prefix + state.value
        with self.redis.pipeline() as pipe:  # MULTI: the scratch key never outlives its expiry
            pipe.zinterstore(scratch, {state_key: 1, self.owner_key(owner): 0})
            pipe.expire(scratch, 60)
            pipe.execute()
        try:
            yield from self._pages(scratch, page, max_entries)
        finally:
            self.redis.delete(scratch)

    def _pages(self, key: str, page: int, max_entries: int) -> Iterator[list[tuple[str, float]]]:
        """``(id, score)`` pages of sorted set ``key``, highest score first, at most ``max_entries`` in all."""
        for start in range(0, max_entries, page):
            entries = self.redis.zrevrange(key, start, start + page - 1, withscores=True)
            yield entries
            if len(entries) < page:
                return

    def unfinished_since(self, job_ids: list[str]) -> dict[str, tuple[JobState, float]]:
        """State and since when (a Unix time: queued — created, retried, re-queued — or started) of each of
        ``job_ids`` that is ``queued`` or ``running``, from its record and the unfinished index, in one round trip.
        Finished, expired and unknown ids are left out."""
        if not job_ids:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.job_key(job_id), "state")
                pipe.zscore(self.unfinished_key, job_id)
            replies = pipe.execute()
        return {job_id: (JobState(state), float(since))
                for job_id, state, since in zip(job_ids, replies[0::2], replies[1::2])
                if state in (JobState.queued.value, JobState.running.value) and since is not None}

    def get(self, job_id: str) -> Job:
        raw = self.redis.hgetall(self.job_key(job_id))
        if not raw:
            raise JobNotFoundError(f"no job {job_id!r} (unknown id, or its record expired)")
        return _decode(raw)

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.job_key(job_id)))

    def recent(self, limit: int = 50) -> list[Job]:
        ids = self.redis.zrevrange(self.recent_key, 0, limit - 1)
        return [job for job in (self._get_or_none(i) for i in ids) if job is not None]

    def get_many(self, job_ids: list[str]) -> list[Job]:
        """The records of ``job_ids`` in one round trip, in that order; expired or unknown ids are left out."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.job_key(job_id))
            raws = pipe.execute()
        return [_decode(raw) for raw in raws if raw]

    def _get_or_none(self, job_id: str) -> Job | None:
        try:
            return self.get(job_id)
        except JobNotFoundError:
            return None

    # --- state transitions ---
    def start(self, job_id: str, holder: str, lease_ms: int) -> StartOutcome:
        """Takes the job's lease for ``holder`` (a ``lease_owner``) and marks the job running on its node."""
        now = utcnow()
        reply = self._start(
            keys=[self.job_key(job_id), self.lease_key(job_id), self.unfinished_key, self.recovery_key],
            args=[now.isoformat(), holder, lease_ms, now.timestamp(), SWEEP_OWNER, node_of(holder),
                  self.server_run_id(), process_of(holder)],
        )
        status = reply[0]
        if status == "started":
            return StartOutcome(status, attempts=int(reply[1]), lost=int(reply[2]), interrupted=reply[3] == 1)
        return StartOutcome(status, detail=reply[1] if len(reply) > 1 else None)

    def server_run_id(self) -> str:
        """The Redis server's run id, new at each start: a delivery that began under another one met a restart.
        '' when INFO is refused (a managed Redis's ACL): restarts are then not told apart.

        Asked once, then again only after a new connection is made (a restarted server, a failover and a dropped
        connection all reconnect first): one INFO per connection instead of one per job start."""
        known = self._run_id
        if known is not None:
            return known
        try:
            run_id = str(self.redis.info("server").get("run_id", ""))
        except redis.exceptions.ResponseError:
            run_id = ""
        self._run_id = run_id
        return run_id

    def _forget_server_run_id(self) -> None:
        self._run_id = None

    def renew_lease(self, job_id: str, owner: str, lease_ms: int) -> bool:
        """Extends the lease held by ``owner``, or by any process of node ``owner`` (the node's lease keeper)."""
        return bool(self._renew(keys=[self.lease_key(job_id)], args=[owner, lease_ms]))

    def release_lease(self, job_id: str, holder: str) -> None:
        self._release(keys=[self.lease_key(job_id)], args=[holder])

    def interrupt(self, job_id: str, worker: str) -> bool:
        """Node ``worker``'s delivery of the job ended because Redis went away: the job is ``queued`` again, its
        lease released, and the delivery is counted as ``interrupted``, not ``lost``. False when the job is not
        running on ``worker`` (finished, already re-queued, or taken by another node): nothing changes."""
        return bool(self._interrupt(keys=[self.job_key(job_id), self.lease_key(job_id), self.recovery_key],
                                    args=[worker]))

    def stale_ids(self, unchanged_since: float, limit: int) -> list[str]:
        """Ids in the unfinished index unchanged (not created, started or re-queued) since ``unchanged_since`` (a
        Unix time), oldest first, at most ``limit``: where the orphan sweep looks. Every one of them, not a first
        page: a backlog of waiting jobs older than an orphan must not hide it (their messages are in the queue, so
        none of them would ever be claimed and leave the page)."""
        return list(self.redis.zrangebyscore(self.unfinished_key, "-inf", unchanged_since, start=0, num=limit))

    def unheld_unfinished(self, job_ids: list[str], queues: Collection[str], chunk: int = 1000) -> list[str]:
        """Those of ``job_ids`` that are ``queued`` or ``running`` with no lease and were queued on one of ``queues``
        (or before records named their queue): nobody is running them — whether a message will bring them back is
        the broker's to say, and only for its own queues can a sweeper tell. Entries of finished or expired jobs
        leave the unfinished index."""
        unheld: list[str] = []
        for start in range(0, len(job_ids), chunk):
            ids = job_ids[start:start + chunk]
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.job_key(job_id), "state", "queue")
                    pipe.exists(self.lease_key(job_id))
                replies = pipe.execute()
            records, leased = replies[0::2], replies[1::2]
            alive = ("queued", "running")
            gone = [job_id for job_id, (state, _) in zip(ids, records) if state not in alive]
            if gone:
                self._prune_unfinished(keys=[self.unfinished_key, *map(self.job_key, gone)], args=gone)
            unheld += [job_id for job_id, (state, queue), held in zip(ids, records, leased)
                       if state in alive and not held and (queue is None or queue in queues)]
        return unheld

    def claim_orphan(self, job_id: str, claimer: str, unchanged_since: float, claim_ms: int) -> bool:
        """True for exactly one caller when the job is an orphan (``queued`` or ``running``, no lease, unchanged
        since ``unchanged_since``); the caller must then publish its message. The claim lapses after ``claim_ms``."""
        return bool(self._claim_orphan(
            keys=[self.job_key(job_id), self.lease_key(job_id), self.unfinished_key, self.recovery_key],
            args=[SWEEP_OWNER + claimer, claim_ms, unchanged_since, utcnow().timestamp()]))

    @property
    def batch_prefix(self) -> str:
        return f"{self.prefix}batch:"

    def batch_key(self, batch_id: str) -> str:
        """The batch's hash (``BatchStore`` owns the rest of its record; finishing a job counts into this)."""
        return self.batch_prefix + batch_id

    def batch_failed_key(self, batch_id: str) -> str:
        return self.batch_key(batch_id) + ":failed"

    def succeed(self, job_id: str, result: OutputInfo, timings: StageTimings, provider: str | None) -> bool:
        """Marks the job succeeded; False when it had already finished (nothing changed)."""
        return self._finish_once(job_id, JobState.succeeded, {"result": result, "timings": timings,
                                                              "provider": provider or ""})

    def fail(self, job_id: str, error: JobError, timings: StageTimings | None = None) -> bool:
        """Marks the job failed and enters it in the dead-letter set, in one script; False when it had already
        finished (nothing changed)."""
        fields: dict[str, Any] = {"error": error}
        if timings is not None:
            fields["timings"] = timings
        return self._finish_once(job_id, JobState.failed, fields, dead_letter=True)

    def _finish_once(self, job_id: str, state: JobState, fields: dict[str, Any],
                     only_from: JobState | None = None, dead_letter: bool = False) -> bool:
        batch_id = self.redis.hget(self.job_key(job_id), "batch_id")  # never changes once the job is created
        keys, args = self._finish_call(job_id, batch_id, state, fields, only_from, dead_letter)
        return bool(self._finish(keys=keys, args=args))

    def _finish_call(self, job_id: str, batch_id: str | None, state: JobState, fields: dict[str, Any],
                     only_from: JobState | None = None, dead_letter: bool = False) -> tuple[list[str], list[Any]]:
        """``_FINISH_SCRIPT``'s keys and arguments, in the order it reads them (one place for both callers)."""
        args: list[Any] = [state.value, self.ttl, only_from.value if only_from else "", "1" if dead_letter else "",
                           "state", state.value, "finished_at", utcnow().isoformat()]
        for name, value in fields.items():
            args += [name, _encode_value(value)]
        keys = [self.job_key(job_id), self.stats_key, self.unfinished_key, self.state_prefix + state.value,
                self.dead_key]
        if batch_id:
            keys += [self.batch_key(batch_id), self.batch_failed_key(batch_id)]
        keys.append(self.owners_unfinished_key)  # always last (per-token quota)
        return keys, args

    def cancel(self, job_id: str) -> bool:
        """Fails a job that no worker has started yet with ``cancelled``; False when it is running or finished."""
        self.get(job_id)  # unknown ids are an error, not a "no"
        error = JobError(type="cancelled", message="cancelled before it started")
        return self._finish_once(job_id, JobState.failed, {"error": error}, only_from=JobState.queued)

    def cancel_queued(self, job_ids: list[str], batch_id: str | None = None, chunk: int = 500) -> int:
        """``cancel`` for many jobs (of batch ``batch_id``, whose keys the finish script needs), pipelined: those
        still queued fail with ``cancelled``; running and finished ones are left alone. Returns how many."""
        error = JobError(type="cancelled", message="cancelled before it started (its batch was cancelled)")
        cancelled = 0
        for start in range(0, len(job_ids), chunk):
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids[start:start + chunk]:
                    keys, args = self._finish_call(job_id, batch_id, JobState.failed, {"error": error},
                                                   only_from=JobState.queued)
                    self._finish(keys=keys, args=args, client=pipe)
                cancelled += sum(int(reply) for reply in pipe.execute())
        return cancelled

    def schedule_retry(self, job_id: str, error: JobError) -> int:
        """Back to ``queued`` with the reason kept; returns the retry count."""
        key = self.job_key(job_id)
        with self.redis.pipeline() as pipe:
            pipe.hincrby(key, "retries", 1)
            pipe.hset(key, mapping={"state": JobState.queued.value, "error": error.model_dump_json()})
            pipe.zadd(self.unfinished_key, {job_id: utcnow().timestamp()})
            retries, _, _ = pipe.execute()
        return int(retries)

    def requeue(self, job_id: str) -> Job:
        """Resets a finished job to ``queued`` for another run (the ``retry`` command). Its budgets start again —
        transient-error retries and lost deliveries: a job re-queued once its cause is fixed gets a whole run —
        while the history counters (attempts, interrupted, orphaned) stay.

        A job of a batch leaves the batch's finished count, so the batch reads as running again.
        """
        job = self.get(job_id)
        with self.redis.pipeline() as pipe:
            pipe.hset(self.job_key(job_id), mapping={"state": JobState.queued.value, "lost": "0", "retries": "0"})
            pipe.hdel(self.job_key(job_id), "error", "finished_at", "result")
            pipe.zadd(self.unfinished_key, {job_id: utcnow().timestamp()})
            pipe.expire(self.job_key(job_id), self.ttl)
            pipe.zrem(self.dead_key, job_id)
            for final in (JobState.succeeded, JobState.failed):
                pipe.zrem(self.state_prefix + final.value, job_id)
            if job.batch_id and job.state.finished:
                pipe.hincrby(self.batch_key(job.batch_id), job.state.value, -1)
                pipe.zrem(self.batch_failed_key(job.batch_id), job_id)
                pipe.hdel(self.batch_key(job.batch_id), "finished_at")
            if job.owner and job.state.finished:  # per-token quota: unfinished again
                pipe.hincrby(self.owners_unfinished_key, job.owner, 1)
            pipe.execute()
        return job.model_copy(update={"state": JobState.queued, "error": None, "finished_at": None, "result": None,
                                      "lost": 0, "retries": 0})

    def dead_letters(self, limit: int = 100) -> list[str]:
        """Ids of failed jobs, newest first. Entries older than the record TTL are trimmed first: a dead letter is
        scored at its failure, when its record's TTL was last set, so their records have expired."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.dead_key, "-inf", utcnow().timestamp() - self.ttl)
            pipe.zrevrange(self.dead_key, 0, limit - 1)
            _, ids = pipe.execute()
        return list(ids)

    def forget_dead_letters(self, job_ids: list[str]) -> int:
        """Drops dead letters whose records are gone (nothing is left to re-queue); returns how many were listed."""
        return int(self.redis.zrem(self.dead_key, *job_ids)) if job_ids else 0


def _queued_reply(reply: list, owner: str | None) -> bool:
    """What ``_CREATE_QUEUED_SCRIPT`` answered: True when queued, False when kept; ``QueueFullError`` when full,
    ``QuotaExceededError`` when ``owner`` is at its quota."""
    if reply[0] == "full" and reply[1] == "token":
        unfinished, cap = int(reply[2]), int(reply[3])
        raise QuotaExceededError(
            f"token {owner!r} has {unfinished} jobs queued or running, at its quota of {cap} "
            "(IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN); retry once some have finished",
            scope="token", waiting=unfinished, cap=cap)
    if reply[0] == "full":
        scope, waiting, cap = reply[1], int(reply[2]), int(reply[3])
        what = "jobs queued in all queues" if scope == "global" else f"jobs queued in {scope}"
        setting = "IMGRESTORE_MAX_QUEUED_JOBS" if scope == "global" else "IMGRESTORE_MAX_QUEUED_JOBS_PER_QUEUE"
        raise QueueFullError(f"{waiting} {what}, at the cap of {cap} ({setting}); retry once workers have "
                             "drained some", scope=scope, waiting=waiting, cap=cap)
    return bool(int(reply[1]))


def _on_each_connect(client: redis.Redis, callback: Callable[[], None]) -> None:
    """Calls ``callback`` whenever ``client``'s pool opens or re-opens a connection (after the handshake)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # a stand-in without connections (tests of metric names)
        return
    handshake = pool.connection_kwargs.get("redis_connect_func")

    def connected(connection: Any) -> None:
        if handshake is not None:
            handshake(connection)
        else:
            connection.on_connect()
        callback()

    pool.connection_kwargs["redis_connect_func"] = connected
    for connection in [*pool._get_free_connections(), *pool._get_in_use_connections()]:
        connection.redis_connect_func = connected  # made before: their reconnections call back too


def _encode_value(value: Any) -> str:
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value"):  # enums
        return str(value.value)
    return "" if value is None else str(value)


def _encode(job: Job) -> dict[str, str]:
    """The record's fields: ``Job.compact_dump`` (defaults left out) plus ``state``, which the scripts read. Short
    values keep the hash in Redis's compact listpack encoding (values ≤ ``hash-max-listpack-value``, 64 bytes by
    default): a default output URL is usually longer, a hashtable costs ~1.3 KB more."""
    data = job.compact_dump()
    data["state"] = job.state.value
    return {name: json.dumps(value, separators=(",", ":")) if name in _JSON_FIELDS else str(value)
            for name, value in data.items() if value is not None}


def _decode(raw: dict[str, str]) -> Job:
    data: dict[str, Any] = {}
    for name, value in raw.items():
        if value == "":
            continue
        data[name] = json.loads(value) if name in _JSON_FIELDS else value
    return Job.model_validate(data)
