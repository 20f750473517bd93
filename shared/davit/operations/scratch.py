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

from redis.exceptions import WatchError

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

    # ``group`` names another set of outstanding parts (a volume's shards) finished the same way.

    def add_pending(
        self, parts: list[str], tokens: dict[str, str] | None = None, group: str = "pending"
    ) -> None:
        if not parts:
            return
        pipe = self.redis.pipeline()
        pipe.sadd(self.key(group), *parts)
        if tokens:
            pipe.hset(self.key("tokens"), mapping=tokens)
        pipe.execute()
        self._touch(group, "tokens")

    def pending(self, group: str = "pending") -> list[str]:
        return sorted(p.decode() for p in self.redis.smembers(self.key(group)))

    def token(self, part: str) -> str | None:
        raw = self.redis.hget(self.key("tokens"), part)
        return raw.decode() if raw else None

    def is_pending(self, part: str, group: str = "pending") -> bool:
        return bool(self.redis.sismember(self.key(group), part))

    def finish(self, part: str, group: str = "pending") -> bool:
        """Mark ``part`` done; True for exactly one caller: the one that finished the last part."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.key(group), part)
        pipe.scard(self.key(group))
        removed, left = pipe.execute()
        return bool(removed) and left == 0

    def start_group(self, group: str, plan: str, parts: list[str]) -> bool:
        """Record ``plan`` and make ``parts`` outstanding in ``group``, both or neither, once: True for
        the caller that did it; a retry finds the plan (and the parts still outstanding) instead."""
        plan_key = self.key(group + ":plan")
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(plan_key)
                if pipe.exists(plan_key):
                    return False
                pipe.multi()
                pipe.set(plan_key, plan, ex=TTL_SECONDS)
                pipe.sadd(self.key(group), *parts)
                pipe.expire(self.key(group), TTL_SECONDS)
                pipe.execute()
                return True
            except WatchError:
                return False

    def group_plan(self, group: str) -> str | None:
        raw = self.redis.get(self.key(group + ":plan"))
        return raw.decode() if raw else None

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
