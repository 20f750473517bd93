"""Reading the objects an operation refers to (davit.validation.Lookup over the API server)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import constants
from davit.constants import Kind


class ApiLookup:
    """davit.validation.Lookup over the API server (plain GETs: validation runs once per operation)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)

    def _get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        try:
            response = self.custom.get_namespaced_custom_object(
                constants.API_GROUP, constants.API_VERSION, namespace, constants.PLURALS[kind], name,
                _preload_content=False,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = json.loads(response.data)
        return result

    def location(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(Kind.BACKUP_LOCATION, namespace, name)

    def rule(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(Kind.RULE, namespace, name)

    def backup(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(Kind.APPLICATION_BACKUP, namespace, name)
