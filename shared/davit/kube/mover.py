"""The data mover's Kubernetes calls (``davit.volumes.mover`` says what the objects are and why).

``expose_snapshot`` makes the temporary claim from a ready VolumeSnapshot and the helper pod that mounts
it, and waits until the pod runs on a node (the claim is bound by then: a pod with an unbound claim is
not scheduled); the result is the plan the node agent of that node reads the claim's directory by.
Creating is idempotent: an object of the derived name that this operation made is taken over, one it did
not make fails the volume rather than being read or replaced.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError as Urllib3Error

from davit.api.objects import RawObject
from davit.kube import core, csi
from davit.settings import Settings
from davit.volumes import mover
from davit.volumes.claims import VolumePlan, plugin_dir

log = structlog.get_logger(__name__)

#: Longest single watch request while waiting, so ``heartbeat`` runs at least this often.
HEARTBEAT_SECONDS = 30.0


class MoverError(csi.SnapshotError):
    """The snapshot's data could not be mounted for reading (the reason goes into the volume's status)."""


def _create_or_read(create: Callable[[], Any], read: Callable[[], RawObject | None]) -> RawObject:
    try:
        created: RawObject = json.loads(create().data)
        return created
    except ApiException as exc:
        if exc.status != 409:
            raise MoverError(csi.api_reason(exc)) from exc
    found = read()
    if found is None:  # made and deleted again in between: the caller's next try makes it anew
        raise MoverError("the object was deleted while it was being made")
    return found


def read_pod(api: client.ApiClient, namespace: str, name: str) -> RawObject | None:
    pods = client.CoreV1Api(api)
    try:
        obj: RawObject = json.loads(pods.read_namespaced_pod(name, namespace, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def create_helper_pod(api: client.ApiClient, body: RawObject) -> RawObject:
    """Create the helper pod ``body`` describes, or take over the one of that name with its labels; a pod
    of that name made by anybody else is MoverError."""
    meta = body["metadata"]
    pods = client.CoreV1Api(api)
    pod = _create_or_read(
        lambda: pods.create_namespaced_pod(meta["namespace"], body, _preload_content=False),
        lambda: read_pod(api, meta["namespace"], meta["name"]),
    )
    labels = (pod.get("metadata") or {}).get("labels") or {}
    claims = [(v.get("persistentVolumeClaim") or {}).get("claimName")
              for v in (pod.get("spec") or {}).get("volumes") or []]  # fmt: skip
    wanted = [(v.get("persistentVolumeClaim") or {}).get("claimName") for v in body["spec"]["volumes"]]
    if any(labels.get(k) != v for k, v in meta["labels"].items()) or claims != wanted:
        raise MoverError(f"pod {meta['namespace']}/{meta['name']} exists and was not made by this operation")
    return pod


def expose_snapshot(
    api: client.ApiClient,
    plan: VolumePlan,
    snapshot: str,
    restore_size: int,
    backup_name: str,
    backup_uid: str,
    image: str,
    timeout_seconds: float,
    heartbeat: Callable[[], None] | None = None,
) -> VolumePlan:
    """Mount VolumeSnapshot ``snapshot`` of ``plan``'s claim through a temporary claim and a helper pod;
    the plan to read it by once the pod runs. MoverError (with the reason) when the objects cannot be
    made or the pod does not run within ``timeout_seconds``."""
    namespace = plan.namespace
    name = mover.derived_name(backup_name, plan.claim, backup_uid)
    labels = mover.backup_labels(backup_name, backup_uid)
    where = f"{namespace}/{name}"
    source = core.read_claim(api, namespace, plan.claim)
    if source is None:
        raise MoverError(f"claim {plan.part} was deleted before its snapshot's data was read")
    claims = client.CoreV1Api(api)
    body = mover.temp_claim(source, name, snapshot, restore_size, labels)
    claim = _create_or_read(
        lambda: claims.create_namespaced_persistent_volume_claim(namespace, body, _preload_content=False),
        lambda: core.read_claim(api, namespace, name),
    )
    reason = mover.claim_made_from(claim, snapshot, labels)
    if reason:
        raise MoverError(f"claim {where} exists, and {reason}")
    pod = create_helper_pod(api, mover.helper_pod(name, namespace, name, image, labels, read_only=True))
    deadline = time.monotonic() + timeout_seconds
    while True:
        placed = mover.pod_placed(pod)
        if placed is not None:
            bound = core.read_claim(api, namespace, name)
            volume_name = str(((bound or {}).get("spec") or {}).get("volumeName") or "")
            volume = core.read_volume(api, volume_name) if volume_name else None
            if volume is not None:
                node, uid = placed
                log.info("mover.mounted", claim=plan.part, temporary=where, node=node, volume=volume_name)
                return replace(
                    plan, node=node, pod_uid=uid, source="pod", volume=volume_name, read_claim=name,
                    plugin_dir=plugin_dir(volume.get("spec") or {}), path="",
                )  # fmt: skip
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise MoverError(f"helper pod {where} ended ({phase}) before the snapshot's data was read")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MoverError(
                f"the claim made from VolumeSnapshot {namespace}/{snapshot} was not mounted by helper pod "
                f"{where} after {timeout_seconds:g}s (timeout)"
            )
        if heartbeat is not None:
            heartbeat()
        pod = _watch_pod(api, pod, min(remaining, HEARTBEAT_SECONDS)) or read_pod(api, namespace, name) or {}
        if not pod:
            raise MoverError(f"helper pod {where} was deleted before the snapshot's data was read")


def _watch_pod(api: client.ApiClient, pod: RawObject, seconds: float) -> RawObject | None:
    """The pod's next version within ``seconds`` of the one in hand; None when none came."""
    meta = pod["metadata"]
    timeout = max(1, math.ceil(seconds))
    response = client.CoreV1Api(api).list_namespaced_pod(
        meta["namespace"], field_selector=f"metadata.name={meta['name']}", watch=True,
        resource_version=meta["resourceVersion"], timeout_seconds=timeout, _preload_content=False,
        _request_timeout=(10, timeout + 10),
    )  # fmt: skip
    try:
        for line in iter_resp_lines(response):
            if not line:
                continue
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                found: RawObject = event.get("object") or {}
                return found
            return None  # DELETED or ERROR (410 Gone): the caller reads it again
    except Urllib3Error:
        return None
    finally:
        response.close()
        response.release_conn()
    return None


def list_temporary(api: client.ApiClient) -> list[RawObject]:
    """Every pod and claim of the data mover, in every namespace (``kind`` set on each)."""
    core_api = client.CoreV1Api(api)
    found: list[RawObject] = []
    for kind, call in (
        ("Pod", core_api.list_pod_for_all_namespaces),
        ("PersistentVolumeClaim", core_api.list_persistent_volume_claim_for_all_namespaces),
    ):
        items = json.loads(call(label_selector=mover.MOVER_LABEL, _preload_content=False).data).get("items")
        found.extend({**item, "kind": kind} for item in items or [])  # fmt: skip
    return found


def delete_temporary(api: client.ApiClient, namespace: str, label_selector: str) -> list[str]:
    """Delete the helper pods and temporary claims matching ``label_selector`` in ``namespace``; the
    ``Kind namespace/name`` of each one asked to go."""
    core_api = client.CoreV1Api(api)
    deleted: list[str] = []
    listings = (
        ("Pod", core_api.list_namespaced_pod, core_api.delete_namespaced_pod),
        ("PersistentVolumeClaim", core_api.list_namespaced_persistent_volume_claim,
         core_api.delete_namespaced_persistent_volume_claim),
    )  # fmt: skip
    # Pods first: a claim in use stays (its protection finalizer) until the pod that mounts it is gone.
    for kind, list_call, delete_call in listings:
        items = (
            json.loads(list_call(namespace, label_selector=label_selector, _preload_content=False).data).get(
                "items"
            )
            or []
        )
        for item in items:
            name = item["metadata"]["name"]
            try:
                delete_call(name, namespace, body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=item["metadata"]["uid"])))  # fmt: skip
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
            deleted.append(f"{kind} {namespace}/{name}")
    return deleted


#: The helper image where a service runs outside a pod and none is set (the local stack, whose kubelet
#: runs no images).
DEV_HELPER_IMAGE = "davit:latest"


def own_image(pod: RawObject | None) -> str | None:
    """The image of a Davit pod's container (every Davit pod runs one), as the API server has it."""
    containers = ((pod or {}).get("spec") or {}).get("containers") or []
    image = containers[0].get("image") if containers and isinstance(containers[0], dict) else None
    return image if isinstance(image, str) and image else None


def resolve_helper_image(api: client.ApiClient, settings: Settings) -> Settings:
    """``settings`` with ``restore_helper_image`` filled in: as set, else the image of this service's own
    pod, else (outside a pod, or when the pod cannot be read) ``DEV_HELPER_IMAGE``, with a warning."""
    if settings.restore_helper_image:
        return settings
    image = None
    if settings.pod_name and settings.pod_namespace:
        try:
            image = own_image(read_pod(api, settings.pod_namespace, settings.pod_name))
        except ApiException as exc:
            log.warning("helper_image.own_pod_unreadable", pod=settings.pod_name, status=exc.status)
        if image is None:
            log.warning("helper_image.fallback", image=DEV_HELPER_IMAGE, pod=settings.pod_name)
    return replace(settings, restore_helper_image=image or DEV_HELPER_IMAGE)
