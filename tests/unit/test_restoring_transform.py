"""From a backed-up object to the object a restore creates, or the reason it is left out."""

from __future__ import annotations

import re
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.restore import fields
from davit.restore.transform import (
    Context,
    ObjectKey,
    OwnerLink,
    Provenance,
    Scope,
    Skip,
    SkipCode,
    owner_links,
    skip_reason,
    transform,
)
from tests.unit import restoring_objects as build

PROVENANCE = Provenance("nightly-2024-05-01", "uid-backup", "restore-1", "uid-restore")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def ctx(*present: RawObject, **settings: Any) -> Context:
    """A context whose scope holds ``present`` (and whatever the settings add)."""
    scope = settings.pop("scope", None) or Scope(present=frozenset(ObjectKey.of(o) for o in present))
    return Context(PROVENANCE, scope=scope, **settings)


def restored(obj: RawObject, context: Context | None = None) -> RawObject:
    result = transform(obj, context or ctx())
    assert not isinstance(result, Skip), result
    return result


def skipped(obj: RawObject, context: Context | None = None) -> Skip:
    result = transform(obj, context or ctx())
    assert isinstance(result, Skip), "expected a skip"
    assert result.reason
    return result


# --- every object -----------------------------------------------------------------------------------


def test_server_assigned_fields_and_status_are_removed() -> None:
    result = restored(build.config_map("settings"))
    assert set(result["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert "status" not in restored(build.deployment())
    assert result["data"] == {"color": "blue"}


def test_the_input_is_not_modified() -> None:
    original = build.pod()
    build.owned_by(original, build.widget())
    before = build.copied(original)
    transform(original, ctx(namespace_mapping={"shop": "shop-copy"}, node_mapping={"node-a": "node-b"}))
    assert original == before


def test_provenance_labels_and_annotations_are_added_to_the_objects_own() -> None:
    meta = restored(build.config_map("settings"))["metadata"]
    assert meta["labels"] == {
        "app": "shop",
        "davit.dev/restored-from-backup": "nightly-2024-05-01",
        "davit.dev/restore": "restore-1",
    }
    assert meta["annotations"]["davit.dev/restored-from-backup-uid"] == "uid-backup"
    assert meta["annotations"]["davit.dev/restore-uid"] == "uid-restore"


def test_last_applied_configuration_is_kept_as_user_data() -> None:
    annotations = restored(build.config_map("settings"))["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations


def test_objects_without_labels_get_the_provenance_labels() -> None:
    bare = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}}
    assert set(restored(bare)["metadata"]["labels"]) == {
        "davit.dev/restored-from-backup",
        "davit.dev/restore",
    }


@pytest.mark.parametrize("length", [1, 62, 63])
def test_short_label_values_are_kept(length: int) -> None:
    name = "a" * length
    assert fields.label_value(name) == name


def test_long_names_become_valid_distinct_label_values() -> None:
    first = "backup-" + "x" * 200 + "-one"
    second = "backup-" + "x" * 200 + "-two"
    values = {fields.label_value(first), fields.label_value(second)}
    assert len(values) == 2
    for value in values:
        assert len(value) <= 63
        assert LABEL_VALUE.match(value)


def test_a_truncated_name_never_ends_the_prefix_with_punctuation() -> None:
    name = "a" * 51 + "." + "b" * 100
    value = fields.label_value(name)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value)
    assert ".-" not in value


def test_a_long_restore_name_is_labelled_validly() -> None:
    provenance = Provenance("b", "u1", "r" * 253, "u2")
    meta = restored(build.config_map("c"), Context(provenance))["metadata"]
    assert len(meta["labels"]["davit.dev/restore"]) <= 63


# --- namespaces ------------------------------------------------------------------------------------

MOVE = {"shop": "shop-copy"}


def test_namespaced_objects_move_to_the_mapped_namespace() -> None:
    assert (
        restored(build.config_map("c"), ctx(namespace_mapping=MOVE))["metadata"]["namespace"] == "shop-copy"
    )


def test_unmapped_namespaces_stay() -> None:
    result = restored(build.config_map("c", ns="other"), ctx(namespace_mapping=MOVE))
    assert result["metadata"]["namespace"] == "other"


def test_a_namespace_object_is_renamed_with_its_name_label() -> None:
    result = restored(build.namespace(), ctx(namespace_mapping=MOVE))
    assert result["metadata"]["name"] == "shop-copy"
    assert result["metadata"]["labels"]["kubernetes.io/metadata.name"] == "shop-copy"
    assert result["metadata"]["labels"]["team"] == "web"
    assert "status" not in result


def test_role_binding_service_account_subjects_follow_their_namespace() -> None:
    binding = build.obj(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "readers",
        subjects=[
            {"kind": "ServiceAccount", "name": "runner", "namespace": "shop"},
            {"kind": "ServiceAccount", "name": "monitor", "namespace": "monitoring"},
            {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
        ],
        roleRef={"kind": "Role", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"},
    )
    result = restored(binding, ctx(namespace_mapping=MOVE))
    assert result["subjects"] == [
        {"kind": "ServiceAccount", "name": "runner", "namespace": "shop-copy"},
        {"kind": "ServiceAccount", "name": "monitor", "namespace": "monitoring"},
        {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
    ]


def test_cluster_role_binding_subjects_follow_their_namespace() -> None:
    binding = build.obj(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "shop-admin",
        None,
        subjects=[{"kind": "ServiceAccount", "name": "runner", "namespace": "shop"}],
    )
    assert restored(binding, ctx(namespace_mapping=MOVE))["subjects"][0]["namespace"] == "shop-copy"


WEBHOOK = {"name": "w", "clientConfig": {"service": {"namespace": "shop", "name": "hook"}}}
BY_NAME = "kubernetes.io/metadata.name"


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        (
            build.obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "check", None,
                      webhooks=[WEBHOOK]),
            ("webhooks", 0, "clientConfig", "service", "namespace"),
        ),
        (
            build.obj("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutate", None,
                      webhooks=[WEBHOOK]),
            ("webhooks", 0, "clientConfig", "service", "namespace"),
        ),
        (
            build.obj("apiregistration.k8s.io/v1", "APIService", "v1.example.com", None,
                      spec={"service": {"namespace": "shop", "name": "api"}}),
            ("spec", "service", "namespace"),
        ),
        (
            build.obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com", None,
                      spec={"conversion": {"strategy": "Webhook", "webhook": {
                          "clientConfig": {"service": {"namespace": "shop", "name": "convert"}}}}}),
            ("spec", "conversion", "webhook", "clientConfig", "service", "namespace"),
        ),
    ],
    ids=["validating", "mutating", "apiservice", "crd-conversion"],
)  # fmt: skip
def test_service_references_of_cluster_objects_follow_their_namespace(
    obj: RawObject, path: tuple[Any, ...]
) -> None:
    value: Any = restored(obj, ctx(namespace_mapping=MOVE))
    for step in path:
        value = value[step]
    assert value == "shop-copy"


def test_network_policy_namespace_selectors_by_name_follow_the_mapping() -> None:
    policy = build.obj(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "allow-shop",
        spec={
            "podSelector": {},
            "ingress": [
                {"from": [
                    {"namespaceSelector": {"matchLabels": {BY_NAME: "shop"}}},
                    {"namespaceSelector": {"matchExpressions": [
                        {"key": BY_NAME, "operator": "In", "values": ["shop", "ops"]}]}},
                    {"namespaceSelector": {"matchLabels": {"team": "shop"}}},
                ]}
            ],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {BY_NAME: "shop"}}}]}],
        },
    )  # fmt: skip
    result = restored(policy, ctx(namespace_mapping=MOVE))
    peers = result["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "shop-copy"}
    assert peers[1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["shop-copy", "ops"]
    assert peers[2]["namespaceSelector"]["matchLabels"] == {"team": "shop"}
    egress = result["spec"]["egress"][0]["to"][0]
    assert egress["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "shop-copy"


def test_pod_affinity_namespaces_in_templates_follow_the_mapping() -> None:
    deployment = build.deployment()
    term = {
        "labelSelector": {"matchLabels": {"app": "cache"}},
        "topologyKey": "x",
        "namespaces": ["shop", "ops"],
    }
    deployment["spec"]["template"]["spec"]["affinity"] = {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]},
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": dict(term)}]
        },
    }
    affinity = restored(deployment, ctx(namespace_mapping=MOVE))["spec"]["template"]["spec"]["affinity"]
    assert affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["namespaces"] == [
        "shop-copy",
        "ops",
    ]
    preferred = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert preferred["podAffinityTerm"]["namespaces"] == ["shop-copy", "ops"]


# --- Services --------------------------------------------------------------------------------------


def test_a_service_gets_a_new_cluster_ip() -> None:
    spec = restored(build.service())["spec"]
    assert "clusterIP" not in spec
    assert "clusterIPs" not in spec
    assert spec["selector"] == {"app": "web"}
    assert spec["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]


def test_a_headless_service_stays_headless() -> None:
    spec = restored(build.service(headless=True))["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["clusterIPs"] == ["None"]


def test_node_ports_are_allocated_anew() -> None:
    spec = restored(build.service(node_ports=True))["spec"]
    assert "nodePort" not in spec["ports"][0]
    assert "healthCheckNodePort" not in spec
    assert spec["type"] == "LoadBalancer"
    assert spec["externalTrafficPolicy"] == "Local"


# --- Pods and templates ----------------------------------------------------------------------------


def test_a_pod_is_scheduled_anew() -> None:
    assert "nodeName" not in restored(build.pod())["spec"]


def test_a_pods_service_account_token_volume_is_left_to_admission() -> None:
    spec = restored(build.pod())["spec"]
    assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_a_projected_access_volume_is_left_to_admission() -> None:
    pod = build.pod()
    access = {
        "name": "kube-api-access-9xk2s",
        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
    }
    pod["spec"]["volumes"] = [access, {"name": "kube-api-access-own", "configMap": {"name": "c"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "kube-api-access-9xk2s", "mountPath": "/var/run"}
    ]
    spec = restored(pod)["spec"]
    # Only the projected token volume admission added; a user's volume with a similar name stays.
    assert spec["volumes"] == [{"name": "kube-api-access-own", "configMap": {"name": "c"}}]
    assert "volumeMounts" not in spec["containers"][0]


def test_a_secret_volume_of_another_name_is_kept() -> None:
    pod = build.pod()
    pod["spec"]["volumes"].append({"name": "tls", "secret": {"secretName": "tls-cert"}})
    names = [v["name"] for v in restored(pod)["spec"]["volumes"]]
    assert names == ["data", "tls"]


NODES = {"node-a": "node-x"}


def test_node_mapping_rewrites_node_selectors_and_affinity_in_templates() -> None:
    deployment = build.deployment()
    spec = deployment["spec"]["template"]["spec"]
    spec["nodeName"] = "node-a"
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": ["node-a", "node-c"],
                            },
                            {"key": "zone", "operator": "In", "values": ["node-a"]},
                        ],
                        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}],
                    }
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}
                        ]
                    },
                }
            ],
        }
    }
    result = restored(deployment, ctx(node_mapping=NODES))["spec"]["template"]["spec"]
    assert result["nodeName"] == "node-x"
    assert result["nodeSelector"] == {"kubernetes.io/hostname": "node-x", "disktype": "ssd"}
    term = result["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]
    assert term["matchExpressions"][0]["values"] == ["node-x", "node-c"]
    assert term["matchExpressions"][1]["values"] == ["node-a"]  # not a node name
    assert term["matchFields"][0]["values"] == ["node-x"]
    preferred = result["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert preferred["preference"]["matchExpressions"][0]["values"] == ["node-x"]


def test_node_mapping_reaches_cron_job_templates() -> None:
    result = restored(build.cron_job(), ctx(node_mapping=NODES))
    spec = result["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["kubernetes.io/hostname"] == "node-x"


def test_a_pods_node_selector_is_mapped_and_its_node_name_dropped() -> None:
    spec = restored(build.pod(), ctx(node_mapping=NODES))["spec"]
    assert spec["nodeSelector"]["kubernetes.io/hostname"] == "node-x"
    assert "nodeName" not in spec


# --- claims and volumes ----------------------------------------------------------------------------


def test_a_dynamically_provisioned_claim_is_provisioned_anew() -> None:
    result = restored(build.claim())
    assert "volumeName" not in result["spec"]
    assert "status" not in result
    annotations = result["metadata"]["annotations"]
    for name in fields.BINDING_ANNOTATIONS:
        assert name not in annotations
    assert annotations["volume.kubernetes.io/selected-node"] == "node-a"


def test_a_claim_of_a_restored_static_volume_stays_bound_to_it() -> None:
    result = restored(
        build.claim(volume="local-pv"), ctx(scope=Scope(static_volumes=frozenset({"local-pv"})))
    )
    assert result["spec"]["volumeName"] == "local-pv"
    assert "pv.kubernetes.io/bind-completed" not in result["metadata"]["annotations"]


def test_storage_class_mapping_applies_to_claims_volumes_and_claim_templates() -> None:
    classes = {"standard": "fast", "unused": "other"}
    claim = build.claim()
    claim["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"] = "standard"
    result = restored(claim, ctx(storage_class_mapping=classes))
    assert result["spec"]["storageClassName"] == "fast"
    assert result["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"] == "fast"
    volume = restored(build.volume(provisioner=None), ctx(storage_class_mapping=classes))
    assert volume["spec"]["storageClassName"] == "fast"
    stateful = restored(build.stateful_set(), ctx(storage_class_mapping=classes))
    assert stateful["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"


def test_an_unmapped_storage_class_stays() -> None:
    assert (
        restored(build.claim(storage_class="slow"), ctx(storage_class_mapping={"x": "y"}))["spec"][
            "storageClassName"
        ]
        == "slow"
    )


def test_node_mapping_moves_a_claims_selected_node() -> None:
    annotations = restored(build.claim(), ctx(node_mapping=NODES))["metadata"]["annotations"]
    assert annotations["volume.kubernetes.io/selected-node"] == "node-x"


def test_a_selected_node_missing_from_the_target_is_dropped() -> None:
    annotations = restored(build.claim(), ctx(target_nodes=frozenset({"node-b"})))["metadata"]["annotations"]
    assert "volume.kubernetes.io/selected-node" not in annotations


def test_a_mapped_selected_node_present_in_the_target_is_kept() -> None:
    context = ctx(node_mapping=NODES, target_nodes=frozenset({"node-x"}))
    annotations = restored(build.claim(), context)["metadata"]["annotations"]
    assert annotations["volume.kubernetes.io/selected-node"] == "node-x"


def test_a_static_volume_is_restored_pre_bound_to_its_claim_by_name() -> None:
    volume = build.volume("local-pv", provisioner=None)
    result = restored(volume, ctx(namespace_mapping=MOVE, node_mapping=NODES))
    assert result["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "shop-copy",
        "name": "data",
    }
    assert "pv.kubernetes.io/bound-by-controller" not in result["metadata"]["annotations"]
    expression = result["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expression["values"] == ["node-x"]
    assert result["spec"]["local"] == {"path": "/mnt/disks/local-pv"}
    assert "namespace" not in result["metadata"]


def test_a_dynamically_provisioned_volume_is_not_restored() -> None:
    skip = skipped(build.volume())
    assert skip.code == SkipCode.DYNAMIC_VOLUME
    assert "example.com/local" in skip.reason
    assert "shop/data" in skip.reason


# --- other kinds -----------------------------------------------------------------------------------


def test_a_service_account_forgets_its_generated_token_secrets() -> None:
    result = restored(build.service_account())
    assert result["secrets"] == [{"name": "registry-credentials"}]
    assert result["imagePullSecrets"] == [{"name": "registry-credentials"}]


def test_a_service_account_with_only_a_token_secret_has_no_secrets_left() -> None:
    account = build.service_account("runner")
    account["secrets"] = [{"name": "runner-token-abcde"}]
    assert "secrets" not in restored(account)


def test_a_running_job_has_its_generated_selector_made_again() -> None:
    result = restored(build.job())
    assert result["spec"]["selector"] == {"matchLabels": {}}
    assert result["spec"]["template"]["metadata"]["labels"] == {"app": "migrate", "job-name": "migrate"}


def test_a_job_with_a_manual_selector_keeps_it() -> None:
    result = restored(build.job(manual=True))
    assert result["spec"]["selector"]["matchLabels"] == {"controller-uid": "uid-job-migrate"}


# --- what is never restored ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        build.obj("v1", "Node", "node-a", None),
        build.obj("v1", "Event", "web.17a"),
        build.obj("events.k8s.io/v1", "Event", "web.17b"),
        build.obj("coordination.k8s.io/v1", "Lease", "leader"),
        build.obj("v1", "ComponentStatus", "etcd-0", None),
        build.obj("davit.dev/v1alpha1", "ApplicationBackup", "nightly"),
        build.obj("davit.dev/v1alpha1", "BackupLocation", "s3"),
        build.obj("metrics.k8s.io/v1beta1", "PodMetrics", "web-0"),
    ],
    ids=lambda o: f"{o['apiVersion']}/{o['kind']}",
)
def test_kinds_never_restored(obj: RawObject) -> None:
    assert skipped(obj).code == SkipCode.NEVER_RESTORED


@pytest.mark.parametrize(
    "obj",
    [
        build.token_secret(),
        build.token_secret("runner"),
        build.config_map("kube-root-ca.crt"),
        build.obj("discovery.k8s.io/v1beta1", "EndpointSlice", "web-8xq2z",
                  addressType="IPv4", endpoints=[]),
    ],
    ids=["default-token", "runner-token", "root-ca", "endpoint-slice"],
)  # fmt: skip
def test_what_the_cluster_creates_itself_is_not_restored(obj: RawObject) -> None:
    if obj["kind"] == "EndpointSlice":
        obj["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = (
            "endpointslice-controller.k8s.io"
        )
    assert skipped(obj).code == SkipCode.MANAGED_BY_CLUSTER


def test_an_endpoint_slice_managed_by_someone_else_is_restored() -> None:
    slice_ = build.obj(
        "discovery.k8s.io/v1beta1", "EndpointSlice", "external", addressType="IPv4", endpoints=[]
    )
    slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "my-controller.example.com"
    assert restored(slice_)["kind"] == "EndpointSlice"


def test_ordinary_secrets_and_config_maps_are_restored() -> None:
    assert restored(build.secret("db"))["data"] == {"password": "aHVudGVyMg=="}
    assert restored(build.config_map("settings"))["kind"] == "ConfigMap"


def test_a_mirror_pod_is_not_restored() -> None:
    pod = build.pod()
    pod["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "abc"
    assert skipped(pod).code == SkipCode.MANAGED_BY_CLUSTER


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_completed_pods_are_not_restored(phase: str) -> None:
    skip = skipped(build.pod(phase=phase))
    assert skip.code == SkipCode.COMPLETED
    assert phase in skip.reason


@pytest.mark.parametrize("finished", ["Complete", "Failed"])
def test_finished_jobs_are_not_restored(finished: str) -> None:
    skip = skipped(build.job(finished=finished))
    assert skip.code == SkipCode.COMPLETED
    assert finished in skip.reason


def test_a_job_with_a_completion_time_is_finished() -> None:
    job = build.job()
    job["status"] = {"completionTime": "2024-05-01T03:00:00Z"}
    assert skipped(job).code == SkipCode.COMPLETED


def test_a_job_whose_condition_is_not_true_is_restored() -> None:
    job = build.job()
    job["status"] = {"conditions": [{"type": "Failed", "status": "False"}]}
    assert restored(job)["kind"] == "Job"


# --- owners ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "owner"),
    [
        (build.pod("web-5d9c7-abcde"), build.replica_set()),
        (build.replica_set(), build.deployment()),
        (build.pod("db-0"), build.stateful_set()),
        (build.pod("agent-xyz"), build.obj("apps/v1", "DaemonSet", "agent")),
        (build.job("nightly-28512"), build.cron_job()),
        (build.controller_revision(), build.stateful_set()),
        (build.pod("widget-pod"), build.widget()),
    ],
    ids=[
        "rs-pod",
        "deployment-rs",
        "statefulset-pod",
        "daemonset-pod",
        "cronjob-job",
        "revision",
        "custom-pod",
    ],
)
def test_what_a_restored_controller_creates_is_left_to_it(child: RawObject, owner: RawObject) -> None:
    build.owned_by(child, owner)
    skip = skipped(child, ctx(owner))
    assert skip.code == SkipCode.RECREATED_BY_OWNER
    assert owner["metadata"]["name"] in skip.reason


def test_an_owned_pod_whose_controller_is_not_restored_is_restored_without_the_reference() -> None:
    pod = build.owned_by(build.pod("web-5d9c7-abcde"), build.replica_set())
    result = restored(pod, ctx())
    assert "ownerReferences" not in result["metadata"]
    assert owner_links(pod, ctx()) == ()


def test_a_reference_that_is_not_the_controller_does_not_skip() -> None:
    pod = build.owned_by(build.pod("web-0"), build.widget(), controller=False)
    assert restored(pod, ctx(build.widget()))["kind"] == "Pod"


def test_an_owned_object_of_another_kind_is_restored_and_linked_back_to_its_owner() -> None:
    owner = build.widget()
    config = build.owned_by(build.config_map("widget-settings"), owner)
    context = ctx(owner, namespace_mapping=MOVE)
    result = restored(config, context)
    assert "ownerReferences" not in result["metadata"]
    assert owner_links(config, context) == (
        OwnerLink(
            "example.com/v1", "Widget", "shop-copy", "blue", controller=True, block_owner_deletion=True
        ),
    )


def test_an_owner_in_another_namespace_is_not_the_same_owner() -> None:
    config = build.owned_by(build.config_map("c"), build.widget())
    assert owner_links(config, ctx(build.widget(ns="elsewhere"))) == ()


def test_a_cluster_scoped_owner_is_linked_without_a_namespace() -> None:
    owner = build.obj("example.com/v1", "Cluster", "main", None)
    config = build.owned_by(build.config_map("c"), owner, controller=False)
    config["metadata"]["ownerReferences"][0].pop("blockOwnerDeletion")
    (link,) = owner_links(config, ctx(owner, namespace_mapping=MOVE))
    assert link == OwnerLink("example.com/v1", "Cluster", "", "main", controller=False)
    assert link.reference("new-uid") == {
        "apiVersion": "example.com/v1",
        "kind": "Cluster",
        "name": "main",
        "uid": "new-uid",
        "controller": False,
    }


def test_only_present_owners_are_linked() -> None:
    config = build.config_map("c")
    build.owned_by(config, build.widget("blue"))
    build.owned_by(config, build.widget("red"), controller=False)
    links = owner_links(config, ctx(build.widget("red")))
    assert [link.name for link in links] == ["red"]


def test_an_owner_link_reference_carries_the_new_uid() -> None:
    link = OwnerLink("apps/v1", "Deployment", "shop", "web", controller=True, block_owner_deletion=True)
    assert link.reference("u-1") == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


# --- Endpoints -------------------------------------------------------------------------------------


def endpoints(name: str = "web") -> RawObject:
    return build.obj("v1", "Endpoints", name, subsets=[{"addresses": [{"ip": "10.1.2.3"}]}])


def test_endpoints_of_a_restored_service_with_a_selector_are_the_controllers() -> None:
    context = ctx(scope=Scope(services_with_selector=frozenset({("shop", "web")})))
    skip = skipped(endpoints(), context)
    assert skip.code == SkipCode.MANAGED_BY_CLUSTER
    assert "web" in skip.reason


def test_endpoints_of_a_service_without_a_selector_are_restored() -> None:
    assert restored(endpoints("external"), ctx())["subsets"] == [{"addresses": [{"ip": "10.1.2.3"}]}]


# --- multi-tenancy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        build.namespace(),
        build.volume(provisioner=None),
        build.crd(),
        build.obj("rbac.authorization.k8s.io/v1", "ClusterRole", "shop-admin", None),
        build.obj("storage.k8s.io/v1", "StorageClass", "fast", None),
    ],
    ids=lambda o: o["kind"],
)
def test_a_tenant_restore_creates_no_cluster_scoped_objects(obj: RawObject) -> None:
    skip = skipped(obj, ctx(cluster_scoped_allowed=False))
    assert skip.code == SkipCode.CLUSTER_SCOPED
    assert ("own namespace" in skip.reason) == (obj["kind"] == "Namespace")


def test_a_tenant_restore_creates_namespaced_objects() -> None:
    assert restored(build.config_map("c"), ctx(cluster_scoped_allowed=False))["kind"] == "ConfigMap"


def test_skip_reason_is_none_for_restored_objects() -> None:
    assert skip_reason(build.config_map("c"), ctx()) is None


def test_object_keys_describe_themselves() -> None:
    assert str(ObjectKey.of(build.deployment())) == "Deployment.apps shop/web"
    assert str(ObjectKey.of(build.volume("pv-1"))) == "PersistentVolume pv-1"
