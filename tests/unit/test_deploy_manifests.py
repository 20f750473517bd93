"""The manifests in deploy/*.yaml (deploy/crds has its own test): well-formed; every service's RBAC grants
what its code does and nothing more (one justified wildcard: the export lists every resource); every
workload runs a module that exists with settings that exist; the node agent reads the kubelet's volumes
on every node."""

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
DEPLOY_DIR = REPO_ROOT / "deploy"
MANIFEST_FILES = sorted(p.name for p in DEPLOY_DIR.glob("*.yaml"))
SERVICES_PACKAGE_DIR = REPO_ROOT / "services" / "davit_services"

DAVIT_IMAGE = "davit:latest"
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
    "snapshot": ("Deployment", "davit-snapshot", "davit_services.snapshot"),
    "export": ("Deployment", "davit-export", "davit_services.export"),
    "retention": ("Deployment", "davit-retention", "davit_services.retention"),
    "exporter": ("Deployment", "davit-exporter", "davit_services.exporter"),
    "uploader": ("DaemonSet", "davit-uploader", "davit_services.uploader"),
}
EXPORT_ROLE = "davit-export"
#: Subresources that act on a running pod or node rather than read an object: exec, attach, port
#: forwarding and the proxies (nodes/proxy is the kubelet's own API).
POWERFUL_SUBRESOURCES = ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy",
                         "nodes/proxy")  # fmt: skip
#: The only non-resource URLs a role may name: discovery.
DISCOVERY_URLS = frozenset({"/api", "/api/*", "/apis", "/apis/*"})

Doc = dict[str, Any]


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


def one(kind: str, name: str, namespace: str | None = None) -> Doc:
    found = [
        doc
        for doc in objects(kind)
        if doc["metadata"]["name"] == name and doc["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"expected one {kind} {namespace or ''}/{name}, found {len(found)}"
    return found[0]


def granted(rules: list[Doc], api_group: str, resource: str, name: str | None = None) -> set[str]:
    """The verbs ``rules`` grant on ``resource`` in ``api_group`` (on the object ``name``, if given)."""
    verbs: set[str] = set()
    for rule in rules:
        if api_group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        verbs.update(rule["verbs"])
    return verbs


def bound_accounts(binding: Doc) -> set[tuple[str, str]]:
    return {(s["namespace"], s["name"]) for s in binding["subjects"] if s["kind"] == "ServiceAccount"}


def davit_containers() -> list[tuple[Doc, Doc]]:
    """(Deployment, container) for every container running the Davit image."""
    return [
        (deployment, container)
        for deployment in objects("Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        if container["image"].partition(":")[0] == DAVIT_IMAGE.partition(":")[0]
    ]


def watcher_account() -> tuple[str, str]:
    """(namespace, name) of the service account the watcher's pods run as."""
    deployment = one("Deployment", "davit-watcher", "davit-system")
    return deployment["metadata"]["namespace"], deployment["spec"]["template"]["spec"]["serviceAccountName"]


def module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"] and len(command) == 3, f"{command}: not `python -m <module>`"
    return command[2]


# --- every document -----------------------------------------------------------------------------------


def test_there_are_manifests() -> None:
    assert {"rbac.yaml", "watcher.yaml"} <= set(MANIFEST_FILES)


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


def test_rbac_has_no_wildcards() -> None:
    for kind in ("ClusterRole", "Role"):
        for role in objects(kind):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(key, []), f"{kind} {role['metadata']['name']}: {key} *"


# --- the watcher's RBAC -----------------------------------------------------------------------------------


def watcher_rules() -> list[Doc]:
    rules: list[Doc] = one("ClusterRole", WATCHER_ROLE)["rules"]
    return rules


@pytest.mark.parametrize("plural", sorted(constants.PLURALS.values()))
def test_watcher_reads_every_davit_kind(plural: str) -> None:
    verbs = granted(watcher_rules(), constants.API_GROUP, plural)
    assert {"get", "list", "watch"} <= verbs, f"{plural}: the watcher may only {sorted(verbs)}"


@pytest.mark.parametrize("kind", constants.OPERATION_KINDS)
def test_watcher_writes_operation_status(kind: constants.Kind) -> None:
    verbs = granted(watcher_rules(), constants.API_GROUP, f"{constants.PLURALS[kind]}/status")
    assert "patch" in verbs, f"{kind}: the watcher cannot patch the status"


def test_watcher_never_writes_davit_objects_themselves() -> None:
    for plural in constants.PLURALS.values():
        verbs = granted(watcher_rules(), constants.API_GROUP, plural)
        assert verbs <= {"get", "list", "watch"}, f"{plural}: {sorted(verbs)}"


def test_watcher_records_events() -> None:
    assert "create" in granted(watcher_rules(), "", "events")


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
    deployment = one("Deployment", "davit-watcher", "davit-system")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    settings = Settings.from_env({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    namespace, lease = settings.lease_namespace, settings.lease_name
    for cluster_role in objects("ClusterRole"):
        cluster_wide = granted(cluster_role["rules"], "coordination.k8s.io", "leases")
        assert not cluster_wide, f"ClusterRole {cluster_role['metadata']['name']} grants leases cluster-wide"

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


# --- Deployments ---------------------------------------------------------------------------------------


def test_the_watcher_runs_with_a_standby() -> None:
    deployment = one("Deployment", "davit-watcher", "davit-system")
    assert deployment["spec"]["replicas"] >= 2, "leader election needs a standby to hand over to"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert module_of(container["command"]) == WATCHER_MODULE


def test_davit_containers_run_modules_that_exist() -> None:
    assert davit_containers(), f"no Deployment runs {DAVIT_IMAGE}"
    for deployment, container in davit_containers():
        module = module_of(container["command"])
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"
        assert deployment["metadata"]["name"]


def test_davit_containers_are_configured_with_settings_that_exist() -> None:
    known = {f"DAVIT_{f.name.upper()}" for f in fields(Settings)}
    for deployment, container in davit_containers():
        names = {env["name"] for env in container.get("env", [])}
        assert names <= known, f"{deployment['metadata']['name']}: {sorted(names - known)} are not settings"


def test_davit_containers_reach_redis_through_a_service() -> None:
    for deployment, container in davit_containers():
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        host_port = env["DAVIT_REDIS_URL"].split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        name, _, rest = host.partition(".")
        namespace = rest.split(".")[0] or deployment["metadata"]["namespace"]
        service = one("Service", name, namespace)
        assert int(port) in [p["port"] for p in service["spec"]["ports"]], deployment["metadata"]["name"]


def test_containers_have_resources() -> None:
    for deployment in objects("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            resources = container.get("resources") or {}
            assert resources.get("requests") and resources.get("limits"), (
                f"{deployment['metadata']['name']}/{container['name']}: set requests and limits"
            )


def test_selectors_match_the_pods() -> None:
    for deployment in objects("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]
    for service in objects("Service"):
        pods = [
            d["spec"]["template"]["metadata"]["labels"]
            for d in objects("Deployment")
            if d["metadata"]["namespace"] == service["metadata"]["namespace"]
        ]
        assert any(service["spec"]["selector"].items() <= labels.items() for labels in pods), (
            f"Service {service['metadata']['name']} selects no pods"
        )
