"""``davit.operations.ports.Cluster`` over the API server: Davit's objects through ``Operations``, the
rest through the functions of this package (``core``, ``discovery``, ``events``, ``csi``,
``execution``), all with the one ``ApiClient`` of ``Operations``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from davit.api.objects import RawObject
from davit.backup import exec_rules
from davit.backup.selection import ApiResource, ClusterRef
from davit.constants import Kind
from davit.kube import clients, core, csi, discovery, events, mover
from davit.kube.execution import KubernetesExecutor
from davit.kube.operations import NotFound, Operations
from davit.tenancy import resource_path
from davit.volumes.claims import VolumePlan


def _describe(resource: ApiResource, namespace: str | None, name: str) -> str:
    return f"{resource.kind} {namespace + '/' if namespace else ''}{name} ({resource.api_version})"


class KubeCluster:
    """The API server ``ops`` talks to (its ``accepted_only`` and ``field_manager`` apply)."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.api = ops.api
        #: The last discovery and when (epoch seconds) its first request went out.
        self._discovered: tuple[float, list[ApiResource]] | None = None

    # --- Davit's custom resources -----------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        return self.ops.get(kind, namespace, name)

    def get_as_is(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        return self.ops.get_as_is(kind, namespace, name)

    def require(self, kind: Kind, namespace: str, name: str) -> RawObject:
        return self.ops.require(kind, namespace, name)

    def current(
        self, kind: Kind, namespace: str, name: str, uid: str, stage: str | None = None
    ) -> RawObject | None:
        return self.ops.current(kind, namespace, name, uid, stage)

    def list_all(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None, sort: bool = True
    ) -> list[RawObject]:
        return self.ops.list_all(kind, namespace, label_selector=label_selector, sort=sort)

    def create(self, kind: Kind, namespace: str, body: RawObject) -> RawObject:
        return self.ops.create(kind, namespace, body)

    def patch(self, kind: Kind, namespace: str, name: str, body: RawObject) -> RawObject:
        return self.ops.patch(kind, namespace, name, body)

    def patch_status(
        self, kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False
    ) -> RawObject:
        return self.ops.patch_status(kind, obj, status, check_version=check_version)

    def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> None:
        self.ops.delete(kind, namespace, name, uid=uid)

    def add_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> RawObject:
        return self.ops.add_finalizer(kind, obj, finalizer)

    def remove_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> None:
        self.ops.remove_finalizer(kind, obj, finalizer)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.ops.secret_data(namespace, name)

    def location(self, namespace: str, name: str) -> RawObject | None:
        return self.ops.location(namespace, name)

    def rule(self, namespace: str, name: str) -> RawObject | None:
        return self.ops.rule(namespace, name)

    def backup(self, namespace: str, name: str) -> RawObject | None:
        return self.ops.backup(namespace, name)

    # --- Events -----------------------------------------------------------------------------------

    def record_event(
        self, obj: RawObject, event_type: events.EventType, reason: str, message: str, component: str
    ) -> None:
        events.record(self.api, obj, event_type, reason, message, component)

    # --- core objects -----------------------------------------------------------------------------

    def read_claim(self, namespace: str, name: str) -> RawObject | None:
        return core.read_claim(self.api, namespace, name)

    def read_volume(self, name: str) -> RawObject | None:
        return core.read_volume(self.api, name)

    def list_claims(self, namespace: str, label_selector: str = "") -> list[RawObject]:
        return core.list_claims(self.api, namespace, label_selector)

    def list_pods(self, namespace: str) -> list[RawObject]:
        return core.list_pods(self.api, namespace)

    def namespaces_matching(self, label_selector: str) -> list[str]:
        return discovery.namespaces_matching(self.api, label_selector)

    def node_names(self) -> set[str]:
        response = client.CoreV1Api(self.api).list_node(_preload_content=False)
        return {str(n["metadata"]["name"]) for n in json.loads(response.data).get("items") or []}

    # --- discovery and any resource ---------------------------------------------------------------

    def discover(self, made_since: float | None = None) -> list[ApiResource]:
        last = self._discovered
        if made_since is not None and last is not None and last[0] >= made_since:
            return list(last[1])
        started = time.time()
        resources = discovery.discover(self.api)
        self._discovered = (started, resources)
        return list(resources)

    def list_page(
        self,
        resource: ApiResource,
        namespace: str | None,
        label_selector: str | None,
        limit: int,
        continue_token: str | None,
    ) -> discovery.Page:
        return discovery.list_page(self.api, resource, namespace, label_selector, limit, continue_token)

    def get_cluster_object(self, ref: ClusterRef) -> RawObject | None:
        return discovery.get_cluster_object(self.api, ref)

    def find_object(self, resource: ApiResource, namespace: str, name: str) -> RawObject | None:
        return discovery.find_object(self.api, resource, namespace, name)

    def get_object(self, resource: ApiResource, namespace: str | None, name: str) -> RawObject | None:
        path = resource_path(resource.api_version, resource.plural, namespace, name)
        try:
            found: RawObject = clients.send_json(self.api, "GET", path)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def create_object(self, resource: ApiResource, namespace: str | None, body: RawObject) -> RawObject:
        created: RawObject = clients.send_json(
            self.api, "POST", resource_path(resource.api_version, resource.plural, namespace), body=body
        )
        return created

    def patch_object(
        self, resource: ApiResource, namespace: str | None, name: str, body: RawObject
    ) -> RawObject:
        path = resource_path(resource.api_version, resource.plural, namespace, name)
        try:
            patched: RawObject = clients.send_json(
                self.api, "PATCH", path, body=body, content_type="application/merge-patch+json"
            )
        except client.ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{_describe(resource, namespace, name)} not found", exc) from exc
            raise
        return patched

    def delete_object(
        self, resource: ApiResource, namespace: str | None, name: str, propagation: str = "Foreground"
    ) -> None:
        path = resource_path(resource.api_version, resource.plural, namespace, name)
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        try:
            clients.send_json(self.api, "DELETE", path, body=body)
        except client.ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{_describe(resource, namespace, name)} not found", exc) from exc
            raise

    # --- CSI snapshots ----------------------------------------------------------------------------

    def snapshot_drivers(self) -> set[str]:
        try:
            response = client.CustomObjectsApi(self.api).list_cluster_custom_object(
                csi.GROUP, csi.VERSION, "volumesnapshotclasses", _preload_content=False
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return set()
            raise
        return {str(c.get("driver")) for c in json.loads(response.data).get("items") or []}

    def snapshot_volume(
        self,
        plan: VolumePlan,
        backup_name: str,
        backup_uid: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        return csi.snapshot_volume(self.api, plan, backup_name, backup_uid, timeout_seconds, heartbeat)

    def delete_backup_snapshots(self, namespaces: list[str], backup_uid: str) -> list[str]:
        return csi.delete_backup_snapshots(self.api, namespaces, backup_uid)

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
        return mover.expose_snapshot(self.api, plan, snapshot, restore_size, backup_name, backup_uid, image,
                                     timeout_seconds, heartbeat)  # fmt: skip

    def create_helper_pod(self, body: RawObject) -> RawObject:
        return mover.create_helper_pod(self.api, body)

    def list_temporary(self) -> list[RawObject]:
        return mover.list_temporary(self.api)

    def delete_temporary(self, namespace: str, label_selector: str) -> list[str]:
        return mover.delete_temporary(self.api, namespace, label_selector)

    # --- workloads an in-place restore scaled down (the watcher's sweep) --------------------------

    def list_held_workloads(self, label: str) -> list[RawObject]:
        """Every Deployment, StatefulSet and ReplicaSet carrying ``label``, in every namespace
        (``apiVersion`` and ``kind`` set on each)."""
        apps = client.AppsV1Api(self.api)
        found: list[RawObject] = []
        for kind, call in (
            ("Deployment", apps.list_deployment_for_all_namespaces),
            ("StatefulSet", apps.list_stateful_set_for_all_namespaces),
            ("ReplicaSet", apps.list_replica_set_for_all_namespaces),
        ):
            items = json.loads(call(label_selector=label, _preload_content=False).data).get("items")
            found.extend({**item, "apiVersion": "apps/v1", "kind": kind} for item in items or [])
        return found

    def patch_workload(self, kind: str, namespace: str, name: str, body: RawObject) -> None:
        """JSON merge patch of a Deployment, StatefulSet or ReplicaSet."""
        apps = client.AppsV1Api(self.api)
        calls = {
            "Deployment": apps.patch_namespaced_deployment,
            "StatefulSet": apps.patch_namespaced_stateful_set,
            "ReplicaSet": apps.patch_namespaced_replica_set,
        }
        resource_path(
            "apps/v1", kind.lower() + "s", namespace, name
        )  # UnsafeName for a name that could not be one
        calls[kind](name, namespace, body, _content_type="application/merge-patch+json")

    # --- exec in pods -----------------------------------------------------------------------------

    def executor(self) -> exec_rules.Executor:
        return KubernetesExecutor(self.api)
