"""Kubernetes Events on Davit's objects: what ``kubectl describe`` shows a user."""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Literal

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = structlog.get_logger(__name__)

EventType = Literal["Normal", "Warning"]

#: The API server rejects Event messages longer than this.
_MAX_MESSAGE = 1024
#: Event names are object names: at most 253 characters.
_MAX_NAME = 253
_SUFFIX_CHARS = 16


def _event_name(object_name: str) -> str:
    """``<object>.<random>``, the object's name cut so that the whole stays a valid object name: an
    object with a 253-character name still gets its Events."""
    head = object_name[: _MAX_NAME - _SUFFIX_CHARS - 1].rstrip("-.")
    return f"{head}.{uuid.uuid4().hex[:_SUFFIX_CHARS]}"


def record(
    api: client.ApiClient,
    obj: dict[str, Any],
    event_type: EventType,
    reason: str,
    message: str,
    component: str,
) -> None:
    """Create a core/v1 Event about ``obj`` (a raw custom resource). Failures are logged, not raised:
    an Event is a courtesy to the user and must never stop the work it reports on."""
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": _event_name(meta["name"]), "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
    try:
        client.CoreV1Api(api).create_namespaced_event(namespace, body)
    except ApiException as exc:
        log.warning("event.failed", reason=reason, status=exc.status, error=str(exc.reason))
