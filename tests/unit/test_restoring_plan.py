"""The plan of a restore: which of a backup's objects are created, in which tiers, which are left out and
why, and how ``includeResources`` and ``resourceTypes`` choose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.restore.plan import (
    OwnedObject,
    RestoreFilter,
    RestorePlan,
    crd_plurals,
    kind_label,
    plan_restore,
    plural_of,
    select,
)
from davit.restore.transform import Context, ObjectKey, OwnerLink, Provenance, SkipCode
from tests.unit import restoring_objects as build

MOVE = {"shop": "shop-copy"}


def backup() -> list[RawObject]:
    """A shop application as a backup holds it, in the order of its parts."""
    deployment = build.deployment("web")
    rs = build.owned_by(build.replica_set("web-5d9c7"), deployment)
    old_rs = build.owned_by(build.replica_set("web-0a1b2"), deployment)
    stateful = build.stateful_set("db")
    cron = build.cron_job("nightly")
    widget = build.widget("blue")
    endpoints = build.obj("v1", "Endpoints", "web", subsets=[])
    return [
        build.config_map("settings"),
        build.config_map("kube-root-ca.crt"),
        build.owned_by(build.config_map("blue-settings"), widget),
        endpoints,
        build.obj("v1", "Event", "web.17a2b"),
        build.claim("data-db-0", volume="pvc-dyn"),
        build.claim("archive", volume="local-pv", storage_class="local"),
        build.owned_by(build.pod("web-5d9c7-aaaaa"), rs),
        build.owned_by(build.pod("db-0"), stateful),
        build.pod("debug"),
        build.pod("one-off", phase="Succeeded"),
        build.secret("db-credentials"),
        build.token_secret("default"),
        build.service("web"),
        build.service_account("default"),
        build.obj("rbac.authorization.k8s.io/v1", "Role", "reader", rules=[]),
        build.obj(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "readers",
            subjects=[{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}],
            roleRef={"kind": "Role", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"},
        ),
        deployment,
        rs,
        old_rs,
        stateful,
        build.owned_by(build.controller_revision("db-7f6d"), stateful),
        cron,
        build.owned_by(build.job("nightly-28512"), cron),
        build.job("migrate", finished="Complete"),
        widget,
        # the _cluster part
        build.namespace("shop"),
        build.volume("pvc-dyn", claim_name="data-db-0"),
        build.volume("local-pv", claim_name="archive", provisioner=None, storage_class="local"),
        build.crd(),
    ]


def plan(
    spec: dict[str, Any] | None = None, objects: list[RawObject] | None = None, **options: Any
) -> RestorePlan:
    options.setdefault("cluster_scoped_allowed", True)
    return plan_restore(
        backup() if objects is None else objects,
        spec or {},
        backup_name="nightly",
        backup_uid="uid-b",
        restore_name="r1",
        restore_uid="uid-r",
        **options,
    )


def names_by_tier(result: RestorePlan) -> list[tuple[str, list[str]]]:
    return [(g.tier.name, [f"{o['kind']}/{o['metadata']['name']}" for o in g.items]) for g in result.tiers]


def skipped_names(result: RestorePlan) -> dict[str, SkipCode]:
    return {f"{s.source.kind}/{s.source.name}": s.code for s in result.skipped}


def test_a_whole_backup_is_restored_in_tiers() -> None:
    result = plan({"namespaceMapping": MOVE})
    assert names_by_tier(result) == [
        ("CustomResourceDefinitions", ["CustomResourceDefinition/widgets.example.com"]),
        ("Namespaces", ["Namespace/shop-copy"]),
        ("PersistentVolumes", ["PersistentVolume/local-pv"]),
        ("PersistentVolumeClaims", ["PersistentVolumeClaim/data-db-0", "PersistentVolumeClaim/archive"]),
        ("ServiceAccounts", ["ServiceAccount/default"]),
        ("Roles", ["Role/reader"]),
        ("RoleBindings", ["RoleBinding/readers"]),
        ("Secrets", ["Secret/db-credentials"]),
        ("ConfigMaps", ["ConfigMap/settings", "ConfigMap/blue-settings"]),
        ("Other", ["Service/web", "Widget/blue"]),
        ("Workloads", ["Pod/debug", "Deployment/web", "StatefulSet/db", "CronJob/nightly"]),
    ]


def test_what_is_left_out_is_reported_with_its_reason() -> None:
    result = plan({"namespaceMapping": MOVE})
    assert skipped_names(result) == {
        "ConfigMap/kube-root-ca.crt": SkipCode.MANAGED_BY_CLUSTER,
        "Endpoints/web": SkipCode.MANAGED_BY_CLUSTER,
        "Event/web.17a2b": SkipCode.NEVER_RESTORED,
        "Pod/web-5d9c7-aaaaa": SkipCode.RECREATED_BY_OWNER,
        "Pod/db-0": SkipCode.RECREATED_BY_OWNER,
        "Pod/one-off": SkipCode.COMPLETED,
        "Secret/default-token-x7k2p": SkipCode.MANAGED_BY_CLUSTER,
        "ReplicaSet/web-5d9c7": SkipCode.RECREATED_BY_OWNER,
        "ReplicaSet/web-0a1b2": SkipCode.RECREATED_BY_OWNER,
        "ControllerRevision/db-7f6d": SkipCode.RECREATED_BY_OWNER,
        "Job/nightly-28512": SkipCode.RECREATED_BY_OWNER,
        "Job/migrate": SkipCode.COMPLETED,
        "PersistentVolume/pvc-dyn": SkipCode.DYNAMIC_VOLUME,
    }
    assert all(s.reason for s in result.skipped)
    assert sum(result.skipped_by_kind.values()) == len(result.skipped)
    assert result.skipped_by_kind["ReplicaSet.apps"] == 2


def test_counts_per_kind() -> None:
    result = plan({"namespaceMapping": MOVE})
    assert result.planned_by_kind == {
        "CustomResourceDefinition.apiextensions.k8s.io": 1,
        "Namespace": 1,
        "PersistentVolume": 1,
        "PersistentVolumeClaim": 2,
        "ServiceAccount": 1,
        "Role.rbac.authorization.k8s.io": 1,
        "RoleBinding.rbac.authorization.k8s.io": 1,
        "Secret": 1,
        "ConfigMap": 2,
        "Service": 1,
        "Widget.example.com": 1,
        "Pod": 1,
        "Deployment.apps": 1,
        "StatefulSet.apps": 1,
        "CronJob.batch": 1,
    }
    assert sum(result.planned_by_kind.values()) == len(result.objects)


def test_every_planned_object_is_transformed_for_the_target() -> None:
    result = plan({"namespaceMapping": MOVE})
    for obj in result.objects:
        meta = obj["metadata"]
        assert meta.get("namespace") in (None, "shop-copy")
        assert "uid" not in meta and "resourceVersion" not in meta and "ownerReferences" not in meta
        assert "status" not in obj
        assert meta["labels"]["davit.dev/restore"] == "r1"
        assert meta["annotations"]["davit.dev/restore-uid"] == "uid-r"
    assert result.map_namespace("shop") == "shop-copy"
    assert result.map_namespace("other") == "other"


def test_claims_keep_only_restored_static_volumes() -> None:
    claims = {o["metadata"]["name"]: o for o in plan().objects if o["kind"] == "PersistentVolumeClaim"}
    assert "volumeName" not in claims["data-db-0"]["spec"]
    assert claims["archive"]["spec"]["volumeName"] == "local-pv"


def test_owner_references_to_restore_afterwards() -> None:
    result = plan({"namespaceMapping": MOVE})
    assert result.owned == (
        OwnedObject(
            "v1",
            "ConfigMap",
            "shop-copy",
            "blue-settings",
            (OwnerLink("example.com/v1", "Widget", "shop-copy", "blue", True, True),),
        ),
    )


def test_the_input_objects_are_not_modified() -> None:
    objects = backup()
    before = build.copied({"objects": objects})
    plan({"namespaceMapping": MOVE, "storageClassMapping": {"standard": "fast"}}, objects)
    assert {"objects": objects} == before


def test_mappings_come_from_the_spec() -> None:
    spec = {
        "namespaceMapping": MOVE,
        "storageClassMapping": {"local": "fast"},
        "nodeMapping": {"node-a": "node-x"},
    }
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in plan(spec).objects}
    assert objects["PersistentVolume/local-pv"]["spec"]["storageClassName"] == "fast"
    assert objects["PersistentVolume/local-pv"]["spec"]["claimRef"]["namespace"] == "shop-copy"
    terms = objects["PersistentVolume/local-pv"]["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["node-x"]
    assert objects["PersistentVolumeClaim/archive"]["spec"]["storageClassName"] == "fast"
    assert (
        objects["PersistentVolumeClaim/archive"]["metadata"]["annotations"][
            "volume.kubernetes.io/selected-node"
        ]
        == "node-x"
    )


def test_null_spec_fields_mean_unset() -> None:
    spec = {"namespaceMapping": None, "includeResources": None, "resourceTypes": None, "nodeMapping": None}
    assert len(plan(spec).objects) == len(plan().objects)


def test_target_nodes_drop_selected_nodes_that_do_not_exist() -> None:
    claims = [
        o for o in plan(target_nodes=frozenset({"node-b"})).objects if o["kind"] == "PersistentVolumeClaim"
    ]
    assert all("volume.kubernetes.io/selected-node" not in c["metadata"]["annotations"] for c in claims)


# --- a tenant's restore ----------------------------------------------------------------------------


def test_a_restore_outside_the_admin_namespace_creates_no_cluster_scoped_objects() -> None:
    result = plan(cluster_scoped_allowed=False)
    assert all(o["metadata"].get("namespace") for o in result.objects)
    codes = skipped_names(result)
    assert codes["Namespace/shop"] == SkipCode.CLUSTER_SCOPED
    assert codes["PersistentVolume/local-pv"] == SkipCode.CLUSTER_SCOPED
    assert codes["CustomResourceDefinition/widgets.example.com"] == SkipCode.CLUSTER_SCOPED
    assert codes["PersistentVolume/pvc-dyn"] == SkipCode.DYNAMIC_VOLUME
    # Its static volume is not restored, so the claim is provisioned from its class like any other.
    archive = next(o for o in result.objects if o["metadata"]["name"] == "archive")
    assert "volumeName" not in archive["spec"]


def test_the_tenant_rule_has_no_default() -> None:
    with pytest.raises(TypeError):
        plan_restore(  # type: ignore[call-arg]
            [], {}, backup_name="b", backup_uid="u", restore_name="r", restore_uid="v"
        )


# --- filters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["configmaps", "ConfigMap", "configmap", "CONFIGMAPS"])
def test_resource_types_name_a_kind_or_its_plural(name: str) -> None:
    result = plan({"resourceTypes": [name]})
    # The namespace comes along: the config maps need it.
    assert names_by_tier(result) == [
        ("Namespaces", ["Namespace/shop"]),
        ("ConfigMaps", ["ConfigMap/settings", "ConfigMap/blue-settings"]),
    ]
    # The filter chose it; the cluster makes it: reported as skipped, with its reason.
    assert skipped_names(result) == {"ConfigMap/kube-root-ca.crt": SkipCode.MANAGED_BY_CLUSTER}
    # Its owner is not restored: no reference to put back.
    assert result.owned == ()


def test_resource_types_with_group() -> None:
    result = plan({"resourceTypes": ["deployments.apps", "statefulsets"]})
    assert [o["kind"] for o in result.objects] == ["Namespace", "Deployment", "StatefulSet"]


def test_resource_types_of_a_custom_resource_use_the_backed_up_crds_plural() -> None:
    result = plan({"resourceTypes": ["widgets"]})
    assert [o["kind"] for o in result.objects] == ["CustomResourceDefinition", "Namespace", "Widget"]


def test_resource_types_with_an_irregular_plural() -> None:
    result = plan({"resourceTypes": ["endpoints"]})
    assert [o["kind"] for o in result.objects] == ["Namespace", "Endpoints"]


def test_pods_alone_are_restored_when_their_controllers_are_not() -> None:
    result = plan({"resourceTypes": ["pods"]})
    assert [o["metadata"]["name"] for o in result.objects] == ["shop", "web-5d9c7-aaaaa", "db-0", "debug"]
    assert skipped_names(result) == {"Pod/one-off": SkipCode.COMPLETED}


def test_include_resources_by_kind_namespace_and_name_with_what_they_need() -> None:
    spec = {"includeResources": [{"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "archive"}]}
    result = plan(spec)
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in result.objects] == [
        "Namespace/shop",
        "PersistentVolume/local-pv",
        "PersistentVolumeClaim/archive",
    ]
    assert result.objects[2]["spec"]["volumeName"] == "local-pv"


def test_include_resources_namespace_is_the_backups() -> None:
    spec = {"includeResources": [{"kind": "ConfigMap", "namespace": "shop-copy", "name": "settings"}]}
    assert plan({**spec, "namespaceMapping": MOVE}).objects == []


@pytest.mark.parametrize(
    ("ref", "found"),
    [
        ({"kind": "Deployment", "name": "web"}, True),
        ({"kind": "deployment", "name": "web", "group": "apps"}, True),
        ({"kind": "Deployment", "name": "web", "group": ""}, False),
        ({"kind": "Deployment", "name": "api"}, False),
        ({"kind": "Deployment", "name": "web", "namespace": "other"}, False),
    ],
)
def test_include_resources_match_like_the_backups(ref: dict[str, str], found: bool) -> None:
    kinds = [o["kind"] for o in plan({"includeResources": [ref]}).objects]
    assert ("Deployment" in kinds) == found


def test_include_resources_and_resource_types_must_both_match() -> None:
    spec = {
        "includeResources": [
            {"kind": "ConfigMap", "name": "settings"},
            {"kind": "Secret", "name": "db-credentials"},
        ],
        "resourceTypes": ["secrets"],
    }
    assert [o["kind"] for o in plan(spec).objects] == ["Namespace", "Secret"]


def test_a_custom_resource_brings_its_crd() -> None:
    result = plan({"includeResources": [{"kind": "Widget", "name": "blue", "group": "example.com"}]})
    assert [o["kind"] for o in result.objects] == ["CustomResourceDefinition", "Namespace", "Widget"]


def test_objects_outside_the_filter_are_not_reported() -> None:
    result = plan({"resourceTypes": ["secrets"]})
    assert skipped_names(result) == {"Secret/default-token-x7k2p": SkipCode.MANAGED_BY_CLUSTER}


def test_no_objects_no_plan() -> None:
    result = plan(objects=[])
    assert (result.tiers, result.skipped, result.owned, dict(result.planned_by_kind)) == ((), (), (), {})


# --- the first pass on its own ---------------------------------------------------------------------


def test_the_first_pass_reads_the_objects_once_as_a_stream() -> None:
    objects = backup()
    reads = 0

    def stream() -> Iterator[RawObject]:
        nonlocal reads
        reads += 1
        yield from objects

    context = Context(Provenance("b", "u", "r", "v"))
    chosen = select(stream(), RestoreFilter(), context)
    assert reads == 1
    assert ObjectKey("apps", "ReplicaSet", "shop", "web-5d9c7") in chosen.selected
    # Recreated by its Deployment, so present afterwards, though not restored itself.
    assert ObjectKey("apps", "ReplicaSet", "shop", "web-5d9c7") in chosen.scope.present
    assert ObjectKey("", "Pod", "shop", "one-off") not in chosen.scope.present
    assert chosen.scope.services_with_selector == frozenset({("shop", "web")})
    assert chosen.scope.static_volumes == frozenset({"local-pv"})


# --- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "kind", "plural"),
    [
        ("", "ConfigMap", "configmaps"),
        ("", "Endpoints", "endpoints"),
        ("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
        ("networking.k8s.io", "Ingress", "ingresses"),
        ("storage.k8s.io", "StorageClass", "storageclasses"),
        ("", "ComponentStatus", "componentstatuses"),
        ("gateway.networking.k8s.io", "Gateway", "gateways"),
        ("example.com", "Box", "boxes"),
    ],
)
def test_plural_of_a_kind(group: str, kind: str, plural: str) -> None:
    assert plural_of(group, kind) == plural


def test_known_plurals_win_over_the_english_rule() -> None:
    assert plural_of("example.com", "Octopus", {("example.com", "Octopus"): "octopi"}) == "octopi"
    assert crd_plurals([build.crd("example.com", "Octopus", "octopi"), build.pod()]) == {
        ("example.com", "Octopus"): "octopi"
    }


def test_kind_labels_name_the_group_except_for_core() -> None:
    assert kind_label("", "ConfigMap") == "ConfigMap"
    assert kind_label("apps", "Deployment") == "Deployment.apps"
