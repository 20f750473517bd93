"""Chaos cases of Redis: restarted with its append-only file, and flushed, at stage boundaries of a backup
and of a restore (through the stack's helpers ``Stack.restart_redis`` and ``Stack.flush_redis``).

A restarted Redis keeps the operations' scratch state: each operation completes Successful and its
restore is identical. A flushed one loses it: an operation either rebuilds it and completes Successful
(then verified byte for byte like any other) or fails with reason ``StateLost`` and stores no manifest,
never Successful with missing parts, never stuck; a backup that failed so is taken again, without fault,
and that one is restored and verified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devstack.stack import Stack
from tests.chaos.bed import ADMIN, Bed, CaseFailed, Point, stored, unique
from tests.chaos.cases import Result, case, cleanup, count_stored, expect_successful, round_trip, source

STATE_LOST = "StateLost"


def restart(bed: Bed) -> None:
    pid = bed.stack.restart_redis()
    bed.say(f"    Redis restarted (pid {pid}), its append-only file reloaded")


def flush(bed: Bed) -> None:
    bed.stack.flush_redis()
    bed.say("    Redis flushed (FLUSHALL)")


def _at(name: str, reached: Callable[[Any], bool]) -> Point:
    return Point(name, reached)


if hasattr(Stack, "restart_redis") and hasattr(Stack, "flush_redis"):

    @case(
        "redis-restart",
        "Redis stopped and started again (append-only file) as a backup enters Volumes and Applications "
        "and as its restore enters Applications and Volumes: both complete, identical",
    )
    def redis_restart(bed: Bed, result: Result) -> None:
        backup = [
            (_at("Redis restarted @ backup Volumes", lambda v: v.stage == "Volumes"), restart),
            (_at("Redis restarted @ backup Applications", lambda v: v.stage == "Applications"), restart),
        ]
        restore = [
            (_at("Redis restarted @ restore Applications", lambda v: v.stage == "Applications"), restart),
            (_at("Redis restarted @ restore Volumes", lambda v: v.stage == "Volumes"), restart),
        ]
        round_trip(bed, result, faults=(list(backup), list(restore)))

    @case(
        "redis-flush",
        "Redis flushed as a backup enters Applications and as a restore enters Volumes: each ends "
        "Successful and identical, or Failed StateLost with no manifest (then taken again)",
    )
    def redis_flush(bed: Bed, result: Result) -> None:
        before = source(bed)
        location, path = bed.location(unique("flush-loc"))
        name = unique("flush")
        bed.backup(name, location, before.namespace)
        point = _at("Redis flushed @ backup Applications", lambda v: v.stage == "Applications")
        status, hit = bed.run("applicationbackups", name, path, [(point, flush)])
        result.faults += [h for h in hit if not h.startswith("missed: ")]
        result.missed += [h.removeprefix("missed: ") for h in hit if h.startswith("missed: ")]
        if status.get("status") != "Successful":
            _expect_state_lost("backup", name, status, result)
            if f"{ADMIN}/{name}" in stored(path).manifests:
                raise CaseFailed(f"backup {name} failed StateLost but left a manifest")
            name = unique("flush-again")
            bed.backup(name, location, before.namespace)
            status, _ = bed.run("applicationbackups", name, path, [])
        expect_successful("backup", name, status, result)

        target, restore = unique("flush-to"), unique("flush-r")
        bed.restore(restore, name, location, {before.namespace: target})
        point = _at("Redis flushed @ restore Volumes", lambda v: v.stage == "Volumes")
        status, hit = bed.run("applicationrestores", restore, path, [(point, flush)], target=target)
        result.faults += [h for h in hit if not h.startswith("missed: ")]
        result.missed += [h.removeprefix("missed: ") for h in hit if h.startswith("missed: ")]
        if status.get("status") != "Successful":
            _expect_state_lost("restore", restore, status, result)
            bed.delete_namespace(target)
            bed.wait(
                f"{target} to be gone", lambda: not bed.kubectl("get", "namespace", target, check=False), 180
            )
            restore = unique("flush-r-again")
            bed.restore(restore, name, location, {before.namespace: target})
            status, _ = bed.run("applicationrestores", restore, path, [], target=target)
        expect_successful("restore", restore, status, result)
        result.add(bed.verify(before, target))
        count_stored(result, path)
        cleanup(bed, location, path, [target], backups=[name], restores=[restore], keep=not result.ok)


def _expect_state_lost(kind: str, name: str, status: dict[str, Any], result: Result) -> None:
    """The one other ending a flush allows: Failed, reason StateLost (counted as completed: it ended
    and said why)."""
    result.operations_expected += 1
    reason = str(status.get("reason") or "")
    if status.get("status") != "Failed" or STATE_LOST not in reason:
        raise CaseFailed(f"{kind} {name} ended {status.get('status')} ({reason}) after Redis was flushed")
    result.operations += 1
    result.notes.append(f"{kind} {name}: Failed {reason[:80]}")
