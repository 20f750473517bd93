"""Scratch state of a running operation in Redis: which parts are outstanding, where each paginated list
stands, what each written part holds, and the operation's log lines until they go to the location.

The CR's status stays the source of truth for *where* an operation is; this is the bookkeeping that lets
many small tasks cooperate on one operation and lets a retried task resume instead of starting over.
Every key is ``davit:op:<uid>:…`` and is deleted when the operation ends.
"""

from __future__ import annotations

import json
import time
from typing import Any

from davit.constants import REDIS_KEY_PREFIX

#: Scratch state outlives a forgotten operation by a week at most.
TTL_SECONDS = 7 * 24 * 3600


class OperationState:
    def __init__(self, redis: Any, uid: str) -> None:
        self.redis = redis
        self.uid = uid
        self.prefix = f"{REDIS_KEY_PREFIX}op:{uid}:"

    def key(self, name: str) -> str:
        return self.prefix + name

    def _touch(self, *names: str) -> None:
        pipe = self.redis.pipeline()
        for name in names:
            pipe.expire(self.key(name), TTL_SECONDS)
        pipe.execute()

    # --- outstanding parts -------------------------------------------------------------------------

    def mark_planned(self) -> bool:
        """True for the first caller only: the plan is made once, a retry resumes it."""
        return bool(self.redis.set(self.key("planned"), "1", nx=True, ex=TTL_SECONDS))

    def add_pending(self, parts: list[str], tokens: dict[str, str] | None = None) -> None:
        if not parts:
            return
        pipe = self.redis.pipeline()
        pipe.sadd(self.key("pending"), *parts)
        if tokens:
            pipe.hset(self.key("tokens"), mapping=tokens)
        pipe.execute()
        self._touch("pending", "tokens")

    def pending(self) -> list[str]:
        return sorted(p.decode() for p in self.redis.smembers(self.key("pending")))

    def token(self, part: str) -> str | None:
        raw = self.redis.hget(self.key("tokens"), part)
        return raw.decode() if raw else None

    def is_pending(self, part: str) -> bool:
        return bool(self.redis.sismember(self.key("pending"), part))

    def finish(self, part: str) -> bool:
        """Mark ``part`` done; True for exactly one caller: the one that finished the last part."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.key("pending"), part)
        pipe.scard(self.key("pending"))
        removed, left = pipe.execute()
        return bool(removed) and left == 0

    # --- results -----------------------------------------------------------------------------------

    def record_part(self, part: str, info: dict[str, Any], needed: list[str]) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.key("parts"), part, json.dumps(info))
        if needed:
            pipe.sadd(self.key("needed"), *needed)
        pipe.execute()
        self._touch("parts", "needed")

    def parts(self) -> dict[str, dict[str, Any]]:
        return {k.decode(): json.loads(v) for k, v in self.redis.hgetall(self.key("parts")).items()}

    def needed(self) -> list[str]:
        return sorted(n.decode() for n in self.redis.smembers(self.key("needed")))

    # --- log ---------------------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": time.time(), "event": event, **fields}, sort_keys=True, default=str)
        self.redis.rpush(self.key("log"), line)
        self._touch("log")

    def log_lines(self) -> list[str]:
        return [line.decode() for line in self.redis.lrange(self.key("log"), 0, -1)]

    def clear(self) -> None:
        names = [k for k in self.redis.scan_iter(match=self.prefix + "*")]
        if names:
            self.redis.delete(*names)
