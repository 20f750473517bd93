"""Which resources a backup covers: from discovery and an ApplicationBackup spec to the list calls, which
listed objects are kept, and which cluster-scoped objects they need."""

from __future__ import annotations

from typing import Any

import pytest

from davit.backup.selection import (
    ApiResource,
    ClusterRef,
    ListTarget,
    backupable,
    keep,
    label_selector,
    needed_cluster_objects,
    resource_ref,
    select_targets,
)

ALL_VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})


def res(
    group: str, version: str, plural: str, kind: str, namespaced: bool = True, verbs: Any = ALL_VERBS
) -> ApiResource:
    return ApiResource(group, version, plural, kind, namespaced, frozenset(verbs))


CONFIGMAPS = res("", "v1", "configmaps", "ConfigMap")
SECRETS = res("", "v1", "secrets", "Secret")
PODS = res("", "v1", "pods", "Pod")
SERVICES = res("", "v1", "services", "Service")
EVENTS = res("", "v1", "events", "Event")
PVCS = res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PVS = res("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
NAMESPACES = res("", "v1", "namespaces", "Namespace", namespaced=False)
POD_LOGS = res("", "v1", "pods/log", "Pod", verbs={"get"})
BINDINGS = res("", "v1", "bindings", "Binding", verbs={"create"})
DEPLOYMENTS = res("apps", "v1", "deployments", "Deployment")
STATEFULSETS = res("apps", "v1", "statefulsets", "StatefulSet")
JOBS = res("batch", "v1", "jobs", "Job")
CRONJOBS = res("batch", "v1", "cronjobs", "CronJob")
K8S_EVENTS = res("events.k8s.io", "v1", "events", "Event")
LEASES = res("coordination.k8s.io", "v1", "leases", "Lease")
APP_BACKUPS = res("davit.dev", "v1alpha1", "applicationbackups", "ApplicationBackup")
WIDGETS = res("example.davit.dev", "v1", "widgets", "Widget")
LSARS = res(
    "authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", verbs={"create"}
)

# In the order discovery might return them (not sorted).
DISCOVERY = [
    BINDINGS, CONFIGMAPS, EVENTS, NAMESPACES, PVCS, PVS, PODS, POD_LOGS, SECRETS, SERVICES,
    STATEFULSETS, DEPLOYMENTS, CRONJOBS, JOBS, K8S_EVENTS, LEASES, LSARS, WIDGETS, APP_BACKUPS,
]  # fmt: skip

#: What a backup with no filters lists, in (group, plural) order.
DEFAULT = [CONFIGMAPS, PVCS, PODS, SECRETS, SERVICES, DEPLOYMENTS, STATEFULSETS, CRONJOBS, JOBS, WIDGETS]


def plurals(targets: list[ListTarget]) -> list[str]:
    return [t.resource.id for t in targets]


# --- select_targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "namespaces",
    [
        pytest.param(["shop"], id="one"),
        pytest.param(["zeta", "alpha", "mid"], id="unsorted"),
        pytest.param([], id="none"),
    ],
)
def test_no_filters_picks_every_backupable_namespaced_resource(namespaces: list[str]) -> None:
    targets = select_targets(DISCOVERY, {}, namespaces)
    expected = [ListTarget(r, ns, None) for ns in sorted(namespaces) for r in DEFAULT]
    assert targets == expected


@pytest.mark.parametrize(
    "excluded",
    [
        pytest.param(EVENTS, id="core-events"),
        pytest.param(K8S_EVENTS, id="events.k8s.io"),
        pytest.param(LEASES, id="leases"),
        pytest.param(APP_BACKUPS, id="davit.dev"),
        pytest.param(POD_LOGS, id="subresource"),
        pytest.param(BINDINGS, id="create-only"),
        pytest.param(LSARS, id="review-api"),
        pytest.param(PVS, id="cluster-pvs"),
        pytest.param(NAMESPACES, id="cluster-namespaces"),
    ],
)
def test_no_filters_excludes(excluded: ApiResource) -> None:
    assert excluded not in {t.resource for t in select_targets(DISCOVERY, {}, ["shop"])}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(CONFIGMAPS, True, id="configmaps"),
        pytest.param(WIDGETS, True, id="custom-resource"),
        pytest.param(PVS, True, id="cluster-scoped-but-listable"),
        pytest.param(EVENTS, False, id="core-events"),
        pytest.param(K8S_EVENTS, False, id="events.k8s.io"),
        pytest.param(LEASES, False, id="leases"),
        pytest.param(APP_BACKUPS, False, id="davit.dev"),
        pytest.param(
            res("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", verbs={"get", "list"}), False, id="metrics"
        ),
        pytest.param(POD_LOGS, False, id="subresource-get-only"),
        pytest.param(
            res("apps", "v1", "deployments/status", "Deployment"), False, id="subresource-with-list"
        ),
        pytest.param(BINDINGS, False, id="create-only"),
        pytest.param(
            res("", "v1", "configmaps", "ConfigMap", verbs={"get", "watch"}), False, id="no-list-verb"
        ),
    ],
)
def test_backupable(resource: ApiResource, expected: bool) -> None:
    assert backupable(resource) is expected


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        pytest.param(["Deployment"], [DEPLOYMENTS], id="kind"),
        pytest.param(["deployment"], [DEPLOYMENTS], id="kind-lowercase"),
        pytest.param(["deployments"], [DEPLOYMENTS], id="plural"),
        pytest.param(["Deployments"], [DEPLOYMENTS], id="plural-capitalised"),
        pytest.param(["deployments.apps"], [DEPLOYMENTS], id="plural.group"),
        pytest.param(["DEPLOYMENTS.APPS"], [DEPLOYMENTS], id="plural.group-uppercase"),
        pytest.param(["Deployment.apps"], [DEPLOYMENTS], id="kind.group"),
        pytest.param(["deployments.batch"], [], id="wrong-group"),
        pytest.param(["ConfigMap", "secrets", "jobs.batch"], [CONFIGMAPS, SECRETS, JOBS], id="several"),
        pytest.param(["widgets.example.davit.dev"], [WIDGETS], id="custom-resource"),
        pytest.param(["Widget"], [WIDGETS], id="custom-kind"),
        pytest.param(["Event", "events.events.k8s.io"], [], id="events-never"),
        pytest.param(["Lease"], [], id="leases-never"),
        pytest.param(["ApplicationBackup"], [], id="davit-never"),
        pytest.param(["PersistentVolume", "Namespace"], [], id="cluster-scoped"),
        pytest.param(["pods/log"], [], id="subresource"),
        pytest.param(["Gadget"], [], id="unknown"),
        pytest.param([], DEFAULT, id="empty-means-all"),
    ],
)
def test_resource_types(types: list[str], expected: list[ApiResource]) -> None:
    targets = select_targets(DISCOVERY, {"resourceTypes": types}, ["shop"])
    assert [t.resource for t in targets] == expected
    assert all(t.namespace == "shop" for t in targets)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"excludeResourceTypes": ["Secret"]}, [r for r in DEFAULT if r is not SECRETS], id="kind"
        ),
        pytest.param(
            {"excludeResourceTypes": ["deployments.apps", "JOBS"]},
            [r for r in DEFAULT if r not in (DEPLOYMENTS, JOBS)],
            id="plural-and-id",
        ),
        pytest.param({"excludeResourceTypes": ["widget"]}, DEFAULT[:-1], id="custom"),
        pytest.param({"excludeResourceTypes": ["Gadget"]}, DEFAULT, id="unknown"),
        pytest.param(
            {"resourceTypes": ["ConfigMap", "Secret"], "excludeResourceTypes": ["secrets"]},
            [CONFIGMAPS],
            id="exclude-wins-over-include",
        ),
    ],
)
def test_exclude_resource_types(spec: dict[str, Any], expected: list[ApiResource]) -> None:
    assert [t.resource for t in select_targets(DISCOVERY, spec, ["shop"])] == expected


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        pytest.param([{"kind": "Deployment", "name": "web"}], [DEPLOYMENTS], id="kind"),
        pytest.param([{"kind": "configmap", "name": "settings"}], [CONFIGMAPS], id="kind-any-case"),
        pytest.param(
            [{"kind": "Deployment", "group": "apps", "name": "web"}], [DEPLOYMENTS], id="with-group"
        ),
        pytest.param([{"kind": "ConfigMap", "group": "", "name": "x"}], [CONFIGMAPS], id="core-group"),
        pytest.param([{"kind": "Deployment", "group": "extensions", "name": "web"}], [], id="wrong-group"),
        pytest.param(
            [{"kind": "Secret", "name": "a"}, {"kind": "Widget", "name": "w", "namespace": "shop"}],
            [SECRETS, WIDGETS],
            id="two-kinds",
        ),
        pytest.param([{"kind": "Event", "name": "e"}], [], id="never-backed-up"),
        pytest.param([], DEFAULT, id="empty-means-all"),
    ],
)
def test_include_resources_restricts_kinds(refs: list[dict[str, str]], expected: list[ApiResource]) -> None:
    assert [t.resource for t in select_targets(DISCOVERY, {"includeResources": refs}, ["shop"])] == expected


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({}, None, id="empty"),
        pytest.param({"app": "web"}, "app=web", id="one"),
        pytest.param({"tier": "db", "app": "web"}, "app=web,tier=db", id="sorted"),
        pytest.param(
            {"z": "1", "app.kubernetes.io/name": "shop", "a": "2"},
            "a=2,app.kubernetes.io/name=shop,z=1",
            id="prefixed-keys",
        ),
    ],
)
def test_label_selector(selectors: dict[str, str] | None, expected: str | None) -> None:
    assert label_selector(selectors) == expected
    spec = {} if selectors is None else {"selectors": selectors}
    targets = select_targets(DISCOVERY, spec, ["shop", "web"])
    assert targets
    assert {t.label_selector for t in targets} == {expected}


@pytest.mark.parametrize(
    ("target", "part"),
    [
        pytest.param(ListTarget(CONFIGMAPS, "shop", None), "shop/v1/configmaps", id="core"),
        pytest.param(ListTarget(DEPLOYMENTS, "shop", "app=web"), "shop/apps/v1/deployments", id="grouped"),
        pytest.param(ListTarget(WIDGETS, "ns-2", None), "ns-2/example.davit.dev/v1/widgets", id="custom"),
        pytest.param(ListTarget(PVS, None, None), "_cluster/v1/persistentvolumes", id="cluster"),
        pytest.param(ListTarget(NAMESPACES, None, None), "_cluster/v1/namespaces", id="cluster-namespaces"),
    ],
)
def test_list_target_part(target: ListTarget, part: str) -> None:
    assert target.part == part


# --- keep -------------------------------------------------------------------------------------------


def obj(name: str = "web", namespace: str | None = "shop", **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata}


SKIP = "davit.dev/skip-resource"
STORK_SKIP = "davit.dev/skipresource"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(obj(), True, id="plain"),
        pytest.param({"kind": "Deployment"}, True, id="no-metadata"),
        pytest.param(obj(deletionTimestamp="2024-05-01T12:00:00Z"), False, id="being-deleted"),
        pytest.param(obj(deletionTimestamp=None), True, id="null-deletion-timestamp"),
        pytest.param(obj(annotations={SKIP: "true"}), False, id="skip-true"),
        pytest.param(obj(annotations={SKIP: "True"}), False, id="skip-True"),
        pytest.param(obj(annotations={SKIP: "TRUE"}), False, id="skip-TRUE"),
        pytest.param(obj(annotations={STORK_SKIP: "true"}), False, id="stork-skip-true"),
        pytest.param(obj(annotations={STORK_SKIP: "True"}), False, id="stork-skip-True"),
        pytest.param(obj(annotations={SKIP: "false"}), True, id="skip-false"),
        pytest.param(obj(annotations={STORK_SKIP: "false"}), True, id="stork-skip-false"),
        pytest.param(obj(annotations={SKIP: ""}), True, id="skip-empty"),
        pytest.param(obj(annotations={SKIP: "yes"}), True, id="skip-yes-is-not-true"),
        # Stork's own annotation, as a Stork YAML whose annotations were not renamed carries it.
        pytest.param(
            obj(annotations={"stork.libopenstorage.org/skipresource": "true"}), False, id="stork-own-prefix"
        ),
        pytest.param(
            obj(annotations={"stork.libopenstorage.org/skipresource": "false"}), True, id="stork-own-false"
        ),
        pytest.param(obj(annotations={"example.com/skipresource": "true"}), True, id="other-prefix"),
        pytest.param(obj(annotations=None), True, id="null-annotations"),
        pytest.param(obj(labels={"davit.dev/data-mover": "backup"}), False, id="data-mover-helper"),
        pytest.param(obj(labels={"davit.dev/data-mover": "restore"}), False, id="restore-helper"),
        pytest.param(obj(labels={"app": "db"}), True, id="labelled"),
    ],
)
def test_keep_without_include_resources(item: dict[str, Any], expected: bool) -> None:
    assert keep(item, DEPLOYMENTS, {}) is expected


@pytest.mark.parametrize(
    ("refs", "item", "resource", "expected"),
    [
        pytest.param([{"kind": "Deployment", "name": "web"}], obj("web"), DEPLOYMENTS, True, id="kind-name"),
        pytest.param(
            [{"kind": "Deployment", "name": "web"}], obj("api"), DEPLOYMENTS, False, id="other-name"
        ),
        pytest.param(
            [{"kind": "deployment", "name": "web"}], obj("web"), DEPLOYMENTS, True, id="kind-any-case"
        ),
        pytest.param(
            [{"kind": "StatefulSet", "name": "web"}], obj("web"), DEPLOYMENTS, False, id="other-kind"
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "web", "namespace": "shop"}],
            obj("web"),
            DEPLOYMENTS,
            True,
            id="ns",
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "web", "namespace": "other"}],
            obj("web"),
            DEPLOYMENTS,
            False,
            id="other-ns",
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "web", "group": "apps"}],
            obj("web"),
            DEPLOYMENTS,
            True,
            id="group",
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "web", "group": "extensions"}],
            obj("web"),
            DEPLOYMENTS,
            False,
            id="other-group",
        ),
        pytest.param(
            [{"kind": "Widget", "name": "web", "group": "example.davit.dev"}],
            obj("web"),
            WIDGETS,
            True,
            id="custom",
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "api"}, {"kind": "Deployment", "name": "web"}],
            obj("web"),
            DEPLOYMENTS,
            True,
            id="second-ref",
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "web"}],
            obj("web", annotations={SKIP: "true"}),
            DEPLOYMENTS,
            False,
            id="named-but-skipped",
        ),
        pytest.param(
            [{"kind": "Deployment", "name": "web"}],
            obj("web", deletionTimestamp="2024-05-01T12:00:00Z"),
            DEPLOYMENTS,
            False,
            id="named-but-deleted",
        ),
    ],
)
def test_keep_with_include_resources(
    refs: list[dict[str, str]], item: dict[str, Any], resource: ApiResource, expected: bool
) -> None:
    assert keep(item, resource, {"includeResources": refs}) is expected


# --- cluster objects and manifest entries -----------------------------------------------------------


def pvc(volume: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"]}
    if volume is not None:
        spec["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "spec": spec}


@pytest.mark.parametrize(
    ("item", "resource", "expected"),
    [
        pytest.param(
            pvc("pvc-1234"), PVCS, [ClusterRef("v1", "persistentvolumes", "pvc-1234")], id="bound-pvc"
        ),
        pytest.param(pvc(None), PVCS, [], id="pending-pvc"),
        pytest.param(pvc(""), PVCS, [], id="empty-volume-name"),
        pytest.param(
            {"kind": "PersistentVolumeClaim", "metadata": {"name": "x"}}, PVCS, [], id="pvc-no-spec"
        ),
        pytest.param(
            {"apiVersion": "example.davit.dev/v1", "kind": "Widget", "metadata": {"name": "w"}},
            WIDGETS,
            [ClusterRef("apiextensions.k8s.io/v1", "customresourcedefinitions", "widgets.example.davit.dev")],
            id="custom-resource",
        ),
        pytest.param(obj(), DEPLOYMENTS, [], id="deployment"),
        pytest.param({"kind": "ConfigMap", "metadata": {"name": "c"}}, CONFIGMAPS, [], id="configmap"),
        pytest.param({"kind": "Job", "spec": {"volumeName": "x"}}, JOBS, [], id="volume-name-elsewhere"),
    ],
)
def test_needed_cluster_objects(
    item: dict[str, Any], resource: ApiResource, expected: list[ClusterRef]
) -> None:
    assert needed_cluster_objects(item, resource) == expected


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            obj("web"),
            {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web"},
            id="namespaced",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}},
            {"apiVersion": "v1", "kind": "PersistentVolume", "name": "pv-1"},
            id="cluster-scoped",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "namespace": ""}},
            {"apiVersion": "v1", "kind": "Namespace", "name": "shop"},
            id="empty-namespace",
        ),
        pytest.param({}, {"apiVersion": "", "kind": "", "name": ""}, id="empty"),
    ],
)
def test_resource_ref(item: dict[str, Any], expected: dict[str, str]) -> None:
    assert resource_ref(item) == expected


@pytest.mark.parametrize(
    ("resource", "api_version", "ident"),
    [
        pytest.param(CONFIGMAPS, "v1", "configmaps", id="core"),
        pytest.param(DEPLOYMENTS, "apps/v1", "deployments.apps", id="apps"),
        pytest.param(K8S_EVENTS, "events.k8s.io/v1", "events.events.k8s.io", id="events.k8s.io"),
        pytest.param(APP_BACKUPS, "davit.dev/v1alpha1", "applicationbackups.davit.dev", id="davit"),
        pytest.param(WIDGETS, "example.davit.dev/v1", "widgets.example.davit.dev", id="custom"),
    ],
)
def test_api_version_and_id(resource: ApiResource, api_version: str, ident: str) -> None:
    assert resource.api_version == api_version
    assert resource.id == ident
