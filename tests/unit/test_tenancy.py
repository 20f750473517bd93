"""The rules applied where Davit acts (davit.tenancy): paths, the accepted spec, what a backup may read
and what a restore may write."""

from __future__ import annotations

from typing import Any

import pytest

from davit import tenancy
from davit.tenancy import RestoreGuard, UnsafeName

ADMIN = "kube-system"


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        "../../namespaces/kube-system/secrets/x",
        "a/b",
        "a%2Fb",
        "",
        "x" * 254,
        "bad\nname",
        None,
        7,
    ],
)
def test_names_that_would_address_another_object_are_refused(name: Any) -> None:
    with pytest.raises(UnsafeName):
        tenancy.check_name(name)


@pytest.mark.parametrize("name", ["web", "system:controller:job", "a..b", "UPPER", "x" * 253])
def test_names_kubernetes_allows_in_paths_are_kept(name: str) -> None:
    assert tenancy.check_name(name) == name


def test_paths_are_built_from_checked_and_escaped_segments() -> None:
    assert (
        tenancy.resource_path("v1", "configmaps", "t-a", "settings")
        == "/api/v1/namespaces/t-a/configmaps/settings"
    )
    assert tenancy.resource_path("rbac.authorization.k8s.io/v1", "clusterroles", None, "system:a") == (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aa"
    )
    assert tenancy.resource_path("apps/v1", "deployments", None) == "/apis/apps/v1/deployments"
    bad: list[tuple[str, str, str | None, str | None]] = [
        ("v1", "configmaps", "../kube-system", "x"),
        ("v1/../../api", "configmaps", "a", "x"),
        ("v1", "secrets/..", "a", None),
        ("v1", "configmaps", "a", ".."),
    ]
    for api_version, plural, namespace, name in bad:
        with pytest.raises(UnsafeName):
            tenancy.resource_path(api_version, plural, namespace, name)


def _operation(
    generation: int, accepted: int | None, stage: str = "Applications", **meta: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"stage": stage, "status": "InProgress"}
    if accepted is not None:
        status["acceptedGeneration"] = accepted
    return {"metadata": {"name": "b", "namespace": "t", "generation": generation, **meta}, "status": status}


def test_an_edit_after_acceptance_is_a_changed_spec() -> None:
    reason = tenancy.spec_changed(_operation(generation=2, accepted=1))
    assert reason is not None and reason.startswith("SpecChanged") and "generation 1" in reason
    assert tenancy.spec_changed(_operation(generation=1, accepted=1)) is None


@pytest.mark.parametrize(
    "obj",
    [
        _operation(2, 1, stage="Final"),  # history: reclaimPolicy and ttl may be edited
        _operation(3, 1, deletionTimestamp="2026-01-01T00:00:00Z"),  # deletion bumps the generation
        _operation(2, None),  # accepted before the generation was recorded
        {"metadata": {"generation": 2}},  # not accepted yet: the watcher validates it
    ],
)
def test_what_is_not_a_changed_spec(obj: dict[str, Any]) -> None:
    assert tenancy.spec_changed(obj) is None


def test_a_tenant_backup_reads_only_its_own_namespace_whatever_its_spec_says() -> None:
    spec = {"namespaces": ["t", "kube-system"]}
    assert tenancy.backup_may_read("t", ADMIN, spec, "t")
    assert not tenancy.backup_may_read("t", ADMIN, spec, "kube-system")
    assert tenancy.backup_may_read(ADMIN, ADMIN, spec, "kube-system")
    assert not tenancy.backup_may_read(ADMIN, ADMIN, spec, "other")
    assert tenancy.backup_may_read(ADMIN, ADMIN, {"namespaceSelector": "a=b"}, "other", selected=["other"])


def _obj(kind: str, name: Any, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


@pytest.mark.parametrize(
    ("obj", "namespaced", "refused_because"),
    [
        # Scope comes from discovery: a namespace in the stored object does not make it namespaced.
        (_obj("ClusterRoleBinding", "evil", namespace="t"), False, "cluster-scoped"),
        (_obj("PersistentVolume", "root"), False, "cluster-scoped"),
        (_obj("RoleBinding", "evil", namespace="kube-system"), True, "outside t"),
        (_obj("ConfigMap", "x"), True, "not a valid namespace"),
        (_obj("ConfigMap", "../../kube-system/configmaps/x", namespace="t"), True, "path segment"),
        (_obj("ConfigMap", "x", namespace="../kube-system"), True, "not a valid namespace"),
    ],
)
def test_the_restore_guard_refuses_what_a_tenant_restore_may_not_write(
    obj: dict[str, Any], namespaced: bool, refused_because: str
) -> None:
    refusal = RestoreGuard("t", ADMIN).refusal(obj, namespaced)
    assert refusal is not None and refused_because in refusal


def test_the_restore_guard_lets_through_what_a_restore_may_write() -> None:
    assert RestoreGuard("t", ADMIN).refusal(_obj("ConfigMap", "x", namespace="t"), True) is None
    admin = RestoreGuard(ADMIN, ADMIN)
    assert admin.refusal(_obj("ClusterRole", "system:a"), False) is None
    assert admin.refusal(_obj("ConfigMap", "x", namespace="other"), True) is None
    assert admin.refusal(_obj("ConfigMap", "..", namespace="other"), True) is not None
