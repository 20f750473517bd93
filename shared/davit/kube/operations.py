"""Reading and writing operation CRs (raw JSON) for the workers."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import constants, tenancy
from davit.constants import Kind

RawObject = dict[str, Any]


class SpecChanged(Exception):
    """The operation's spec changed after it was accepted: no worker acts on it (``davit.tenancy``)."""

    def __init__(self, reason: str, obj: RawObject) -> None:
        super().__init__(reason)
        self.reason = reason
        self.obj = obj


class Operations:
    """``accepted_only``: reading an operation whose spec changed since acceptance raises SpecChanged. The
    workers' reads are all made this way, so whatever a handler acts on is the spec the watcher validated,
    read in the same request that proved it unchanged."""

    def __init__(self, api: client.ApiClient, accepted_only: bool = False) -> None:
        self.api = api
        self.accepted_only = accepted_only
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def get_as_is(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        """The object as it is, also when its spec changed after acceptance (to record that it did)."""
        try:
            response = self.custom.get_namespaced_custom_object(
                constants.API_GROUP, constants.API_VERSION, namespace, constants.PLURALS[kind], name,
                _preload_content=False,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj: RawObject = json.loads(response.data)
        return obj

    def get(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        obj = self.get_as_is(kind, namespace, name)
        if obj is not None and self.accepted_only and kind in constants.OPERATION_KINDS:
            changed = tenancy.spec_changed(obj)
            if changed is not None:
                raise SpecChanged(changed, obj)
        return obj

    def current(self, kind: Kind, namespace: str, name: str, uid: str, stage: str) -> RawObject | None:
        """The operation a message is about, if it still is that object (same uid) in that stage: a
        message for an operation deleted and re-created, or one that moved on, is stale."""
        obj = self.get(kind, namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid or (obj.get("status") or {}).get("stage") != stage:
            return None
        return obj

    def patch_status(
        self, kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False
    ) -> RawObject:
        """Merge ``status`` into the object's status. With ``check_version`` the write fails with 409 if
        the object changed since ``obj`` was read."""
        meta = obj["metadata"]
        body: dict[str, Any] = {"status": status}
        if check_version:
            body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        result: RawObject = self.custom.patch_namespaced_custom_object_status(
            constants.API_GROUP, constants.API_VERSION, meta["namespace"], constants.PLURALS[kind],
            meta["name"], body,
        )  # fmt: skip
        return result

    def _patch(self, kind: Kind, obj: RawObject, body: dict[str, Any]) -> RawObject:
        meta = obj["metadata"]
        result: RawObject = self.custom.patch_namespaced_custom_object(
            constants.API_GROUP, constants.API_VERSION, meta["namespace"], constants.PLURALS[kind],
            meta["name"], body,
        )  # fmt: skip
        return result

    def add_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> RawObject:
        """Add ``finalizer`` unless present; conditional on the version read (409 if it changed)."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if finalizer in finalizers:
            return obj
        body = {
            "metadata": {"finalizers": [*finalizers, finalizer], "resourceVersion": meta["resourceVersion"]}
        }
        return self._patch(kind, obj, body)

    def remove_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> None:
        meta = obj["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        try:
            self._patch(kind, obj, body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's values, decoded; None when it does not exist."""
        import base64

        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
