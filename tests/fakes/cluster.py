"""An in-memory API server for handler tests: ``FakeCluster`` implements ``davit.operations.ports.Cluster``
with the real layer's results and errors, and the builders below make the objects a test puts in it::

    from tests.fakes import cluster as k

    fake = k.FakeCluster()
    obj = fake.put(k.backup("b1", "app", stage="Initial", backupLocation="loc", namespaces=["app"]))
    fake.put(k.claim("data", "app", volume="pv-data"), k.volume("pv-data", claim=("app", "data")))
    ...  # run the handler with cluster=fake
    assert fake.status(obj)["stage"] == "Volumes" and fake.reasons() == ["StageChanged"]

What it does as the API server does: objects are kept by (kind, namespace, name) and returned as copies;
``create`` and ``put`` assign a uid, ``creationTimestamp``, ``generation`` 1 and a ``resourceVersion``;
every write takes a new ``resourceVersion``; a change of ``spec`` bumps ``generation``; ``patch`` and
``patch_status`` are JSON merge patches; a write conditional on the version read (``check_version``, the
finalizer methods, ``delete`` with a uid) raises ``ApiException`` 409 when it changed; a missing object
raises ``davit.kube.operations.NotFound`` (404) where the real layer does and reads None where it does;
deleting an object with finalizers only marks it (``deletionTimestamp``), removing the last finalizer
then deletes it. With ``accepted_only`` (the workers' reads, the default) ``get`` of an operation whose
spec changed after acceptance raises ``SpecChanged``; the builders mark operations accepted.

For retry tests, ``fail_next("patch_status", error)`` makes the next call of that method raise (by
default a 500); ``conflict_next(method)`` a 409.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from davit import constants, tenancy
from davit.api.objects import CLUSTER_SCOPED, RawObject, describe_ref
from davit.backup import exec_rules
from davit.backup.selection import ApiResource, ClusterRef
from davit.constants import Kind
from davit.kube import csi, mover
from davit.kube.client import ApiException
from davit.kube.discovery import Page
from davit.kube.events import EventType
from davit.kube.operations import NotFound, SpecChanged
from davit.volumes import mover as mover_objects
from davit.volumes.claims import VolumePlan
from tests.fakes.exec import RecordingExecutor

Key = tuple[str, str, str]


# --- errors as the real layer raises them ----------------------------------------------------------


def api_error(status: int, reason: str = "", message: str = "") -> ApiException:
    """The client library's ApiException for an HTTP answer, with a Status body like the API server's."""
    reasons = {404: "Not Found", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error"}
    exc = ApiException(status=status, reason=reason or reasons.get(status, "Error"))
    exc.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status, "message": message}
    ).encode()
    return exc


def conflict(what: str) -> ApiException:
    return api_error(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {what}: the object has been modified; please apply your "
        "changes to the latest version and try again",
    )


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} not found", api_error(404, "Not Found", f"{what} not found"))


# --- label selectors and merge patches -------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _terms(selector: str) -> Iterator[str]:
    """The comma-separated terms of a selector (commas inside ``in (...)`` kept)."""
    depth, start = 0, 0
    for i, char in enumerate(selector):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            yield selector[start:i]
            start = i + 1
    yield selector[start:]


def selector_matches(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Whether ``labels`` match a label selector (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``,
    ``a in (x,y)``, ``a notin (x,y)``); an empty selector matches everything."""
    labels = labels or {}
    for raw in _terms(selector or ""):
        term = raw.strip()
        if not term:
            continue
        set_term = _SET_TERM.match(term)
        if set_term:
            key, op, values = set_term.groups()
            wanted = {v.strip() for v in values.split(",") if v.strip()}
            if (labels.get(key) in wanted) != (op == "in") or (op == "in" and key not in labels):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, None deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- what the fake serves ---------------------------------------------------------------------------


def _resource(group: str, version: str, plural: str, kind: str, namespaced: bool = True) -> ApiResource:
    verbs = frozenset({"create", "delete", "get", "list", "patch", "update", "watch"})
    return ApiResource(group, version, plural, kind, namespaced, verbs)


#: What ``discover`` returns unless the test gives its own list: the core kinds a restore writes, a few
#: apps kinds, CRDs, the CSI snapshot kinds and Davit's own.
DEFAULT_RESOURCES: tuple[ApiResource, ...] = (
    _resource("", "v1", "namespaces", "Namespace", namespaced=False),
    _resource("", "v1", "nodes", "Node", namespaced=False),
    _resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False),
    _resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    _resource("", "v1", "pods", "Pod"),
    _resource("", "v1", "configmaps", "ConfigMap"),
    _resource("", "v1", "secrets", "Secret"),
    _resource("", "v1", "services", "Service"),
    _resource("", "v1", "serviceaccounts", "ServiceAccount"),
    _resource("apps", "v1", "deployments", "Deployment"),
    _resource("apps", "v1", "statefulsets", "StatefulSet"),
    _resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False),
    _resource(csi.GROUP, csi.VERSION, "volumesnapshotclasses", "VolumeSnapshotClass", namespaced=False),
    _resource(csi.GROUP, csi.VERSION, csi.SNAPSHOTS, "VolumeSnapshot"),
    _resource(csi.GROUP, csi.VERSION, csi.CONTENTS, "VolumeSnapshotContent", namespaced=False),
    *(
        _resource(
            constants.API_GROUP, constants.API_VERSION, constants.PLURALS[k], k.value, k not in CLUSTER_SCOPED
        )
        for k in Kind
    ),
)


@dataclass(frozen=True)
class RecordedEvent:
    """An Event ``record_event`` made: about which object, and what it says."""

    kind: str
    namespace: str
    name: str
    uid: str
    type: str
    reason: str
    message: str
    component: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kind_name(kind: Kind | str) -> str:
    return kind.value if isinstance(kind, Kind) else kind


_KINDS = {k.value: k for k in Kind}


def _scope(kind: Kind | str, namespace: str | None) -> str:
    """The namespace part of an object's key: "" for a cluster-scoped Davit kind, whatever was given."""
    davit_kind = _KINDS.get(_kind_name(kind))
    return "" if davit_kind is not None and davit_kind in CLUSTER_SCOPED else namespace or ""


class FakeCluster:
    """``davit.operations.ports.Cluster`` in memory (see the module's docstring). ``objects`` is the whole
    state: (kind, namespace, name) → object; ``events`` every Event recorded; ``calls`` the name of every
    method called, in order. ``executor()`` answers with ``exec`` (a ``RecordingExecutor``).
    ``snapshot_statuses`` scripts the VolumeSnapshots ``snapshot_volume`` takes: ``namespace/claim`` →
    the snapshot's ``status`` (by default ready at once, sized as the claim requests)."""

    def __init__(
        self,
        *,
        accepted_only: bool = True,
        resources: Iterable[ApiResource] = DEFAULT_RESOURCES,
        executor: RecordingExecutor | None = None,
    ) -> None:
        self.accepted_only = accepted_only
        self.resources = list(resources)
        self.exec = executor if executor is not None else RecordingExecutor()
        self.objects: dict[Key, RawObject] = {}
        self.events: list[RecordedEvent] = []
        self.calls: list[str] = []
        #: The ``made_since`` of each ``discover`` call (this fake discovers afresh every time).
        self.discovered_since: list[float | None] = []
        self.snapshot_statuses: dict[str, dict[str, Any]] = {}
        #: Where ``expose_snapshot`` places the data mover's helper pods (there is no scheduler).
        self.mover_node = "node-a"
        self._failures: dict[str, list[BaseException]] = {}
        self._versions = itertools.count(1000)
        self._lock = threading.RLock()

    # --- test set-up and inspection ---------------------------------------------------------------

    def put(self, *objs: RawObject) -> RawObject:
        """Store objects as they are (uid, resourceVersion, generation, creationTimestamp filled in when
        missing), replacing any of the same key; returns the last one as stored."""
        stored: RawObject = {}
        with self._lock:
            for obj in objs:
                stored = self._stored(copy.deepcopy(obj))
                meta = stored["metadata"]
                self.objects[self._key(stored["kind"], meta.get("namespace"), meta["name"])] = stored
        return copy.deepcopy(stored)

    def find(self, kind: Kind | str, namespace: str | None, name: str) -> RawObject | None:
        """The stored object (a copy), whatever it is, without counting as a call."""
        with self._lock:
            found = self.objects.get((_kind_name(kind), _scope(kind, namespace), name))
            return copy.deepcopy(found) if found is not None else None

    def status(self, obj: RawObject) -> dict[str, Any]:
        """The stored status of ``obj`` now ({} when it has none or is gone)."""
        found = self.find(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        return dict((found or {}).get("status") or {})

    def of_kind(self, kind: Kind | str) -> list[RawObject]:
        with self._lock:
            return [
                copy.deepcopy(o) for (k, _ns, _n), o in sorted(self.objects.items()) if k == _kind_name(kind)
            ]

    def reasons(self) -> list[str]:
        """The reasons of the Events recorded, in order."""
        return [event.reason for event in self.events]

    def fail_next(self, method: str, error: BaseException | None = None, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` (by default the API server's 500)
        before doing anything."""
        if not callable(getattr(self, method, None)):
            raise AttributeError(f"FakeCluster has no method {method}")
        self._failures.setdefault(method, []).extend([error or api_error(500)] * times)

    def conflict_next(self, method: str, times: int = 1) -> None:
        self.fail_next(method, conflict(f"the object ({method})"), times)

    # --- internals --------------------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _version(self) -> str:
        return str(next(self._versions))

    def _stored(self, obj: RawObject) -> RawObject:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._version()
        if meta.get("namespace") in (None, ""):
            meta.pop("namespace", None)
        return obj

    def _key(self, kind: Kind | str, namespace: str | None, name: str) -> Key:
        return (_kind_name(kind), _scope(kind, namespace), name)

    def _describe(self, kind: Kind | str, namespace: str | None, name: str) -> str:
        if isinstance(kind, Kind):
            return describe_ref(kind, namespace or "", name)
        return f"{kind} {namespace + '/' if namespace else ''}{name}"

    def _write(self, key: Key, obj: RawObject, spec_before: Any = None) -> RawObject:
        """Store ``obj`` under ``key`` with a new resourceVersion (and generation, when its spec
        changed); a deleted object whose last finalizer went is removed instead."""
        meta = obj["metadata"]
        if obj.get("spec") != spec_before:
            meta["generation"] = int(meta.get("generation") or 1) + 1
        meta["resourceVersion"] = self._version()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        return copy.deepcopy(obj)

    def _existing(self, kind: Kind | str, namespace: str | None, name: str) -> tuple[Key, RawObject]:
        key = self._key(kind, namespace, name)
        found = self.objects.get(key)
        if found is None:
            raise not_found(self._describe(kind, namespace, name))
        return key, found

    def _check_version(self, stored: RawObject, read: RawObject, what: str) -> None:
        if stored["metadata"]["resourceVersion"] != read["metadata"].get("resourceVersion"):
            raise conflict(what)

    # --- Davit's custom resources -----------------------------------------------------------------

    def require(self, kind: Kind, namespace: str, name: str) -> RawObject:
        self._enter("require")
        with self._lock:
            return copy.deepcopy(self._existing(kind, namespace, name)[1])

    def get_as_is(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        self._enter("get_as_is")
        return self.find(kind, namespace, name)

    def get(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        self._enter("get")
        obj = self.find(kind, namespace, name)
        if obj is not None and self.accepted_only and kind in constants.OPERATION_KINDS:
            changed = tenancy.spec_changed(obj)
            if changed is not None:
                raise SpecChanged(changed, obj)
        return obj

    def current(
        self, kind: Kind, namespace: str, name: str, uid: str, stage: str | None = None
    ) -> RawObject | None:
        obj = self.get(kind, namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return None
        if stage is not None and (obj.get("status") or {}).get("stage") != stage:
            return None
        return obj

    def list_all(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None, sort: bool = True
    ) -> list[RawObject]:
        self._enter("list_all")
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (k, ns, _name), o in self.objects.items()
                if k == kind.value
                and (namespace is None or kind in CLUSTER_SCOPED or ns == namespace)
                and selector_matches(label_selector, o["metadata"].get("labels"))
            ]
        for item in items:
            item.setdefault("apiVersion", constants.API_GROUP_VERSION)
            item.setdefault("kind", kind.value)
        if sort:
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def create(self, kind: Kind, namespace: str, body: RawObject) -> RawObject:
        self._enter("create")
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", constants.API_GROUP_VERSION)
        obj.setdefault("kind", kind.value)
        meta = obj.setdefault("metadata", {})
        if kind not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        for server_side in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_side, None)
        return self._create(self._key(kind, namespace, meta["name"]), obj)

    def _create(self, key: Key, obj: RawObject) -> RawObject:
        with self._lock:
            if key in self.objects:
                what = f"{key[0]} {key[1] + '/' if key[1] else ''}{key[2]}"
                raise api_error(409, "Conflict", f"{what} already exists")
            self.objects[key] = self._stored(obj)
            return copy.deepcopy(obj)

    def patch(self, kind: Kind, namespace: str, name: str, body: RawObject) -> RawObject:
        self._enter("patch")
        with self._lock:
            key, stored = self._existing(kind, namespace, name)
            return self._merge(key, stored, body)

    def _merge(self, key: Key, stored: RawObject, body: RawObject) -> RawObject:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != stored["metadata"]["resourceVersion"]:
            raise conflict(f"{key[0]} {key[2]}")
        patch = {**body, "metadata": {k: v for k, v in (body.get("metadata") or {}).items()
                                       if k not in ("resourceVersion", "uid")}}  # fmt: skip
        return self._write(key, merge_patch(stored, patch), stored.get("spec"))

    def patch_status(
        self, kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False
    ) -> RawObject:
        self._enter("patch_status")
        meta = obj["metadata"]
        with self._lock:
            key, stored = self._existing(kind, meta.get("namespace"), meta["name"])
            if check_version:
                self._check_version(stored, obj, self._describe(kind, meta.get("namespace"), meta["name"]))
            updated = merge_patch(stored, {"status": status})
            updated["metadata"] = stored["metadata"]  # the status subresource changes nothing else
            return self._write(key, updated, stored.get("spec"))

    def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> None:
        self._enter("delete")
        with self._lock:
            key, stored = self._existing(kind, namespace, name)
            self._delete(key, stored, uid)

    def _delete(self, key: Key, stored: RawObject, uid: str | None = None) -> None:
        if uid is not None and stored["metadata"]["uid"] != uid:
            raise conflict(f"{key[0]} {key[2]} (precondition failed: UID in precondition: {uid})")
        if not stored["metadata"].get("finalizers"):
            del self.objects[key]
        elif not stored["metadata"].get("deletionTimestamp"):
            updated = copy.deepcopy(stored)
            updated["metadata"]["deletionTimestamp"] = _now()
            updated["metadata"]["generation"] = int(updated["metadata"].get("generation") or 1) + 1
            self._write(key, updated, updated.get("spec"))

    def add_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> RawObject:
        self._enter("add_finalizer")
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if finalizer in finalizers:
            return obj
        with self._lock:
            key, stored = self._existing(kind, meta.get("namespace"), meta["name"])
            self._check_version(stored, obj, self._describe(kind, meta.get("namespace"), meta["name"]))
            updated = copy.deepcopy(stored)
            updated["metadata"]["finalizers"] = [*finalizers, finalizer]
            return self._write(key, updated, stored.get("spec"))

    def remove_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> None:
        self._enter("remove_finalizer")
        meta = obj["metadata"]
        with self._lock:
            key = self._key(kind, meta.get("namespace"), meta["name"])
            stored = self.objects.get(key)
            if stored is None:
                return
            self._check_version(stored, obj, self._describe(kind, meta.get("namespace"), meta["name"]))
            updated = copy.deepcopy(stored)
            updated["metadata"]["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]
            self._write(key, updated, stored.get("spec"))

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        self._enter("secret_data")
        secret = self.find("Secret", namespace, name)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def location(self, namespace: str, name: str) -> RawObject | None:
        return self.get_as_is(Kind.BACKUP_LOCATION, namespace, name) if name else None

    def rule(self, namespace: str, name: str) -> RawObject | None:
        return self.get_as_is(Kind.RULE, namespace, name) if name else None

    def backup(self, namespace: str, name: str) -> RawObject | None:
        return self.get_as_is(Kind.APPLICATION_BACKUP, namespace, name) if name else None

    # --- Events -----------------------------------------------------------------------------------

    def record_event(
        self, obj: RawObject, event_type: EventType, reason: str, message: str, component: str
    ) -> None:
        try:
            self._enter("record_event")
        except ApiException:
            return  # the real one logs a refused Event and goes on
        meta = obj["metadata"]
        self.events.append(
            RecordedEvent(str(obj.get("kind")), meta.get("namespace") or "", meta["name"],
                          meta.get("uid") or "", event_type, reason, message, component)
        )  # fmt: skip

    # --- core objects -----------------------------------------------------------------------------

    def read_claim(self, namespace: str, name: str) -> RawObject | None:
        self._enter("read_claim")
        return self.find("PersistentVolumeClaim", namespace, name)

    def read_volume(self, name: str) -> RawObject | None:
        self._enter("read_volume")
        return self.find("PersistentVolume", None, name)

    def _in_namespace(self, kind: str, namespace: str, label_selector: str | None = None) -> list[RawObject]:
        with self._lock:
            return [
                copy.deepcopy(o)
                for (k, ns, _name), o in sorted(self.objects.items())
                if k == kind
                and ns == namespace
                and selector_matches(label_selector, o["metadata"].get("labels"))
            ]

    def list_claims(self, namespace: str, label_selector: str = "") -> list[RawObject]:
        self._enter("list_claims")
        return self._in_namespace("PersistentVolumeClaim", namespace, label_selector)

    def list_pods(self, namespace: str) -> list[RawObject]:
        self._enter("list_pods")
        return self._in_namespace("Pod", namespace)

    def namespaces_matching(self, label_selector: str) -> list[str]:
        self._enter("namespaces_matching")
        return sorted(
            o["metadata"]["name"]
            for o in self.of_kind("Namespace")
            if selector_matches(label_selector, o["metadata"].get("labels"))
        )

    def node_names(self) -> set[str]:
        self._enter("node_names")
        return {name for (k, _ns, name) in self.objects if k == "Node"}

    # --- discovery and any resource ---------------------------------------------------------------

    def discover(self, made_since: float | None = None) -> list[ApiResource]:
        self._enter("discover")
        self.discovered_since.append(made_since)
        return list(self.resources)

    def _resource_key(self, resource: ApiResource, namespace: str | None, name: str) -> Key:
        # The real layer builds a path from these: the same names are refused (UnsafeName).
        scope = namespace if resource.namespaced else None
        tenancy.resource_path(resource.api_version, resource.plural, scope, name)
        return (resource.kind, scope or "", name)

    def list_page(
        self,
        resource: ApiResource,
        namespace: str | None,
        label_selector: str | None,
        limit: int,
        continue_token: str | None,
    ) -> Page:
        self._enter("list_page")
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (k, ns, _name), o in sorted(self.objects.items())
                if k == resource.kind
                and (namespace is None or ns == namespace)
                and selector_matches(label_selector, o["metadata"].get("labels"))
            ]
        start = int(continue_token or 0)
        page = items[start : start + limit]
        for item in page:
            item["apiVersion"] = resource.api_version
            item["kind"] = resource.kind
        following = start + limit
        return Page(page, str(following) if following < len(items) else None)

    def get_cluster_object(self, ref: ClusterRef) -> RawObject | None:
        self._enter("get_cluster_object")
        tenancy.resource_path(ref.api_version, ref.plural, None, ref.name)
        for resource in self.resources:
            if resource.api_version == ref.api_version and resource.plural == ref.plural:
                found = self.find(resource.kind, None, ref.name)
                if found is not None:
                    found.setdefault("apiVersion", resource.api_version)
                    found.setdefault("kind", resource.kind)
                return found
        return None

    def find_object(self, resource: ApiResource, namespace: str, name: str) -> RawObject | None:
        self._enter("find_object")
        tenancy.resource_path(resource.api_version, resource.plural, namespace, name)
        with self._lock:
            found = self.objects.get((resource.kind, namespace, name))
            if found is None:
                return None
            return {**copy.deepcopy(found), "apiVersion": resource.api_version, "kind": resource.kind}

    def get_object(self, resource: ApiResource, namespace: str | None, name: str) -> RawObject | None:
        self._enter("get_object")
        key = self._resource_key(resource, namespace, name)
        with self._lock:
            found = self.objects.get(key)
            return copy.deepcopy(found) if found is not None else None

    def create_object(self, resource: ApiResource, namespace: str | None, body: RawObject) -> RawObject:
        self._enter("create_object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            meta["namespace"] = namespace
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        for server_side in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_side, None)
        return self._create(self._resource_key(resource, namespace, meta["name"]), obj)

    def patch_object(
        self, resource: ApiResource, namespace: str | None, name: str, body: RawObject
    ) -> RawObject:
        self._enter("patch_object")
        key = self._resource_key(resource, namespace, name)
        with self._lock:
            stored = self.objects.get(key)
            if stored is None:
                raise not_found(f"{resource.kind} {namespace + '/' if namespace else ''}{name}")
            return self._merge(key, stored, body)

    def delete_object(
        self, resource: ApiResource, namespace: str | None, name: str, propagation: str = "Foreground"
    ) -> None:
        self._enter("delete_object")
        key = self._resource_key(resource, namespace, name)
        with self._lock:
            stored = self.objects.get(key)
            if stored is None:
                raise not_found(f"{resource.kind} {namespace + '/' if namespace else ''}{name}")
            self._delete(key, stored)

    # --- CSI snapshots ----------------------------------------------------------------------------

    def snapshot_drivers(self) -> set[str]:
        self._enter("snapshot_drivers")
        return {str(c.get("driver")) for c in self.of_kind("VolumeSnapshotClass")}

    def snapshot_volume(
        self,
        plan: VolumePlan,
        backup_name: str,
        backup_uid: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """As ``davit.kube.csi.snapshot_volume``: the backup's VolumeSnapshot of the claim (made unless
        one of this backup is there), its status as ``snapshot_statuses`` scripts it: ready, failed
        (SnapshotError), or never ready (SnapshotTimeout, after one heartbeat)."""
        self._enter("snapshot_volume")
        if plan.mode != "snapshot":
            raise ValueError(f"{plan.part} is planned as {plan.mode}, not snapshot")
        name = csi.snapshot_name(backup_name, plan.claim, backup_uid)
        where = f"{plan.namespace}/{name}"
        with self._lock:
            snapshot = self.find("VolumeSnapshot", plan.namespace, name)
            if snapshot is not None and not csi.owned_by(snapshot, plan, backup_uid):
                raise csi.SnapshotError(
                    f"VolumeSnapshot {where} exists but was not created by this backup for claim {plan.claim}"
                )
            if snapshot is None:
                class_name = csi.choose_class(self.of_kind("VolumeSnapshotClass"), plan.driver)
                snapshot = self.put(csi.snapshot_body(name, plan, class_name, backup_name, backup_uid))
            class_name = str((snapshot.get("spec") or {}).get("volumeSnapshotClassName") or "")
            claim = self.find("PersistentVolumeClaim", plan.namespace, plan.claim) or {}
            size = (
                ((claim.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "1Gi")
            )
            status = self.snapshot_statuses.get(plan.part) or {
                "readyToUse": True,
                "boundVolumeSnapshotContentName": f"snapcontent-{snapshot['metadata']['uid']}",
                "restoreSize": size,
                "creationTime": _now(),
            }
            snapshot = self.put({**snapshot, "status": status})
        state = csi.SnapshotState.of(snapshot)
        result = csi.outcome(state)
        if result == "ready":
            return csi.result_entry(name, class_name, state)
        if result == "failed":
            raise csi.SnapshotError(f"VolumeSnapshot {where} failed: {state.error}")
        if heartbeat is not None:
            heartbeat()
        raise csi.SnapshotTimeout(
            f"VolumeSnapshot {where} was not ready to use after {timeout_seconds:g}s (timeout)"
        )

    def delete_backup_snapshots(self, namespaces: list[str], backup_uid: str) -> list[str]:
        self._enter("delete_backup_snapshots")
        deleted: list[str] = []
        with self._lock:
            for namespace in namespaces:
                for snapshot in self._in_namespace(
                    "VolumeSnapshot", namespace, csi.backup_selector(backup_uid)
                ):
                    key = ("VolumeSnapshot", namespace, snapshot["metadata"]["name"])
                    self._delete(key, self.objects[key])
                    deleted.append(f"{namespace}/{snapshot['metadata']['name']}")
        return deleted

    # --- the data mover ---------------------------------------------------------------------------

    def expose_snapshot(
        self,
        plan: VolumePlan,
        snapshot: str,
        restore_size: int,
        backup_name: str,
        backup_uid: str,
        image: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None] | None = None,
    ) -> VolumePlan:
        """As ``davit.kube.mover.expose_snapshot`` without a scheduler or provisioner: the temporary claim
        is stored bound, the helper pod running on ``mover_node``."""
        self._enter("expose_snapshot")
        name = mover_objects.derived_name(backup_name, plan.claim, backup_uid)
        labels = mover_objects.backup_labels(backup_name, backup_uid)
        source = self.read_claim(plan.namespace, plan.claim)
        if source is None:
            raise mover.MoverError(f"claim {plan.part} was deleted before its snapshot's data was read")
        claim = mover_objects.temp_claim(source, name, snapshot, restore_size, labels)
        claim["spec"]["volumeName"] = f"pv-{name}"
        self.put(claim)
        pod = mover_objects.helper_pod(name, plan.namespace, name, image, labels, read_only=True)
        pod["spec"]["nodeName"] = self.mover_node
        pod["status"] = {"phase": "Running"}
        stored = self.put(pod)
        return dataclasses.replace(
            plan, node=self.mover_node, pod_uid=stored["metadata"]["uid"], source="pod",
            plugin_dir="kubernetes.io~csi", volume=f"pv-{name}", read_claim=name, path="",
        )  # fmt: skip

    def create_helper_pod(self, body: RawObject) -> RawObject:
        """Stored scheduled on ``mover_node`` at once (there is no scheduler), or the one there."""
        self._enter("create_helper_pod")
        meta = body["metadata"]
        with self._lock:
            found = self.objects.get(("Pod", meta["namespace"], meta["name"]))
        if found is not None:
            return copy.deepcopy(found)
        pod = copy.deepcopy(body)
        pod["spec"]["nodeName"] = self.mover_node
        pod["status"] = {"phase": "Pending"}
        return self.put(pod)

    def list_temporary(self) -> list[RawObject]:
        self._enter("list_temporary")
        with self._lock:
            return [
                copy.deepcopy(o) for (k, _ns, _n), o in sorted(self.objects.items())
                if k in ("Pod", "PersistentVolumeClaim")
                and mover_objects.MOVER_LABEL in (o["metadata"].get("labels") or {})
            ]  # fmt: skip

    def delete_temporary(self, namespace: str, label_selector: str) -> list[str]:
        self._enter("delete_temporary")
        deleted: list[str] = []
        with self._lock:
            for kind in ("Pod", "PersistentVolumeClaim"):
                for obj in self._in_namespace(kind, namespace, label_selector):
                    key = (kind, namespace, obj["metadata"]["name"])
                    self._delete(key, self.objects[key])
                    deleted.append(f"{kind} {namespace}/{obj['metadata']['name']}")
        return deleted

    # --- exec in pods -----------------------------------------------------------------------------

    def executor(self) -> exec_rules.Executor:
        self._enter("executor")
        return self.exec


@pytest.fixture
def fake_cluster() -> FakeCluster:
    return FakeCluster()


# --- builders ---------------------------------------------------------------------------------------


def _meta(name: str, namespace: str | None, labels: dict[str, str] | None, uid: str | None) -> RawObject:
    meta: RawObject = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if uid:
        meta["uid"] = uid
    return meta


def operation(
    kind: Kind,
    name: str,
    namespace: str = "app",
    *,
    stage: str | None = None,
    status: str | None = None,
    labels: dict[str, str] | None = None,
    uid: str | None = None,
    finalizers: list[str] | None = None,
    status_fields: dict[str, Any] | None = None,
    **spec: Any,
) -> RawObject:
    """A Davit operation (or any Davit object) with ``spec`` (camelCase keys). Given a ``stage``, it is
    one the watcher accepted (``status.acceptedGeneration`` 1: the builders' objects start at generation
    1), with ``status`` (by default Pending) and ``status_fields``."""
    obj: RawObject = {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": kind.value,
        "metadata": _meta(name, None if kind in CLUSTER_SCOPED else namespace, labels, uid),
        "spec": spec,
    }
    if finalizers:
        obj["metadata"]["finalizers"] = list(finalizers)
    if stage is not None:
        obj["status"] = {"stage": str(stage), "status": str(status or "Pending"), "acceptedGeneration": 1,
                         **(status_fields or {})}  # fmt: skip
    elif status_fields:
        obj["status"] = dict(status_fields)
    return obj


def backup(name: str, namespace: str = "app", **kwargs: Any) -> RawObject:
    """An ApplicationBackup, e.g. ``backup("b1", "app", stage="Initial", backupLocation="loc",
    namespaces=["app"])``."""
    kwargs.setdefault("namespaces", [namespace])
    return operation(Kind.APPLICATION_BACKUP, name, namespace, **kwargs)


def restore(name: str, namespace: str = "app", **kwargs: Any) -> RawObject:
    """An ApplicationRestore, e.g. ``restore("r1", "app", stage="Initial", backupName="b1",
    backupLocation="loc")``."""
    return operation(Kind.APPLICATION_RESTORE, name, namespace, **kwargs)


def schedule(name: str, namespace: str = "app", **kwargs: Any) -> RawObject:
    return operation(Kind.APPLICATION_BACKUP_SCHEDULE, name, namespace, **kwargs)


def location(
    name: str, namespace: str = "app", *, type: str = "local", path: str = "/var/lib/davit", **fields: Any
) -> RawObject:
    """A BackupLocation (its ``location`` block: ``type``, ``path`` and camelCase ``fields``)."""
    return {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": Kind.BACKUP_LOCATION.value,
        "metadata": _meta(name, namespace, None, None),
        "location": {"type": type, "path": path, **fields},
    }


def rule(name: str, namespace: str = "app", rules: list[dict[str, Any]] | None = None) -> RawObject:
    """A Rule; ``rules`` its items (``podSelector``, ``container``, ``actions``)."""
    return {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": Kind.RULE.value,
        "metadata": _meta(name, namespace, None, None),
        "rules": list(rules or []),
    }


def schedule_policy(name: str, **policy: Any) -> RawObject:
    return {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": Kind.SCHEDULE_POLICY.value,
        "metadata": {"name": name},
        "policy": policy,
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> RawObject:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None, labels, None)}


def node(name: str, labels: dict[str, str] | None = None) -> RawObject:
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(name, None, labels, None)}


def secret(name: str, namespace: str = "app", **values: str) -> RawObject:
    """A Secret holding ``values`` (base64-encoded under ``data``, as the API server returns them)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, namespace, None, None),
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def claim(
    name: str,
    namespace: str = "app",
    *,
    volume: str | None = None,
    storage: str = "1Gi",
    storage_class: str | None = None,
    labels: dict[str, str] | None = None,
    uid: str | None = None,
) -> RawObject:
    """A PersistentVolumeClaim, Bound to ``volume`` when given (else Pending)."""
    spec: RawObject = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    if volume:
        spec["volumeName"] = volume
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(name, namespace, labels, uid),
        "spec": spec,
        "status": {"phase": "Bound" if volume else "Pending"},
    }


def volume(
    name: str,
    *,
    claim: tuple[str, str] | None = None,
    driver: str | None = None,
    local_path: str | None = None,
    node: str | None = None,
    capacity: str = "1Gi",
) -> RawObject:
    """A PersistentVolume: a CSI one of ``driver``, or a ``local`` one at ``local_path`` on ``node``
    (a ``hostPath`` without ``node``); bound to ``claim`` (namespace, name) when given."""
    spec: RawObject = {"capacity": {"storage": capacity}, "accessModes": ["ReadWriteOnce"]}
    if driver:
        spec["csi"] = {"driver": driver, "volumeHandle": f"{name}-handle"}
    elif local_path and node:
        spec["local"] = {"path": local_path}
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}  # fmt: skip
    elif local_path:
        spec["hostPath"] = {"path": local_path}
    if claim:
        spec["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": claim[0], "name": claim[1]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": spec,
        "status": {"phase": "Bound" if claim else "Available"},
    }


def pod(
    name: str,
    namespace: str = "app",
    *,
    claims: Iterable[str] = (),
    node: str | None = "node-1",
    containers: Iterable[str] = ("app",),
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    uid: str | None = None,
) -> RawObject:
    """A Pod with ``containers`` (all ready when Running), mounting each of ``claims``, on ``node``."""
    names, mounted = list(containers), list(claims)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(name, namespace, labels, uid),
        "spec": {
            **({"nodeName": node} if node else {}),
            "containers": [
                {
                    "name": c,
                    "image": "busybox",
                    "volumeMounts": [
                        {"name": f"v-{i}", "mountPath": f"/data/{i}"} for i, _ in enumerate(mounted)
                    ],
                }
                for c in names
            ],
            "volumes": [
                {"name": f"v-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(mounted)
            ],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": c, "ready": phase == "Running"} for c in names],
        },
    }


def snapshot_class(name: str, driver: str, default: bool = False) -> RawObject:
    meta: RawObject = {"name": name}
    if default:
        meta["annotations"] = {csi.DEFAULT_CLASS_ANNOTATION: "true"}
    return {
        "apiVersion": csi.API_VERSION,
        "kind": "VolumeSnapshotClass",
        "metadata": meta,
        "driver": driver,
        "deletionPolicy": "Delete",
    }
