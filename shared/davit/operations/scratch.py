"""Everything Davit keeps in Redis, and the only module that reads or writes it (the clients are made in
``davit.operations.runtime`` and by ``connect`` here; Celery's broker is kombu's).

Scratch state of a running operation: which parts are outstanding, where each paginated list stands, what
each written part holds, and the operation's log lines until they go to the location. The CR's status
stays the source of truth for *where* an operation is; this is the bookkeeping that lets many small tasks
cooperate on one operation and lets a retried task resume instead of starting over.

* Every key of an operation is ``davit:op:<uid>:<name>``; each name is spelled once, below, as a constant
  or a method of the class of the operation kind that uses it (``BackupScratch``, ``RestoreScratch``,
  ``CloneScratch``, over the common ``OperationState``).
* Every key written gets a TTL of ``TTL_SECONDS`` (a week), refreshed by each write: a forgotten
  operation's state goes by itself.
* When an operation reaches Final, whatever its result, ``davit.operations.progress.set_stage`` (and the
  watcher, for the failures it writes) calls ``clear_at_final``: every key of the operation goes except
  its log, which the handler still stores in the location and then drops (``clear``). A log that never
  reached the location (the operation failed first) stays, under its TTL, for ``davit <kind> logs``.

Besides the operations: the retention deletion counters and the recorded metrics the exporter serves
(``RetentionDeletions``, ``RecordedMetrics``) and
what the watcher and the exporter read of kombu's queues (``QueueState``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, Final

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from davit import jsonbytes
from davit.constants import NODE_QUEUE_PREFIX, REDIS_KEY_PREFIX, Queue

__all__ = [
    "TRANSIENT_ERRORS",
    "TTL_SECONDS",
    "BackupScratch",
    "CloneScratch",
    "OperationState",
    "QueueState",
    "RecordedMetrics",
    "RedisError",
    "RestoreScratch",
    "RetentionDeletions",
    "connect",
    "operation_log_lines",
]

#: Redis failures a later try may not meet (the worker wrapper retries them): the server unreachable or slow,
#: or a watched key changed under a transaction.
TRANSIENT_ERRORS: tuple[type[RedisError], ...] = (RedisConnectionError, RedisTimeoutError, WatchError)

#: Every key Davit writes outlives a forgotten operation (or an idle counter) by a week at most.
TTL_SECONDS: Final = 7 * 24 * 3600
#: ``davit:op:<uid>:`` starts every key of one operation.
OPERATION_PREFIX: Final = f"{REDIS_KEY_PREFIX}op:"


def connect(url: str, *, timeout: float | None = None, connect_timeout: float | None = None) -> Any:
    """A client for ``url`` (with the password already joined in, see ``davit.settings``)."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=connect_timeout)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# --- operations ------------------------------------------------------------------------------------


class OperationState:
    """The keys every operation kind has: outstanding parts (in groups), page tokens, written parts, the
    log, the leases of parts being worked on. A kind's own keys are in its subclass."""

    #: Set once by the first planner, with what it planned (``BackupScratch.lay_out_export``).
    PLANNED: Final = "planned"
    #: The default group of outstanding parts (a set).
    PENDING: Final = "pending"
    #: Continue tokens of paginated parts (a hash, part → token).
    TOKENS: Final = "tokens"
    #: What each written part holds (a hash, part → JSON).
    PARTS: Final = "parts"
    #: Cluster-scoped objects the written parts need (a set of JSON refs).
    NEEDED: Final = "needed"
    #: The operation's log lines (a list of JSON lines) until they go to the location.
    LOG: Final = "log"
    #: A group's plan is kept at ``<group>:plan``.
    PLAN_SUFFIX: Final = ":plan"
    #: Written when the operation's state is laid out (JSON: the operation's uid and the stage it was laid
    #: out for), *before* the state it vouches for: a Redis that lost its data (flushed, restarted without
    #: persistence) loses it too, so "no parts outstanding" and "the state is gone" are told apart
    #: (``davit.operations.state_loss``). Written again only by a rebuild.
    LAYOUT: Final = "layout"
    #: Held by the task rebuilding a lost state, so that several tasks noticing the loss rebuild it once.
    REBUILD_LEASE: Final = "rebuild"

    def __init__(self, redis: Any, uid: str) -> None:
        self.redis = redis
        self.uid = uid
        self.prefix = f"{OPERATION_PREFIX}{uid}:"

    def key(self, name: str) -> str:
        return self.prefix + name

    def _touch(self, *names: str) -> None:
        pipe = self.redis.pipeline()
        for name in names:
            pipe.expire(self.key(name), TTL_SECONDS)
        pipe.execute()

    # Writes of one key, each with the TTL.

    def _set(self, name: str, value: str | int) -> None:
        self.redis.set(self.key(name), value, ex=TTL_SECONDS)

    def _get(self, name: str) -> str | None:
        raw = self.redis.get(self.key(name))
        return _text(raw) if raw is not None else None

    def _hset(self, name: str, mapping: dict[str, str]) -> None:
        if not mapping:
            return
        pipe = self.redis.pipeline()
        pipe.hset(self.key(name), mapping=mapping)
        pipe.expire(self.key(name), TTL_SECONDS)
        pipe.execute()

    def _hget(self, name: str, field: str) -> str | None:
        raw = self.redis.hget(self.key(name), field)
        return _text(raw) if raw is not None else None

    def _hgetall(self, name: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.key(name)).items()}

    def _hvals(self, name: str) -> list[str]:
        return [_text(v) for v in self.redis.hvals(self.key(name))]

    def _hincrby(self, name: str, field: str, amount: int) -> int:
        pipe = self.redis.pipeline()
        pipe.hincrby(self.key(name), field, amount)
        pipe.expire(self.key(name), TTL_SECONDS)
        value, _expired = pipe.execute()
        return int(value)

    # --- the layout marker --------------------------------------------------------------------------

    def lay_out(self, stage: str) -> None:
        """Mark the state as laid out for ``stage``: call it before writing the state it vouches for."""
        self._set(self.LAYOUT, json.dumps({"uid": self.uid, "stage": stage}))

    def laid_out(self) -> str | None:
        """The stage the state was laid out for; None when the marker is gone (the state was lost) or is
        not this operation's (whatever is in Redis is not trusted)."""
        raw = self._get(self.LAYOUT)
        try:
            marker = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(marker, dict) or marker.get("uid") != self.uid:
            return None
        stage = marker.get("stage")
        return stage if isinstance(stage, str) else None

    def take_rebuild(self, owner: str, seconds: float) -> bool:
        """Whether ``owner`` may rebuild the lost state: once per ``seconds`` (the lease is not released,
        so tasks noticing the same loss a moment later leave it to the first; it expires if that one died)."""
        return self.take_lease(self.REBUILD_LEASE, owner, seconds)

    # --- outstanding parts -------------------------------------------------------------------------

    def is_planned(self) -> bool:
        return bool(self.redis.exists(self.key(self.PLANNED)))

    # ``group`` names another set of outstanding parts (a volume's shards) finished the same way.

    def add_pending(
        self, parts: list[str], tokens: dict[str, str] | None = None, group: str = PENDING
    ) -> None:
        if not parts:
            return
        pipe = self.redis.pipeline()
        pipe.sadd(self.key(group), *parts)
        if tokens:
            pipe.hset(self.key(self.TOKENS), mapping=tokens)
        pipe.execute()
        self._touch(group, self.TOKENS)

    def pending(self, group: str = PENDING) -> list[str]:
        return sorted(_text(p) for p in self.redis.smembers(self.key(group)))

    def token(self, part: str) -> str | None:
        return self._hget(self.TOKENS, part) or None

    def is_pending(self, part: str, group: str = PENDING) -> bool:
        return bool(self.redis.sismember(self.key(group), part))

    def finish(self, part: str, group: str = PENDING) -> bool:
        """Mark ``part`` done; True for exactly one caller: the one that finished the last part."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.key(group), part)
        pipe.scard(self.key(group))
        removed, left = pipe.execute()
        return bool(removed) and left == 0

    def start_group(self, group: str, plan: str, parts: list[str]) -> bool:
        """Record ``plan`` and make ``parts`` outstanding in ``group``, both or neither, once: True for
        the caller that did it; a retry finds the plan (and the parts still outstanding) instead."""
        plan_key = self.key(group + self.PLAN_SUFFIX)
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
        return self._get(group + self.PLAN_SUFFIX) or None

    # --- results -----------------------------------------------------------------------------------

    def record_part(self, part: str, info: dict[str, Any], needed: list[str]) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.key(self.PARTS), part, json.dumps(info))
        if needed:
            pipe.sadd(self.key(self.NEEDED), *needed)
        pipe.execute()
        self._touch(self.PARTS, self.NEEDED)

    def parts(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self._hgetall(self.PARTS).items()}

    def needed(self) -> list[str]:
        return sorted(_text(n) for n in self.redis.smembers(self.key(self.NEEDED)))

    # --- log ---------------------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": time.time(), "event": event, **fields}, sort_keys=True, default=str)
        self.redis.rpush(self.key(self.LOG), line)
        self._touch(self.LOG)

    def log_lines(self) -> list[str]:
        return [_text(line) for line in self.redis.lrange(self.key(self.LOG), 0, -1)]

    # --- who works on a part now -------------------------------------------------------------------

    @staticmethod
    def lease_name(part: str) -> str:
        """The lease of a part (a volume's ``volume:<namespace>/<claim>``, or a shard's): the owner token
        of the one task working on it, under a TTL of seconds that its holder keeps renewing."""
        return f"lease:{part}"

    def take_lease(self, part: str, owner: str, seconds: float) -> bool:
        """Hold ``part`` for ``owner`` for ``seconds``, unless another owner holds it: True if taken."""
        key = self.key(self.lease_name(part))
        return bool(self.redis.set(key, owner, nx=True, px=max(1, int(seconds * 1000))))

    def renew_lease(self, part: str, owner: str, seconds: float) -> bool:
        """Give ``owner``'s lease ``seconds`` more; False if it no longer holds it (expired, taken)."""
        return self._if_lease_held(part, owner, seconds)

    def release_lease(self, part: str, owner: str) -> None:
        """Drop ``owner``'s lease (another owner's is left alone)."""
        self._if_lease_held(part, owner, None)

    def _if_lease_held(self, part: str, owner: str, seconds: float | None) -> bool:
        key = self.key(self.lease_name(part))
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None or _text(raw) != owner:
                    return False
                pipe.multi()
                if seconds is None:
                    pipe.delete(key)
                else:
                    pipe.pexpire(key, max(1, int(seconds * 1000)))
                pipe.execute()
                return True
            except WatchError:
                return False

    # --- the end -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The names (after the prefix) of every key the operation has now."""
        return sorted(_text(k)[len(self.prefix) :] for k in self._keys())

    def _keys(self) -> list[Any]:
        return list(self.redis.scan_iter(match=self.prefix + "*", count=1000))

    def clear(self) -> None:
        """Every key of the operation, its log included: once the log is in the location."""
        keys = self._keys()
        if keys:
            self.redis.delete(*keys)

    def clear_at_final(self) -> None:
        """The operation reached Final (whatever its result): every key but the log goes. The log stays
        (under its TTL) until the handler has stored it in the location and calls ``clear``; when the
        operation failed before that, it is where ``davit <kind> logs`` finds it."""
        log_key = self.key(self.LOG)
        keys = [k for k in self._keys() if _text(k) != log_key]
        if keys:
            self.redis.delete(*keys)


class BackupScratch(OperationState):
    """An ApplicationBackup: its volume plans and results (the snapshot service and the node agents), a
    large volume's shards (the node agent), the resource lists (the resource writer)."""

    #: Each volume's plan, ``<namespace>/<claim>`` → JSON of ``davit.volumes.claims.VolumePlan``.
    VOLUME_PLANS: Final = "volumes"
    #: Present while the snapshot task holds background exec actions until every volume is read.
    HOLD: Final = "hold"
    #: What a node agent (or the CSI snapshot) stored for each volume, for the manifest.
    VOLUME_RESULTS: Final = "volume-results"
    #: The list targets of the Applications stage, target part → JSON.
    LIST_TARGETS: Final = "targets"
    #: The namespaces the backup covers, as planned (JSON list).
    NAMESPACES: Final = "namespaces"
    #: Running totals (a hash; ``resources``: objects written so far).
    COUNTERS: Final = "counters"
    #: The group of outstanding volume parts (``volume:<namespace>/<claim>``), apart from the default
    #: group the Applications stage uses for its list pages: a volume part handed out again late (a stall
    #: re-send racing the last volume's finish) can then neither hold up Applications nor be sent to the
    #: resource writer.
    VOLUMES_PENDING: Final = "volumes-pending"
    #: Present for a moment after the export's progress write (``record_page``).
    PROGRESS_MARK: Final = "progress-written"

    # --- volumes -----------------------------------------------------------------------------------

    def save_volume_plans(self, plans: dict[str, dict[str, Any]]) -> None:
        self._hset(self.VOLUME_PLANS, {part: json.dumps(plan) for part, plan in plans.items()})

    def volume_plan(self, part: str) -> dict[str, Any] | None:
        raw = self._hget(self.VOLUME_PLANS, part)
        return dict(json.loads(raw)) if raw else None

    def hold_volumes(self) -> None:
        """The snapshot task holds background exec actions: it, not the last node agent, advances."""
        self._set(self.HOLD, "1")

    def volumes_held(self) -> bool:
        return bool(self._get(self.HOLD))

    def record_volume_result(self, claim_part: str, result: dict[str, Any]) -> None:
        self._hset(self.VOLUME_RESULTS, {claim_part: json.dumps(result)})

    def volume_results(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self._hgetall(self.VOLUME_RESULTS).items()}

    # --- a volume's shards -------------------------------------------------------------------------

    @staticmethod
    def shard_group(claim_part: str) -> str:
        """The group of a volume's outstanding shards; its plan (the shard bounds) is the group's plan."""
        return f"shards:{claim_part}"

    def record_shard_progress(self, claim_part: str, shard: int, done: int) -> int:
        """Record a shard's bytes done; the volume's bytes done over all its shards."""
        name = self.shard_group(claim_part) + ":progress"
        pipe = self.redis.pipeline()
        pipe.hset(self.key(name), str(shard), done)
        pipe.expire(self.key(name), TTL_SECONDS)
        pipe.hvals(self.key(name))
        _set, _expired, values = pipe.execute()
        return sum(int(v) for v in values)

    def record_shard_outcome(self, claim_part: str, shard: int, outcome: dict[str, Any]) -> None:
        self._hset(self.shard_group(claim_part) + ":results", {str(shard): json.dumps(outcome)})

    def shard_outcomes(self, claim_part: str) -> list[tuple[int, dict[str, Any]]]:
        """Each finished shard's outcome, by shard number."""
        raw = self._hgetall(self.shard_group(claim_part) + ":results")
        return sorted(((int(k), json.loads(v)) for k, v in raw.items()), key=lambda item: item[0])

    # --- resource lists ----------------------------------------------------------------------------

    def lay_out_export(
        self, targets: dict[str, dict[str, Any]], namespaces: list[str], parts: list[str]
    ) -> bool:
        """The Applications stage's plan (its list targets, namespaces and first parts outstanding) and the
        marker that it is made: all or nothing, once. True for the caller that wrote it; a retry, or a
        task that lost the race, finds it instead. A task that dies (or loses Redis) half-way leaves
        nothing, and the next one plans again: a marker written before the plan would, once the plan was
        lost with its task, leave a stage with nothing outstanding and nothing ever sent."""
        planned = self.key(self.PLANNED)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(planned)
                if pipe.exists(planned):
                    return False
                pipe.multi()
                pipe.set(planned, "1", ex=TTL_SECONDS)
                # An empty plan still leaves the key, so the plan's presence does not depend on its size.
                pipe.hset(self.key(self.LIST_TARGETS),
                          mapping={p: json.dumps(t) for p, t in targets.items()} or {"": ""})  # fmt: skip
                pipe.expire(self.key(self.LIST_TARGETS), TTL_SECONDS)
                pipe.set(self.key(self.NAMESPACES), json.dumps(namespaces), ex=TTL_SECONDS)
                if parts:
                    pipe.sadd(self.key(self.PENDING), *parts)
                    pipe.expire(self.key(self.PENDING), TTL_SECONDS)
                pipe.execute()
                return True
            except WatchError:
                return False

    def save_list_targets(self, targets: dict[str, dict[str, Any]]) -> None:
        self._hset(self.LIST_TARGETS, {p: json.dumps(t) for p, t in targets.items()} or {"": ""})

    def list_target(self, part: str) -> dict[str, Any] | None:
        raw = self._hget(self.LIST_TARGETS, part)
        return None if raw is None else dict(json.loads(raw))

    def save_namespaces(self, namespaces: list[str]) -> None:
        self._set(self.NAMESPACES, json.dumps(namespaces))

    def namespaces(self) -> list[Any]:
        """The planned namespaces as stored (not trusted: the caller checks each)."""
        return list(json.loads(self._get(self.NAMESPACES) or "[]"))

    def record_page(
        self, part: str, info: dict[str, Any], needed: list[str], progress_seconds: float
    ) -> tuple[int, bool]:
        """A written page, in one round trip: its record (as ``record_part``), ``info``'s count added to
        the objects written so far, and the mark that a progress write is due at most once per
        ``progress_seconds`` for this backup, whichever worker asks (always, with 0). The new total and
        whether the progress write is due."""
        pipe = self.redis.pipeline()
        pipe.hset(self.key(self.PARTS), part, jsonbytes.dumps_compact(info))
        if needed:
            pipe.sadd(self.key(self.NEEDED), *needed)
        pipe.hincrby(self.key(self.COUNTERS), "resources", int(info["count"]))
        for name in (self.PARTS, self.NEEDED, self.COUNTERS):
            pipe.expire(self.key(name), TTL_SECONDS)
        if progress_seconds > 0:
            mark_ms = max(1, int(progress_seconds * 1000))
            pipe.set(self.key(self.PROGRESS_MARK), 1, nx=True, px=mark_ms)
        replies = pipe.execute()
        total = int(replies[2 if needed else 1])
        return total, progress_seconds <= 0 or bool(replies[-1])


class RestoreScratch(OperationState):
    """An ApplicationRestore: its objects in steps of chunks, their outcomes, owner links, and the
    volumes the node agents write."""

    #: The chunk count of each step (JSON list).
    STEPS: Final = "restore:steps"
    #: The step being applied.
    CURRENT_STEP: Final = "restore:current"
    #: Each applied chunk's counts, chunk part → JSON ``{"<kind>|<outcome>": n}``.
    COUNTS: Final = "restore:counts"
    #: Each chunk's failure reasons, chunk part → JSON list.
    FAILURES: Final = "restore:failures"
    #: The owner references to link once every step is applied (JSON list).
    OWNERS: Final = "restore:owners"
    #: The group of outstanding volumes (parts ``volume:<namespace>/<claim>``).
    VOLUME_GROUP: Final = "volumes"
    #: Each volume's tree and, once known, its target, ``<namespace>/<claim>`` → JSON.
    VOLUME_TARGETS: Final = "restore:volumes"
    #: The namespaces the restore writes to, where its hooks look for pods (JSON list).
    HOOK_NAMESPACES: Final = "restore:hook-namespaces"
    #: What transforming the objects created by reference needs besides their part of the backup and
    #: their chunk's scope (the spec's mappings, the provenance, the modifiers' rules; JSON).
    PLAN_CONTEXT: Final = "restore:plan-context"

    @staticmethod
    def step_group(step: int) -> str:
        return f"step:{step}"

    @staticmethod
    def chunk_name(step: int, chunk: int) -> str:
        return f"restore:objects:{step}:{chunk}"

    # --- steps -------------------------------------------------------------------------------------

    def save_steps(self, steps: list[list[Any]]) -> None:
        """Every step's chunks (each a list of items, or a reference to a part of the backup) and the
        layout, in one round trip."""
        pipe = self.redis.pipeline()
        layout = []
        for index, chunks in enumerate(steps):
            layout.append(len(chunks))
            for number, body in enumerate(chunks):
                pipe.set(self.key(self.chunk_name(index, number)), json.dumps(body), ex=TTL_SECONDS)
        pipe.set(self.key(self.STEPS), json.dumps(layout), ex=TTL_SECONDS)
        pipe.execute()

    def step_layout(self) -> list[int]:
        raw = self._get(self.STEPS)
        return list(json.loads(raw)) if raw else []

    def chunk(self, step: int, chunk: int) -> Any:
        """A chunk as saved (a list of items, or a reference; not trusted: the caller checks it);
        an empty list when lost."""
        raw = self._get(self.chunk_name(step, chunk))
        return json.loads(raw) if raw else []

    def save_plan_context(self, context: dict[str, Any]) -> None:
        self._set(self.PLAN_CONTEXT, json.dumps(context))

    def plan_context(self) -> dict[str, Any] | None:
        raw = self._get(self.PLAN_CONTEXT)
        found = json.loads(raw) if raw else None
        return found if isinstance(found, dict) else None

    def set_current_step(self, step: int) -> None:
        self._set(self.CURRENT_STEP, step)

    def current_step(self) -> int | None:
        raw = self._get(self.CURRENT_STEP)
        return None if raw is None else int(raw)

    # --- outcomes ----------------------------------------------------------------------------------

    def record_chunk(self, part: str, tally: dict[str, int], failures: list[str]) -> None:
        """A chunk's counts (replacing a retried chunk's) and, when any, its failure reasons."""
        self._hset(self.COUNTS, {part: json.dumps(tally)})
        if failures:
            self._hset(self.FAILURES, {part: json.dumps(failures)})

    def chunk_counts(self) -> list[dict[str, int]]:
        return [dict(json.loads(raw)) for raw in self._hvals(self.COUNTS)]

    def failure_reasons(self) -> list[str]:
        return [reason for raw in self._hvals(self.FAILURES) for reason in json.loads(raw)]

    def save_owners(self, owners: list[dict[str, Any]]) -> None:
        self._set(self.OWNERS, json.dumps(owners))

    def save_hook_namespaces(self, namespaces: list[str]) -> None:
        self._set(self.HOOK_NAMESPACES, json.dumps(namespaces))

    def hook_namespaces(self) -> list[Any] | None:
        """The namespaces as stored (not trusted: the caller checks each); None when lost."""
        raw = self._get(self.HOOK_NAMESPACES)
        return list(json.loads(raw)) if raw else None

    def owners(self) -> list[dict[str, Any]]:
        raw = self._get(self.OWNERS)
        return list(json.loads(raw)) if raw else []

    # --- volumes -----------------------------------------------------------------------------------

    def save_volume_targets(self, targets: dict[str, dict[str, Any]]) -> None:
        self._hset(self.VOLUME_TARGETS, {claim: json.dumps(t) for claim, t in targets.items()})

    def volume_target(self, claim_part: str) -> dict[str, Any]:
        """The volume's target as recorded ({} when none: not trusted, the caller checks it)."""
        return dict(json.loads(self._hget(self.VOLUME_TARGETS, claim_part) or "{}"))

    def set_volume_target(self, claim_part: str, target: dict[str, Any]) -> None:
        self.save_volume_targets({claim_part: target})

    def drop_volume_target(self, claim_part: str) -> None:
        self.redis.hdel(self.key(self.VOLUME_TARGETS), claim_part)

    def has_volume_targets(self) -> bool:
        return bool(self.redis.hlen(self.key(self.VOLUME_TARGETS)))


class CloneScratch(OperationState):
    """An ApplicationClone: the common keys only (its log, for ``davit clone logs``)."""


def operation_log_lines(redis_url: str, uid: str) -> list[str]:
    """The log lines the services keep for the operation ``uid`` while it runs (a short-lived client)."""
    client = connect(redis_url, timeout=10, connect_timeout=5)
    try:
        return OperationState(client, uid).log_lines()
    finally:
        client.close()


# --- not of one operation --------------------------------------------------------------------------


class RetentionDeletions:
    """Backups retention deleted, by namespace and reason, for the exporter's
    ``davit_retention_deletions_total`` (workers have no ``/metrics`` of their own). The hash's TTL is
    renewed by every deletion: it goes after a week without any, which the counter reads as a reset."""

    KEY: Final = f"{REDIS_KEY_PREFIX}metrics:retention-deletions"

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def record(self, namespace: str, reason: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hincrby(self.KEY, f"{namespace}|{reason}", 1)
        pipe.expire(self.KEY, TTL_SECONDS)
        pipe.execute()

    def counts(self) -> dict[tuple[str, str], int]:
        """(namespace, reason) → deletions so far."""
        found: dict[tuple[str, str], int] = {}
        for field, value in self.redis.hgetall(self.KEY).items():
            namespace, _sep, reason = _text(field).partition("|")
            found[(namespace, reason)] = int(value)
        return found


class RecordedMetrics:
    """The metrics recorded as things happen (``davit.metrics``): one hash of counters, histogram parts
    and largest-value gauges, and the uids of the operations already counted (a sorted set by the time
    they finished), which makes counting an operation idempotent whoever does it and however often.

    Both keys' TTLs are renewed by every write: they go after a week with nothing recorded, which
    Prometheus reads as a counter reset."""

    KEY: Final = f"{REDIS_KEY_PREFIX}metrics:recorded"
    COUNTED_KEY: Final = f"{REDIS_KEY_PREFIX}metrics:counted-operations"
    #: An operation's uid is remembered this long after it finished; the exporter counts only operations
    #: that finished more recently than ``CATCH_UP_SECONDS``, well inside it, so none is counted twice.
    COUNTED_SECONDS: Final = TTL_SECONDS
    CATCH_UP_SECONDS: Final = TTL_SECONDS - 24 * 3600
    #: A transaction that lost a race to a concurrent writer is tried again this many times.
    ATTEMPTS: Final = 20

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def _queue(self, pipe: Any, adds: dict[str, float], maxima: dict[str, float]) -> None:
        for name, amount in adds.items():
            pipe.hincrbyfloat(self.KEY, name, amount)
        if maxima:
            pipe.hset(self.KEY, mapping=maxima)
        pipe.expire(self.KEY, TTL_SECONDS)

    def add(self, adds: dict[str, float]) -> None:
        """Add ``adds`` (field → amount) in one round trip."""
        if not adds:
            return
        pipe = self.redis.pipeline()
        self._queue(pipe, adds, {})
        pipe.execute()

    def record_once(
        self, uid: str, finished: float, adds: dict[str, float], maxima: dict[str, float]
    ) -> bool:
        """Count operation ``uid`` (finished at Unix time ``finished``) unless it was counted before:
        add ``adds`` and raise each ``maxima`` field to at least its value, all in one transaction with
        the note that ``uid`` is counted. True when it was counted now."""
        watched = [self.COUNTED_KEY, self.KEY] if maxima else [self.COUNTED_KEY]
        with self.redis.pipeline() as pipe:
            for _attempt in range(self.ATTEMPTS):
                try:
                    pipe.watch(*watched)
                    if pipe.zscore(self.COUNTED_KEY, uid) is not None:
                        pipe.unwatch()
                        return False
                    raised: dict[str, float] = {}
                    for name, value in maxima.items():
                        current = pipe.hget(self.KEY, name)
                        if current is None or _number(current) < value:
                            raised[name] = value
                    pipe.multi()
                    pipe.zadd(self.COUNTED_KEY, {uid: finished})
                    pipe.zremrangebyscore(self.COUNTED_KEY, "-inf", time.time() - self.COUNTED_SECONDS)
                    pipe.expire(self.COUNTED_KEY, TTL_SECONDS)
                    self._queue(pipe, adds, raised)
                    pipe.execute()
                    return True
                except WatchError:
                    continue
        raise WatchError(f"metrics of operation {uid} not recorded: {self.ATTEMPTS} concurrent writes")

    def counted(self, uids: list[str]) -> set[str]:
        """Those of ``uids`` already counted."""
        pipe = self.redis.pipeline(transaction=False)
        for uid in uids:
            pipe.zscore(self.COUNTED_KEY, uid)
        return {uid for uid, score in zip(uids, pipe.execute(), strict=True) if score is not None}

    def read(self) -> dict[Any, Any]:
        return dict(self.redis.hgetall(self.KEY))


def _number(raw: bytes | str) -> float:
    try:
        return float(_text(raw))
    except ValueError:  # not a number: whatever is recorded now replaces it
        return float("-inf")


#: Where kombu's Redis transport keeps messages delivered but not yet acknowledged.
UNACKED_HASH: Final = "unacked"


def _task_id(raw: bytes | str) -> str | None:
    try:
        envelope = json.loads(raw)
    except ValueError:
        return None
    if isinstance(envelope, list):  # the unacked hash stores [message, exchange, routing_key]
        envelope = envelope[0] if envelope else {}
    headers: Any = envelope.get("headers") if isinstance(envelope, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


class QueueState:
    """What kombu keeps in Redis for the Celery queues, read only: the watcher's resync and the
    exporter's queue lengths. The keys are kombu's (a list per queue, the ``unacked`` hash), never
    written here."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def in_flight_task_ids(self, queues: Iterable[str]) -> set[str]:
        """Task ids waiting in ``queues`` or delivered and not yet acknowledged (any queue)."""
        ids: set[str] = set()
        for queue in queues:
            for raw in self.redis.lrange(queue, 0, -1):
                task_id = _task_id(raw)
                if task_id:
                    ids.add(task_id)
        for raw in self.redis.hvals(UNACKED_HASH):
            task_id = _task_id(raw)
            if task_id:
                ids.add(task_id)
        return ids

    def lengths(self) -> dict[str, int]:
        """LLEN of every Davit queue key: the fixed queues always (0 when absent), node queues that
        exist; a key that is not a list is left out."""
        keys: list[str] = [queue.value for queue in Queue]
        for raw in self.redis.scan_iter(match=f"{NODE_QUEUE_PREFIX}*", count=1000):
            key = _text(raw)
            if key not in keys:
                keys.append(key)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        lengths: dict[str, int] = {}
        for key, result in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(result, Exception):  # not a list: not a queue
                continue
            lengths[key] = int(result)
        return lengths
