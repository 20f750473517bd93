"""The order a restore creates objects in: dependency tiers, each with the reason it comes where it does.

The API server accepts most objects in any order, but what runs from them does not wait: a pod whose
ServiceAccount is missing is refused by admission, a pod whose claim is unbound or whose Secret is
missing does not start, a custom resource is refused until its CustomResourceDefinition is Established.
So a restore creates one tier after another, and the workloads, which start things, last. Within a tier
objects do not depend on each other and may be created in parallel.

A kind not named here is "other" (Services, NetworkPolicies, quotas, custom resources, ...): after
everything workloads read, before the workloads themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from davit.api.objects import RawObject

T = TypeVar("T")


@dataclass(frozen=True)
class Tier:
    """One step of a restore: objects of these (group, kind)s, created after every earlier tier."""

    name: str
    reason: str
    kinds: frozenset[tuple[str, str]]


def _kinds(group: str, *kinds: str) -> frozenset[tuple[str, str]]:
    return frozenset((group, kind) for kind in kinds)


_WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")

#: The tiers, in restore order. "other" holds every kind the others do not name.
TIERS: tuple[Tier, ...] = (
    Tier(
        "CustomResourceDefinitions",
        "custom resources are refused until their CustomResourceDefinition is Established",
        _kinds("apiextensions.k8s.io", "CustomResourceDefinition"),
    ),
    Tier("Namespaces", "every namespaced object needs its namespace to exist", _kinds("", "Namespace")),
    Tier(
        "StorageClasses",
        "claims are provisioned by their StorageClass, which must exist when the claim is created",
        _kinds("storage.k8s.io", "StorageClass"),
    ),
    Tier(
        "PriorityClasses",
        "admission refuses a pod (and a workload's controller its pods) naming a PriorityClass that does not "
        "exist",
        _kinds("scheduling.k8s.io", "PriorityClass"),
    ),
    Tier(
        "PersistentVolumes",
        "volumes go before claims because a claim binds to its volume when it is created",
        _kinds("", "PersistentVolume"),
    ),
    Tier(
        "PersistentVolumeClaims",
        "claims exist (and their data is restored) before the pods that mount them start",
        _kinds("", "PersistentVolumeClaim"),
    ),
    Tier(
        "ServiceAccounts",
        "admission refuses a pod whose ServiceAccount does not exist; bindings name them",
        _kinds("", "ServiceAccount"),
    ),
    Tier(
        "Roles",
        "workloads need their permissions from their first start; a binding grants a role's rules only once "
        "the role exists (and the API server lets a binding grant only rules it can check)",
        _kinds("rbac.authorization.k8s.io", "Role", "ClusterRole"),
    ),
    Tier(
        "RoleBindings",
        "after the roles they grant and the ServiceAccounts they name",
        _kinds("rbac.authorization.k8s.io", "RoleBinding", "ClusterRoleBinding"),
    ),
    Tier("Secrets", "pods that mount or read a missing Secret do not start", _kinds("", "Secret")),
    Tier("ConfigMaps", "pods that mount or read a missing ConfigMap do not start", _kinds("", "ConfigMap")),
    Tier(
        "Other",
        "Services, policies, quotas and custom resources before the pods they serve or govern "
        "(a pod sees only the Services that existed when it started in its environment)",
        frozenset(),
    ),
    Tier(
        "Workloads",
        "last, so that everything they reference exists when they start",
        _kinds("apps", *_WORKLOAD_KINDS)
        | _kinds("extensions", *_WORKLOAD_KINDS)
        | _kinds("batch", "Job", "CronJob")
        | _kinds("", "Pod", "ReplicationController"),
    ),
)

OTHER = next(i for i, tier in enumerate(TIERS) if tier.name == "Other")
_INDEX = {kind: i for i, tier in enumerate(TIERS) for kind in tier.kinds}


def group_of(api_version: str) -> str:
    """The API group of an ``apiVersion`` (``apps/v1`` → ``apps``, ``v1`` → ``""``)."""
    return api_version.rpartition("/")[0]


def group_kind(obj: RawObject) -> tuple[str, str]:
    """The (group, kind) of a raw object."""
    return group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))


def tier_index(group: str, kind: str) -> int:
    """The position in ``TIERS`` of objects of this group and kind."""
    return _INDEX.get((group, kind), OTHER)


@dataclass(frozen=True)
class TierGroup(Generic[T]):
    """The items of one tier, in the order they were given."""

    tier: Tier
    items: tuple[T, ...]


def group_by_tier(items: Iterable[T], kind_of: Callable[[T], tuple[str, str]]) -> list[TierGroup[T]]:
    """``items`` in restore order: one group per non-empty tier, each keeping the items' given order."""
    buckets: list[list[T]] = [[] for _ in TIERS]
    for item in items:
        buckets[tier_index(*kind_of(item))].append(item)
    return [TierGroup(TIERS[i], tuple(bucket)) for i, bucket in enumerate(buckets) if bucket]


def group_objects_by_tier(objects: Iterable[RawObject]) -> list[TierGroup[RawObject]]:
    """Raw objects in restore order (see ``group_by_tier``)."""
    return group_by_tier(objects, group_kind)
