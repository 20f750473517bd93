"""Davit's custom objects (raw JSON) for every reader and writer: the workers, the watcher, the CLI.

One class, :class:`Operations`, reads and writes them; the objects an operation refers to (its
BackupLocation, Rules, the backup a restore reads) are read through the same class
(``davit.validation.Lookup``). Reads return what the API server stored (camelCase, unknown fields kept).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import constants, errors, tenancy
from davit.api.objects import CLUSTER_SCOPED, RawObject, describe_ref
from davit.constants import Kind

log = structlog.get_logger(__name__)


class NotFound(ApiException, LookupError):  # type: ignore[misc]
    """The object a caller required does not exist; the message names it (``describe_ref``). It is the
    API server's 404 all the same: code that checks ``exc.status == 404`` on an ApiException sees one."""

    def __init__(self, message: str, cause: ApiException | None = None) -> None:
        LookupError.__init__(self, message)
        ApiException.__init__(self, status=404, reason=cause.reason if cause is not None else "Not Found")
        if cause is not None:
            self.body, self.headers = cause.body, cause.headers
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpecChanged(errors.Refused):
    """The operation's spec changed after it was accepted: no worker acts on it (``davit.tenancy``)."""

    event_reason = tenancy.SPEC_CHANGED

    def __init__(self, reason: str, obj: RawObject) -> None:
        super().__init__(reason)
        self.reason = reason
        self.obj = obj


class Operations:
    """``accepted_only``: reading an operation whose spec changed since acceptance raises SpecChanged. The
    workers' reads are all made this way, so whatever a handler acts on is the spec the watcher validated,
    read in the same request that proved it unchanged."""

    def __init__(
        self, api: client.ApiClient, accepted_only: bool = False, field_manager: str | None = None
    ) -> None:
        self.api = api
        self.accepted_only = accepted_only
        #: Who the API server records as having written the fields ``create`` and ``patch`` set.
        self.field_manager = field_manager
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def _call(self, verb: str, kind: Kind, namespace: str | None, *args: Any, **kwargs: Any) -> Any:
        """The custom objects API's ``<verb>``: namespaced in ``namespace``, cluster-wide for a
        cluster-scoped kind or a namespace of None (a list across all namespaces)."""
        plural = constants.PLURALS[kind]
        if kind in CLUSTER_SCOPED or namespace is None:
            method = getattr(self.custom, f"{verb}_cluster_custom_object")
            return method(constants.API_GROUP, constants.API_VERSION, plural, *args, **kwargs)
        method = getattr(self.custom, f"{verb}_namespaced_custom_object")
        return method(constants.API_GROUP, constants.API_VERSION, namespace, plural, *args, **kwargs)

    def _writer(self) -> dict[str, Any]:
        return {"field_manager": self.field_manager} if self.field_manager else {}

    def _not_found(self, kind: Kind, namespace: str, name: str, call: Callable[[], Any]) -> Any:
        """``call()``, with the API server's 404 as NotFound naming the object."""
        try:
            return call()
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{describe_ref(kind, namespace, name)} not found", exc) from exc
            raise

    def require(self, kind: Kind, namespace: str, name: str) -> RawObject:
        """The object as it is; NotFound when there is none."""
        response = self._not_found(
            kind, namespace, name, lambda: self._call("get", kind, namespace, name, _preload_content=False)
        )
        obj: RawObject = json.loads(response.data)
        return obj

    def get_as_is(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        """The object as it is, also when its spec changed after acceptance (to record that it did)."""
        try:
            return self.require(kind, namespace, name)
        except NotFound:
            return None

    def list_all(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None, sort: bool = True
    ) -> list[RawObject]:
        """Every object of ``kind`` in ``namespace`` (all namespaces for None), paginated, each with its
        ``apiVersion`` and ``kind`` (list items come without them); sorted by namespace and name unless
        ``sort`` is false (then in the API server's order)."""
        items: list[RawObject] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            if label_selector:
                kwargs["label_selector"] = label_selector
            page = json.loads(self._call("list", kind, namespace, **kwargs).data)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        for item in items:
            item.setdefault("apiVersion", constants.API_GROUP_VERSION)
            item.setdefault("kind", kind.value)
        if sort:
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def list_call(self, kind: Kind) -> Callable[..., Any]:
        """The cluster-wide list call for ``kind``, for a list-and-watch (``davit.kube.watching``)."""

        def call(**kwargs: Any) -> Any:
            return self._call("list", kind, None, **kwargs)

        return call

    def create(self, kind: Kind, namespace: str, body: RawObject) -> RawObject:
        response = self._call("create", kind, namespace, body, _preload_content=False, **self._writer())
        created: RawObject = json.loads(response.data)
        return created

    def patch(self, kind: Kind, namespace: str, name: str, body: RawObject) -> RawObject:
        """Merge ``body`` into the object (a JSON merge patch); return the object as stored. NotFound
        when there is none."""

        def call() -> Any:
            return self._call("patch", kind, namespace, name, body, _preload_content=False, **self._writer())

        response = self._not_found(kind, namespace, name, call)
        patched: RawObject = json.loads(response.data)
        return patched

    def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete the object; with ``uid``, only that incarnation of it (409 when the name now belongs to
        another). NotFound when there is none."""
        kwargs: dict[str, Any] = {"body": {"preconditions": {"uid": uid}}} if uid else {}
        self._not_found(kind, namespace, name, lambda: self._call("delete", kind, namespace, name, **kwargs))

    def events(self, obj: RawObject) -> list[RawObject]:
        """The core/v1 Events about ``obj`` (this incarnation of it: matched by uid when Events carry it).
        Those about a cluster-scoped object may be in any namespace (most recorders use default)."""
        meta = obj["metadata"]
        selector = f"involvedObject.name={meta['name']},involvedObject.kind={obj.get('kind')}"
        if meta.get("namespace"):
            response = self.core.list_namespaced_event(
                meta["namespace"], field_selector=selector, _preload_content=False
            )
        else:
            response = self.core.list_event_for_all_namespaces(
                field_selector=selector, _preload_content=False
            )
        items: list[RawObject] = json.loads(response.data).get("items") or []
        uid = meta.get("uid")
        return [e for e in items if (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]

    # --- davit.validation.Lookup: the objects an operation refers to, as they are -----------------

    def _referred(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        return self.get_as_is(kind, namespace, name) if name else None

    def location(self, namespace: str, name: str) -> RawObject | None:
        return self._referred(Kind.BACKUP_LOCATION, namespace, name)

    def rule(self, namespace: str, name: str) -> RawObject | None:
        return self._referred(Kind.RULE, namespace, name)

    def backup(self, namespace: str, name: str) -> RawObject | None:
        return self._referred(Kind.APPLICATION_BACKUP, namespace, name)

    def get(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        obj = self.get_as_is(kind, namespace, name)
        if obj is not None and self.accepted_only and kind in constants.OPERATION_KINDS:
            changed = tenancy.spec_changed(obj)
            if changed is not None:
                raise SpecChanged(changed, obj)
        return obj

    def watch_one(
        self, kind: Kind, namespace: str, name: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, RawObject]]:
        """The events of the one object ``name`` after ``resource_version``, as (type, object), until
        the server ends the watch after ``timeout_seconds``. ``errors.Transient`` when the version is
        too old (410: read the object again and watch from there)."""
        from kubernetes.watch.watch import iter_resp_lines

        try:
            response = self._call(
                "list", kind, namespace, watch=True, field_selector=f"metadata.name={name}",
                resource_version=resource_version, timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True, _preload_content=False,
                _request_timeout=(10.0, timeout_seconds + 30.0),
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 410:
                raise errors.Transient(f"watch from a version too old: {exc.reason}") from exc
            raise
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                event_type, obj = str(event.get("type")), event.get("object") or {}
                if event_type == "ERROR":
                    raise errors.Transient(f"watch ended: {obj.get('code')} {obj.get('message')}")
                if event_type != "BOOKMARK":
                    yield event_type, obj
        finally:
            response.close()
            response.release_conn()

    def current(
        self, kind: Kind, namespace: str, name: str, uid: str, stage: str | None = None
    ) -> RawObject | None:
        """The object a message is about, if it still is that object (same uid) and, given ``stage``, an
        operation in that stage: a message for an object deleted and re-created, or for an operation that
        moved on, is stale (logged as ``operation.gone`` / ``message.stale``, and None)."""
        obj = self.get(kind, namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            log.info("operation.gone", kind=kind.value, namespace=namespace, name=name)
            return None
        current_stage = (obj.get("status") or {}).get("stage")
        if stage is not None and current_stage != stage:
            log.info("message.stale", kind=kind.value, current_stage=current_stage, stage=stage)
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
