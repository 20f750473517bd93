"""Which namespaces a backup covers: names, Velero's glob patterns, ``excludeNamespaces`` and the
namespaceSelector (``davit.backup.selection``), who may cover what (``davit.tenancy``, validation), the
namespaces resolved against the API (``davit.backup.scope``) and what each stage does with them: the
volumes planned, the node agent's directories, the resources stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from davit import tenancy
from davit.api.types import NAMESPACE_PATTERN, ApplicationBackupSpec
from davit.backup import scope, selection
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.settings import Settings
from davit.validation import validate_backup
from davit.volumes import backup_stage, node_dirs
from davit_cli import backup as cli_backup
from davit_cli.main import cli
from davit_services.backup import backup, rule_runner
from davit_services.resources import export
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.exec import RecordingExecutor
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

ADMIN = "kube-system"
NAMESPACES = ["kube-system", "shop", "team-a", "team-b", "team-b2", "tools"]


@pytest.mark.parametrize(
    ("spec", "selected", "covered"),
    [
        pytest.param({"namespaces": ["*"]}, [], NAMESPACES, id="star-is-every-namespace"),
        pytest.param({"namespaces": ["team-*"]}, [], ["team-a", "team-b", "team-b2"], id="prefix"),
        pytest.param({"namespaces": ["team-?"]}, [], ["team-a", "team-b"], id="one-character"),
        pytest.param({"namespaces": ["team-[ab]2"]}, [], ["team-b2"], id="bracket"),
        pytest.param({"namespaces": ["team-[a-b]"]}, [], ["team-a", "team-b"], id="range"),
        pytest.param(
            {"namespaces": ["*"], "excludeNamespaces": ["kube-system", "team-*"]},
            [],
            ["shop", "tools"],
            id="exclude-names-and-patterns",
        ),
        pytest.param(
            {"namespaces": ["team-*", "shop"], "excludeNamespaces": ["team-b*"]},
            [],
            ["shop", "team-a"],
            id="exclude-wins-over-include",
        ),
        pytest.param(
            {"namespaces": ["gone", "shop"]}, [], ["gone", "shop"], id="names-kept-whether-they-exist-or-not"
        ),
        pytest.param({"namespaces": ["Team-*"]}, [], [], id="case-sensitive-as-names-are"),
        pytest.param(
            {"namespaceSelector": "env=prod", "excludeNamespaces": ["tools"]},
            ["shop", "tools"],
            ["shop"],
            id="exclude-applies-to-the-selector",
        ),
    ],
)
def test_namespaces_a_spec_covers(spec: dict[str, Any], selected: list[str], covered: list[str]) -> None:
    assert selection.resolve_namespaces(spec, NAMESPACES, selected) == covered
    for namespace in NAMESPACES:
        assert selection.namespace_in_scope(spec, namespace, selected) is (namespace in covered), namespace


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("*", None), ("team-*", None), ("ns?", None), ("ns[0-9]", None), ("shop", None),
        ("**", "'**' is not a pattern"), ("team-**", "'**' is not a pattern"),
        ("ns[]", "empty brackets"), ("ns[a", "'[' is not closed"), ("ns]a", "']' without '['"),
        ("ns[[a]]", "do not nest"), ("ns[*]", "inside brackets"),
    ],
)  # fmt: skip
def test_patterns_velero_refuses_are_refused(entry: str, problem: str | None) -> None:
    found = selection.namespace_pattern_problem(entry)
    assert (found is None) if problem is None else (found is not None and problem in found), found


@pytest.mark.parametrize("entry", ["*", "team-*", "ns?", "ns[0-9]", "shop", "a"])
def test_the_crd_accepts_names_and_patterns(entry: str) -> None:
    assert ApplicationBackupSpec.model_validate({"backupLocation": "l", "namespaces": [entry]})


@pytest.mark.parametrize("entry", ["Shop", "-shop", "shop-", "team-{a,b}", "!shop", "a,b", "ns/x", "a" * 64])
def test_the_crd_refuses_what_is_neither_a_name_nor_a_pattern(entry: str) -> None:
    import re

    assert not re.match(NAMESPACE_PATTERN, entry) or len(entry) > 63
    with pytest.raises(ValueError):
        ApplicationBackupSpec.model_validate({"backupLocation": "l", "excludeNamespaces": [entry]})


# --- who may cover what --------------------------------------------------------------------------------


def test_a_tenant_spec_with_patterns_reads_only_its_own_namespace() -> None:
    spec = {"namespaces": ["*", "t"]}
    assert tenancy.backup_may_read("t", ADMIN, spec, "t")
    for other in ("kube-system", "shop", "*"):
        assert not tenancy.backup_may_read("t", ADMIN, spec, other)
    # Its own namespace excluded: nothing at all.
    assert not tenancy.backup_may_read("t", ADMIN, {"namespaces": ["t"], "excludeNamespaces": ["t"]}, "t")


def test_an_admin_spec_reads_what_its_patterns_match_less_its_exclusions() -> None:
    spec = {"namespaces": ["team-*"], "excludeNamespaces": ["team-b"]}
    assert tenancy.backup_may_read(ADMIN, ADMIN, spec, "team-a")
    assert not tenancy.backup_may_read(ADMIN, ADMIN, spec, "team-b")
    assert not tenancy.backup_may_read(ADMIN, ADMIN, spec, "shop")
    selector = {"namespaceSelector": "a=b", "excludeNamespaces": ["x"]}
    assert not tenancy.backup_may_read(ADMIN, ADMIN, selector, "x", selected=["x"])


class _NoLookups:
    def location(self, namespace: str, name: str) -> dict[str, Any] | None:
        return k.location(name, namespace)

    def rule(self, namespace: str, name: str) -> None:
        return None

    def backup(self, namespace: str, name: str) -> None:
        return None


def _problems(namespace: str, **spec: Any) -> list[str]:
    obj = k.backup("b", namespace, backupLocation="loc", **spec)
    return list(validate_backup(obj, _NoLookups(), ADMIN).problems)


def test_a_tenant_backup_naming_a_pattern_is_refused_naming_it() -> None:
    (problem,) = _problems("team-a", namespaces=["*"])
    assert problem.startswith("spec.namespaces: a backup in namespace team-a may only cover team-a")
    assert "pattern(s) * need a backup in the admin namespace kube-system" in problem
    (problem,) = _problems("team-a", namespaces=["team-a", "team-*"])
    assert "team-*" in problem


def test_an_admin_backup_may_use_patterns_and_exclusions() -> None:
    assert _problems(ADMIN, namespaces=["*"], excludeNamespaces=["kube-*"]) == []
    assert _problems("team-a", namespaces=["team-a"], excludeNamespaces=["other-*"]) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"namespaces": ["team-**"]}, "spec.namespaces[0]: 'team-**'"),
        ({"namespaces": ["*"], "excludeNamespaces": ["ns[a"]}, "spec.excludeNamespaces[0]: 'ns[a'"),
        ({"namespaces": ["a", "b"], "excludeNamespaces": ["*"]}, "excludes every namespace"),
    ],
)
def test_bad_patterns_and_an_exclusion_of_everything_named_are_refused(
    spec: dict[str, Any], expected: str
) -> None:
    problems = _problems(ADMIN, **spec)
    assert any(expected in p for p in problems), problems


# --- resolved against the API ------------------------------------------------------------------------


@pytest.fixture
def fake() -> k.FakeCluster:
    cluster = k.FakeCluster()
    cluster.put(*(k.namespace(n, {"env": "prod"} if n.startswith("team") else None) for n in NAMESPACES))
    cluster.put(k.location("loc", ADMIN), k.location("loc", "team-a"))
    for n in NAMESPACES:
        cluster.put({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"settings-{n}", "namespace": n}, "data": {"of": n}})  # fmt: skip
    return cluster


def test_the_api_is_listed_for_patterns_only(fake: k.FakeCluster) -> None:
    named = k.backup("b", ADMIN, namespaces=["shop", "gone"])
    assert scope.covered_namespaces(fake, named, ADMIN) == ["gone", "shop"]
    assert "namespaces_matching" not in fake.calls
    wild = k.backup("b", ADMIN, namespaces=["*"], excludeNamespaces=["kube-system", "team-b*"])
    assert scope.covered_namespaces(fake, wild, ADMIN) == ["shop", "team-a", "tools"]
    by_label = k.backup("b", ADMIN, namespaces=[], namespaceSelector="env=prod", excludeNamespaces=["team-a"])
    assert scope.covered_namespaces(fake, by_label, ADMIN) == ["team-b", "team-b2"]


def test_a_tenant_backup_whose_spec_holds_a_pattern_covers_its_own_namespace_only(
    fake: k.FakeCluster,
) -> None:
    """Validation refuses it; were such a spec acted on anyway, nothing else is listed."""
    tenant = k.backup("b", "team-a", namespaces=["*", "team-a"])
    assert scope.covered_namespaces(fake, tenant, ADMIN) == ["team-a"]
    assert scope.covered_namespaces(fake, k.backup("b", "team-a", namespaces=["*"]), ADMIN) == ["team-a"]
    assert node_dirs.backup_namespaces(tenant, ADMIN, present=NAMESPACES) == {"team-a"}


def test_the_node_agent_allows_the_claims_namespace_when_a_pattern_matches_it() -> None:
    wild = k.backup("b", ADMIN, namespaces=["team-*"], excludeNamespaces=["team-b"])
    assert node_dirs.backup_namespaces(wild, ADMIN, present=["team-a"]) == {"team-a"}
    assert node_dirs.backup_namespaces(wild, ADMIN, present=["team-b"]) == set()
    assert node_dirs.backup_namespaces(wild, ADMIN, present=["shop"]) == set()


def test_volumes_are_planned_in_every_covered_namespace_and_only_for_claims_the_backup_stores(
    fake: k.FakeCluster,
) -> None:
    for n in ("shop", "team-a", "team-b"):
        fake.put(k.claim("data", n), k.claim("cache", n))
    skipped = k.claim("scratch", "team-a")
    skipped["metadata"]["annotations"] = {"stork.libopenstorage.org/skipresource": "true"}
    fake.put(skipped)

    wild = k.backup("b", ADMIN, namespaces=["team-*"])
    planned = [p.part for p in backup_stage.plan_all(fake, wild, ADMIN)]
    assert planned == ["team-a/cache", "team-a/data", "team-b/cache", "team-b/data"]
    # Before, a namespaceSelector's namespaces had their resources stored and their volumes left out.
    by_label = k.backup("b", ADMIN, namespaces=[], namespaceSelector="env=prod", excludeNamespaces=["team-b"])
    assert [p.part for p in backup_stage.plan_all(fake, by_label, ADMIN)] == ["team-a/cache", "team-a/data"]
    no_claims = k.backup("b", ADMIN, namespaces=["shop"], excludeResourceTypes=["persistentvolumeclaims"])
    assert backup_stage.plan_all(fake, no_claims, ADMIN) == []
    only_configmaps = k.backup("b", ADMIN, namespaces=["shop"], resourceTypes=["ConfigMap"])
    assert backup_stage.plan_all(fake, only_configmaps, ADMIN) == []
    one_claim = k.backup("b", ADMIN, namespaces=["shop"],
                         includeResources=[{"kind": "PersistentVolumeClaim", "name": "data"}])  # fmt: skip
    assert [p.part for p in backup_stage.plan_all(fake, one_claim, ADMIN)] == ["shop/data"]


def test_an_admin_backup_with_a_pattern_and_exclusions_stores_the_matching_namespaces_objects_only(
    fake: k.FakeCluster, scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    stores = LocalStores(tmp_path / "locations", cluster=fake)
    ports = Ports(fake, scratch_factory, FakeDispatch(), stores, Settings(admin_namespace=ADMIN))
    uid = "uid-wild"
    scratch_factory.backup(uid).lay_out("Volumes")
    fake.put(k.backup("wild", ADMIN, stage="Applications", uid=uid, backupLocation="loc",
                      namespaces=["team-*", "shop"], excludeNamespaces=["team-b?"],
                      resourceTypes=["configmaps"]))  # fmt: skip

    dispatch = ports.dispatch
    assert isinstance(dispatch, FakeDispatch)
    export.handle(ports, Message(Kind.APPLICATION_BACKUP, ADMIN, "wild", uid, "Applications", ""))
    done = 0
    while done < len(dispatch.to(Queue.EXPORT.value)):
        export.handle(ports, dispatch.to(Queue.EXPORT.value)[done])
        done += 1

    repository = stores.repository(ADMIN, "loc")
    ref = BackupRef(ADMIN, "wild", uid)
    stored = sorted(
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for info in repository.store.list(ref.root + "resources/")
        for o in repository.read_part(info.key)
    )
    assert stored == [
        ("ConfigMap", "shop", "settings-shop"),
        ("ConfigMap", "team-a", "settings-team-a"),
        ("ConfigMap", "team-b", "settings-team-b"),
        ("Namespace", "", "shop"),
        ("Namespace", "", "team-a"),
        ("Namespace", "", "team-b"),
    ]


# --- includeResources[].version ---------------------------------------------------------------------


def test_an_include_resources_version_must_be_the_one_the_backup_lists_its_kind_in() -> None:
    resources = k.FakeCluster().discover()
    assert selection.include_version_problems(
        {"includeResources": [{"kind": "Deployment", "group": "apps", "version": "v1", "name": "w"},
                              {"kind": "ConfigMap", "name": "c"}]}, resources,
    ) == []  # fmt: skip
    (problem,) = selection.include_version_problems(
        {"includeResources": [{"kind": "ConfigMap", "name": "c"},
                              {"kind": "Deployment", "group": "apps", "version": "v1beta2", "name": "w"}]},
        resources,
    )  # fmt: skip
    assert problem.startswith("spec.includeResources[1].version: apps/Deployment is backed up as apps/v1")
    (problem,) = selection.include_version_problems(
        {"includeResources": [{"kind": "Gizmo", "version": "v1", "name": "g"}]}, resources
    )
    assert "not served" in problem


# --- the CLI -------------------------------------------------------------------------------------------


def test_backup_create_flags_become_namespaces_patterns_and_exclusions() -> None:
    spec = cli_backup.build_spec(ADMIN, "loc", namespaces="*", exclude_namespaces="kube-*, tools")
    assert spec["namespaces"] == ["*"] and spec["excludeNamespaces"] == ["kube-*", "tools"]
    assert "excludeNamespaces" not in cli_backup.build_spec("shop", "loc")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--namespaces", "team-**"], "'**' is not a pattern"),
        (["--exclude-namespaces", "ns[a"], "'[' is not closed"),
    ],
)
def test_a_bad_pattern_is_a_usage_error_before_the_cluster_is_reached(flags: list[str], says: str) -> None:
    result = CliRunner().invoke(
        cli, ["--kubeconfig", "/nonexistent/kubeconfig", "-n", ADMIN, "backup", "create", "b",
              "--location", "loc", *flags],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output


# --- exec rules ----------------------------------------------------------------------------------------


def test_exec_rules_run_in_the_covered_namespaces_and_a_tenants_pattern_reaches_no_other_pod(
    fake: k.FakeCluster,
) -> None:
    for n in ("team-a", "team-b", "shop"):
        fake.put(k.pod("db-0", n, containers=["db"], labels={"app": "db"}))
    rule = [
        {"podSelector": {"app": "db"}, "container": "db", "actions": [{"type": "command", "value": "sync"}]}
    ]
    fake.put(k.rule("quiesce", ADMIN, rule), k.rule("quiesce", "team-a", rule))

    def ran(backup: dict[str, Any]) -> list[str]:
        executor = RecordingExecutor()
        rule_runner.run(fake, ADMIN, backup, "preExecRule", executor)
        return sorted(c.namespace for c in executor.calls if c.command == "sync")

    wild = k.backup(
        "b", ADMIN, uid="u1", namespaces=["team-*"], excludeNamespaces=["team-b"], preExecRule="quiesce"
    )
    assert ran(wild) == ["team-a"]
    # A tenant's spec holding a pattern (refused by validation, acted on here anyway) execs in its own pods.
    tenant = k.backup("b", "team-a", uid="u2", namespaces=["*", "team-a"], preExecRule="quiesce")
    assert ran(tenant) == ["team-a"]


def test_a_backup_naming_a_version_it_would_not_store_fails_before_any_rule_or_volume(
    scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    fake = k.FakeCluster(executor=RecordingExecutor())
    fake.put(k.location("loc", "app"), k.claim("data", volume="pv-data"), k.rule("quiesce", rules=[]))
    ports = Ports(fake, scratch_factory, FakeDispatch(), LocalStores(tmp_path, cluster=fake), Settings())
    refs = [{"kind": "Deployment", "group": "apps", "version": "v1beta2", "name": "web"}]
    obj = fake.put(k.backup("b1", stage="Initial", uid="uid-b1", backupLocation="loc", includeResources=refs,
                            preExecRule="quiesce"))  # fmt: skip

    backup.handle(ports, Message(Kind.APPLICATION_BACKUP, "app", "b1", "uid-b1", "Initial", ""))

    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith("spec.includeResources[0].version: apps/Deployment is backed up as")
    assert "list_claims" not in fake.calls and "list_pods" not in fake.calls
    assert isinstance(ports.dispatch, FakeDispatch) and ports.dispatch.sent == []
