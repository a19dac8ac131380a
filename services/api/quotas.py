"""Per-token submission rate: at most ``IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN`` job and batch submissions a
minute per token, in fixed one-minute windows (Redis time is not needed: every API replica counts into one key per
window, and a window's key expires after two minutes).

Keys (under ``settings.key_prefix``), written only here: ``rate:<token name>:<minute>`` counters. The other per-token
quota, unfinished jobs, is counted with the job records (``JobStore.owners_unfinished_key``).
"""

from __future__ import annotations

import time

from redis import Redis

from ..errors import QuotaExceededError

WINDOW_SECONDS = 60


class SubmissionRate:
    def __init__(self, client: Redis, prefix: str, per_minute: int) -> None:
        self.redis = client
        self.prefix = prefix
        self.per_minute = per_minute

    def take(self, owner: str) -> None:
        """Counts one submission of token ``owner``; raises ``QuotaExceededError`` (429, with the seconds until
        the window ends as Retry-After) once the window already holds ``per_minute`` of them."""
        if not self.per_minute:
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"{self.prefix}rate:{owner}:{window}"
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            count, _ = pipe.execute()
        if int(count) > self.per_minute:
            retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
            raise QuotaExceededError(
                f"token {owner!r} made {self.per_minute} submissions this minute, its quota "
                f"(IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN); retry in {retry_after} s",
                scope="token_rate", waiting=int(count) - 1, cap=self.per_minute, retry_after=retry_after)
