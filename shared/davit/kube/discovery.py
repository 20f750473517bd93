"""Discovery and raw paginated lists: the resource-export's view of the API server.

Everything is read as raw JSON (``_preload_content=False``): decoding into the client's typed models is
tens of times slower and would drop fields the client does not know (custom resources, newer fields).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import tenancy
from davit.api.objects import RawObject
from davit.backup.selection import ApiResource, ClusterRef
from davit.kube import clients

#: Group versions read at once by ``discover``: one request each (some 25 on a plain 1.20 cluster), read
#: one after the other they were a good part of the time before a backup's first list.
DISCOVERY_READS_AT_ONCE = 8


def _get(api: client.ApiClient, path: str, query: list[tuple[str, Any]] | None = None) -> Any:
    return clients.send_json(api, "GET", path, query=query)


def discover(api: client.ApiClient) -> list[ApiResource]:
    """Every resource the API server serves, each once: in its group's preferred version when served
    there, else in the first version (by the server's priority) that serves it (``preferred`` false). (In
    1.20, CronJobs are only in batch/v1beta1 while batch prefers v1.) The same object served by two groups
    (an Ingress in ``extensions`` and ``networking.k8s.io``) is listed under both here: what is backed up
    is chosen by ``davit.backup.selection.preferred_resources``."""
    resources: list[ApiResource] = []
    seen: set[tuple[str, str]] = set()

    def add(group: str, version: str, document: Any, preferred: bool) -> None:
        for item in document.get("resources", []):
            if (group, item["name"]) in seen:
                continue
            seen.add((group, item["name"]))
            resources.append(
                ApiResource(
                    group=group,
                    version=version,
                    plural=item["name"],
                    kind=item["kind"],
                    namespaced=bool(item.get("namespaced")),
                    verbs=frozenset(item.get("verbs") or []),
                    preferred=preferred,
                )
            )

    wanted: list[tuple[str, str, str, bool]] = [("", "v1", "/api/v1", True)]
    for group in _get(api, "/apis").get("groups", []):
        preferred = group.get("preferredVersion") or group["versions"][0]
        versions = [preferred] + [v for v in group["versions"] if v["version"] != preferred["version"]]
        for version in versions:
            wanted.append(
                (group["name"], version["version"], f"/apis/{version['groupVersion']}", version is preferred)
            )
    # Read at once, then taken in the same order as one after the other: the same resources either way.
    with ThreadPoolExecutor(max_workers=DISCOVERY_READS_AT_ONCE) as pool:
        documents = list(pool.map(lambda entry: _get(api, entry[2]), wanted))
    for (group_name, version_name, _path, is_preferred), document in zip(wanted, documents, strict=True):
        add(group_name, version_name, document, is_preferred)
    return resources


def resource_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """Every segment checked and escaped (``davit.tenancy.resource_path``): names and namespaces come from
    stored backups and scratch state, neither of which is trusted."""
    return tenancy.resource_path(api_version, plural, namespace, name)


@dataclass(frozen=True)
class Page:
    items: list[RawObject]
    continue_token: str | None


def list_page(
    api: client.ApiClient,
    resource: ApiResource,
    namespace: str | None,
    label_selector: str | None,
    limit: int,
    continue_token: str | None,
) -> Page:
    """One page of a list; ``continue_token`` is None when it was the last page. Items get their
    ``apiVersion`` and ``kind`` back (list responses leave them out of the items)."""
    query: list[tuple[str, Any]] = [("limit", limit)]
    if continue_token:
        query.append(("continue", continue_token))
    if label_selector:
        query.append(("labelSelector", label_selector))
    body = _get(api, resource_path(resource.api_version, resource.plural, namespace), query)
    items = body.get("items") or []
    for item in items:
        item["apiVersion"] = resource.api_version
        item["kind"] = resource.kind
    return Page(items, (body.get("metadata") or {}).get("continue") or None)


def get_cluster_object(api: client.ApiClient, ref: ClusterRef) -> RawObject | None:
    try:
        obj: RawObject = _get(api, resource_path(ref.api_version, ref.plural, None, ref.name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def _field_value(value: str) -> str:
    """``value`` escaped for a field selector (the API server's own rule: backslash, comma, equals)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def find_object(api: client.ApiClient, resource: ApiResource, namespace: str, name: str) -> RawObject | None:
    """One namespaced object by name through a list with a ``metadata.name`` field selector (which every
    resource, custom ones included, supports): readable with ``list`` alone."""
    path = resource_path(resource.api_version, resource.plural, namespace)
    tenancy.check_name(name)
    try:
        body = _get(api, path, [("fieldSelector", f"metadata.name={_field_value(name)}")])
    except ApiException as exc:
        if exc.status == 404:  # the resource is not served (any more)
            return None
        raise
    for item in body.get("items") or []:
        if (item.get("metadata") or {}).get("name") == name:
            item["apiVersion"] = resource.api_version
            item["kind"] = resource.kind
            found: RawObject = item
            return found
    return None


def namespaces_matching(api: client.ApiClient, selector: str) -> list[str]:
    body = _get(api, "/api/v1/namespaces", [("labelSelector", selector)])
    return sorted(item["metadata"]["name"] for item in body.get("items", []))


def server_version(api: client.ApiClient, group: str, version: str) -> tuple[str, bool]:
    """The API server's Kubernetes version, and whether it serves ``group``/``version``."""
    kubernetes = str(client.VersionApi(api).get_code().git_version)
    groups = client.ApisApi(api).get_api_versions().groups or []
    served = any(g.name == group and any(v.version == version for v in g.versions or []) for g in groups)
    return kubernetes, served
