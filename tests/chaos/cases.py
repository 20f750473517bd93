"""The chaos cases and their registry.

A case is a function ``(bed, result) -> None`` registered with ``@case(name, ...)``: it runs real
backups and restores (or clones) of an application with volume data on the bed's stack, injects its
faults at points the operations show, and fills ``result``: the faults injected, the operations that
completed, the bytes and objects compared with what was there before, what was stored twice and what
was lost. It raises (``CaseFailed`` or any error) when an operation does not complete.

More cases live in modules next to this one named ``cases_*.py`` (Redis restarts, store faults...):
the runner imports every such module, and their ``@case`` registrations join the table.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.bed import (
    ADMIN,
    Action,
    AppShape,
    Bed,
    CaseFailed,
    Churn,
    Comparison,
    Point,
    Record,
    View,
    Where,
    backup_log_events,
    compare,
    stored,
    unique,
)

# --- results and the registry ---------------------------------------------------------------------------


@dataclass
class Result:
    """One case's row of the table."""

    case: str
    faults: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    operations: int = 0
    operations_expected: int = 0
    bytes_verified: int = 0
    objects_verified: int = 0
    stored_twice: int = 0
    lost: int = 0
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.lost == 0
            and self.stored_twice == 0
            and self.operations == self.operations_expected
            and bool(self.faults)
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def add(self, comparison: Comparison) -> None:
        self.bytes_verified += comparison.bytes_equal
        self.objects_verified += comparison.objects_equal
        self.lost += comparison.lost
        self.notes += comparison.differences[:10]


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Bed, Result], None]
    description: str
    #: Part of the short version ``make test`` runs.
    smoke: bool = False


CASES: dict[str, Case] = {}


Run = Callable[[Bed, Result], None]


def case(name: str, description: str, *, smoke: bool = False) -> Callable[[Run], Run]:
    """Register a case under ``name`` (unique) for the runner's table."""

    def register(run: Run) -> Run:
        if name in CASES:
            raise ValueError(f"two chaos cases are named {name}")
        CASES[name] = Case(name, run, description, smoke)
        return run

    return register


# --- the shared application and the round trip ----------------------------------------------------------

SOURCE = "chaos-app"
#: Node agents are SIGKILLed together: each dev node's agent holds one of the two volumes.
NODE_AGENTS = ("uploader-*",)


def source(bed: Bed) -> Record:
    """The application every round trip backs up (deployed once per run)."""
    return bed.deploy(SOURCE, bed.shape, seed=1)


Faults = list[tuple[Point, Action]]


def _services(bed: Bed, services: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s for name in services for s in (bed.node_agents() if name == "uploader-*" else [name]))


def faults_for(bed: Bed, points: list[Point], services: tuple[str, ...]) -> Faults:
    return [(point, _services(bed, services)) for point in points]


def record_faults(
    result: Result, hit: list[str], services: tuple[str, ...], points: list[Point] | None = None
) -> None:
    """Add the faults of ``hit`` (``Bed.run``'s list) to ``result``: those at ``points`` (all when not
    given) as SIGKILLs of ``services``, any other under its point's own name."""
    who = "node agents" if services == NODE_AGENTS else "+".join(services)
    sigkills = None if points is None else {p.name for p in points}
    for name in hit:
        missed = name.startswith("missed: ")
        point = name.removeprefix("missed: ")
        label = f"SIGKILL {who} @ {point}" if sigkills is None or point in sigkills else point
        (result.missed if missed else result.faults).append(label)


def expect_successful(kind: str, name: str, status: Mapping[str, Any], result: Result) -> None:
    result.operations_expected += 1
    if status.get("status") != "Successful":
        raise CaseFailed(f"{kind} {name} ended {status.get('status')}: {status.get('reason')}")
    progress = str(status.get("volumesProgress") or "")
    done, _, total = progress.partition("/")
    if progress and done != total:
        raise CaseFailed(f"{kind} {name} ended Successful with volumes {progress}")
    result.operations += 1


def round_trip(
    bed: Bed,
    result: Result,
    *,
    backup_faults: tuple[list[Point], tuple[str, ...]] | None = None,
    restore_faults: tuple[list[Point], tuple[str, ...]] | None = None,
    faults: tuple[Faults, Faults] = ([], []),
    at: tuple[str, Where] | None = None,
) -> None:
    """Back the application up and restore it into a new namespace, with the faults given, then compare
    everything and count what the location holds. ``backup_faults``/``restore_faults``: points and the
    services SIGKILLed there; ``faults``: (backup, restore) faults of any kind (``Bed.run``); ``at``: an
    existing location (name, where) instead of a fresh local one."""
    before = source(bed)
    location, where = at or bed.location(unique(f"{result.case}-loc"))
    path = where if isinstance(where, Path) else None
    backup = unique(result.case)
    bed.backup(backup, location, before.namespace)
    status, hit = bed.run(
        "applicationbackups",
        backup,
        path,
        (faults_for(bed, *backup_faults) if backup_faults else []) + faults[0],
    )
    record_faults(
        result, hit, backup_faults[1] if backup_faults else (), backup_faults[0] if backup_faults else []
    )
    expect_successful("backup", backup, status, result)

    target = unique(f"{result.case}-to")
    restore = unique(f"{result.case}-r")
    bed.restore(restore, backup, location, {before.namespace: target})
    restore_points = (faults_for(bed, *restore_faults) if restore_faults else []) + faults[1]
    status, hit = bed.run("applicationrestores", restore, path, restore_points, target=target)
    record_faults(
        result, hit, restore_faults[1] if restore_faults else (), restore_faults[0] if restore_faults else []
    )
    expect_successful("restore", restore, status, result)
    result.add(bed.verify(before, target))
    count_stored(result, where)
    cleanup(bed, location, where, [target], backups=[backup], restores=[restore], keep=not result.ok)


def count_stored(result: Result, path: Where, concurrent: bool = False) -> None:
    """Add what the location holds twice to ``result``. With ``concurrent`` backups of the same data a
    chunk two writers stored at once is not counted: the format allows it (docs/format.md, "Concurrent
    writers"); a step done twice still is."""
    found = stored(path)
    result.stored_twice += found.stored_twice - (found.duplicate_chunks if concurrent else 0)
    result.notes.append(
        f"location: {sum(found.manifests.values())} manifest(s), {found.objects} objects, "
        f"{found.chunks} chunks"
    )
    result.notes += found.duplicate_objects[:5]
    if found.duplicate_chunks:
        why = " by concurrent writers (allowed)" if concurrent else ""
        result.notes.append(f"{found.duplicate_chunks} chunk(s) stored twice{why}")


def cleanup(
    bed: Bed,
    location: str,
    path: Where,
    namespaces: list[str],
    *,
    backups: Sequence[str] = (),
    restores: Sequence[str] = (),
    keep: bool = False,
) -> None:
    """Remove what a case made (its location's directory stays when the case failed, to look at)."""
    for namespace in namespaces:
        bed.delete_namespace(namespace)
    for name in restores:
        bed.kubectl("-n", ADMIN, "delete", "applicationrestore", name, "--wait=false", "--ignore-not-found")
    for name in backups:
        # Retain (the cases' default): deleting the resource leaves the data, which goes with the
        # directory below.
        bed.kubectl("-n", ADMIN, "delete", "applicationbackup", name, "--wait=false", "--ignore-not-found")
    bed.kubectl("-n", ADMIN, "delete", "backuplocation", location, "--wait=false", "--ignore-not-found")
    if not keep and isinstance(path, Path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)


# --- points ---------------------------------------------------------------------------------------------


def _stage(*stages: str) -> Callable[[View], bool]:
    return lambda v: v.stage in stages


BACKUP_STARTED = Point(
    "backup started (PreExecRule, before any volume)",
    lambda v: v.count("backup.started") >= 1 and not v.count("volume.sharded") and v.stage != "Volumes",
)
BACKUP_VOLUMES = Point("Volumes, handed to the node agents", lambda v: v.stage == "Volumes")
BACKUP_POST = Point("PostExecRule (the manifest)", _stage("PostExecRule"))
EXPORT_PLANNED = Point(
    "Applications, export planned",
    lambda v: v.count("export.planned") >= 1 and not v.count("export.completed"),
)
EXPORT_HALF = Point(
    "Applications, parts written",
    lambda v: v.stage == "Applications" and v.files("backups") >= 4 and not v.count("export.completed"),
)
PACKS_STORED = Point(
    "Volumes, first packs stored",
    lambda v: v.stage == "Volumes" and v.files("repo/packs") >= 1 and not v.count("volume.completed"),
)
ONE_VOLUME_STORED = Point(
    "Volumes, one volume stored", lambda v: v.stage == "Volumes" and v.count("volume.completed") >= 1
)
RESTORE_PLANNED = Point(
    "Applications, restore planned", lambda v: v.stage == "Applications" and v.count("restore.planned") >= 1
)
RESTORE_HALF = Point(
    "Applications, objects being created", lambda v: v.stage == "Applications" and v.target_objects >= 40
)
RESTORE_VOLUMES = Point("Volumes, handed out", lambda v: v.stage == "Volumes")
VOLUMES_BEING_WRITTEN = Point(
    "Volumes, being written", lambda v: v.stage == "Volumes" and v.count("volume.handed_out") >= 1
)
ONE_VOLUME_RESTORED = Point(
    "Volumes, one volume written", lambda v: v.stage == "Volumes" and v.count("volume.restored") >= 1
)
CLONE_BACKING_UP = Point("Volumes (its staging backup)", _stage("Volumes"))
CLONE_RESTORING = Point("Applications (its staging restore)", _stage("Applications"))


# --- the cases ------------------------------------------------------------------------------------------


@case(
    "snapshot-worker",
    "the backup service (queue davit.snapshot) SIGKILLed as the backup starts, in Volumes and in "
    "PostExecRule; then restored and compared",
    smoke=True,
)
def snapshot_worker(bed: Bed, result: Result) -> None:
    round_trip(bed, result, backup_faults=([BACKUP_STARTED, BACKUP_VOLUMES, BACKUP_POST], ("backup",)))


@case(
    "export-worker",
    "the resources service (queue davit.export) SIGKILLed once the export is planned and again with "
    "parts written",
)
def export_worker(bed: Bed, result: Result) -> None:
    round_trip(bed, result, backup_faults=([EXPORT_PLANNED, EXPORT_HALF], ("resources",)))


@case(
    "node-agent-backup",
    "both node agents SIGKILLed after the first packs of a backup are stored and again once one volume "
    "is stored",
)
def node_agent_backup(bed: Bed, result: Result) -> None:
    round_trip(bed, result, backup_faults=([PACKS_STORED, ONE_VOLUME_STORED], NODE_AGENTS))


@case(
    "restore-worker",
    "the restore service SIGKILLed once the restore is planned, with objects half created and in Volumes",
    smoke=True,
)
def restore_worker(bed: Bed, result: Result) -> None:
    round_trip(bed, result, restore_faults=([RESTORE_PLANNED, RESTORE_HALF, RESTORE_VOLUMES], ("restore",)))


@case(
    "node-agent-restore",
    "both node agents SIGKILLed while a restore's volumes are written and again once one is written",
)
def node_agent_restore(bed: Bed, result: Result) -> None:
    round_trip(bed, result, restore_faults=([VOLUMES_BEING_WRITTEN, ONE_VOLUME_RESTORED], NODE_AGENTS))


@case(
    "clone-worker",
    "the restore service SIGKILLed while a clone runs its staging backup and its staging restore",
)
def clone_worker(bed: Bed, result: Result) -> None:
    before = source(bed)
    location, path = bed.location("chaos-staging")  # the clone staging location (DAVIT_CLONE_LOCATION)
    target, name = unique("clone-to"), unique("clone")
    bed.create(
        "ApplicationClone", name, {"sourceNamespace": before.namespace, "destinationNamespace": target}
    )
    faults = faults_for(bed, [CLONE_BACKING_UP, CLONE_RESTORING], ("restore",))
    status, hit = bed.run("applicationclones", name, None, faults, timeout=600)
    record_faults(result, hit, ("restore",))
    expect_successful("clone", name, status, result)
    result.add(bed.verify(before, target))
    count_stored(result, path)
    bed.kubectl("-n", ADMIN, "delete", "applicationclone", name, "--wait=false", "--ignore-not-found")
    cleanup(bed, location, path, [target], keep=not result.ok)


@case(
    "retention-worker",
    "the retention service SIGKILLed as two backups (reclaimPolicy Delete) are deleted; their data "
    "goes, the third backup restores",
)
def retention_worker(bed: Bed, result: Result) -> None:
    before = source(bed)
    location, path = bed.location(unique("retention-loc"))
    names = [unique("ret") for _ in range(3)]
    for name in names:
        bed.backup(name, location, before.namespace, reclaimPolicy="Delete")
        status, _ = bed.run("applicationbackups", name, path, [])
        expect_successful("backup", name, status, result)
    uids = {n: (bed.get("applicationbackups", n) or {})["metadata"]["uid"] for n in names}

    # 1: retention is down when the deletion is asked for; brought back once the watcher has seen it.
    bed.kill("retention")
    result.faults.append("SIGKILL retention @ before a deletion")
    bed.kubectl("-n", ADMIN, "delete", "applicationbackup", names[0], "--wait=false")
    bed.wait("the deletion to be seen", lambda: _deleting(bed, names[0]), timeout=60)
    bed.revive()
    # 2: killed as soon as the next deletion is asked for, while it deletes.
    bed.kubectl("-n", ADMIN, "delete", "applicationbackup", names[1], "--wait=false")
    bed.wait("the deletion to be seen", lambda: _deleting(bed, names[1]), timeout=60)
    bed.kill("retention")
    result.faults.append("SIGKILL retention @ deletion requested")
    bed.revive()
    for name in names[:2]:
        result.operations_expected += 1
        bed.wait(f"backup {name} to be deleted", functools.partial(_gone, bed, name), 180)
        leftovers = [f for f in (path / "backups" / ADMIN / name).rglob("*") if f.is_file()]
        if leftovers:
            raise CaseFailed(f"backup {name} was deleted but left {len(leftovers)} file(s) in its location")
        result.operations += 1
    found = stored(path)
    if set(found.manifests) != {f"{ADMIN}/{names[2]}"}:
        raise CaseFailed(f"the location holds the manifests of {sorted(found.manifests)}")
    del uids

    target, restore = unique("ret-to"), unique("ret-r")
    bed.restore(restore, names[2], location, {before.namespace: target})
    status, _ = bed.run("applicationrestores", restore, path, [])
    expect_successful("restore", restore, status, result)
    result.add(bed.verify(before, target))
    count_stored(result, path)
    cleanup(bed, location, path, [target], backups=names[2:], restores=[restore], keep=not result.ok)


def _gone(bed: Bed, name: str) -> bool:
    return bed.get("applicationbackups", name) is None


def _deleting(bed: Bed, name: str) -> bool:
    obj = bed.get("applicationbackups", name)
    return obj is None or bool(obj["metadata"].get("deletionTimestamp"))


def _many_backups(
    bed: Bed, result: Result, count: int, faults: Faults, services: tuple[str, ...]
) -> tuple[str, Path, list[str]]:
    """``count`` backups created at once, followed to the end (the faults applied while following the
    last); each must have run each step exactly once, as its own log in the location says."""
    before = source(bed)
    location, path = bed.location(unique(f"{result.case}-loc"))
    names = [unique(result.case) for _ in range(count)]
    bed.backups(names, location, before.namespace)
    # The faults are placed following the last one created: the one least likely to be ahead.
    status, hit = bed.run("applicationbackups", names[-1], path, faults)
    record_faults(result, hit, services)
    statuses = {names[-1]: status}
    for name in names[:-1]:
        statuses[name], _ = bed.run("applicationbackups", name, path, [])
    for name in names:
        expect_successful("backup", name, statuses[name], result)
        uid = (bed.get("applicationbackups", name) or {})["metadata"]["uid"]
        events = backup_log_events(path, ADMIN, name, uid)
        for event in ("backup.started", "export.planned", "export.completed", "backup.completed"):
            if events[event] != 1:
                result.stored_twice += max(events[event] - 1, 0)
                raise CaseFailed(f"backup {name}: {event} {events[event]} times in its log ({dict(events)})")
    return location, path, names


def _restore_last(bed: Bed, result: Result, location: str, path: Path, names: list[str]) -> None:
    before = source(bed)
    target, restore = unique(f"{result.case}-to"), unique(f"{result.case}-r")
    bed.restore(restore, names[-1], location, {before.namespace: target})
    status, _ = bed.run("applicationrestores", restore, path, [])
    expect_successful("restore", restore, status, result)
    result.add(bed.verify(before, target))
    count_stored(result, path, concurrent=True)
    cleanup(bed, location, path, [target], backups=names, restores=[restore], keep=not result.ok)


WATCHER_ACCEPTED = Point("the operations accepted", lambda v: bool(v.stage))
WATCHER_VOLUMES = Point("Volumes", lambda v: v.stage == "Volumes")
WATCHER_APPLICATIONS = Point("Applications", lambda v: v.stage == "Applications")


@case(
    "watcher-restart",
    "the watcher SIGKILLed and restarted while three backups run (accepted, Volumes, Applications): "
    "each completes, each step ran once",
)
def watcher_restart(bed: Bed, result: Result) -> None:
    faults = faults_for(bed, [WATCHER_ACCEPTED, WATCHER_VOLUMES, WATCHER_APPLICATIONS], ("watcher",))
    location, path, names = _many_backups(bed, result, 3, faults, ("watcher",))
    _restore_last(bed, result, location, path, names)


@case(
    "two-watchers",
    "a second watcher runs beside the first; the leader is SIGKILLed mid-way: three backups complete, "
    "each step ran once",
)
def two_watchers(bed: Bed, result: Result) -> None:
    bed.start_extra_watcher("watcher-2")
    try:
        faults = faults_for(bed, [WATCHER_VOLUMES], ("watcher",))
        location, path, names = _many_backups(bed, result, 3, faults, ("watcher",))
    finally:
        bed.stop_extra("watcher-2")
    _restore_last(bed, result, location, path, names)


CHURN_SOURCE = "chaos-churn"
CHURN_SHAPE = AppShape(volume_bytes=8 * 1024 * 1024, small_files=50, configmaps=40)


@case(
    "namespace-changing",
    "ConfigMaps created, updated and deleted while the namespace is backed up: the backup holds each "
    "object once and the restore brings back, for each, a state that existed",
)
def namespace_changing(bed: Bed, result: Result) -> None:
    before = bed.deploy(CHURN_SOURCE, CHURN_SHAPE, seed=3)
    location, path = bed.location(unique("churn-loc"))
    churn = Churn(bed, CHURN_SOURCE)
    churn.start()
    backup = unique("churn")
    try:
        bed.backup(backup, location, CHURN_SOURCE)
        status, _ = bed.run("applicationbackups", backup, path, [])
    finally:
        churn.stop()
    result.faults.append(f"{churn.changes} changes to the namespace during the backup")
    expect_successful("backup", backup, status, result)
    target, restore = unique("churn-to"), unique("churn-r")
    bed.restore(restore, backup, location, {CHURN_SOURCE: target})
    status, _ = bed.run("applicationrestores", restore, path, [])
    expect_successful("restore", restore, status, result)
    bed.wait(f"{target} to run", lambda: _running(bed, target), 240)
    after = bed.record(target)
    churned = {k: v for k, v in after.objects.items() if k.startswith("ConfigMap churn-")}
    for key in churned:
        del after.objects[key]
    result.add(compare(before, after, {CHURN_SOURCE: target}))
    checked, problems = churn.check(churned)
    result.objects_verified += checked
    result.lost += len(problems)
    result.notes += problems[:10]
    count_stored(result, path)
    cleanup(bed, location, path, [target], backups=[backup], restores=[restore], keep=not result.ok)
    # The next run starts from the application as recorded: the churned ConfigMaps go.
    for name in churn.names:
        bed.kubectl("-n", CHURN_SOURCE, "delete", "configmap", name, "--ignore-not-found", "--wait=false")


def _running(bed: Bed, namespace: str) -> bool:
    from devstack import demo_check

    return demo_check.running(bed.api, namespace) is not None


@case(
    "control-plane",
    "etcd and the API server SIGKILLed during a backup and brought back by make up on etcd's data: "
    "every object kept, the backup and its restore complete",
)
def control_plane(bed: Bed, result: Result) -> None:
    before = source(bed)
    points = [Point("Volumes", lambda v: v.stage == "Volumes")]
    started = time.monotonic()
    round_trip(bed, result, backup_faults=(points, ("etcd", "kube-apiserver")))
    result.notes.append(f"round trip in {time.monotonic() - started:.0f}s")
    # The application itself, as it was recorded before etcd died.
    result.add(compare(before, bed.record(SOURCE), {}))
