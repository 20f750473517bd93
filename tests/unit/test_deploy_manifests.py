"""The manifests in deploy/base/*.yaml (deploy/crds has its own test, the rendered install
tests/unit/test_install.py): well-formed; every service's RBAC grants
what its code does and nothing more (two justified wildcards: the export lists every resource, the
restore recreates any), each rule with its reason, and only the services that open a store read Secrets;
every workload runs a module that exists with settings that exist; Redis requires the password from its
Secret and admits only Davit's pods; the node agent reads and writes the kubelet's pod volumes on every
node."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from davit import constants
from davit.settings import Settings, parse_address

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "base"
MANIFEST_FILES = sorted(p.name for p in DEPLOY_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
SERVICES_PACKAGE_DIR = REPO_ROOT / "services" / "davit_services"

#: The image name in the manifests; deploy/base/kustomization.yaml sets its tag, an overlay its registry.
DAVIT_IMAGE = "davit"
DAVIT_NAMESPACE = "davit-system"
WATCHER_ROLE = "davit-watcher"
WATCHER_MODULE = "davit_services.watcher"
#: Namespaces that exist in every cluster; others must be created by the manifests.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
WORKLOAD_KINDS = ("Deployment", "DaemonSet")

#: Every service: (workload kind, workload name, module). Each service but the watcher (whose account is
#: `davit`) runs as a service account of its workload's name, bound to a ClusterRole of that name.
SERVICES: dict[str, tuple[str, str, str]] = {
    "watcher": ("Deployment", "davit-watcher", "davit_services.watcher"),
    "backup": ("Deployment", "davit-backup", "davit_services.backup"),
    "resources": ("Deployment", "davit-resources", "davit_services.resources"),
    "retention": ("Deployment", "davit-retention", "davit_services.retention"),
    "restore": ("Deployment", "davit-restore", "davit_services.restore"),
    "exporter": ("Deployment", "davit-exporter", "davit_services.exporter"),
    "uploader": ("DaemonSet", "davit-uploader", "davit_services.uploader"),
}
EXPORT_ROLE = "davit-resources"
RESTORE_ROLE = "davit-restore"
#: The restore's wildcard: what it does with the objects it restores, whatever their kind.
RESTORE_WILDCARD_VERBS = ("get", "list", "create", "delete", "patch")
#: Subresources that act on a running pod or node rather than read an object: exec, attach, port
#: forwarding and the proxies (nodes/proxy is the kubelet's own API).
POWERFUL_SUBRESOURCES = ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy",
                         "nodes/proxy")  # fmt: skip
#: The only non-resource URLs a role may name: discovery.
DISCOVERY_URLS = frozenset({"/api", "/api/*", "/apis", "/apis/*"})

Doc = dict[str, Any]
Grant = tuple[str, str, str]  # (API group, resource, verb)

G = constants.API_GROUP
SNAPSHOTS = "snapshot.storage.k8s.io"


def grants(group: str, resources: list[str], verbs: list[str]) -> set[Grant]:
    return {(group, resource, verb) for resource in resources for verb in verbs}


def operation(plural: str) -> set[Grant]:
    """Working on an operation of ``plural``: re-read it before every task, write its status (stage
    changes, progress; the failure after the last retry)."""
    return grants(G, [plural], ["get"]) | grants(G, [f"{plural}/status"], ["patch"])


#: Opening a BackupLocation (davit.operations.runtime): the location, then its `secretConfig` Secret.
OPENS_LOCATIONS: set[Grant] = grants(G, ["backuplocations"], ["get"]) | grants("", ["secrets"], ["get"])
RECORDS_EVENTS: set[Grant] = grants("", ["events"], ["create"])

#: What a worker does through davit.operations.workers and davit.operations.runtime whatever its service:
#: re-read the backup,
#: write its status (stage changes; the failure after the last retry), record Events, open its location.
WORKER_COMMON: set[Grant] = operation("applicationbackups") | OPENS_LOCATIONS | RECORDS_EVENTS

#: Everything each service's ClusterRole grants: what its code calls (see the comments in
#: deploy/base/rbac.yaml), exactly. A change to a service's API calls changes its role and this table
#: together.
EXPECTED_GRANTS: dict[str, set[Grant]] = {
    WATCHER_ROLE: grants(
        G,
        ["applicationbackups", "applicationrestores", "applicationclones", "backuplocations"],
        ["list", "watch"],
    )
    | grants(G, ["backuplocations", "rules", "applicationbackups"], ["get"])  # validation
    | grants(G, ["schedulepolicies", "applicationbackupschedules"], ["list"])  # the schedule loop
    | grants(
        G, ["applicationbackups/status", "applicationrestores/status", "applicationclones/status"], ["patch"]
    )
    | grants(G, ["backuplocations/status"], ["patch"])  # location checks
    | grants("", ["secrets"], ["get"])  # location checks open the store
    | grants(G, ["applicationbackups"], ["create"])  # a schedule's due slot
    | grants(G, ["applicationbackupschedules/status"], ["patch"])
    | grants(SNAPSHOTS, ["volumesnapshots", "volumesnapshotcontents"], ["list", "delete"])  # orphaned copies
    | grants("", ["pods", "persistentvolumeclaims"], ["list", "delete"])  # the data mover's leftovers
    | grants("apps", ["deployments", "statefulsets", "replicasets"], ["list", "patch"])  # in-place leftovers
    | RECORDS_EVENTS,
    "davit-backup": WORKER_COMMON
    | grants(G, ["applicationbackups"], ["patch"])  # the finalizer
    | grants(G, ["rules"], ["get"])
    | grants("", ["persistentvolumeclaims", "pods"], ["list"])
    | grants("", ["persistentvolumes"], ["get"])
    | grants("", ["pods/exec"], ["get", "create"])
    | grants(SNAPSHOTS, ["volumesnapshotclasses"], ["list"])
    | grants(SNAPSHOTS, ["volumesnapshots"], ["get", "watch", "create"])
    | grants(SNAPSHOTS, ["volumesnapshotcontents"], ["get"])
    # The data mover: a temporary claim and a helper pod per snapshot, followed, then removed with it.
    | grants("", ["persistentvolumeclaims", "pods"], ["get", "create", "delete"])
    | grants("", ["pods"], ["watch"])
    | grants(SNAPSHOTS, ["volumesnapshots"], ["list", "delete"]),
    EXPORT_ROLE: WORKER_COMMON
    | grants("*", ["*"], ["list"])  # every resource of the namespaces it backs up
    | grants("", ["namespaces", "persistentvolumes"], ["get"])
    | grants("apiextensions.k8s.io", ["customresourcedefinitions"], ["get"])
    | grants("storage.k8s.io", ["storageclasses"], ["get"])
    | grants("scheduling.k8s.io", ["priorityclasses"], ["get"])
    | grants("rbac.authorization.k8s.io", ["clusterroles"], ["get"]),
    "davit-retention": WORKER_COMMON
    | grants(G, ["applicationbackups"], ["patch"])  # the finalizer
    | grants(SNAPSHOTS, ["volumesnapshots"], ["list", "delete"])  # reclaimPolicy Delete
    # Location sync: the cluster's backups listed, imports created and removed, the sync's time.
    | grants(G, ["applicationbackups"], ["list", "create", "delete"])
    | grants(G, ["backuplocations/status"], ["patch"])
    # Schedule retention and ttls: the schedule and its policy read, backups deleted (above).
    | grants(G, ["applicationbackupschedules", "schedulepolicies"], ["get"]),
    RESTORE_ROLE: grants("*", ["*"], list(RESTORE_WILDCARD_VERBS))  # whatever the backup holds
    | grants("rbac.authorization.k8s.io", ["roles", "clusterroles"], ["bind", "escalate"])
    # What it does for itself (all of it also within the wildcard):
    | operation("applicationrestores")
    | grants(G, ["applicationbackups"], ["get"])
    | OPENS_LOCATIONS
    | RECORDS_EVENTS
    | grants("", ["nodes"], ["list"])
    | grants("apiextensions.k8s.io", ["customresourcedefinitions"], ["get"])
    | grants("", ["persistentvolumeclaims", "persistentvolumes"], ["get"])
    | grants("", ["pods"], ["list", "get", "create", "delete"])  # helper pods for unmounted claims
    # Restore hooks: the post-restore Rule read and run in the restored pods.
    | grants(G, ["rules"], ["get"])
    | grants("", ["pods/exec"], ["get", "create"])
    # Claims from CSI snapshots: the backup's snapshot checked, copies into other namespaces made and removed.
    | grants(SNAPSHOTS, ["volumesnapshots", "volumesnapshotcontents"], ["get", "list", "create", "delete"])
    # Clones: the clone itself, the staging backup and restore it creates and follows.
    | operation("applicationclones")
    | grants(G, ["applicationbackups", "applicationrestores"], ["create"])
    | grants(G, ["applicationbackups"], ["delete"])
    | grants(G, ["backuplocations"], ["list"]),
    "davit-uploader": WORKER_COMMON
    | operation("applicationrestores")
    # The volume's directory, derived from the API (davit.volumes.node_dirs): the claim, its PV, the pod on
    # this
    # node that mounts it, and the namespaces an admin backup's selector matches.
    | grants("", ["persistentvolumeclaims", "persistentvolumes"], ["get"])
    | grants("", ["pods"], ["list"])
    | grants("", ["namespaces"], ["list"]),
    "davit-exporter": grants(
        G,
        [
            constants.PLURALS[k]
            for k in (
                *constants.OPERATION_KINDS,
                constants.Kind.BACKUP_LOCATION,
                constants.Kind.APPLICATION_BACKUP_SCHEDULE,
            )
        ],
        ["list", "watch"],
    ),
}


@cache
def documents() -> tuple[tuple[str, Doc], ...]:
    docs = []
    for file_name in MANIFEST_FILES:
        for doc in yaml.safe_load_all((DEPLOY_DIR / file_name).read_text()):
            if doc is not None:  # an empty document, e.g. after a trailing ---
                docs.append((file_name, doc))
    return tuple(docs)


def objects(kind: str) -> list[Doc]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def workloads() -> list[Doc]:
    return [doc for kind in WORKLOAD_KINDS for doc in objects(kind)]


def one(kind: str, name: str, namespace: str | None = None) -> Doc:
    found = [
        doc
        for doc in objects(kind)
        if doc["metadata"]["name"] == name and doc["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"expected one {kind} {namespace or ''}/{name}, found {len(found)}"
    return found[0]


def _matches(values: list[str], wanted: str) -> bool:
    return wanted in values or "*" in values


def granted(rules: list[Doc], api_group: str, resource: str, name: str | None = None) -> set[str]:
    """The verbs ``rules`` grant on ``resource`` in ``api_group`` (on the object ``name``, if given).
    As the API server matches them: ``*`` in apiGroups or resources matches every group and every
    resource, subresources included."""
    verbs: set[str] = set()
    for rule in rules:
        if not (
            _matches(rule.get("apiGroups", []), api_group) and _matches(rule.get("resources", []), resource)
        ):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        verbs.update(rule["verbs"])
    return verbs


def all_grants(role: Doc) -> set[Grant]:
    """Every (group, resource, verb) a role's resource rules name, as written (``*`` stays ``*``)."""
    found: set[Grant] = set()
    for rule in role["rules"]:
        if "nonResourceURLs" in rule:
            continue
        assert not rule.get("resourceNames"), f"{role['metadata']['name']}: resourceNames: extend this test"
        for group in rule["apiGroups"]:
            found |= grants(group, rule["resources"], rule["verbs"])
    return found


def role_rules(name: str) -> list[Doc]:
    rules: list[Doc] = one("ClusterRole", name)["rules"]
    return rules


def bound_accounts(binding: Doc) -> set[tuple[str, str]]:
    return {(s["namespace"], s["name"]) for s in binding["subjects"] if s["kind"] == "ServiceAccount"}


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def davit_containers() -> list[tuple[Doc, Doc]]:
    """(workload, container) for every container running the Davit image."""
    return [
        (workload, container)
        for workload in workloads()
        for container in pod_spec(workload)["containers"]
        if container["image"].partition(":")[0] == DAVIT_IMAGE.partition(":")[0]
    ]


def workload_of(service: str) -> Doc:
    kind, name, _ = SERVICES[service]
    return one(kind, name, DAVIT_NAMESPACE)


def container_of(service: str) -> Doc:
    containers: list[Doc] = pod_spec(workload_of(service))["containers"]
    assert len(containers) == 1, f"{service}: one container expected"
    return containers[0]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def settings_of(container: Doc) -> Settings:
    """The Settings a container's process starts with (literal values; valueFrom ones are left out)."""
    return Settings.from_env({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})


def account_of(workload: Doc) -> tuple[str, str]:
    """(namespace, name) of the service account a workload's pods run as."""
    return workload["metadata"]["namespace"], pod_spec(workload)["serviceAccountName"]


def watcher_account() -> tuple[str, str]:
    """(namespace, name) of the service account the watcher's pods run as."""
    return account_of(workload_of("watcher"))


def module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"] and len(command) == 3, f"{command}: not `python -m <module>`"
    return command[2]


def service_modules_in_tree() -> list[str]:
    """Every ``davit_services.*`` package with a ``__main__.py``: each is a service that must be deployed."""
    return sorted(
        ".".join(("davit_services", *main.parent.relative_to(SERVICES_PACKAGE_DIR).parts))
        for main in SERVICES_PACKAGE_DIR.rglob("__main__.py")
        if main.parent != SERVICES_PACKAGE_DIR
    )


# --- every document -----------------------------------------------------------------------------------


def test_there_are_manifests() -> None:
    assert {"rbac.yaml", "watcher.yaml", "workers.yaml"} <= set(MANIFEST_FILES)


@pytest.mark.parametrize("file_name", MANIFEST_FILES)
def test_documents_are_objects(file_name: str) -> None:
    docs = [doc for name, doc in documents() if name == file_name]
    assert docs, f"{file_name} holds no objects"
    for doc in docs:
        assert isinstance(doc, dict), f"{file_name}: {doc!r} is not an object"
        assert doc.get("apiVersion") and doc.get("kind"), f"{file_name}: {doc} lacks apiVersion or kind"
        assert (doc.get("metadata") or {}).get("name"), f"{file_name}: a {doc['kind']} without a name"


def test_names_are_unique() -> None:
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for _, d in documents()]
    assert len(keys) == len(set(keys)), f"duplicates: {sorted(k for k in keys if keys.count(k) > 1)}"


def test_namespaces_exist() -> None:
    created = {doc["metadata"]["name"] for doc in objects("Namespace")}
    used = {doc["metadata"]["namespace"] for _, doc in documents() if doc["metadata"].get("namespace")}
    assert used <= created | BUILTIN_NAMESPACES, f"namespaces nobody creates: {used - created}"


def test_rbac_has_no_wildcards_but_the_exports_list_and_the_restores_writes() -> None:
    # The export must list every resource of the namespaces it backs up, custom resources included, so
    # no fixed list can name them; that rule is list-only. The restore recreates whatever a backup holds:
    # its rule names the five verbs it uses, never `*` (see both comments in deploy/base/rbac.yaml). Every
    # other rule names its groups, resources and verbs.
    wildcards = {
        (kind, role["metadata"]["name"]): rule
        for kind in ("ClusterRole", "Role")
        for role in objects(kind)
        for rule in role["rules"]
        if any("*" in rule.get(key, []) for key in ("apiGroups", "resources", "verbs", "resourceNames"))
    }
    assert wildcards == {
        ("ClusterRole", EXPORT_ROLE): {"apiGroups": ["*"], "resources": ["*"], "verbs": ["list"]},
        ("ClusterRole", RESTORE_ROLE): {
            "apiGroups": ["*"],
            "resources": ["*"],
            "verbs": list(RESTORE_WILDCARD_VERBS),
        },
    }


def test_non_resource_urls_are_discovery_only() -> None:
    for role in objects("ClusterRole"):
        for rule in role["rules"]:
            if "nonResourceURLs" in rule:
                assert set(rule["nonResourceURLs"]) <= DISCOVERY_URLS, role["metadata"]["name"]
                assert rule["verbs"] == ["get"], role["metadata"]["name"]


# --- the watcher's RBAC -----------------------------------------------------------------------------------


def watcher_rules() -> list[Doc]:
    return role_rules(WATCHER_ROLE)


@pytest.mark.parametrize(
    "plural", [constants.PLURALS[k] for k in (*constants.OPERATION_KINDS, constants.Kind.BACKUP_LOCATION)]
)
def test_watcher_follows_the_operations_and_the_locations(plural: str) -> None:
    verbs = granted(watcher_rules(), constants.API_GROUP, plural)
    assert {"list", "watch"} <= verbs, f"{plural}: the watcher may only {sorted(verbs)}"


@pytest.mark.parametrize("kind", constants.OPERATION_KINDS)
def test_watcher_writes_operation_status(kind: constants.Kind) -> None:
    verbs = granted(watcher_rules(), constants.API_GROUP, f"{constants.PLURALS[kind]}/status")
    assert "patch" in verbs, f"{kind}: the watcher cannot patch the status"


def test_watcher_never_writes_davit_objects_themselves() -> None:
    # The one exception: a schedule's due slot creates its ApplicationBackup.
    allowed = {constants.PLURALS[constants.Kind.APPLICATION_BACKUP]: {"get", "list", "watch", "create"}}
    assert not granted(watcher_rules(), constants.API_GROUP, "applicationbackups/status") - {"patch"}
    for plural in constants.PLURALS.values():
        verbs = granted(watcher_rules(), constants.API_GROUP, plural)
        assert verbs <= allowed.get(plural, {"get", "list", "watch"}), f"{plural}: {sorted(verbs)}"


def test_watcher_fires_schedules() -> None:
    assert "create" in granted(watcher_rules(), constants.API_GROUP, "applicationbackups")
    assert "patch" in granted(watcher_rules(), constants.API_GROUP, "applicationbackupschedules/status")


def test_watcher_records_events() -> None:
    assert "create" in granted(watcher_rules(), "", "events")


def test_watcher_checks_locations() -> None:
    # The check opens the store with the location's Secret and writes the outcome into its status.
    rules = watcher_rules()
    assert "get" in granted(rules, "", "secrets")
    assert "patch" in granted(rules, constants.API_GROUP, "backuplocations/status")


def test_watcher_role_is_bound_to_its_service_account() -> None:
    binding = one("ClusterRoleBinding", WATCHER_ROLE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": WATCHER_ROLE,
    }
    for namespace, name in bound_accounts(binding):
        one("ServiceAccount", name, namespace)
    account = watcher_account()
    assert account in bound_accounts(binding)


def test_watcher_may_hold_its_lease_in_the_lease_namespace_only() -> None:
    # The Lease the watcher's pods use: the defaults, unless the Deployment's environment changes them.
    settings = settings_of(container_of("watcher"))
    namespace, lease = settings.lease_namespace, settings.lease_name
    for cluster_role in objects("ClusterRole"):
        name = cluster_role["metadata"]["name"]
        cluster_wide = granted(cluster_role["rules"], "coordination.k8s.io", "leases")
        # The export lists every resource and the restore writes any (the two wildcards: the restore is
        # cluster-admin in effect anyway); no other ClusterRole may do anything with Leases.
        allowed = {EXPORT_ROLE: {"list"}, RESTORE_ROLE: set(RESTORE_WILDCARD_VERBS)}.get(name, set())
        assert cluster_wide <= allowed, f"ClusterRole {name} may {sorted(cluster_wide)} leases cluster-wide"

    roles = [r for r in objects("Role") if r["metadata"]["namespace"] == namespace]
    bindings = [b for b in objects("RoleBinding") if b["metadata"]["namespace"] == namespace]
    account = watcher_account()
    verbs: set[str] = set()
    for binding in bindings:
        if account in bound_accounts(binding) and binding["roleRef"]["kind"] == "Role":
            role = next(r for r in roles if r["metadata"]["name"] == binding["roleRef"]["name"])
            # create is authorised before the object has a name; get and update name the Lease.
            verbs |= granted(role["rules"], "coordination.k8s.io", "leases") & {"create"}
            verbs |= granted(role["rules"], "coordination.k8s.io", "leases", lease) & {"get", "update"}
    assert verbs == {"get", "create", "update"}, f"Lease {namespace}/{lease}: the watcher may {sorted(verbs)}"


# --- the workers' RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(EXPECTED_GRANTS))
def test_service_role_grants_exactly_what_its_code_does(role: str) -> None:
    actual = all_grants(one("ClusterRole", role))
    missing = sorted(EXPECTED_GRANTS[role] - actual)
    extra = sorted(actual - EXPECTED_GRANTS[role])
    assert not missing and not extra, f"ClusterRole {role}: missing {missing}, beyond its code {extra}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_runs_as_its_own_account_bound_to_its_own_role(service: str) -> None:
    workload = workload_of(service)
    account = account_of(workload)
    one("ServiceAccount", account[1], account[0])
    role = workload["metadata"]["name"]
    binding = one("ClusterRoleBinding", role)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role,
    }
    assert bound_accounts(binding) == {account}, f"{role} is bound to other accounts too"
    bindings = objects("ClusterRoleBinding")
    bound_roles = {b["roleRef"]["name"] for b in bindings if account in bound_accounts(b)}
    assert bound_roles == {role}, f"{account} holds other services' roles: {sorted(bound_roles - {role})}"


def test_no_two_services_share_an_account() -> None:
    accounts = [account_of(workload_of(service)) for service in SERVICES]
    assert len(accounts) == len(set(accounts)), accounts


def test_snapshot_may_exec_rules_and_take_volume_snapshots() -> None:
    rules = role_rules("davit-backup")
    # The client's WebSocket exec is a GET: `get` before Kubernetes 1.30, `create` from then on.
    assert {"get", "create"} <= granted(rules, "", "pods/exec")
    assert "create" in granted(rules, SNAPSHOTS, "volumesnapshots")
    assert {"get", "watch"} <= granted(rules, SNAPSHOTS, "volumesnapshots")
    assert "list" in granted(rules, SNAPSHOTS, "volumesnapshotclasses")
    assert "patch" in granted(rules, G, "applicationbackups"), "cannot add the finalizer"


def test_retention_may_remove_the_finalizer_and_delete_snapshots() -> None:
    rules = role_rules("davit-retention")
    assert {"get", "patch"} <= granted(rules, G, "applicationbackups")
    assert {"list", "delete"} <= granted(rules, SNAPSHOTS, "volumesnapshots")
    assert not granted(rules, SNAPSHOTS, "volumesnapshotcontents"), "the snapshotter releases the contents"


def test_retention_may_sync_locations() -> None:
    rules = role_rules("davit-retention")
    assert {"list", "create", "delete"} <= granted(rules, G, "applicationbackups")
    assert "patch" in granted(rules, G, "applicationbackups/status"), "an import's status"
    assert "patch" in granted(rules, G, "backuplocations/status"), "lastSynced"


@pytest.mark.parametrize("role", ["davit-backup", EXPORT_ROLE, "davit-uploader", "davit-exporter"])
def test_backups_are_deleted_by_their_users_and_the_sync_only(role: str) -> None:
    # Retention deletes only the imports a location sync made; the restore's wildcard reaches them too.
    assert "delete" not in granted(role_rules(role), G, "applicationbackups")


@pytest.mark.parametrize("resource", [("", "secrets"), ("apps", "deployments"), ("example.com", "widgets"),
                                      ("", "namespaces")])  # fmt: skip
def test_export_lists_every_resource(resource: tuple[str, str]) -> None:
    assert "list" in granted(role_rules(EXPORT_ROLE), *resource)


def test_export_reads_the_cluster_part_by_name() -> None:
    rules = role_rules(EXPORT_ROLE)
    assert "get" in granted(rules, "", "namespaces")
    assert "get" in granted(rules, "", "persistentvolumes")
    assert "get" in granted(rules, "apiextensions.k8s.io", "customresourcedefinitions")
    assert "get" in granted(rules, "storage.k8s.io", "storageclasses")
    assert "get" in granted(rules, "scheduling.k8s.io", "priorityclasses")
    assert "get" in granted(rules, "rbac.authorization.k8s.io", "clusterroles")
    assert "list" in granted(rules, "rbac.authorization.k8s.io", "clusterrolebindings")
    nonresource = {url for rule in rules for url in rule.get("nonResourceURLs", [])}
    assert {"/api", "/apis"} <= nonresource, "discovery"


@pytest.mark.parametrize("subresource", POWERFUL_SUBRESOURCES)
def test_only_the_rule_runners_reach_into_pods(subresource: str) -> None:
    # `list` is never how the API server authorises a request on a subresource (those name an object),
    # so the export's wildcard list reaches none of them; `get` on `*` would, and the restore's wildcard
    # does: RBAC cannot exclude subresources from `*`, and an account that may create any object and
    # bind any role gains nothing from them. Of the restore's own rules only pods/exec is named, for its
    # post-restore Rule; the backup service runs the backups' Rules.
    for role in objects("ClusterRole"):
        name = role["metadata"]["name"]
        rules = role["rules"]
        if name == RESTORE_ROLE:
            rules = [rule for rule in rules if "*" not in rule.get("resources", [])]
        verbs = granted(rules, "", subresource) - {"list"}
        if name in ("davit-backup", RESTORE_ROLE) and subresource == "pods/exec":
            continue
        assert not verbs, f"ClusterRole {name} may {sorted(verbs)} {subresource}"


#: A few of the resources a backup may hold: core, built-in, custom, cluster-scoped, RBAC.
RESTORED_RESOURCES = [("", "secrets"), ("apps", "deployments"), ("example.com", "widgets"),
                      ("", "namespaces"), ("rbac.authorization.k8s.io", "rolebindings")]  # fmt: skip


@pytest.mark.parametrize("resource", RESTORED_RESOURCES)
def test_restore_recreates_any_object_with_five_verbs(resource: tuple[str, str]) -> None:
    verbs = granted(role_rules(RESTORE_ROLE), *resource)
    assert verbs == set(RESTORE_WILDCARD_VERBS), f"{resource}: {sorted(verbs)}"


@pytest.mark.parametrize("role", ["roles", "clusterroles"])
def test_restore_may_restore_rbac(role: str) -> None:
    # Creating a Role granting what the restore lacks needs `escalate`; a binding to such a role, `bind`.
    assert {"bind", "escalate"} <= granted(role_rules(RESTORE_ROLE), "rbac.authorization.k8s.io", role)


def test_restore_reads_what_it_restores_from_and_into() -> None:
    # Beyond the wildcard: the rules that say what the service does for itself.
    rules = [rule for rule in role_rules(RESTORE_ROLE) if "*" not in rule.get("resources", [])]
    assert "get" in granted(rules, G, "applicationbackups")
    assert "patch" in granted(rules, G, "applicationrestores/status")
    assert "list" in granted(rules, "", "nodes")
    assert "get" in granted(rules, "apiextensions.k8s.io", "customresourcedefinitions")
    nonresource = {url for rule in rules for url in rule.get("nonResourceURLs", [])}
    assert {"/api/*", "/apis", "/apis/*"} <= nonresource, "discovery"


def test_exporter_only_reads() -> None:
    verbs = {verb for _, _, verb in all_grants(one("ClusterRole", "davit-exporter"))}
    assert verbs == {"list", "watch"}


# --- workloads ------------------------------------------------------------------------------------------


def test_the_watcher_runs_with_a_standby() -> None:
    deployment = workload_of("watcher")
    assert deployment["spec"]["replicas"] >= 2, "leader election needs a standby to hand over to"
    assert module_of(container_of("watcher")["command"]) == WATCHER_MODULE


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_runs_its_module(service: str) -> None:
    assert module_of(container_of(service)["command"]) == SERVICES[service][2]


def test_davit_containers_run_modules_that_exist() -> None:
    assert davit_containers(), f"no workload runs {DAVIT_IMAGE}"
    for workload, container in davit_containers():
        module = module_of(container["command"])
        where = f"{workload['kind']} {workload['metadata']['name']}"
        assert importlib.util.find_spec(module) is not None, f"{where}: {module} does not exist"
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{where}: no {module}.__main__"


def test_every_service_in_the_tree_is_deployed() -> None:
    in_tree = service_modules_in_tree()
    assert WATCHER_MODULE in in_tree  # the scan itself works
    deployed = {module_of(container["command"]) for _, container in davit_containers()}
    missing = sorted(set(in_tree) - deployed)
    assert not missing, f"services with a __main__ that deploy/base/*.yaml does not run: {missing}"


def test_davit_containers_are_configured_with_settings_that_exist() -> None:
    known = {f"DAVIT_{f.name.upper()}" for f in fields(Settings)}
    for workload, container in davit_containers():
        names = set(env_of(container))
        assert names <= known, f"{workload['metadata']['name']}: {sorted(names - known)} are not settings"
        settings_of(container)  # and the values parse


def test_nothing_deployed_runs_on_a_shifted_clock() -> None:
    """``dev_clock_file`` (``davit.clocks``) is for the local stack and tests only: no manifest of any
    overlay sets it, as a variable or as a flag."""
    for workload, container in davit_containers():
        assert settings_of(container).dev_clock_file == "", workload["metadata"]["name"]
    mentions = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "deploy").rglob("*"))
        if path.is_file() and re.search(r"dev[_-]clock", path.read_text(errors="replace"), re.IGNORECASE)
    ]
    assert not mentions, f"the dev clock is named in deployed files: {mentions}"


def test_davit_containers_reach_redis_through_a_service() -> None:
    for workload, container in davit_containers():
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        host_port = env["DAVIT_REDIS_URL"].split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        name, _, rest = host.partition(".")
        namespace = rest.split(".")[0] or workload["metadata"]["namespace"]
        service = one("Service", name, namespace)
        assert int(port) in [p["port"] for p in service["spec"]["ports"]], workload["metadata"]["name"]


def test_containers_have_resources() -> None:
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            resources = container.get("resources") or {}
            assert resources.get("requests") and resources.get("limits"), (
                f"{workload['metadata']['name']}/{container['name']}: set requests and limits"
            )


def test_selectors_match_the_pods() -> None:
    for workload in workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    for service in objects("Service"):
        pods = [
            w["spec"]["template"]["metadata"]["labels"]
            for w in workloads()
            if w["metadata"]["namespace"] == service["metadata"]["namespace"]
        ]
        assert any(service["spec"]["selector"].items() <= labels.items() for labels in pods), (
            f"Service {service['metadata']['name']} selects no pods"
        )


def test_export_runs_several_replicas() -> None:
    # A large namespace is split into page tasks that several workers take at once.
    assert workload_of("resources")["spec"]["replicas"] >= 2


def test_restore_runs_several_replicas_with_room_for_a_backup() -> None:
    # A step's objects are split into chunk tasks that several workers take at once; planning holds
    # every object of the backup in memory.
    assert workload_of("restore")["spec"]["replicas"] >= 2
    limit = container_of("restore")["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and float(limit.removesuffix("Gi")) >= 1, limit


@pytest.mark.parametrize("service", sorted(set(SERVICES) - {"uploader"}))
def test_services_run_unprivileged(service: str) -> None:
    pod = pod_spec(workload_of(service))
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, service
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}, service
    assert not any("hostPath" in volume for volume in pod.get("volumes", [])), f"{service} mounts the host"
    container = container_of(service)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False and container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}, service


# --- the exporter -----------------------------------------------------------------------------------------


def test_exporter_serves_metrics_through_an_annotated_service() -> None:
    container = container_of("exporter")
    host, port = parse_address(settings_of(container).metrics_address)
    # Every interface of the pod, so that the Service reaches it.
    assert host == "0.0.0.0"  # noqa: S104
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = one("Service", "davit-exporter", DAVIT_NAMESPACE)
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port == 9797
    assert ports[service_port["targetPort"]] == port
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert (
        service["spec"]["selector"].items()
        <= workload_of("exporter")["spec"]["template"]["metadata"]["labels"].items()
    )


# --- the node agent ---------------------------------------------------------------------------------------


def test_uploader_runs_on_every_node() -> None:
    daemonset = workload_of("uploader")
    assert daemonset["kind"] == "DaemonSet"
    tolerations = pod_spec(daemonset).get("tolerations") or []
    assert {"operator": "Exists"} in tolerations, "an agent must run on tainted nodes too"
    assert "nodeSelector" not in pod_spec(daemonset) and "affinity" not in pod_spec(daemonset)


def test_uploader_knows_its_node_from_the_downward_api() -> None:
    env = env_of(container_of("uploader"))
    assert env["DAVIT_NODE_NAME"] == {
        "name": "DAVIT_NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }


def test_uploader_mounts_the_kubelets_pod_directory_read_write() -> None:
    pod = pod_spec(workload_of("uploader"))
    container = container_of("uploader")
    kubelet_root = settings_of(container).kubelet_root
    assert kubelet_root == "/var/lib/kubelet"
    pods_dir = f"{kubelet_root}/pods"  # where davit_services.uploader.agent.source_directory looks
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == pods_dir]
    assert not mount.get("readOnly"), "restores write into the restored pods' volumes"
    # Volumes the kubelet mounts after the agent started are visible only with propagation from the host.
    assert mount["mountPropagation"] == "HostToContainer"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"]["path"] == pods_dir, "the paths inside and out must be the same"


def test_uploader_is_root_only_for_the_pods_files() -> None:
    pod = pod_spec(workload_of("uploader"))
    assert pod["securityContext"]["runAsUser"] == 0, "every pod's files, whatever their owner"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    context = container_of("uploader")["securityContext"]
    assert context.get("privileged") is not True
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    # Read and write any file; give restored files back their owners, modes (setgid too) and times.
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]}
    # The host is reached at the kubelet's pod directory only: not its credentials and configuration.
    kubelet_root = settings_of(container_of("uploader")).kubelet_root
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {f"{kubelet_root}/pods"}, sorted(host_paths)


# --- the commented local-location example ----------------------------------------------------------------

#: The services that open BackupLocations and so need a `type: local` location's volume.
LOCATION_USERS = ("backup", "resources", "retention", "restore", "uploader")
_COMMENTED_MOUNT = re.compile(
    r"^(\s*)# (- name: local-backups|  mountPath: \S+|  persistentVolumeClaim:|    claimName: \S+)$"
)


def uncommented_local_example() -> list[Doc]:
    """deploy/base/workers.yaml with its commented `local-backups` mounts and claim uncommented."""
    text = (DEPLOY_DIR / "workers.yaml").read_text()
    claim_at = text.index("# ---\n# apiVersion: v1\n# kind: PersistentVolumeClaim")
    lines: list[str] = []
    for line in text[:claim_at].splitlines():
        match = _COMMENTED_MOUNT.match(line)
        # Only the lines that follow an uncommented `- name: local-backups` belong to it.
        if match and (match.group(2).startswith("- name: local-backups") or lines[-1].lstrip()[:1] != "#"):
            lines.append(match.group(1) + match.group(2))
        else:
            lines.append(line)
    lines += [line.removeprefix("#").removeprefix(" ") for line in text[claim_at:].splitlines()]
    return [doc for doc in yaml.safe_load_all("\n".join(lines)) if doc is not None]


def test_the_commented_local_location_example_is_valid() -> None:
    docs = uncommented_local_example()
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert (claim["metadata"]["name"], claim["metadata"]["namespace"]) == (
        "davit-local-backups",
        DAVIT_NAMESPACE,
    )
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every worker on every node mounts it"
    paths = set()
    for service, (kind, name, _) in SERVICES.items():
        if service == "watcher":
            continue  # deploy/base/watcher.yaml: the note asks for the same mount there
        (workload,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        (container,) = pod_spec(workload)["containers"]
        mounts = [m for m in container["volumeMounts"] if m["name"] == "local-backups"]
        if service not in LOCATION_USERS:
            assert not mounts, f"{service} never opens a location"
            continue
        assert len(mounts) == 1, f"{service}: no commented local-backups mount"
        assert volumes["local-backups"] == {
            "name": "local-backups",
            "persistentVolumeClaim": {"claimName": "davit-local-backups"},
        }
        paths.add(mounts[0]["mountPath"])
    assert len(paths) == 1, f"a local location's path must be the same in every worker: {sorted(paths)}"


# --- Secrets and reasons ----------------------------------------------------------------------------------

#: Every role that may read Secrets, with the verbs. Each of these services opens BackupLocations' stores
#: with their `secretConfig` Secret, read by name (davit.operations.runtime.open_location_store): `get`
#: only. The
#: export's `list` (every resource of the namespaces it backs up) and the restore's wildcard (whatever a
#: backup holds) reach Secrets as what they back up and restore. No other role reads a Secret.
SECRET_READERS: dict[str, set[str]] = {
    WATCHER_ROLE: {"get"},  # location checks
    "davit-backup": {"get"},  # the probe write and the manifest
    EXPORT_ROLE: {"get", "list"},  # the pages' location; the Secrets a backup holds
    "davit-retention": {"get"},  # deletion, sync, garbage collection
    RESTORE_ROLE: set(RESTORE_WILDCARD_VERBS),  # the backup's location; the Secrets a restore recreates
    "davit-uploader": {"get"},  # the node agent stores and reads the volumes' chunks itself
}
#: How a service's code opens a location's store: through the worker runtime or directly.
OPENS_A_STORE = re.compile(r"\.repository\(|open_location_store\(")


def rbac_roles() -> list[Doc]:
    return [
        doc for name, doc in documents() if name == "rbac.yaml" and doc["kind"] in ("ClusterRole", "Role")
    ]


def opens_a_store(service: str) -> bool:
    package = SERVICES_PACKAGE_DIR / SERVICES[service][2].removeprefix("davit_services.")
    return any(OPENS_A_STORE.search(path.read_text()) for path in package.rglob("*.py"))


def test_only_the_services_that_open_a_store_read_secrets() -> None:
    readers = {}
    for role in rbac_roles():
        verbs = granted(role["rules"], "", "secrets")
        if verbs:
            readers[role["metadata"]["name"]] = verbs
    assert readers == SECRET_READERS


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_that_opens_no_store_reads_no_secret(service: str) -> None:
    # Derived from the code: a service whose package never opens a location's store gets no Secret.
    role = SERVICES[service][1]
    assert opens_a_store(service) == (role in SECRET_READERS), (
        f"{service}: opens a store: {opens_a_store(service)}, may read Secrets: {role in SECRET_READERS}"
    )
    assert opens_a_store("backup") and not opens_a_store("exporter")  # the scan itself works


def test_secrets_are_read_by_name_only_outside_the_two_wildcards() -> None:
    # `get` needs the name: the account cannot find Secrets, only read those it is told about. List and
    # watch come only with the export's list of what it backs up and the restore's wildcard.
    for role in rbac_roles():
        name = role["metadata"]["name"]
        rules = [rule for rule in role["rules"] if "*" not in rule.get("resources", [])]
        assert granted(rules, "", "secrets") <= {"get"}, name


def rule_comments() -> list[tuple[str, int, str]]:
    """(role, rule index, the comment right above the rule) for every rule of every role in
    deploy/base/rbac.yaml, read from the file's text: YAML parsers drop comments."""
    found: list[tuple[str, int, str]] = []
    for text in re.split(r"^---\s*$", (DEPLOY_DIR / "rbac.yaml").read_text(), flags=re.MULTILINE):
        doc = yaml.safe_load(text)
        if not doc or doc.get("kind") not in ("ClusterRole", "Role"):
            continue
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if re.match(r"^  - (apiGroups|nonResourceURLs):", line)]
        assert len(starts) == len(doc["rules"]), f"{doc['metadata']['name']}: a rule written differently"
        for index, start in enumerate(starts):
            comment: list[str] = []
            above = start - 1
            while above >= 0 and lines[above].strip().startswith("#"):
                comment.insert(0, lines[above].strip().lstrip("#").strip())
                above -= 1
            found.append((doc["metadata"]["name"], index, " ".join(comment)))
    return found


def test_every_rule_says_why() -> None:
    comments = rule_comments()
    assert len(comments) == sum(len(role["rules"]) for role in rbac_roles())
    missing = [f"{role} rule {index}" for role, index, comment in comments if len(comment) < 20]
    assert not missing, f"rules without a reason in the comment right above them: {missing}"


def test_every_secret_rule_says_what_the_secret_is_for() -> None:
    naming_secrets = set()
    for role in rbac_roles():
        name = role["metadata"]["name"]
        reasons = {index: comment for r, index, comment in rule_comments() if r == name}
        for index, rule in enumerate(role["rules"]):
            if "secrets" in rule.get("resources", []):
                assert "Secret" in reasons[index] and "store" in reasons[index], f"{name} rule {index}"
                naming_secrets.add(name)
    # Every reader names Secrets in a rule of its own, wildcards or not: the reason is always written.
    assert naming_secrets == set(SECRET_READERS)


# --- Redis: a password from a Secret, and Davit's pods only -------------------------------------------------

REDIS_SECRET_REF = {"secretKeyRef": {"name": "davit-redis", "key": "password"}}


def redis_container() -> Doc:
    containers: list[Doc] = pod_spec(one("Deployment", "davit-redis", DAVIT_NAMESPACE))["containers"]
    (container,) = containers
    return container


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects a pod with ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def test_redis_requires_the_password_of_its_secret() -> None:
    container = redis_container()
    args = container["args"]
    assert "--requirepass" in args
    variable = re.fullmatch(r"\$\(([A-Z_]+)\)", args[args.index("--requirepass") + 1])
    assert variable, "the password is expanded from the environment, never written into the manifest"
    env = env_of(container)
    assert env[variable.group(1)]["valueFrom"] == REDIS_SECRET_REF
    # The readiness probe's redis-cli authenticates with the same password.
    assert env["REDISCLI_AUTH"]["valueFrom"] == REDIS_SECRET_REF
    assert container["readinessProbe"]["exec"]["command"][0] == "redis-cli"


def test_redis_keeps_its_data_in_an_append_only_file_on_a_claim() -> None:
    """The scratch state of running operations survives a restart of Redis' pod: appendonly, fsync every
    second, into a directory on a PersistentVolumeClaim (an emptyDir would go with the pod)."""
    args = redis_container()["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    directory = args[args.index("--dir") + 1]
    (mount,) = [m for m in redis_container()["volumeMounts"] if m["mountPath"] == directory]
    spec = pod_spec(one("Deployment", "davit-redis", DAVIT_NAMESPACE))
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    claim = one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], DAVIT_NAMESPACE)
    assert "ReadWriteOnce" in claim["spec"]["accessModes"]
    # Written by the image's redis user: the volume is made writable for its group.
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    # One pod at a time holds the claim (and the file): the old pod stops before the new one starts.
    assert one("Deployment", "davit-redis", DAVIT_NAMESPACE)["spec"]["strategy"]["type"] == "Recreate"


def test_no_manifest_holds_the_redis_password() -> None:
    # The administrator creates the Secret with a random value (README): a password shipped in deploy/
    # would be the same, and public, in every cluster.
    assert not [doc for _, doc in documents() if doc["kind"] == "Secret"]
    text = "\n".join((DEPLOY_DIR / name).read_text() for name in MANIFEST_FILES)
    assert not re.search(r"redis://[^\s/]*@", text), "a Redis URL with credentials in deploy/"


def test_davit_containers_get_the_redis_password_from_its_secret() -> None:
    for workload, container in davit_containers():
        env = env_of(container)
        name = workload["metadata"]["name"]
        assert env["DAVIT_REDIS_PASSWORD"]["valueFrom"] == REDIS_SECRET_REF, name
        assert "@" not in env["DAVIT_REDIS_URL"]["value"], f"{name}: the URL must not hold credentials"
        # What the process connects with: the URL and the password joined.
        settings = Settings.from_env(
            {"DAVIT_REDIS_URL": env["DAVIT_REDIS_URL"]["value"], "DAVIT_REDIS_PASSWORD": "pw"}
        )
        assert settings.redis_url == "redis://:pw@davit-redis.davit-system:6379/0", name


def test_only_davits_pods_reach_redis() -> None:
    policy = one("NetworkPolicy", "davit-redis", DAVIT_NAMESPACE)
    spec = policy["spec"]
    redis_pod = one("Deployment", "davit-redis", DAVIT_NAMESPACE)["spec"]["template"]["metadata"]["labels"]
    assert selects(spec["podSelector"], redis_pod), "the policy must select the Redis pods"
    assert "Ingress" in spec["policyTypes"]
    (rule,) = spec["ingress"]
    (port,) = [p["containerPort"] for p in redis_container()["ports"] if p["name"] == "redis"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    peers = rule["from"]
    # Pods of davit-system only: no namespaceSelector (which would open other namespaces), no ipBlock.
    assert peers and all(set(peer) == {"podSelector"} for peer in peers), peers

    def admitted(labels: dict[str, str]) -> bool:
        return any(selects(peer["podSelector"], labels) for peer in peers)

    for workload, _container in davit_containers():
        assert workload["metadata"]["namespace"] == DAVIT_NAMESPACE
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert admitted(labels), f"{workload['metadata']['name']} cannot reach Redis"
    # Anything else is not: a pod without Davit's labels, or one claiming a component Davit does not run.
    assert not admitted({"app": "tenant"})
    assert not admitted({"app.kubernetes.io/part-of": "davit"})
    assert not admitted({"app.kubernetes.io/part-of": "davit", "app.kubernetes.io/component": "broker"})
