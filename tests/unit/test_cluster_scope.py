"""Cluster-scoped objects in a backup: what the namespaced objects need (claims' volumes and
StorageClasses, pods' and pod templates' PriorityClasses, bindings' ClusterRoles, the ClusterRoleBindings
of the namespaces' service accounts), the three ``includeClusterResources`` modes, what a tenant's backup
may store, and each object kept under one API group (the alias table and the discovery rule, on a
discovery of kube-apiserver 1.20)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from davit.backup import cluster_scope
from davit.backup.cluster_scope import Mode
from davit.backup.selection import (
    KNOWN_ALIASES,
    KNOWN_KIND_ALIASES,
    ApiResource,
    ClusterRef,
    binds_account,
    bound_accounts,
    needed_cluster_objects,
    preferred_resources,
    select_targets,
    version_priority,
)
from davit.kube import discovery
from davit.restore.plan import plan_restore

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def res(
    group: str, version: str, plural: str, kind: str, namespaced: bool = True, preferred: bool = True
) -> ApiResource:
    return ApiResource(group, version, plural, kind, namespaced, frozenset(VERBS), preferred)


PVCS = res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PVS = res("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
PODS = res("", "v1", "pods", "Pod")
DEPLOYMENTS = res("apps", "v1", "deployments", "Deployment")
STATEFULSETS = res("apps", "v1", "statefulsets", "StatefulSet")
CRONJOBS = res("batch", "v1beta1", "cronjobs", "CronJob", preferred=False)
JOBS = res("batch", "v1", "jobs", "Job")
ROLE_BINDINGS = res("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
CLUSTER_ROLE_BINDINGS = res(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
)
WIDGETS = res("example.com", "v1", "widgets", "Widget")

SC = "storage.k8s.io/v1", "storageclasses"
PC = "scheduling.k8s.io/v1", "priorityclasses"
CR = "rbac.authorization.k8s.io/v1", "clusterroles"


def sc(name: str) -> ClusterRef:
    return ClusterRef(*SC, name)


def pc(name: str) -> ClusterRef:
    return ClusterRef(*PC, name)


def cr(name: str) -> ClusterRef:
    return ClusterRef(*CR, name)


def template(**pod_spec: Any) -> dict[str, Any]:
    return {"template": {"spec": {"containers": [{"name": "c"}], **pod_spec}}}


# --- what namespaced objects need ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "resource", "expected"),
    [
        pytest.param(
            {"kind": "PersistentVolumeClaim", "spec": {"volumeName": "pv-1", "storageClassName": "fast"}},
            PVCS,
            [ClusterRef("v1", "persistentvolumes", "pv-1"), sc("fast")],
            id="claim-volume-and-class",
        ),
        pytest.param(
            {"kind": "PersistentVolumeClaim", "spec": {"storageClassName": ""}},
            PVCS,
            [],
            id="claim-without-class",
        ),
        pytest.param(
            {
                "kind": "PersistentVolumeClaim",
                "spec": {},
                "metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            },
            PVCS,
            [sc("old")],
            id="claim-beta-annotation",
        ),
        pytest.param(
            {"kind": "PersistentVolume", "spec": {"storageClassName": "fast"}},
            PVS,
            [sc("fast")],
            id="volume-class",
        ),
        pytest.param({"kind": "Pod", "spec": {"priorityClassName": "high"}}, PODS, [pc("high")], id="pod"),
        pytest.param({"kind": "Pod", "spec": {}}, PODS, [], id="pod-without-priority"),
        pytest.param(
            {"kind": "Deployment", "spec": template(priorityClassName="high")},
            DEPLOYMENTS,
            [pc("high")],
            id="deployment-template",
        ),
        pytest.param(
            {"kind": "CronJob", "spec": {"jobTemplate": {"spec": template(priorityClassName="batch")}}},
            CRONJOBS,
            [pc("batch")],
            id="cronjob-job-template",
        ),
        pytest.param(
            {
                "kind": "StatefulSet",
                "spec": {
                    **template(priorityClassName="high"),
                    "volumeClaimTemplates": [
                        {"metadata": {"name": "data"}, "spec": {"storageClassName": "fast"}},
                        {"metadata": {"name": "logs"}, "spec": {"storageClassName": "fast"}},
                    ],
                },
            },
            STATEFULSETS,
            [pc("high"), sc("fast")],
            id="statefulset-template-and-claim-templates-once",
        ),
        pytest.param(
            {
                "kind": "RoleBinding",
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            },
            ROLE_BINDINGS,
            [cr("view")],
            id="rolebinding-to-clusterrole",
        ),
        pytest.param(
            {"kind": "RoleBinding", "roleRef": {"kind": "Role", "name": "local"}},
            ROLE_BINDINGS,
            [],
            id="rolebinding-to-role",
        ),
        pytest.param(
            {"kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "edit"}},
            CLUSTER_ROLE_BINDINGS,
            [cr("edit")],
            id="clusterrolebinding",
        ),
        pytest.param(
            {"kind": "Widget", "spec": {"priorityClassName": "not-a-pod"}},
            WIDGETS,
            [ClusterRef("apiextensions.k8s.io/v1", "customresourcedefinitions", "widgets.example.com")],
            id="custom-resource-only-its-crd",
        ),
        pytest.param(
            {"kind": "Pod", "spec": {"priorityClassName": {"not": "a name"}}}, PODS, [], id="malformed-name"
        ),
        pytest.param({"kind": "Pod", "spec": "garbage"}, PODS, [], id="malformed-spec"),
    ],
)
def test_needed_cluster_objects(
    item: dict[str, Any], resource: ApiResource, expected: list[ClusterRef]
) -> None:
    assert needed_cluster_objects(item, resource) == expected


def binding(*subjects: dict[str, str], name: str = "b") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"kind": "ClusterRole", "name": "r"},
        "subjects": list(subjects),
    }


def sa(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "namespace": namespace, "name": name}


def test_bound_accounts_are_service_accounts_and_namespace_account_groups() -> None:
    found = binding(
        sa("shop", "web"),
        {"kind": "User", "name": "alice"},
        {"kind": "Group", "name": "system:serviceaccounts:batch"},
        {"kind": "Group", "name": "system:serviceaccounts"},  # every account of the cluster: no namespace
        {"kind": "ServiceAccount", "name": "no-namespace"},
        "garbage",  # type: ignore[arg-type]
    )
    assert bound_accounts(found) == {("shop", "web"), ("batch", "*")}


@pytest.mark.parametrize(
    ("subjects", "accounts", "expected"),
    [
        pytest.param([sa("shop", "web")], {("shop", "web")}, True, id="the-account"),
        pytest.param([sa("shop", "db")], {("shop", "web")}, False, id="another-account-same-namespace"),
        pytest.param([sa("other", "web")], {("shop", "web")}, False, id="same-name-other-namespace"),
        pytest.param(
            [{"kind": "Group", "name": "system:serviceaccounts:shop"}],
            {("shop", "web")},
            True,
            id="namespace-group",
        ),
        pytest.param([{"kind": "User", "name": "shop"}], {("shop", "web")}, False, id="user"),
        pytest.param([], {("shop", "web")}, False, id="no-subjects"),
    ],
)
def test_binds_account(
    subjects: list[dict[str, str]], accounts: set[tuple[str, str]], expected: bool
) -> None:
    assert binds_account(binding(*subjects), accounts) is expected


# --- modes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "namespace", "expected"),
    [
        pytest.param(None, "kube-system", Mode.NEEDED, id="admin-unset"),
        pytest.param(True, "kube-system", Mode.ALL, id="admin-true"),
        pytest.param(False, "kube-system", Mode.NONE, id="admin-false"),
        pytest.param(None, "shop", Mode.NEEDED, id="tenant-unset"),
        pytest.param(True, "shop", Mode.NEEDED, id="tenant-true-never-all"),
        pytest.param(False, "shop", Mode.NONE, id="tenant-false"),
        pytest.param("true", "kube-system", Mode.NEEDED, id="a-string-is-not-true"),
    ],
)
def test_mode(value: Any, namespace: str, expected: Mode) -> None:
    spec = {} if value is None else {"includeClusterResources": value}
    assert cluster_scope.mode(spec, namespace, "kube-system") is expected


# --- a discovery of kube-apiserver 1.20 ----------------------------------------------------------------

#: (groupVersion, [(plural, kind, namespaced)]) as a 1.20 API server serves them (abridged).
SERVED_1_20: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("nodes", "Node", False),
        ("pods", "Pod", True),
        ("pods/log", "Pod", True),
        ("events", "Event", True),
        ("componentstatuses", "ComponentStatus", False),
        ("persistentvolumes", "PersistentVolume", False),
        ("configmaps", "ConfigMap", True),
    ],
    "apiregistration.k8s.io/v1": [("apiservices", "APIService", False)],
    "extensions/v1beta1": [("ingresses", "Ingress", True), ("ingresses/status", "Ingress", True)],
    "apps/v1": [
        ("deployments", "Deployment", True),
        ("deployments/scale", "Scale", True),
        ("replicasets", "ReplicaSet", True),
    ],
    "events.k8s.io/v1": [("events", "Event", True)],
    "events.k8s.io/v1beta1": [("events", "Event", True)],
    "batch/v1": [("jobs", "Job", True)],
    "batch/v1beta1": [("cronjobs", "CronJob", True)],
    "networking.k8s.io/v1": [
        ("networkpolicies", "NetworkPolicy", True),
        ("ingresses", "Ingress", True),
        ("ingressclasses", "IngressClass", False),
    ],
    "networking.k8s.io/v1beta1": [("ingresses", "Ingress", True), ("ingressclasses", "IngressClass", False)],
    "policy/v1beta1": [
        ("poddisruptionbudgets", "PodDisruptionBudget", True),
        ("podsecuritypolicies", "PodSecurityPolicy", False),
    ],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "storage.k8s.io/v1": [
        ("storageclasses", "StorageClass", False),
        ("csinodes", "CSINode", False),
        ("volumeattachments", "VolumeAttachment", False),
    ],
    "scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
    "certificates.k8s.io/v1": [("certificatesigningrequests", "CertificateSigningRequest", False)],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "davit.dev/v1alpha1": [
        ("applicationbackups", "ApplicationBackup", True),
        ("schedulepolicies", "SchedulePolicy", False),
    ],
    "example.com/v1": [("widgets", "Widget", True)],
    "example.org/v1": [("widgets", "Widget", True)],  # another CRD of the same kind: another store
}

#: The groups in the order a 1.20 server lists them, each with its preferred version first.
GROUPS_1_20 = [
    ("apiregistration.k8s.io", ["v1"]),
    ("extensions", ["v1beta1"]),
    ("apps", ["v1"]),
    ("events.k8s.io", ["v1", "v1beta1"]),
    ("batch", ["v1", "v1beta1"]),
    ("networking.k8s.io", ["v1", "v1beta1"]),
    ("policy", ["v1beta1"]),
    ("rbac.authorization.k8s.io", ["v1"]),
    ("storage.k8s.io", ["v1"]),
    ("scheduling.k8s.io", ["v1"]),
    ("certificates.k8s.io", ["v1"]),
    ("coordination.k8s.io", ["v1"]),
    ("apiextensions.k8s.io", ["v1"]),
    ("davit.dev", ["v1alpha1"]),
    ("example.com", ["v1"]),
    ("example.org", ["v1"]),
]


def _documents() -> dict[str, Any]:
    docs: dict[str, Any] = {
        "/apis": {
            "groups": [
                {
                    "name": name,
                    "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                    "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
                }
                for name, versions in GROUPS_1_20
            ]
        }
    }
    for group_version, resources in SERVED_1_20.items():
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        docs[path] = {
            "resources": [
                {
                    "name": plural,
                    "kind": kind,
                    "namespaced": namespaced,
                    "verbs": ["get"] if "/" in plural else VERBS,
                }
                for plural, kind, namespaced in resources
            ]
        }
    return docs


@pytest.fixture
def discovered_1_20(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ApiResource]]:
    """``davit.kube.discovery.discover`` reading the documents of a 1.20 API server."""
    docs = _documents()
    monkeypatch.setattr(discovery, "_get", lambda _api, path, query=None: json.loads(json.dumps(docs[path])))
    yield discovery.discover(None)


def ids(resources: list[ApiResource]) -> set[str]:
    return {f"{r.plural}.{r.group}/{r.version}" if r.group else f"{r.plural}/{r.version}" for r in resources}


def test_discovery_marks_what_only_an_older_version_serves(discovered_1_20: list[ApiResource]) -> None:
    by_id = {(r.group, r.plural): r for r in discovered_1_20}
    assert by_id["batch", "cronjobs"].version == "v1beta1" and not by_id["batch", "cronjobs"].preferred
    assert (
        by_id["networking.k8s.io", "ingresses"].version == "v1"
        and by_id["networking.k8s.io", "ingresses"].preferred
    )
    assert by_id["extensions", "ingresses"].preferred  # extensions' only (so preferred) version


def test_a_1_20_backup_lists_each_namespaced_object_once(discovered_1_20: list[ApiResource]) -> None:
    targets = select_targets(discovered_1_20, {}, ["shop"])
    listed = [f"{t.resource.plural}.{t.resource.group}/{t.resource.version}" for t in targets]
    assert [entry for entry in listed if entry.startswith("ingresses.")] == ["ingresses.networking.k8s.io/v1"]
    assert sorted(listed) == sorted(
        [
            "configmaps./v1",
            "pods./v1",
            "deployments.apps/v1",
            "replicasets.apps/v1",
            "jobs.batch/v1",
            "cronjobs.batch/v1beta1",
            "networkpolicies.networking.k8s.io/v1",
            "ingresses.networking.k8s.io/v1",
            "poddisruptionbudgets.policy/v1beta1",
            "roles.rbac.authorization.k8s.io/v1",
            "rolebindings.rbac.authorization.k8s.io/v1",
            "widgets.example.com/v1",
            "widgets.example.org/v1",
        ]
    )


def test_true_lists_every_cluster_scoped_resource_but_the_machines_and_registrations(
    discovered_1_20: list[ApiResource],
) -> None:
    assert ids(cluster_scope.all_targets(discovered_1_20)) == {
        "persistentvolumes/v1",
        "ingressclasses.networking.k8s.io/v1",
        "podsecuritypolicies.policy/v1beta1",
        "clusterroles.rbac.authorization.k8s.io/v1",
        "clusterrolebindings.rbac.authorization.k8s.io/v1",
        "storageclasses.storage.k8s.io/v1",
        "priorityclasses.scheduling.k8s.io/v1",
        "customresourcedefinitions.apiextensions.k8s.io/v1",
    }


def test_every_known_alias_names_a_group_and_a_kind() -> None:
    plural_kinds = {
        "ingresses": "Ingress",
        "networkpolicies": "NetworkPolicy",
        "deployments": "Deployment",
        "daemonsets": "DaemonSet",
        "replicasets": "ReplicaSet",
        "podsecuritypolicies": "PodSecurityPolicy",
        "events": "Event",
    }
    assert {(g, plural_kinds[p]): current for (g, p), current in KNOWN_ALIASES.items()} == KNOWN_KIND_ALIASES


def test_an_old_groups_resource_stays_where_the_current_group_does_not_serve_it() -> None:
    old_ingresses = res("extensions", "v1beta1", "ingresses", "Ingress")
    assert preferred_resources(
        [old_ingresses, res("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")]
    ) == [
        old_ingresses,
        res("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ]


@pytest.mark.parametrize(
    ("served", "kept"),
    [
        pytest.param(
            [res("apps", "v1beta1", "frobs", "Frob", preferred=False), res("batch", "v1", "frobs", "Frob")],
            "batch",
            id="served-in-its-groups-preferred-version",
        ),
        pytest.param(
            [res("apps", "v1beta2", "frobs", "Frob"), res("batch", "v1", "frobs", "Frob")],
            "batch",
            id="most-stable-version",
        ),
        pytest.param(
            [res("extensions", "v1", "frobs", "Frob"), res("policy", "v1", "frobs", "Frob")],
            "policy",
            id="not-extensions",
        ),
        pytest.param(
            [res("policy", "v1", "frobs", "Frob"), res("batch", "v1", "frobs", "Frob")],
            "policy",
            id="else-the-first-listed",
        ),
    ],
)
def test_the_discovery_rule_keeps_one_of_the_built_in_groups_serving_a_kind(
    served: list[ApiResource], kept: str
) -> None:
    assert [r.group for r in preferred_resources(served)] == [kept]


def test_the_discovery_rule_never_merges_custom_groups() -> None:
    served = [res("example.com", "v1", "widgets", "Widget"), res("example.org", "v1", "widgets", "Widget")]
    assert preferred_resources(served) == served


def test_version_priority() -> None:
    versions = ["v1alpha1", "v2", "v1beta1", "foo", "v1", "v1beta2", "v2beta1"]
    assert sorted(versions, key=version_priority, reverse=True) == [
        "v2",
        "v1",
        "v2beta1",
        "v1beta2",
        "v1beta1",
        "v1alpha1",
        "foo",
    ]


def test_a_restore_of_an_older_backup_creates_an_object_stored_under_two_groups_once() -> None:
    def ingress(api_version: str) -> dict[str, Any]:
        return {
            "apiVersion": api_version,
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": []},
        }

    objects = [
        ingress("extensions/v1beta1"),
        ingress("networking.k8s.io/v1"),
        {
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {"name": "only-old", "namespace": "shop"},
        },
    ]
    plan = plan_restore(
        objects,
        {},
        backup_name="b",
        backup_uid="u",
        restore_name="r",
        restore_uid="v",
        cluster_scoped_allowed=True,
    )
    assert sorted((o["apiVersion"], o["metadata"]["name"]) for o in plan.objects) == [
        ("extensions/v1beta1", "only-old"),
        ("networking.k8s.io/v1", "web"),
    ]
    assert plan.planned_by_kind == {"Ingress.extensions": 1, "Ingress.networking.k8s.io": 1}


# --- what a tenant's backup may store -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "allowed"),
    [
        pytest.param(binding(sa("shop", "web")), True, id="binding-of-its-account"),
        pytest.param(binding(sa("other", "web")), False, id="binding-of-another-namespaces-account"),
        pytest.param(
            binding({"kind": "Group", "name": "system:serviceaccounts:shop"}), True, id="binding-of-its-group"
        ),
        pytest.param(binding({"kind": "User", "name": "shop"}), False, id="binding-of-a-user"),
        pytest.param(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, True, id="its-namespace"
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}},
            False,
            id="other-namespace",
        ),
        pytest.param(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "p"},
                "spec": {"claimRef": {"namespace": "shop", "name": "c"}},
            },
            True,
            id="its-volume",
        ),
        pytest.param(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "p"},
                "spec": {"claimRef": {"namespace": "other", "name": "c"}},
            },
            False,
            id="others-volume",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "p"}, "spec": {}},
            False,
            id="unbound-volume",
        ),
        pytest.param(
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "f"}},
            True,
            id="storage-class",
        ),
        pytest.param(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "v"}},
            True,
            id="cluster-role",
        ),
        pytest.param({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}, False, id="node"),
        pytest.param(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "w"},
            },
            False,
            id="webhook",
        ),
    ],
)
def test_tenant_refusal(obj: dict[str, Any], allowed: bool) -> None:
    assert (cluster_scope.tenant_refusal(obj, ["shop"]) is None) is allowed


def test_a_filtered_restore_brings_the_cluster_scoped_objects_the_chosen_ones_need() -> None:
    def named(
        api_version: str, kind: str, name: str, namespace: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        meta = {"name": name, **({"namespace": namespace} if namespace else {})}
        return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}

    objects = [
        named("v1", "Namespace", "shop"),
        named("v1", "ServiceAccount", "web", "shop"),
        named("v1", "ServiceAccount", "db", "shop"),
        named(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "web-reader",
            roleRef={"kind": "ClusterRole", "name": "reader"},
            subjects=[sa("shop", "web")],
        ),
        named(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "db-admin",
            roleRef={"kind": "ClusterRole", "name": "admin"},
            subjects=[sa("shop", "db")],
        ),
        named("rbac.authorization.k8s.io/v1", "ClusterRole", "reader"),
        named("rbac.authorization.k8s.io/v1", "ClusterRole", "admin"),
        named("apps/v1", "Deployment", "web", "shop", spec=template(priorityClassName="high")),
        named("scheduling.k8s.io/v1", "PriorityClass", "high"),
        named("scheduling.k8s.io/v1", "PriorityClass", "low"),
        named("v1", "PersistentVolumeClaim", "data", "shop", spec={"storageClassName": "fast"}),
        named("storage.k8s.io/v1", "StorageClass", "fast"),
    ]
    spec = {
        "includeResources": [
            {"kind": "ServiceAccount", "name": "web"},
            {"kind": "Deployment", "name": "web"},
            {"kind": "PersistentVolumeClaim", "name": "data"},
        ]
    }
    plan = plan_restore(
        objects,
        spec,
        backup_name="b",
        backup_uid="u",
        restore_name="r",
        restore_uid="v",
        cluster_scoped_allowed=True,
    )
    assert sorted(f"{o['kind']}/{o['metadata']['name']}" for o in plan.objects) == [
        "ClusterRole/reader",
        "ClusterRoleBinding/web-reader",
        "Deployment/web",
        "Namespace/shop",
        "PersistentVolumeClaim/data",
        "PriorityClass/high",
        "ServiceAccount/web",
        "StorageClass/fast",
    ]
