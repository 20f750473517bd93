"""The order a restore creates objects in: tiers, the tier of each kind, and grouping objects by tier."""

from __future__ import annotations

import pytest

from davit.restore.tiers import (
    TIERS,
    group_by_tier,
    group_kind,
    group_objects_by_tier,
    group_of,
    tier_index,
)
from tests.unit import restoring_objects as build

TIER_NAMES = [
    "CustomResourceDefinitions",
    "Namespaces",
    "StorageClasses",
    "PriorityClasses",
    "PersistentVolumes",
    "PersistentVolumeClaims",
    "ServiceAccounts",
    "Roles",
    "RoleBindings",
    "Secrets",
    "ConfigMaps",
    "Other",
    "Workloads",
]


def test_tiers_come_in_dependency_order() -> None:
    assert [tier.name for tier in TIERS] == TIER_NAMES


@pytest.mark.parametrize("tier", TIERS, ids=lambda t: t.name)
def test_every_tier_says_why_in_one_line(tier) -> None:
    assert tier.reason.strip()
    assert "\n" not in tier.reason


def test_no_kind_is_in_two_tiers() -> None:
    seen: set[tuple[str, str]] = set()
    for tier in TIERS:
        assert not seen & tier.kinds, tier.name
        seen |= tier.kinds


@pytest.mark.parametrize(
    ("group", "kind", "tier"),
    [
        ("apiextensions.k8s.io", "CustomResourceDefinition", "CustomResourceDefinitions"),
        ("", "Namespace", "Namespaces"),
        ("storage.k8s.io", "StorageClass", "StorageClasses"),
        ("", "PersistentVolume", "PersistentVolumes"),
        ("", "PersistentVolumeClaim", "PersistentVolumeClaims"),
        ("", "ServiceAccount", "ServiceAccounts"),
        ("scheduling.k8s.io", "PriorityClass", "PriorityClasses"),
        ("rbac.authorization.k8s.io", "Role", "Roles"),
        ("rbac.authorization.k8s.io", "ClusterRole", "Roles"),
        ("rbac.authorization.k8s.io", "RoleBinding", "RoleBindings"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding", "RoleBindings"),
        ("", "Secret", "Secrets"),
        ("", "ConfigMap", "ConfigMaps"),
        ("", "Service", "Other"),
        ("networking.k8s.io", "NetworkPolicy", "Other"),
        ("policy", "PodDisruptionBudget", "Other"),
        ("", "LimitRange", "Other"),
        ("", "ResourceQuota", "Other"),
        ("autoscaling", "HorizontalPodAutoscaler", "Other"),
        ("example.com", "Widget", "Other"),
        # A kind is identified with its group: a custom "Secret" is not a core Secret.
        ("example.com", "Secret", "Other"),
        ("apps", "Deployment", "Workloads"),
        ("apps", "StatefulSet", "Workloads"),
        ("apps", "DaemonSet", "Workloads"),
        ("apps", "ReplicaSet", "Workloads"),
        ("extensions", "Deployment", "Workloads"),
        ("batch", "Job", "Workloads"),
        ("batch", "CronJob", "Workloads"),
        ("", "Pod", "Workloads"),
        ("", "ReplicationController", "Workloads"),
    ],
)
def test_tier_of_each_kind(group: str, kind: str, tier: str) -> None:
    assert TIERS[tier_index(group, kind)].name == tier


@pytest.mark.parametrize(
    ("api_version", "group"),
    [
        ("v1", ""),
        ("apps/v1", "apps"),
        ("batch/v1beta1", "batch"),
        ("apiextensions.k8s.io/v1", "apiextensions.k8s.io"),
    ],
)
def test_group_of_api_version(api_version: str, group: str) -> None:
    assert group_of(api_version) == group


def test_objects_are_grouped_in_tier_order_keeping_their_order_within_a_tier() -> None:
    objects = [
        build.deployment("web"),
        build.config_map("b"),
        build.widget(),
        build.claim("data"),
        build.config_map("a"),
        build.volume("pv-1", provisioner=None),
        build.crd(),
        build.namespace(),
        build.pod("solo"),
        build.service_account("runner"),
    ]
    groups = group_objects_by_tier(objects)
    assert [(g.tier.name, [o["metadata"]["name"] for o in g.items]) for g in groups] == [
        ("CustomResourceDefinitions", ["widgets.example.com"]),
        ("Namespaces", ["shop"]),
        ("PersistentVolumes", ["pv-1"]),
        ("PersistentVolumeClaims", ["data"]),
        ("ServiceAccounts", ["runner"]),
        ("ConfigMaps", ["b", "a"]),
        ("Other", ["blue"]),
        ("Workloads", ["web", "solo"]),
    ]


def test_grouping_works_on_any_item_with_a_kind() -> None:
    items = [("Pod", 1), ("ConfigMap", 2), ("Pod", 3)]
    groups = group_by_tier(items, lambda item: ("", item[0]))
    assert [(g.tier.name, g.items) for g in groups] == [
        ("ConfigMaps", (("ConfigMap", 2),)),
        ("Workloads", (("Pod", 1), ("Pod", 3))),
    ]


def test_nothing_to_group() -> None:
    assert group_objects_by_tier([]) == []


def test_group_kind_of_a_raw_object() -> None:
    assert group_kind(build.deployment()) == ("apps", "Deployment")
    assert group_kind(build.config_map("c")) == ("", "ConfigMap")
    assert group_kind({}) == ("", "")
