"""Planning, pages and the cluster-scoped part of a backup's Applications stage."""

from __future__ import annotations

import contextvars
import json
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

from davit import tenancy, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.backup import cluster_scope, scope
from davit.backup.selection import (
    ApiResource,
    ClusterRef,
    ListTarget,
    binds_account,
    keep,
    label_selector,
    needed_cluster_objects,
    resource_ref,
    select_targets,
)
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.operations import progress, stages, state_loss
from davit.operations.dispatch import Dispatch
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Moving, Ports
from davit.operations.scratch import BackupScratch

if TYPE_CHECKING:
    from davit.kube.discovery import Page as ListPage

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP

CLUSTER_PART = "_cluster"
#: Fields the API server owns and a restore throws away; not worth storing (managedFields can be larger
#: than the object itself).
_DROPPED_METADATA = ("managedFields",)
#: First pages the planning task lists and writes itself, this many at once. A namespace has some 25
#: kinds to list, most of them empty: as a queue message each, they held the large lists behind them
#: (a task each, with its own read of the backup and of its location), and every large list started
#: one queue hop later.
FIRST_PAGES_AT_ONCE = 8
#: At most this many first pages are the planning task's (a namespace's worth, a few times over); those
#: of a backup of many namespaces beyond it go to the queue, where every export worker shares them.
FIRST_PAGES_IN_PLAN = 100
#: Pages of one list a page task lists and writes in turn before it hands the rest of the list to the
#: queue (10,000 objects at the default page size). Each is listed while the page before it is written,
#: so a kind's pages follow at the API server's pace instead of a queue hop and a read of the backup
#: apart; the budget keeps one large kind from holding a worker while other backups' pages wait.
PAGES_PER_TASK = 20
#: The resourceCount progress write (also the heartbeat the watcher's stall detection reads, which needs
#: one in minutes) comes at most this often per backup: every page wrote one, each an event for every
#: watcher. The final status carries the exact count.
PROGRESS_SECONDS = 1.0


def handle(ports: Ports, message: Message) -> None:
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, Stage.APPLICATIONS)
    if obj is None:
        return
    state = ports.scratch.backup(message.uid)
    if not message.part:
        plan(ports, obj, state)
    elif message.part == CLUSTER_PART:
        cluster_part(ports, obj, state)
    else:
        page(ports, obj, state, message.part, pages=PAGES_PER_TASK)


def _send(dispatch: Dispatch, obj: RawObject, part: str) -> None:
    meta = obj["metadata"]
    message = Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.APPLICATIONS.value, part)
    queue = stages.owner(KIND, Stage.APPLICATIONS)  # a part of this stage, not a transition
    assert queue is not None
    dispatch.send(message, queue)


def _target_key(target: ListTarget) -> dict[str, Any]:
    r = target.resource
    return {
        "group": r.group, "version": r.version, "plural": r.plural, "kind": r.kind,
        "namespace": target.namespace, "selector": target.label_selector,
    }  # fmt: skip


def plan(ports: Ports, obj: RawObject, state: BackupScratch) -> None:
    """Make the list targets once; a repeated plan message (a retry, a stall re-send) re-sends what is
    still outstanding instead. A lost scratch state is rebuilt (planned again) or fails the backup."""
    if state_loss.is_lost(state) and not _recover(ports, obj, state):
        return
    spec = obj.get("spec") or {}
    if not state.is_planned():
        namespaces = scope.covered_namespaces(ports.cluster, obj, ports.settings.admin_namespace)
        targets = select_targets(ports.cluster.discover(), spec, namespaces)
        first_pages = [f"{t.part}#1" for t in targets]
        # The plan and its marker go in together; False: another task's plan went in meanwhile.
        if state.lay_out_export({t.part: _target_key(t) for t in targets}, namespaces,
                                first_pages or [CLUSTER_PART]):  # fmt: skip
            state.log("export.planned", targets=len(targets), namespaces=namespaces)
            reason = f"exporting {len(targets)} resource lists"
            progress.advance(ports, KIND, obj, Stage.APPLICATIONS, stages.Outcome.STARTED, reason)
    first_pages = []
    for part in state.pending():
        if _is_first_page(part) and len(first_pages) < FIRST_PAGES_IN_PLAN:
            first_pages.append(part)
        else:
            _send(ports.dispatch, obj, part)
    _first_pages(ports, obj, state, first_pages)


def _is_first_page(part: str) -> bool:
    return part != CLUSTER_PART and part.endswith("#1")


def _first_pages(ports: Ports, obj: RawObject, state: BackupScratch, parts: list[str]) -> None:
    """Every list target's first page, listed and written here, several at once; the pages that follow
    go to the queue as usual (each page hands on the next). Each is the same idempotent page task a
    queue message would run: a planning task that fails half way is retried, or sent again after a
    stall, and lists again only what is still pending."""
    if not parts:
        return
    spec = obj.get("spec") or {}
    # Resolved once for all of them (each page task resolves it again for itself).
    repository = ports.stores.repository(obj["metadata"]["namespace"], spec["backupLocation"])

    def run(part: str) -> None:
        page(ports, obj, state, part, repository)

    with ThreadPoolExecutor(max_workers=min(FIRST_PAGES_AT_ONCE, len(parts))) as pool:
        # Each page under the task's log context (the operation it works for).
        futures = [pool.submit(contextvars.copy_context().run, run, part) for part in parts]
        for future in futures:
            future.result()


def _recover(ports: Ports, obj: RawObject, state: BackupScratch) -> bool:
    """The scratch state is gone (``davit.operations.state_loss``): True when it may be planned afresh
    (the backup stores no volume data whose results went with it; pages are written again under the same
    keys), after laying it out again; False when the backup was failed ``StateLost``, or another task is
    rebuilding it."""
    if state_loss.backup_on_loss(obj, Stage.APPLICATIONS) == state_loss.OnLoss.FAIL:
        state_loss.fail(ports, KIND, obj, Stage.APPLICATIONS, state)
        return False
    if not state_loss.claim_rebuild(state):
        return False
    state.lay_out(Stage.APPLICATIONS.value)
    state_loss.note_rebuilt(ports, KIND, obj, Stage.APPLICATIONS, state)
    return True


def _target(state: BackupScratch, base: str) -> ListTarget:
    t = state.list_target(base)
    if t is None:
        raise RuntimeError(f"no list target {base!r} recorded for this backup")
    resource = ApiResource(t["group"], t["version"], t["plural"], t["kind"], True, frozenset({"list"}))
    return ListTarget(resource, t["namespace"], t["selector"])


def _clean(obj: RawObject) -> RawObject:
    meta = obj.get("metadata") or {}
    for field in _DROPPED_METADATA:
        meta.pop(field, None)
    return obj


def page(
    ports: Ports,
    obj: RawObject,
    state: BackupScratch,
    part: str,
    repository: BackupRepository | None = None,
    pages: int = 1,
) -> None:
    """List and write ``part`` and, up to ``pages`` in all, the pages of its list that follow, each
    listed while the one before it is written; the page after the last goes to the queue.

    Each following page is recorded (outstanding, with its continue token) before it is listed: a task
    that dies leaves it outstanding for whoever runs the plan again (the watcher's stall re-send, or
    its restart), exactly as a queued message of it would be; one that fails sends it to the queue."""
    if not state.is_pending(part):
        if state_loss.is_lost(state):
            plan(ports, obj, state)
        else:
            log.info("part.done_already", part=part)
        return
    meta, spec = obj["metadata"], obj.get("spec") or {}
    base = part.rpartition("#")[0]
    target = _target(state, base)
    admin = ports.settings.admin_namespace
    if target.namespace is None or not _may_read(ports.cluster, admin, obj, target.namespace):
        _refuse(ports, obj, state, f"list target {base!r} names namespace {target.namespace}")
        return
    if target.label_selector != label_selector(spec.get("selectors")):
        _refuse(ports, obj, state, f"list target {base!r} has selector {target.label_selector!r}")
        return
    if repository is None:
        repository = ports.stores.repository(meta["namespace"], spec["backupLocation"])

    def list_page(token: str | None) -> ListPage:
        return ports.cluster.list_page(
            target.resource, target.namespace, target.label_selector, ports.settings.export_page_size, token
        )

    first = part
    try:
        result = list_page(state.token(part))
        with ThreadPoolExecutor(max_workers=1) as ahead:
            for left in range(pages, 0, -1):
                upcoming: Future[ListPage] | None = None
                following = f"{base}#{int(part.rpartition('#')[2]) + 1}"
                if result.continue_token:
                    state.add_pending([following], {following: result.continue_token})
                    if left > 1:
                        # Under this task's log context, as everything it does.
                        run = contextvars.copy_context().run
                        upcoming = ahead.submit(run, list_page, result.continue_token)
                    else:
                        _send(ports.dispatch, obj, following)
                _write_page(ports, obj, state, repository, part, target.resource, result.items)
                if upcoming is None:
                    return
                part = following
                result = upcoming.result()
                if not state.is_pending(part):
                    # Written by another task meanwhile (a re-sent message of the same list): it goes on.
                    return
    except Exception:
        if part != first:
            # A retry of this message finds its own page done: the page that failed gets a message of
            # its own (and its own retries) rather than waiting for a stall re-send.
            _send(ports.dispatch, obj, part)
        raise


def _write_page(
    ports: Ports,
    obj: RawObject,
    state: BackupScratch,
    repository: BackupRepository,
    part: str,
    resource: ApiResource,
    items: list[RawObject],
) -> None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    kept = [_clean(o) for o in items if keep(o, resource, spec)]
    info = repository.write_part(BackupRef(meta["namespace"], meta["name"], meta["uid"]), part, kept)
    count, progress_due = state.record_page(
        info.part, _part_record(info, [resource_ref(o) for o in kept]), _needed_entries(kept, resource),
        PROGRESS_SECONDS,
    )  # fmt: skip
    if progress_due:
        progress.heartbeat(ports, KIND, obj, {"resourceCount": count})
    if state.finish(part):
        state.add_pending([CLUSTER_PART])
        _send(ports.dispatch, obj, CLUSTER_PART)


def _may_read(cluster: Cluster, admin: str, obj: RawObject, namespace: str) -> bool:
    """Whether the backup's accepted spec covers ``namespace`` (``admin``: the admin namespace): what is
    about to be listed comes from the scratch state in Redis, which is not trusted to decide what a
    backup reads."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    if tenancy.backup_may_read(meta["namespace"], admin, spec, namespace):
        return True
    selector = spec.get("namespaceSelector") if meta["namespace"] == admin else None
    if not isinstance(selector, str) or not selector:
        return False
    selected = cluster.namespaces_matching(selector)
    return tenancy.backup_may_read(meta["namespace"], admin, spec, namespace, selected)


def _refuse(ports: Moving, obj: RawObject, state: BackupScratch, what: str) -> None:
    reason = (f"the backup's scratch state is outside its accepted spec ({what}); nothing of it was "
              f"read: the backup is failed rather than trusted")  # fmt: skip
    state.log("export.refused", reason=reason)
    progress.fail(ports, KIND, obj, reason, event_reason="ScopeRefused")


def _part_record(info: Any, refs: list[dict[str, str]]) -> dict[str, Any]:
    return {"part": info.part, "key": info.key, "count": info.count, "rawSize": info.raw_size,
            "storedSize": info.stored_size, "resources": refs}  # fmt: skip


def _needed_entries(kept: list[RawObject], resource: ApiResource) -> list[str]:
    """The cluster-scoped objects ``kept`` need, each with the first object of the page that needs it
    (its ``source``): the cluster part reads that object again from the API to check the need."""
    entries: dict[ClusterRef, RawObject] = {}
    for o in kept:
        for ref in needed_cluster_objects(o, resource):
            entries.setdefault(ref, o)
    return sorted(
        json.dumps({"ref": ref.__dict__, "source": {
            "apiVersion": resource.api_version, "plural": resource.plural, "kind": resource.kind,
            "namespace": o["metadata"].get("namespace"), "name": o["metadata"].get("name"),
        }}, sort_keys=True)
        for ref, o in entries.items()
    )  # fmt: skip


class _Refused(Exception):
    """The scratch state names something outside the backup's accepted spec."""


#: Objects a needed ref's recorded sources are read for, at most, before the ref counts as unproven: the
#: scratch state may hold any number of made-up sources.
_SOURCES_TRIED = 3


def _source_needs(cluster: Cluster, namespaces: list[str], source: Any, ref: ClusterRef) -> bool:
    """Whether ``source`` (from the scratch state), read again from the API, needs ``ref``. A source
    outside the backup's namespaces is refused (``_Refused``): the scratch state was tampered with."""
    if not isinstance(source, dict) or source.get("namespace") not in namespaces:
        raise _Refused(f"a needed object's source {source!r} lies outside {namespaces}")
    group, _, version = str(source.get("apiVersion") or "").rpartition("/")
    resource = ApiResource(group, version, str(source.get("plural")), str(source.get("kind")), True,
                           frozenset({"list"}))  # fmt: skip
    try:
        found = cluster.find_object(resource, source["namespace"], str(source.get("name")))
    except tenancy.UnsafeName as exc:
        raise _Refused(f"a needed object's source {source!r}: {exc}") from exc
    return found is not None and ref in needed_cluster_objects(found, resource)


def _proven_refs(cluster: Cluster, namespaces: list[str], entries: list[str]) -> list[ClusterRef]:
    """The refs of the scratch state's needed entries whose need the API confirms: a ref is kept once one
    of its recorded sources, read again, still needs it (a claim still bound to the volume, a pod still
    using the PriorityClass), so the scratch state alone never decides what a backup stores."""
    sources: dict[ClusterRef, list[Any]] = {}
    for raw in entries:
        try:
            entry = json.loads(raw)
            ref = ClusterRef(**entry["ref"])
            if not all(isinstance(v, str) for v in ref.__dict__.values()):
                raise TypeError("not strings")
        except (ValueError, TypeError, KeyError) as exc:
            raise _Refused(f"a needed entry {raw[:200]!r} is not one the export writes") from exc
        sources.setdefault(ref, []).append(entry.get("source"))
    proven = []
    for ref, candidates in sorted(sources.items(), key=lambda item: tuple(item[0].__dict__.values())):
        if any(_source_needs(cluster, namespaces, s, ref) for s in candidates[:_SOURCES_TRIED]):
            proven.append(ref)
    return proven


def _list_all(
    ports: Ports, resource: ApiResource, namespace: str | None, selector: str | None = None
) -> list[RawObject]:
    items: list[RawObject] = []
    token: str | None = None
    while True:
        result = ports.cluster.list_page(
            resource, namespace, selector, ports.settings.export_page_size, token
        )
        items.extend(result.items)
        token = result.continue_token
        if not token:
            return items


def _account_bindings(ports: Ports, obj: RawObject, namespaces: list[str]) -> list[RawObject]:
    """The ClusterRoleBindings naming a service account the backup covers (listed again from the API with
    the backup's selectors, when its spec backs up service accounts at all)."""
    spec = obj.get("spec") or {}
    if not select_targets([cluster_scope.SERVICE_ACCOUNTS], spec, namespaces):
        return []
    selector = label_selector(spec.get("selectors"))
    accounts = {
        (namespace, account["metadata"]["name"])
        for namespace in namespaces
        for account in _list_all(ports, cluster_scope.SERVICE_ACCOUNTS, namespace, selector)
        if keep(account, cluster_scope.SERVICE_ACCOUNTS, spec)
    }
    if not accounts:
        return []
    return [
        {**b, "apiVersion": cluster_scope.CLUSTER_ROLE_BINDINGS.api_version, "kind": "ClusterRoleBinding"}
        for b in _list_all(ports, cluster_scope.CLUSTER_ROLE_BINDINGS, None)
        if binds_account(b, accounts)
    ]


def _ref_of(found: RawObject, plurals: dict[tuple[str, str], str]) -> ClusterRef | None:
    kind = str(found.get("kind") or "")
    plural = plurals.get((cluster_scope.group_of(found), kind))
    name = (found.get("metadata") or {}).get("name")
    return ClusterRef(str(found.get("apiVersion")), plural, name) if plural and name else None


def cluster_part(ports: Ports, obj: RawObject, state: BackupScratch) -> None:
    """The cluster-scoped objects the backup stores (``davit.backup.cluster_scope``: what its objects
    need, all of them, or its Namespaces only); then on to PostExecRule.

    Everything is derived again here, where the privileged reads happen, from the accepted spec and the
    API: the namespaces are checked against the spec, each needed object recorded by the pages is stored
    only once a source object read again from the API still needs it, ClusterRoleBindings are listed from
    the API and kept by their subjects, and outside the admin namespace every object passes
    ``cluster_scope.tenant_refusal`` before it is stored."""
    if not state.is_pending(CLUSTER_PART):
        if state_loss.is_lost(state):
            plan(ports, obj, state)
        return
    meta, spec = obj["metadata"], obj.get("spec") or {}
    namespaces = state.namespaces()
    admin = ports.settings.admin_namespace
    outside = [
        ns for ns in namespaces if not isinstance(ns, str) or not _may_read(ports.cluster, admin, obj, ns)
    ]
    if outside:
        _refuse(ports, obj, state, f"the recorded namespaces include {outside}")
        return
    chosen = cluster_scope.mode(spec, meta["namespace"], admin)
    found: dict[tuple[str, str, str], RawObject] = {}

    def add(item: RawObject | None) -> None:
        """Keep ``item`` (as the API returned it) unless it is being deleted or, outside the admin
        namespace, is not the tenant's to store (then nothing it needs is read either)."""
        if item is None or (item.get("metadata") or {}).get("deletionTimestamp"):
            return
        refusal = None if meta["namespace"] == admin else cluster_scope.tenant_refusal(item, namespaces)
        if refusal is not None:
            state.log("export.cluster_object_refused", reason=refusal)
            return
        key = (cluster_scope.group_of(item), str(item.get("kind")), str(item["metadata"].get("name")))
        found.setdefault(key, _clean(item))

    for ns in namespaces:
        add(ports.cluster.get_cluster_object(ClusterRef("v1", "namespaces", ns)))
    # The plan's discovery serves when it was made in this process since the backup was created.
    made_since = timeutil.epoch_seconds(meta.get("creationTimestamp"))
    resources = ports.cluster.discover(made_since) if chosen is not cluster_scope.Mode.NONE else []
    plurals = {(r.group, r.kind): r.plural for r in resources if not r.namespaced and "/" not in r.plural}
    if chosen is cluster_scope.Mode.ALL:
        for resource in cluster_scope.all_targets(resources):
            for item in _list_all(ports, resource, None):
                if keep(item, resource, {}):
                    add({**item, "apiVersion": resource.api_version, "kind": resource.kind})
    elif chosen is cluster_scope.Mode.NEEDED:
        try:
            refs = _proven_refs(ports.cluster, namespaces, state.needed())
        except _Refused as exc:
            _refuse(ports, obj, state, str(exc))
            return
        for ref in refs:
            add(ports.cluster.get_cluster_object(ref))
        for binding in _account_bindings(ports, obj, namespaces):
            add(binding)
        # What the cluster-scoped objects just read need in turn: a binding's ClusterRole, a volume's
        # StorageClass (read from the API, so no source to check).
        for item in list(found.values()):
            own = _ref_of(item, plurals)
            if own is None:
                continue
            resource = ApiResource(cluster_scope.group_of(item), own.api_version.rpartition("/")[2],
                                   own.plural, str(item.get("kind")), False, frozenset())  # fmt: skip
            for needed in needed_cluster_objects(item, resource):
                add(ports.cluster.get_cluster_object(needed))
    objects = list(found.values())
    repository = ports.stores.repository(meta["namespace"], spec["backupLocation"])
    info = repository.write_part(
        BackupRef(meta["namespace"], meta["name"], meta["uid"]), CLUSTER_PART, objects
    )
    state.record_part(info.part, _part_record(info, [resource_ref(o) for o in objects]), [])
    state.log("export.completed", clusterObjects=len(objects), mode=chosen.value)
    if state.finish(CLUSTER_PART):
        progress.advance(ports, KIND, obj, Stage.APPLICATIONS, stages.Outcome.DONE)
