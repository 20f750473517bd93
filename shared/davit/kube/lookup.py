"""Reading the objects an operation refers to (davit.validation.Lookup over the API server)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from davit.constants import Kind
from davit.kube.operations import Operations


class ApiLookup:
    """davit.validation.Lookup over the API server (plain GETs: validation runs once per operation)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.ops = Operations(api)

    def _get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.ops.get(kind, namespace, name) if name else None

    def location(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(Kind.BACKUP_LOCATION, namespace, name)

    def rule(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(Kind.RULE, namespace, name)

    def backup(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(Kind.APPLICATION_BACKUP, namespace, name)
