"""Writing restored objects to the API server (``davit.operations.ports.Cluster``: discovery and its
``*_object`` methods): create, and per ``replacePolicy`` keep or replace what is already there. Raw JSON
throughout, like the export: the typed client would drop fields it does not know.

Which objects exist is learnt from one list per resource and namespace, not a GET per object, so a
Retain restore of 10,000 objects that are all present costs a few lists and writes nothing.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from davit import errors
from davit.api.objects import RawObject
from davit.backup.selection import ApiResource
from davit.kube.client import ApiException
from davit.operations.ports import Cluster
from davit.restore import fields
from davit.restore.fields import RESTORE_UID_ANNOTATION
from davit.tenancy import RestoreGuard, UnsafeName, resource_path

#: Answers worth trying again: throttling, and the API server's "not now" (ServerTimeout, unavailable).
RETRYABLE = frozenset({429, 500, 503, 504})
#: Attempts at one create: with the backoff (0.5 s doubling, at most 8 s) about half a minute in all.
CREATE_ATTEMPTS = 7

#: Objects per list request when learning which objects exist.
LIST_LIMIT = 500
#: CustomResourceDefinitions, served by every API server (a restored CRD is waited for until Established).
CRDS = ApiResource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                   False, frozenset())  # fmt: skip

#: What became of one object.
RESTORED, RETAINED, REPLACED, UPDATED, FAILED = "restored", "retained", "replaced", "updated", "failed"
#: Every outcome, in the order the status shows them (``KindCounts``).
OUTCOMES = (RESTORED, RETAINED, REPLACED, UPDATED, FAILED)


class UnknownResource(errors.Permanent):
    """The target cluster serves no resource of this apiVersion and kind (a CRD missing, an API removed)."""


class Refused(errors.Refused):
    """The restore guard refused an object: it lies outside what this restore may write."""


@dataclass(frozen=True)
class Outcome:
    result: str
    reason: str = ""


def key_of(obj: RawObject) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]


def describe(obj: RawObject) -> str:
    api_version, kind, namespace, name = key_of(obj)
    return f"{kind} {namespace + '/' if namespace else ''}{name} ({api_version})"


@dataclass(frozen=True)
class Target:
    """Where an object the guard allowed is: its resource, its namespace (None when cluster-scoped) and
    its name."""

    resource: ApiResource
    namespace: str | None
    name: str


def api_message(exc: ApiException) -> str:
    """The API server's own message for a refusal (its Status body), else the HTTP reason."""
    try:
        body = json.loads(exc.body or b"{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


class Applier:
    """Knows the target cluster's resources (discovery, refreshed when a restored CRD adds some).

    Every request about an object (create, get, patch, delete) is addressed by ``target``, which passes
    the object through the restore's guard first: there is no way to address an object around it."""

    def __init__(self, cluster: Cluster, guard: RestoreGuard, made_since: float | None = None) -> None:
        """``made_since`` (epoch seconds; the restore's creation): a discovery this process made since
        then serves (each chunk of a restore makes an Applier: some 40 requests each otherwise). It is
        safe to reuse: a resource's scope comes from the API server either way, and a request addressed
        by a scope that changed since is one the API server routes nowhere."""
        self.cluster = cluster
        self.guard = guard
        self._resources: dict[tuple[str, str], ApiResource] = {}
        self.refresh(made_since)

    def refresh(self, made_since: float | None = None) -> None:
        """Discovery again (without ``made_since``, always from the API server: a restored CRD's kinds)."""
        self._resources = {
            (r.api_version, r.kind): r for r in self.cluster.discover(made_since) if "/" not in r.plural
        }

    def resource(self, api_version: str, kind: str) -> ApiResource:
        found = self._resources.get((api_version, kind))
        if found is None:
            self.refresh()
            found = self._resources.get((api_version, kind))
        if found is None:
            raise UnknownResource(f"the cluster serves no {kind} in {api_version}")
        return found

    def refusal(self, obj: RawObject) -> str | None:
        """Why the guard refuses ``obj`` (scope by discovery, never by the stored object); None: allowed.
        A type the cluster does not serve is not refused here: writing it fails as UnknownResource."""
        try:
            resource = self.resource(obj["apiVersion"], obj["kind"])
        except UnknownResource:
            return None
        return self.guard.refusal(obj, resource.namespaced)

    def target(self, obj: RawObject, named: bool = True) -> Target:
        """Where ``obj`` is, once the guard allowed it (Refused otherwise, and for a namespace or, when
        ``named``, a name that could address another object): the one way to an object's requests. A
        create addresses the collection (``named`` false): the API server judges the new name."""
        api_version, kind, namespace, name = key_of(obj)
        resource = self.resource(api_version, kind)
        refusal = self.guard.refusal(obj, resource.namespaced)
        if refusal is not None:
            raise Refused(refusal)
        scope = namespace if resource.namespaced else None
        try:
            resource_path(api_version, resource.plural, scope, name if named else None)
        except UnsafeName as exc:
            raise Refused(f"{describe(obj)}: {exc}") from exc
        return Target(resource, scope, name)

    def existing(self, objects: Iterable[RawObject]) -> set[tuple[str, str, str, str]]:
        """Which of ``objects`` exist now: one (paginated) list per resource and namespace."""
        wanted: dict[tuple[str, str, str], set[str]] = {}
        for obj in objects:
            api_version, kind, namespace, name = key_of(obj)
            wanted.setdefault((api_version, kind, namespace), set()).add(name)
        found: set[tuple[str, str, str, str]] = set()
        for (api_version, kind, namespace), names in wanted.items():
            try:
                resource = self.resource(api_version, kind)
            except UnknownResource:
                continue  # nothing of a kind the cluster does not serve can exist yet
            if resource.namespaced and self.guard.refusal(
                {"kind": kind, "metadata": {"name": "-", "namespace": namespace}}, True
            ):
                continue  # never listed: the guard refuses every object there, before any create
            scope = namespace if resource.namespaced else None
            token: str | None = None
            while True:
                page = self.cluster.list_page(resource, scope, None, LIST_LIMIT, token)
                for item in page.items:
                    if item["metadata"]["name"] in names:
                        found.add((api_version, kind, namespace, item["metadata"]["name"]))
                token = page.continue_token
                if not token:
                    break
        return found

    def create(self, obj: RawObject) -> Outcome:
        """Create ``obj``; an object already there is kept (Retain's rule), unless this very restore
        created it (a retried task): that one counts as restored."""
        for attempt in range(CREATE_ATTEMPTS):
            try:
                target = self.target(obj, named=False)
                self.cluster.create_object(target.resource, target.namespace, obj)
                return Outcome(RESTORED)
            except ApiException as exc:
                if exc.status == 409 or (exc.status in RETRYABLE and self.get(*key_of(obj)) is not None):
                    # A retryable answer for an object that exists: the API server turns AlreadyExists
                    # into ServerTimeout for objects with a generateName (a StatefulSet's pods have one).
                    return Outcome(RESTORED if self._made_by_same_restore(obj) else RETAINED)
                if exc.status not in RETRYABLE or attempt == CREATE_ATTEMPTS - 1:
                    return Outcome(FAILED, f"{describe(obj)}: {api_message(exc)}")
                # Throttled, or not ready yet (a new namespace's ServiceAccount token): try again.
                time.sleep(min(8.0, 0.5 * 2**attempt))
            except UnknownResource as exc:
                return Outcome(FAILED, f"{describe(obj)}: {exc}")
            except Refused as exc:
                return Outcome(FAILED, f"refused: {exc}")
        raise AssertionError("unreachable")

    def update(self, obj: RawObject) -> Outcome:
        """replacePolicy Update: the object that is there becomes the backup's version, in place (same
        uid): a JSON merge patch of ``obj`` onto it. Every field ``obj`` holds takes its value (lists as a
        whole); fields it does not hold stay, among them what the cluster allocated and the restore
        leaves out (a Service's cluster IP, a bound claim's volume name); a Service keeps its node ports
        (``fields.carry_node_ports``). A change the API server refuses (an immutable field) fails the
        object with its reason; an object that is gone is created."""
        for attempt in range(CREATE_ATTEMPTS):
            try:
                target = self.target(obj)
                body = obj
                if (obj["apiVersion"], obj["kind"]) == ("v1", "Service"):
                    live = self.cluster.get_object(target.resource, target.namespace, target.name)
                    if live is None:
                        return self.create(obj)
                    body = copy.deepcopy(obj)
                    fields.carry_node_ports(body, live)
                self.cluster.patch_object(target.resource, target.namespace, target.name, body)
                return Outcome(UPDATED)
            except ApiException as exc:
                if exc.status == 404:
                    return self.create(obj)
                if exc.status not in RETRYABLE or attempt == CREATE_ATTEMPTS - 1:
                    return Outcome(FAILED, f"{describe(obj)}: not updated: {api_message(exc)}")
                time.sleep(min(8.0, 0.5 * 2**attempt))
            except UnknownResource as exc:
                return Outcome(FAILED, f"{describe(obj)}: {exc}")
            except Refused as exc:
                return Outcome(FAILED, f"refused: {exc}")
        raise AssertionError("unreachable")

    def _made_by_same_restore(self, obj: RawObject) -> bool:
        ours = ((obj.get("metadata") or {}).get("annotations") or {}).get(RESTORE_UID_ANNOTATION)
        if not ours:
            return False
        found = self.get(*key_of(obj))
        theirs = ((found or {}).get("metadata") or {}).get("annotations") or {}
        return bool(theirs.get(RESTORE_UID_ANNOTATION) == ours)

    def set_owners(self, obj: RawObject, references: list[RawObject]) -> None:
        """Give a restored object its owner references (merge patch: nothing else changes)."""
        target = self.target(obj)
        body = {"metadata": {"ownerReferences": references}}
        self.cluster.patch_object(target.resource, target.namespace, target.name, body)

    def patch(self, obj: RawObject, body: RawObject) -> RawObject:
        """JSON merge patch of ``obj`` (an in-place restore scaling a workload)."""
        target = self.target(obj)
        return self.cluster.patch_object(target.resource, target.namespace, target.name, body)

    def list_in(self, api_version: str, kind: str, namespace: str) -> list[RawObject]:
        """Every object of a kind in a namespace the guard allows (page by page); [] elsewhere."""
        resource = self.resource(api_version, kind)
        if self.guard.refusal({"kind": kind, "metadata": {"name": "-", "namespace": namespace}}, True):
            return []
        items: list[RawObject] = []
        token: str | None = None
        while True:
            page = self.cluster.list_page(resource, namespace, None, LIST_LIMIT, token)
            items += page.items
            token = page.continue_token
            if not token:
                return items

    def delete(self, obj: RawObject) -> None:
        """Delete ``obj`` with its dependents (foreground), if it exists."""
        target = self.target(obj)
        try:
            self.cluster.delete_object(target.resource, target.namespace, target.name, "Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def gone(self, obj: RawObject) -> bool:
        target = self.target(obj)
        return self.cluster.get_object(target.resource, target.namespace, target.name) is None

    def wait_gone(self, objects: list[RawObject], timeout: float) -> list[RawObject]:
        """Wait until every object is gone; those still there at the deadline."""
        left = list(objects)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            left = [obj for obj in left if not self.gone(obj)]
            if left:
                time.sleep(0.5)  # deletion is asynchronous (finalizers, dependents): poll the server
        return left

    def crd_established(self, name: str) -> bool:
        crd = self.cluster.get_object(CRDS, None, name)
        if crd is None:
            return False
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> RawObject | None:
        obj = {"apiVersion": api_version, "kind": kind, "metadata": {"namespace": namespace, "name": name}}
        target = self.target(obj)
        return self.cluster.get_object(target.resource, target.namespace, target.name)
