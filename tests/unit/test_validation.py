"""The watcher's admission checks: multi-tenancy (Stork's admin-namespace rule) and references."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.constants import Kind
from davit.validation import (
    Verdict,
    resolve_location,
    validate,
    validate_backup,
    validate_clone,
    validate_restore,
)

ADMIN = "kube-system"
APP = "app"
OTHER = "other"


@dataclass
class FakeLookup:
    """The injected Lookup, backed by dicts keyed by (namespace, name)."""

    locations: dict[tuple[str, str], RawObject] = field(default_factory=dict)
    rules: dict[tuple[str, str], RawObject] = field(default_factory=dict)
    backups: dict[tuple[str, str], RawObject] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def location(self, namespace: str, name: str) -> RawObject | None:
        self.calls.append(("location", namespace, name))
        return self.locations.get((namespace, name))

    def rule(self, namespace: str, name: str) -> RawObject | None:
        self.calls.append(("rule", namespace, name))
        return self.rules.get((namespace, name))

    def backup(self, namespace: str, name: str) -> RawObject | None:
        self.calls.append(("backup", namespace, name))
        return self.backups.get((namespace, name))


def location_obj(namespace: str, name: str, allowed: list[str] | None = None) -> RawObject:
    location: dict[str, Any] = {"type": "s3", "path": "bucket"}
    if allowed is not None:
        location["allowedNamespaces"] = allowed
    return {
        "kind": "BackupLocation",
        "metadata": {"namespace": namespace, "name": name},
        "location": location,
    }


def rule_obj(namespace: str, name: str) -> RawObject:
    return {"kind": "Rule", "metadata": {"namespace": namespace, "name": name}, "rules": []}


def op(namespace: str, spec: dict[str, Any], name: str = "op") -> RawObject:
    return {"metadata": {"namespace": namespace, "name": name, "uid": "u-1"}, "spec": spec}


def world(*namespaces: str) -> FakeLookup:
    """A location ``loc`` and rules ``pre``/``post`` in each of ``namespaces``."""
    lookup = FakeLookup()
    for ns in namespaces:
        lookup.locations[(ns, "loc")] = location_obj(ns, "loc")
        lookup.rules[(ns, "pre")] = rule_obj(ns, "pre")
        lookup.rules[(ns, "post")] = rule_obj(ns, "post")
    return lookup


def only_problem(verdict: Verdict) -> str:
    assert not verdict.accepted
    assert verdict.waiting is None
    assert len(verdict.problems) == 1, verdict.problems
    return verdict.problems[0]


# --- Verdict ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "accepted"),
    [
        pytest.param(Verdict(), True, id="empty"),
        pytest.param(Verdict(problems=("x",)), False, id="problem"),
        pytest.param(Verdict(waiting="later"), False, id="waiting"),
        pytest.param(Verdict(waiting=""), False, id="waiting-empty-string-still-waits"),
        pytest.param(Verdict(problems=("x",), waiting="later"), False, id="both"),
    ],
)
def test_verdict_accepted(verdict: Verdict, accepted: bool) -> None:
    assert verdict.accepted is accepted


# --- resolve_location -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("own", "shared_allowed", "namespace", "resolved"),
    [
        pytest.param(True, None, APP, "own", id="own-location"),
        pytest.param(True, ["*"], APP, "own", id="own-wins-over-shared"),
        pytest.param(False, [APP], APP, "shared", id="shared-lists-namespace"),
        pytest.param(False, ["*"], APP, "shared", id="shared-wildcard"),
        pytest.param(False, [OTHER, APP], APP, "shared", id="shared-lists-several"),
        pytest.param(False, [OTHER], APP, None, id="shared-lists-someone-else"),
        pytest.param(False, [], APP, None, id="shared-empty-list"),
        pytest.param(False, None, APP, None, id="shared-without-allowed-namespaces"),
        pytest.param(False, "absent", APP, None, id="nothing-anywhere"),
        pytest.param(False, [APP], ADMIN, "shared", id="admin-sees-its-own"),
    ],
)
def test_resolve_location(own: bool, shared_allowed: Any, namespace: str, resolved: str | None) -> None:
    lookup = FakeLookup()
    own_obj = location_obj(namespace, "loc")
    shared_obj = location_obj(ADMIN, "loc", shared_allowed)
    if own:
        lookup.locations[(namespace, "loc")] = own_obj
    if shared_allowed != "absent":
        lookup.locations[(ADMIN, "loc")] = shared_obj

    result = resolve_location(lookup, namespace, "loc", ADMIN)

    expected = {"own": own_obj, "shared": shared_obj, None: None}[resolved]
    assert result is expected


def test_resolve_location_tolerates_location_without_body() -> None:
    lookup = FakeLookup(locations={(ADMIN, "loc"): {"metadata": {"namespace": ADMIN, "name": "loc"}}})
    assert resolve_location(lookup, APP, "loc", ADMIN) is None


# --- validate_backup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "spec"),
    [
        pytest.param(APP, {"namespaces": [APP]}, id="own-namespace"),
        pytest.param(APP, {"namespaces": [APP, APP]}, id="own-namespace-twice"),
        pytest.param(
            APP, {"namespaces": [APP], "preExecRule": "pre", "postExecRule": "post"}, id="with-rules"
        ),
        pytest.param(
            APP,
            {"namespaces": [APP], "includeResources": [{"kind": "ConfigMap", "name": "c", "namespace": APP}]},
            id="include-own-namespace",
        ),
        pytest.param(
            APP,
            {"namespaces": [APP], "includeResources": [{"kind": "ClusterRole", "name": "r"}]},
            id="include-without-namespace",
        ),
        pytest.param(ADMIN, {"namespaces": [APP, OTHER]}, id="admin-covers-other-namespaces"),
        pytest.param(ADMIN, {"namespaceSelector": "team=a"}, id="admin-selector-only"),
        pytest.param(ADMIN, {"namespaces": [APP], "includeClusterResources": True}, id="admin-all-cluster"),
        pytest.param(APP, {"namespaces": [APP], "includeClusterResources": False}, id="tenant-no-cluster"),
        pytest.param(
            ADMIN,
            {
                "namespaces": [APP],
                "includeResources": [{"kind": "ConfigMap", "name": "c", "namespace": OTHER}],
            },
            id="admin-include-foreign",
        ),
    ],
)
def test_backup_accepted(namespace: str, spec: dict[str, Any]) -> None:
    lookup = world(APP, ADMIN)
    verdict = validate_backup(op(namespace, {"backupLocation": "loc", **spec}), lookup, ADMIN)
    assert verdict == Verdict()
    assert verdict.accepted


@pytest.mark.parametrize(
    ("spec", "field_path", "mentions"),
    [
        pytest.param(
            {"namespaces": [APP, OTHER]}, "spec.namespaces:", [OTHER, ADMIN], id="foreign-namespace"
        ),
        pytest.param({"namespaces": [OTHER]}, "spec.namespaces:", [OTHER], id="only-foreign-namespace"),
        pytest.param(
            {"namespaces": [APP], "namespaceSelector": "team=a"},
            "spec.namespaceSelector:",
            [ADMIN],
            id="selector-outside-admin",
        ),
        pytest.param(
            {"namespaces": [APP], "includeResources": [{"kind": "Secret", "name": "s", "namespace": OTHER}]},
            "spec.includeResources[0].namespace:",
            [OTHER, APP],
            id="include-foreign-namespace",
        ),
        pytest.param(
            {
                "namespaces": [APP],
                "includeResources": [
                    {"kind": "Secret", "name": "s", "namespace": APP},
                    {"kind": "Secret", "name": "t", "namespace": OTHER},
                ],
            },
            "spec.includeResources[1].namespace:",
            [OTHER],
            id="include-index-points-at-culprit",
        ),
        pytest.param(
            {"namespaces": [APP], "backupLocation": "missing"},
            "spec.backupLocation:",
            ["missing"],
            id="location-not-found",
        ),
        pytest.param(
            {"namespaces": [APP], "preExecRule": "nope"},
            "spec.preExecRule:",
            [f"{APP}/nope"],
            id="no-pre-rule",
        ),
        pytest.param(
            {"namespaces": [APP], "postExecRule": "nope"},
            "spec.postExecRule:",
            [f"{APP}/nope"],
            id="no-post-rule",
        ),
        pytest.param(
            {"namespaces": [APP], "includeClusterResources": True},
            "spec.includeClusterResources:",
            [ADMIN, "unset"],
            id="tenant-all-cluster-resources",
        ),
        pytest.param({"namespaces": []}, "spec.namespaces:", ["at least one"], id="empty-namespaces"),
        pytest.param({}, "spec.namespaces:", ["at least one"], id="no-namespaces-no-selector"),
    ],
)
def test_backup_rejected_outside_admin(spec: dict[str, Any], field_path: str, mentions: list[str]) -> None:
    lookup = world(APP, ADMIN)
    verdict = validate_backup(op(APP, {"backupLocation": "loc", **spec}), lookup, ADMIN)

    problem = only_problem(verdict)
    assert problem.startswith(field_path)
    for word in mentions:
        assert word in problem


def test_backup_foreign_namespaces_listed_sorted_once() -> None:
    spec = {"backupLocation": "loc", "namespaces": ["zeta", APP, "beta", "zeta"]}
    problem = only_problem(validate_backup(op(APP, spec), world(APP), ADMIN))
    assert "beta, zeta need a backup" in problem


def test_backup_reports_every_problem_at_once() -> None:
    spec = {
        "backupLocation": "missing",
        "namespaces": [APP, OTHER],
        "namespaceSelector": "x=y",
        "includeResources": [{"kind": "Secret", "name": "s", "namespace": OTHER}],
        "preExecRule": "nope",
        "postExecRule": "nope",
    }
    verdict = validate_backup(op(APP, spec), world(APP), ADMIN)

    fields = [p.split(":", 1)[0] for p in verdict.problems]
    assert fields == [
        "spec.namespaces",
        "spec.namespaceSelector",
        "spec.includeResources[0].namespace",
        "spec.backupLocation",
        "spec.preExecRule",
        "spec.postExecRule",
    ]
    assert not verdict.accepted


def test_empty_namespaces_in_admin_is_rejected_too() -> None:
    problem = only_problem(validate_backup(op(ADMIN, {"backupLocation": "loc"}), world(ADMIN), ADMIN))
    assert problem.startswith("spec.namespaces:")


@pytest.mark.parametrize(
    ("allowed", "accepted"),
    [
        pytest.param([APP], True, id="allowed-names-namespace"),
        pytest.param(["*"], True, id="allowed-wildcard"),
        pytest.param([OTHER], False, id="allowed-other-namespace"),
        pytest.param([], False, id="allowed-empty"),
        pytest.param(None, False, id="no-allowed-namespaces"),
    ],
)
def test_backup_uses_shared_location_only_when_allowed(allowed: list[str] | None, accepted: bool) -> None:
    lookup = FakeLookup(locations={(ADMIN, "shared"): location_obj(ADMIN, "shared", allowed)})
    verdict = validate_backup(op(APP, {"backupLocation": "shared", "namespaces": [APP]}), lookup, ADMIN)

    assert verdict.accepted is accepted
    if not accepted:
        assert only_problem(verdict).startswith("spec.backupLocation:")


def test_a_refused_shared_location_reads_like_a_missing_one() -> None:
    """The reason names where the location was looked for, and does not tell a tenant whether the admin
    namespace has a location of that name."""
    refusing = FakeLookup(locations={(ADMIN, "shared"): location_obj(ADMIN, "shared", [OTHER])})
    spec = {"backupLocation": "shared", "namespaces": [APP]}
    problem = only_problem(validate_backup(op(APP, spec), refusing, ADMIN))

    assert problem == (
        f"spec.backupLocation: BackupLocation {APP}/shared not found, nor one named shared in the admin "
        f"namespace {ADMIN} that lists {APP} in allowedNamespaces"
    )
    assert only_problem(validate_backup(op(APP, spec), FakeLookup(), ADMIN)) == problem
    admin_spec = {"backupLocation": "gone", "namespaces": [APP]}
    assert only_problem(validate_backup(op(ADMIN, admin_spec), FakeLookup(), ADMIN)) == (
        f"spec.backupLocation: BackupLocation {ADMIN}/gone not found"
    )


def test_shared_location_in_other_non_admin_namespace_is_not_used() -> None:
    lookup = FakeLookup(locations={(OTHER, "loc"): location_obj(OTHER, "loc", ["*"])})
    verdict = validate_backup(op(APP, {"backupLocation": "loc", "namespaces": [APP]}), lookup, ADMIN)
    assert only_problem(verdict).startswith("spec.backupLocation:")


def test_rules_are_looked_up_in_the_operation_namespace() -> None:
    lookup = world(ADMIN)  # rules exist only in the admin namespace
    lookup.locations[(APP, "loc")] = location_obj(APP, "loc")
    verdict = validate_backup(
        op(APP, {"backupLocation": "loc", "namespaces": [APP], "preExecRule": "pre"}), lookup, ADMIN
    )
    assert only_problem(verdict) == f"spec.preExecRule: Rule {APP}/pre not found"
    assert ("rule", APP, "pre") in lookup.calls


# --- validate_restore -------------------------------------------------------------------------------


def backup_obj(
    namespace: str,
    name: str,
    namespaces: list[str],
    stage: str | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> RawObject:
    obj: RawObject = {"metadata": {"namespace": namespace, "name": name}, "spec": {"namespaces": namespaces}}
    if stage is not None:
        obj["status"] = {"stage": stage, "status": status, "reason": reason}
    return obj


def restore_world(namespace: str, backup: RawObject | None) -> FakeLookup:
    lookup = world(namespace)
    if backup is not None:
        lookup.backups[(namespace, "bk")] = backup
    return lookup


def restore(namespace: str, **spec: Any) -> RawObject:
    return op(namespace, {"backupName": "bk", "backupLocation": "loc", **spec})


def test_restore_of_missing_backup_names_spec_backup_name() -> None:
    verdict = validate_restore(restore(APP), restore_world(APP, None), ADMIN)
    problem = only_problem(verdict)
    assert problem.startswith("spec.backupName:")
    assert f"{APP}/bk" in problem


def test_restore_reports_missing_location_and_backup_together() -> None:
    verdict = validate_restore(restore(APP, backupLocation="gone"), FakeLookup(), ADMIN)
    assert [p.split(":", 1)[0] for p in verdict.problems] == ["spec.backupLocation", "spec.backupName"]


def test_restore_missing_location_rejected_even_when_backup_done() -> None:
    lookup = restore_world(APP, backup_obj(APP, "bk", [APP], "Final", "Successful"))
    verdict = validate_restore(restore(APP, backupLocation="gone"), lookup, ADMIN)
    assert only_problem(verdict).startswith("spec.backupLocation:")


@pytest.mark.parametrize(
    ("namespace", "backup_namespaces", "mapping", "foreign"),
    [
        pytest.param(APP, [APP], {APP: OTHER}, [OTHER], id="map-own-into-other"),
        pytest.param(APP, [APP], {"x": OTHER}, [OTHER], id="mapping-value-alone-counts"),
        pytest.param(APP, [OTHER], {}, [OTHER], id="unmapped-foreign-source"),
        pytest.param(APP, [APP, "b", "a"], {}, ["a", "b"], id="sorted-foreign-targets"),
    ],
)
def test_restore_writing_outside_own_namespace_rejected(
    namespace: str, backup_namespaces: list[str], mapping: dict[str, str], foreign: list[str]
) -> None:
    lookup = restore_world(namespace, backup_obj(namespace, "bk", backup_namespaces, "Final", "Successful"))
    verdict = validate_restore(restore(namespace, namespaceMapping=mapping), lookup, ADMIN)

    problem = only_problem(verdict)
    assert problem.startswith("spec.namespaceMapping:")
    assert problem.endswith(f"it would write to {', '.join(foreign)}")


@pytest.mark.parametrize(
    ("namespace", "backup_namespaces", "mapping"),
    [
        pytest.param(APP, [APP], {}, id="own-namespace-no-mapping"),
        pytest.param(APP, [APP], {APP: APP}, id="identity-mapping"),
        pytest.param(APP, ["source"], {"source": APP}, id="map-foreign-source-into-own"),
        pytest.param(ADMIN, [APP, OTHER], {APP: "x", OTHER: "y"}, id="admin-maps-anywhere"),
        pytest.param(ADMIN, [APP], {}, id="admin-restores-into-source"),
    ],
)
def test_restore_mapping_accepted(
    namespace: str, backup_namespaces: list[str], mapping: dict[str, str]
) -> None:
    lookup = restore_world(namespace, backup_obj(namespace, "bk", backup_namespaces, "Final", "Successful"))
    verdict = validate_restore(restore(namespace, namespaceMapping=mapping), lookup, ADMIN)
    assert verdict == Verdict()


@pytest.mark.parametrize(
    ("stage", "status"),
    [
        pytest.param(None, None, id="no-status-yet"),
        pytest.param("Initial", "Pending", id="initial-pending"),
        pytest.param("Volumes", "InProgress", id="volumes-in-progress"),
        pytest.param("Applications", "Successful", id="stage-successful-but-not-final"),
    ],
)
def test_restore_waits_for_unfinished_backup(stage: str | None, status: str | None) -> None:
    lookup = restore_world(APP, backup_obj(APP, "bk", [APP], stage, status))
    verdict = validate_restore(restore(APP), lookup, ADMIN)

    assert verdict.problems == ()
    assert verdict.waiting == f"waiting for ApplicationBackup {APP}/bk to complete"
    assert verdict.accepted is False


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        pytest.param("Failed", "bucket gone", "Failed: bucket gone", id="failed-with-reason"),
        pytest.param("Failed", None, "Failed: no reason given", id="failed-without-reason"),
        pytest.param("Pending", "", "Pending: no reason given", id="final-but-pending"),
    ],
)
def test_restore_of_unsuccessful_backup_rejected(status: str, reason: str | None, expected: str) -> None:
    lookup = restore_world(APP, backup_obj(APP, "bk", [APP], "Final", status, reason))
    problem = only_problem(validate_restore(restore(APP), lookup, ADMIN))
    assert problem.startswith("spec.backupName:")
    assert f"did not succeed ({expected})" in problem


@pytest.mark.parametrize("status", ["Successful", "PartialSuccess"])
def test_restore_of_finished_backup_accepted(status: str) -> None:
    lookup = restore_world(APP, backup_obj(APP, "bk", [APP], "Final", status))
    verdict = validate_restore(restore(APP), lookup, ADMIN)
    assert verdict == Verdict()
    assert verdict.accepted


def test_restore_tenancy_problem_wins_over_waiting() -> None:
    lookup = restore_world(APP, backup_obj(APP, "bk", [APP], "Volumes", "InProgress"))
    verdict = validate_restore(restore(APP, namespaceMapping={APP: OTHER}), lookup, ADMIN)
    assert verdict.waiting is None
    assert only_problem(verdict).startswith("spec.namespaceMapping:")


def test_restore_looks_backup_up_in_its_own_namespace() -> None:
    lookup = restore_world(OTHER, backup_obj(OTHER, "bk", [APP], "Final", "Successful"))
    lookup.locations[(APP, "loc")] = location_obj(APP, "loc")
    verdict = validate_restore(restore(APP), lookup, ADMIN)
    assert only_problem(verdict).startswith("spec.backupName:")
    assert ("backup", APP, "bk") in lookup.calls


# --- validate_clone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "spec", "fields"),
    [
        pytest.param(ADMIN, {"sourceNamespace": APP, "destinationNamespace": OTHER}, [], id="admin-ok"),
        pytest.param(
            ADMIN,
            {
                "sourceNamespace": APP,
                "destinationNamespace": OTHER,
                "preExecRule": "pre",
                "postExecRule": "post",
            },
            [],
            id="admin-with-rules",
        ),
        pytest.param(
            APP,
            {"sourceNamespace": APP, "destinationNamespace": OTHER},
            ["metadata.namespace"],
            id="outside-admin",
        ),
        pytest.param(
            ADMIN,
            {"sourceNamespace": APP, "destinationNamespace": APP},
            ["spec.destinationNamespace"],
            id="same",
        ),
        pytest.param(
            APP,
            {"sourceNamespace": APP, "destinationNamespace": APP},
            ["metadata.namespace", "spec.destinationNamespace"],
            id="outside-admin-and-same",
        ),
        pytest.param(
            ADMIN,
            {"sourceNamespace": APP, "destinationNamespace": OTHER, "preExecRule": "nope"},
            ["spec.preExecRule"],
            id="missing-pre-rule",
        ),
        pytest.param(
            ADMIN,
            {"sourceNamespace": APP, "destinationNamespace": OTHER, "postExecRule": "nope"},
            ["spec.postExecRule"],
            id="missing-post-rule",
        ),
    ],
)
def test_clone(namespace: str, spec: dict[str, Any], fields: list[str]) -> None:
    verdict = validate_clone(op(namespace, spec), world(ADMIN), ADMIN)

    assert [p.split(":", 1)[0] for p in verdict.problems] == fields
    assert verdict.accepted is (not fields)
    assert verdict.waiting is None


def test_clone_outside_admin_message_names_admin_namespace() -> None:
    problem = validate_clone(op(APP, {"sourceNamespace": APP, "destinationNamespace": OTHER}), world(), ADMIN)
    assert ADMIN in problem.problems[0]


# --- dispatch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "obj", "first_field"),
    [
        pytest.param(
            Kind.APPLICATION_BACKUP, op(APP, {"backupLocation": "loc"}), "spec.namespaces", id="backup"
        ),
        pytest.param(Kind.APPLICATION_RESTORE, restore(APP), "spec.backupName", id="restore"),
        pytest.param(
            Kind.APPLICATION_CLONE,
            op(APP, {"sourceNamespace": APP, "destinationNamespace": OTHER}),
            "metadata.namespace",
            id="clone",
        ),
    ],
)
def test_validate_dispatches_on_kind(kind: Kind, obj: RawObject, first_field: str) -> None:
    verdict = validate(kind, obj, world(APP), ADMIN)
    assert verdict.problems[0].startswith(first_field + ":")


def test_admin_namespace_is_a_parameter_not_hard_coded() -> None:
    spec = {"backupLocation": "loc", "namespaces": [APP, OTHER]}
    lookup = world("davit-admin", ADMIN)
    assert validate_backup(op("davit-admin", spec), lookup, "davit-admin").accepted
    assert not validate_backup(op(ADMIN, spec), lookup, "davit-admin").accepted


def test_restore_from_another_location_than_the_backups_is_rejected() -> None:
    backup = backup_obj(APP, "bk", [APP], "Final", "Successful")
    backup["spec"]["backupLocation"] = "written-here"
    lookup = restore_world(APP, backup)
    lookup.locations[(APP, "written-here")] = location_obj(APP, "written-here")

    problem = only_problem(validate_restore(restore(APP), lookup, ADMIN))

    assert problem.startswith("spec.backupLocation:") and "written-here" in problem
    assert validate_restore(restore(APP, backupLocation="written-here"), lookup, ADMIN).accepted


def test_backup_with_a_ttl_too_long_to_compute_with_is_rejected() -> None:
    spec = {"backupLocation": "loc", "namespaces": [APP], "ttl": "999999w"}

    problem = only_problem(validate_backup(op(APP, spec), world(APP), ADMIN))

    assert problem.startswith("spec.ttl:")
    assert validate_backup(op(APP, {**spec, "ttl": "30d"}), world(APP), ADMIN).accepted
