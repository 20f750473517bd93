"""Core objects (PersistentVolumeClaims, PersistentVolumes, Pods) read as raw JSON, for the code outside
``davit.kube`` that looks at what a backup or restore touches. Raw JSON rather than the client's typed
models: faster to decode and the same shape as the objects a backup stores."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit.api.objects import RawObject


def _json(response: Any) -> Any:
    return json.loads(response.data)


def _or_none(call: Any) -> RawObject | None:
    try:
        obj: RawObject = _json(call())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def read_claim(api: client.ApiClient, namespace: str, name: str) -> RawObject | None:
    """The PersistentVolumeClaim; None when there is none."""
    core = client.CoreV1Api(api)
    return _or_none(
        lambda: core.read_namespaced_persistent_volume_claim(name, namespace, _preload_content=False)
    )


def read_volume(api: client.ApiClient, name: str) -> RawObject | None:
    """The PersistentVolume; None when there is none."""
    core = client.CoreV1Api(api)
    return _or_none(lambda: core.read_persistent_volume(name, _preload_content=False))


def list_claims(api: client.ApiClient, namespace: str, label_selector: str = "") -> list[RawObject]:
    """The namespace's PersistentVolumeClaims (those ``label_selector`` matches, when given)."""
    response = client.CoreV1Api(api).list_namespaced_persistent_volume_claim(
        namespace, label_selector=label_selector, _preload_content=False
    )
    items: list[RawObject] = _json(response).get("items") or []
    return items


def list_pods(api: client.ApiClient, namespace: str) -> list[RawObject]:
    """Every Pod of the namespace."""
    items: list[RawObject] = (
        _json(client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)).get("items") or []
    )
    return items


def namespace_names(api: client.ApiClient, label_selector: str) -> set[str]:
    """The names of the namespaces ``label_selector`` matches."""
    response = client.CoreV1Api(api).list_namespace(label_selector=label_selector, _preload_content=False)
    return {str(n["metadata"]["name"]) for n in _json(response).get("items") or []}
