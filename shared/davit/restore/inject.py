"""Holding a restored pod until its volumes' data is back (pure).

A pod that mounts a claim whose data the restore writes gets the init container of
``davit.restore.init_container`` first among its init containers: it mounts each such volume and waits for the
node agent's marker, so the application never starts on an empty or half-written volume.

Only pods get it, never a controller's pod template: the template stays as backed up, and a pod the
controller creates later (a restart elsewhere, a scale-up) starts at once instead of waiting for a marker
that no node agent will write. So a pod that mounts restored data is restored itself, without owner
references; its controller, restored after it, adopts it (the labels and, for Deployments, the
``pod-template-hash`` match), as Velero does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from davit.api.objects import RawObject
from davit.restore import init_container


@dataclass(frozen=True)
class RestoredMount:
    """A volume of a restored pod whose data the node agent writes."""

    pod: str
    volume: str
    claim: str


def data_mounts(pod: RawObject, claims: set[str]) -> list[RestoredMount]:
    """The pod's volumes backed by one of ``claims`` (claim names in the pod's namespace)."""
    mounts = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim in claims:
            mounts.append(RestoredMount(pod["metadata"]["name"], volume["name"], claim))
    return mounts


#: The user the init container runs as when the pod names root: the Davit image's own (Dockerfile).
INIT_USER = 10001


def init_security_context(pod_security: RawObject) -> RawObject:
    """The restricted securityContext of the init container: never root, nothing to escalate, no
    capabilities, the runtime's default seccomp profile, a read-only image. It runs as the pod's user
    (the application's, who owns the restored volume and so may remove the marker), and as the Davit
    image's user where the pod names none or names root."""
    context: RawObject = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    user = pod_security.get("runAsUser")
    if not isinstance(user, int) or isinstance(user, bool) or user <= 0:
        context["runAsUser"] = INIT_USER
        if not isinstance(pod_security.get("runAsGroup"), int) or pod_security.get("runAsGroup") == 0:
            context["runAsGroup"] = INIT_USER
    return context


def hold_until_restored(
    pod: RawObject, mounts: list[RestoredMount], restore_uid: str, image: str
) -> RawObject:
    """A copy of ``pod`` with the waiting init container first, mounting each of ``mounts``."""
    held = copy.deepcopy(pod)
    spec = held.setdefault("spec", {})
    paths = [f"{init_container.MOUNT_ROOT}/{m.volume}" for m in mounts]
    container = {
        "name": init_container.CONTAINER_NAME,
        "image": image,
        # Davit's own image, which the node has pulled for the node agent already.
        "imagePullPolicy": "IfNotPresent",
        "securityContext": init_security_context(spec.get("securityContext") or {}),
        "command": ["python", "-m", "davit.restore.init_container", *paths],
        "env": [{"name": init_container.UID_ENV, "value": restore_uid}],
        "volumeMounts": [{"name": m.volume, "mountPath": p} for m, p in zip(mounts, paths, strict=True)],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    }
    others = [c for c in spec.get("initContainers") or [] if c.get("name") != init_container.CONTAINER_NAME]
    spec["initContainers"] = [container, *others]
    # Adopted by its restored controller rather than owned by the backed-up one (whose uid is gone).
    held["metadata"].pop("ownerReferences", None)
    return held


def released(pod: RawObject, restore_uid: str) -> bool:
    """Whether ``pod`` waited in this restore's init container and was released: the container (with
    this restore's uid) ended with exit code 0, which it does only once every marker was there. Then
    every volume it waited for was written already, and the application may be running on them."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    waiting = [c for c in spec.get("initContainers") or [] if c.get("name") == init_container.CONTAINER_NAME]
    if not waiting:
        return False
    env = {e.get("name"): e.get("value") for e in waiting[0].get("env") or []}
    if env.get(init_container.UID_ENV) != restore_uid:
        return False
    for container in status.get("initContainerStatuses") or []:
        if container.get("name") == init_container.CONTAINER_NAME:
            terminated = (container.get("state") or {}).get("terminated") or {}
            return terminated.get("exitCode") == 0
    return False
