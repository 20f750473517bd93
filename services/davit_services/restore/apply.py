"""Writing restored objects to the API server: create, and per ``replacePolicy`` keep or replace what is
already there. Raw JSON throughout, like the export: the typed client would drop fields it does not know.

Which objects exist is learnt from one list per resource and namespace, not a GET per object, so a
Retain restore of 10,000 objects that are all present costs a few lists and writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from davit import errors
from davit.api.objects import RawObject
from davit.backup.selection import ApiResource
from davit.kube import client
from davit.kube.client import ApiException
from davit.kube.discovery import discover, resource_path
from davit.restore.fields import RESTORE_UID_ANNOTATION
from davit.tenancy import RestoreGuard, UnsafeName

#: Answers worth trying again: throttling, and the API server's "not now" (ServerTimeout, unavailable).
RETRYABLE = frozenset({429, 500, 503, 504})
#: Attempts at one create: with the backoff (0.5 s doubling, at most 8 s) about half a minute in all.
CREATE_ATTEMPTS = 7

#: What became of one object.
RESTORED, RETAINED, REPLACED, FAILED = "restored", "retained", "replaced", "failed"


class UnknownResource(errors.Permanent):
    """The target cluster serves no resource of this apiVersion and kind (a CRD missing, an API removed)."""


class Refused(errors.Refused):
    """The restore guard refused an object: it lies outside what this restore may write."""


@dataclass(frozen=True)
class Outcome:
    result: str
    reason: str = ""


def key_of(obj: RawObject) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]


def describe(obj: RawObject) -> str:
    api_version, kind, namespace, name = key_of(obj)
    return f"{kind} {namespace + '/' if namespace else ''}{name} ({api_version})"


def _call(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str = "application/json",
) -> Any:
    response = api.call_api(
        path, method, query_params=query or [], body=body,
        header_params={"Accept": "application/json", "Content-Type": content_type},
        auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
    )  # fmt: skip
    data = response.data
    return json.loads(data) if data else None


def api_message(exc: ApiException) -> str:
    """The API server's own message for a refusal (its Status body), else the HTTP reason."""
    try:
        body = json.loads(exc.body or b"{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


class Applier:
    """Knows the target cluster's resources (discovery, refreshed when a restored CRD adds some).

    Every request about an object (create, get, patch, delete) builds its path in ``path``, which passes
    the object through the restore's guard first: there is no way to address an object around it."""

    def __init__(self, api: client.ApiClient, guard: RestoreGuard) -> None:
        self.api = api
        self.guard = guard
        self._resources: dict[tuple[str, str], ApiResource] = {}
        self.refresh()

    def refresh(self) -> None:
        self._resources = {(r.api_version, r.kind): r for r in discover(self.api) if "/" not in r.plural}

    def resource(self, api_version: str, kind: str) -> ApiResource:
        found = self._resources.get((api_version, kind))
        if found is None:
            self.refresh()
            found = self._resources.get((api_version, kind))
        if found is None:
            raise UnknownResource(f"the cluster serves no {kind} in {api_version}")
        return found

    def refusal(self, obj: RawObject) -> str | None:
        """Why the guard refuses ``obj`` (scope by discovery, never by the stored object); None: allowed.
        A type the cluster does not serve is not refused here: writing it fails as UnknownResource."""
        try:
            resource = self.resource(obj["apiVersion"], obj["kind"])
        except UnknownResource:
            return None
        return self.guard.refusal(obj, resource.namespaced)

    def path(self, obj: RawObject, named: bool = False) -> str:
        api_version, kind, namespace, name = key_of(obj)
        resource = self.resource(api_version, kind)
        refusal = self.guard.refusal(obj, resource.namespaced)
        if refusal is not None:
            raise Refused(refusal)
        try:
            return resource_path(
                api_version,
                resource.plural,
                namespace if resource.namespaced else None,
                name if named else None,
            )
        except UnsafeName as exc:
            raise Refused(f"{describe(obj)}: {exc}") from exc

    def existing(self, objects: Iterable[RawObject]) -> set[tuple[str, str, str, str]]:
        """Which of ``objects`` exist now: one (paginated) list per resource and namespace."""
        wanted: dict[tuple[str, str, str], set[str]] = {}
        for obj in objects:
            api_version, kind, namespace, name = key_of(obj)
            wanted.setdefault((api_version, kind, namespace), set()).add(name)
        found: set[tuple[str, str, str, str]] = set()
        for (api_version, kind, namespace), names in wanted.items():
            try:
                resource = self.resource(api_version, kind)
            except UnknownResource:
                continue  # nothing of a kind the cluster does not serve can exist yet
            if resource.namespaced and self.guard.refusal(
                {"kind": kind, "metadata": {"name": "-", "namespace": namespace}}, True
            ):
                continue  # never listed: the guard refuses every object there, before any create
            path = resource_path(api_version, resource.plural, namespace if resource.namespaced else None)
            token: str | None = None
            while True:
                query: list[tuple[str, Any]] = [("limit", 500)]
                if token:
                    query.append(("continue", token))
                body = _call(self.api, "GET", path, query=query)
                for item in body.get("items") or []:
                    if item["metadata"]["name"] in names:
                        found.add((api_version, kind, namespace, item["metadata"]["name"]))
                token = (body.get("metadata") or {}).get("continue")
                if not token:
                    break
        return found

    def create(self, obj: RawObject) -> Outcome:
        """Create ``obj``; an object already there is kept (Retain's rule), unless this very restore
        created it (a retried task): that one counts as restored."""
        for attempt in range(CREATE_ATTEMPTS):
            try:
                _call(self.api, "POST", self.path(obj), body=obj)
                return Outcome(RESTORED)
            except ApiException as exc:
                if exc.status == 409 or (exc.status in RETRYABLE and self.get(*key_of(obj)) is not None):
                    # A retryable answer for an object that exists: the API server turns AlreadyExists
                    # into ServerTimeout for objects with a generateName (a StatefulSet's pods have one).
                    return Outcome(RESTORED if self._made_by_same_restore(obj) else RETAINED)
                if exc.status not in RETRYABLE or attempt == CREATE_ATTEMPTS - 1:
                    return Outcome(FAILED, f"{describe(obj)}: {api_message(exc)}")
                # Throttled, or not ready yet (a new namespace's ServiceAccount token): try again.
                time.sleep(min(8.0, 0.5 * 2**attempt))
            except UnknownResource as exc:
                return Outcome(FAILED, f"{describe(obj)}: {exc}")
            except Refused as exc:
                return Outcome(FAILED, f"refused: {exc}")
        raise AssertionError("unreachable")

    def _made_by_same_restore(self, obj: RawObject) -> bool:
        ours = ((obj.get("metadata") or {}).get("annotations") or {}).get(RESTORE_UID_ANNOTATION)
        if not ours:
            return False
        found = self.get(*key_of(obj))
        theirs = ((found or {}).get("metadata") or {}).get("annotations") or {}
        return bool(theirs.get(RESTORE_UID_ANNOTATION) == ours)

    def set_owners(self, obj: RawObject, references: list[RawObject]) -> None:
        """Give a restored object its owner references (merge patch: nothing else changes)."""
        body = {"metadata": {"ownerReferences": references}}
        _call(
            self.api,
            "PATCH",
            self.path(obj, named=True),
            body=body,
            content_type="application/merge-patch+json",
        )

    def delete(self, obj: RawObject) -> None:
        """Delete ``obj`` with its dependents (foreground), if it exists."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}
        try:
            _call(self.api, "DELETE", self.path(obj, named=True), body=body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def gone(self, obj: RawObject) -> bool:
        try:
            _call(self.api, "GET", self.path(obj, named=True))
            return False
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise

    def wait_gone(self, objects: list[RawObject], timeout: float) -> list[RawObject]:
        """Wait until every object is gone; those still there at the deadline."""
        left = list(objects)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            left = [obj for obj in left if not self.gone(obj)]
            if left:
                time.sleep(0.5)  # deletion is asynchronous (finalizers, dependents): poll the server
        return left

    def crd_established(self, name: str) -> bool:
        try:
            crd = _call(
                self.api,
                "GET",
                resource_path("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name),
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> RawObject | None:
        obj = {"apiVersion": api_version, "kind": kind, "metadata": {"namespace": namespace, "name": name}}
        try:
            found: RawObject = _call(self.api, "GET", self.path(obj, named=True))
            return found
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
