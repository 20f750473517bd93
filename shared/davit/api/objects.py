"""Davit's objects as the API server returns them: raw JSON (camelCase, unknown fields kept).

``RawObject`` is any Kubernetes object read as JSON. The typed views below name the top-level fields of
each Davit kind (``davit.api.crds`` lays them out; Stork keeps some outside ``spec``); the nested parts stay
plain dicts: the pydantic models in ``davit.api.types`` are the schema, these are only what a reader may
index without a cast. Pure: nothing here imports the Kubernetes client.
"""

from __future__ import annotations

from typing import Any, TypedDict

from davit.constants import Kind

#: Any Kubernetes object as raw JSON.
RawObject = dict[str, Any]

#: Kinds whose objects are in no namespace: the namespace given for them is ignored.
CLUSTER_SCOPED: frozenset[Kind] = frozenset({Kind.SCHEDULE_POLICY})


def describe_ref(kind: Kind, namespace: str, name: str) -> str:
    """``applicationbackup shop/nightly``; ``schedulepolicy nightly`` for a cluster-scoped kind."""
    where = name if kind in CLUSTER_SCOPED else f"{namespace}/{name}"
    return f"{kind.value.lower()} {where}"


class _Object(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: dict[str, Any]


class _Operation(_Object, total=False):
    spec: dict[str, Any]
    status: dict[str, Any]


class ApplicationBackup(_Operation, total=False):
    pass


class ApplicationRestore(_Operation, total=False):
    pass


class ApplicationClone(_Operation, total=False):
    pass


class BackupLocation(_Object, total=False):
    location: dict[str, Any]
    status: dict[str, Any]


class SchedulePolicy(_Object, total=False):
    policy: dict[str, Any]


class ApplicationBackupSchedule(_Object, total=False):
    spec: dict[str, Any]
    status: dict[str, Any]


class Rule(_Object, total=False):
    rules: list[dict[str, Any]]


__all__ = [
    "CLUSTER_SCOPED",
    "ApplicationBackup",
    "ApplicationBackupSchedule",
    "ApplicationClone",
    "ApplicationRestore",
    "BackupLocation",
    "RawObject",
    "Rule",
    "SchedulePolicy",
    "describe_ref",
]
