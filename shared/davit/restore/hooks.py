"""Restore hooks (pure): init containers added to restored pods, and where the restored pods stand before
the post-restore exec rule runs in them.

Two kinds, as Velero's restore hooks:

* **Init-container hooks** (``spec.initContainerHooks``): each hook's containers are added to the restored
  pods its ``podSelector`` matches, after Davit's own ``davit-restore-wait`` (so they see the restored
  data) and before the pod's own init containers. Only pods the restore creates get them, never a
  controller's template: a pod the controller makes later starts as the application defines it.
* **The post-restore exec rule** (``spec.postExecRule``): a Rule of the restore's namespace run in the
  restored namespaces' pods once every pod it selects is running (after the data is written).

The restore service waits for the hooked pods (:func:`pod_states`), up to ``hookTimeout``: a pod whose hook
container exited non-zero, or that never runs, is a hook failure named in the restore's reason, and the
restore ends PartialSuccess: its objects and data are there, but what the hooks were to do is not known
to be done.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from davit.api.objects import RawObject
from davit.restore import init_container
from davit.restore.fields import RESTORE_UID_ANNOTATION

#: How long the hooks wait for the restored pods to run, unless ``spec.hookTimeout`` says otherwise.
DEFAULT_TIMEOUT_SECONDS: Final = 300.0
#: Marks the containers a hook added, with the hook's name: how a pod's failure is traced to its hook.
HOOK_ENV: Final = "DAVIT_RESTORE_HOOK"


@dataclass(frozen=True)
class InitHook:
    name: str
    selector: Mapping[str, str]
    containers: tuple[RawObject, ...]


def init_hooks(spec: RawObject) -> list[InitHook]:
    """The spec's init-container hooks (validated by the API server's schema at creation)."""
    hooks = []
    for entry in spec.get("initContainerHooks") or []:
        hooks.append(
            InitHook(
                name=str(entry["name"]),
                selector=dict(entry.get("podSelector") or {}),
                containers=tuple(entry.get("containersToAdd") or ()),
            )
        )
    return hooks


def requested(spec: RawObject) -> bool:
    """Whether the restore has hooks, i.e. passes through the PostExecRule stage."""
    return bool(spec.get("postExecRule") or spec.get("initContainerHooks")) and not spec.get("dryRun")


def matches(selector: Mapping[str, str], pod: RawObject) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def add_init_containers(pod: RawObject, hooks: Sequence[InitHook]) -> RawObject:
    """A copy of ``pod`` with the containers of every hook matching it: after Davit's restore-wait
    container, before the pod's own. Each carries its hook's name in ``DAVIT_RESTORE_HOOK``."""
    chosen = [h for h in hooks if matches(h.selector, pod)]
    if not chosen:
        return pod
    hooked = copy.deepcopy(pod)
    spec = hooked.setdefault("spec", {})
    existing = list(spec.get("initContainers") or [])
    ours = [c for c in existing if c.get("name") == init_container.CONTAINER_NAME]
    theirs = [c for c in existing if c.get("name") != init_container.CONTAINER_NAME]
    added = []
    for hook in chosen:
        for container in hook.containers:
            copied = copy.deepcopy(dict(container))
            copied["env"] = [*(copied.get("env") or []), {"name": HOOK_ENV, "value": hook.name}]
            added.append(copied)
    spec["initContainers"] = [*ours, *added, *theirs]
    return hooked


def hook_of(container: RawObject) -> str | None:
    for entry in container.get("env") or []:
        if isinstance(entry, dict) and entry.get("name") == HOOK_ENV:
            return str(entry.get("value"))
    return None


@dataclass(frozen=True)
class PodState:
    """Where a restored pod stands for its hooks: ``running``, ``failed`` (with why) or ``waiting``."""

    name: str
    state: str
    reason: str = ""


def pod_state(pod: RawObject) -> PodState:
    """A hook container that terminated non-zero fails the pod for its hook; a Running pod is ready for
    the post-restore rule; anything else is still waiting."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    hooks = {c.get("name"): hook_of(c) for c in spec.get("initContainers") or []}
    for container in status.get("initContainerStatuses") or []:
        terminated: dict[str, Any] = (container.get("state") or {}).get("terminated") or {}
        last: dict[str, Any] = (container.get("lastState") or {}).get("terminated") or {}
        ended = terminated or last
        hook = hooks.get(container.get("name"))
        if hook is not None and ended and ended.get("exitCode") not in (0, None):
            message = str(ended.get("message") or ended.get("reason") or "").strip()
            detail = f": {message[-500:]}" if message else ""
            return PodState(
                name,
                "failed",
                f"initContainerHooks {hook}: pod {name}: init container {container.get('name')} exited with "
                f"{ended.get('exitCode')}{detail}",
            )
    if status.get("phase") == "Running":
        return PodState(name, "running")
    return PodState(name, "waiting", f"pod {name} is {status.get('phase') or 'Pending'}")


def hooked_pods(pods: Sequence[RawObject], restore_uid: str) -> list[RawObject]:
    """The pods this restore created (its uid annotation) with a hook's container."""
    return [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("annotations") or {}).get(RESTORE_UID_ANNOTATION) == restore_uid
        and any(hook_of(c) is not None for c in (p.get("spec") or {}).get("initContainers") or [])
    ]
