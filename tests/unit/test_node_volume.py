"""The node agent's directory comes from the API, never from the plan in Redis: a plan naming another
namespace's pod, another volume's path or a path like /etc is refused with the disagreement named; the
tree a restore writes is the one the backup's manifest records for the claim."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from davit.volumes.claims import VolumePlan
from davit.volumes.node_dirs import (
    ClaimView,
    RefusedDirectory,
    backup_namespaces,
    derive_directory,
    restore_namespaces,
)
from davit.volumes.restore_stage import backup_trees

ROOT = "/var/lib/kubelet"
NODE = "node-a"
ADMIN = "kube-system"


def pvc(namespace: str = "team-a", name: str = "data", volume: str = "pv-1", uid: str = "pvc-uid") -> Any:
    return {"metadata": {"namespace": namespace, "name": name, "uid": uid},
            "spec": {"volumeName": volume}, "status": {"phase": "Bound"}}  # fmt: skip


def pv(name: str = "pv-1", source: dict[str, Any] | None = None, claim: tuple[str, str] = ("team-a", "data"),
       node: str | None = None) -> Any:  # fmt: skip
    spec: dict[str, Any] = {"claimRef": {"namespace": claim[0], "name": claim[1], "uid": "pvc-uid"}}
    spec.update(source or {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}})
    if node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}  # fmt: skip
    return {"metadata": {"name": name}, "spec": spec}


def pod(uid: str, namespace: str = "team-a", claim: str = "data", node: str = NODE) -> Any:
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]
    return {"metadata": {"namespace": namespace, "name": f"p-{uid}", "uid": uid},
            "spec": {"nodeName": node, "volumes": volumes}}  # fmt: skip


def view(**overrides: Any) -> ClaimView:
    base = {"namespace": "team-a", "claim": "data", "pvc": pvc(), "pv": pv(), "pods": [pod("uid-1")]}
    return ClaimView(**{**base, **overrides})


POD_PLAN = VolumePlan("team-a", "data", "pv-1", "ebs.csi.aws.com", "filesystem", node=NODE, pod_uid="uid-1",
                      source="pod", plugin_dir="kubernetes.io~csi")  # fmt: skip
LOCAL = {"local": {"path": "/mnt/disks/pv-1"}}
LOCAL_PLAN = replace(POD_PLAN, source="local", path="/mnt/disks/pv-1", plugin_dir="")


def derive(plan: VolumePlan, v: ClaimView | None = None, allowed: set[str] | None = None) -> Path:
    return derive_directory(plan, "team-a/data", v or view(), allowed or {"team-a"}, NODE, ROOT)


def test_a_pod_volume_directory_from_the_api() -> None:
    assert derive(POD_PLAN) == Path(ROOT, "pods", "uid-1", "volumes", "kubernetes.io~csi", "pv-1", "mount")


def test_a_local_volume_is_its_pv_path() -> None:
    assert derive(LOCAL_PLAN, view(pv=pv(source=LOCAL, node=NODE))) == Path("/mnt/disks/pv-1")


@pytest.mark.parametrize(
    ("plan", "claim_view", "allowed", "reason"),
    [
        # Redis points the agent at /etc, or at another volume's directory.
        (replace(LOCAL_PLAN, path="/etc"), view(pv=pv(source=LOCAL)), None, "has the path /mnt/disks/pv-1"),
        (replace(POD_PLAN, source="local", path="/etc"), None, None, "not a pod of team-a"),
        # Another namespace's pod (its uid from the plan), which does not mount this claim.
        (
            replace(POD_PLAN, pod_uid="victim-uid"),
            view(pods=[pod("uid-1"), pod("victim-uid", "team-b")]),
            None,
            "pod 'victim-uid', which is not a pod of team-a",
        ),
        # A pod of the namespace on another node, or one that mounts another claim.
        (POD_PLAN, view(pods=[pod("uid-1", node="node-b")]), None, "not a pod of team-a on node node-a"),
        (POD_PLAN, view(pods=[pod("uid-1", claim="other")]), None, "mounts claim data"),
        # The plan names another claim, volume or plugin than the API.
        (replace(POD_PLAN, namespace="team-b"), None, None, "names claim team-b/data"),
        (replace(POD_PLAN, volume="pv-victim"), None, None, "names volume 'pv-victim'"),
        (replace(POD_PLAN, plugin_dir="kubernetes.io~local-volume"), None, None, "plugin"),
        # The claim's namespace is not the operation's.
        (POD_PLAN, None, {"team-b"}, "namespace team-a is not one this operation may act on"),
        # The claim is not bound, or bound to a volume whose claimRef names another claim.
        (POD_PLAN, view(pvc=None), None, "not found"),
        (POD_PLAN, view(pvc={**pvc(), "spec": {}}), None, "not bound"),
        (POD_PLAN, view(pvc=pvc(uid="another-claim-of-that-name")), None, "is not bound to claim"),
        (POD_PLAN, view(pv=pv(claim=("team-b", "data"))), None, "is not bound to claim team-a/data"),
        # A local volume pinned to another node.
        (LOCAL_PLAN, view(pv=pv(source=LOCAL, node="node-b")), None, "bound to node(s) node-b"),
        (
            replace(LOCAL_PLAN, path="/mnt/disks/../../etc"),
            view(pv=pv(source={"hostPath": {"path": "/mnt/disks/../../etc"}})),
            None,
            "not a plain absolute path",
        ),
    ],
)
def test_plans_that_disagree_with_the_api_are_refused(
    plan: VolumePlan, claim_view: ClaimView | None, allowed: set[str] | None, reason: str
) -> None:
    with pytest.raises(RefusedDirectory) as refused:
        derive(plan, claim_view, allowed)
    assert reason in refused.value.reason


def test_which_namespaces_a_backup_may_read() -> None:
    tenant = {"metadata": {"namespace": "team-a"}, "spec": {"namespaces": ["team-a", "kube-system"]}}
    assert backup_namespaces(tenant, ADMIN, {"kube-system"}) == {"team-a"}
    admin = {"metadata": {"namespace": ADMIN}, "spec": {"namespaces": ["team-a"]}}
    assert backup_namespaces(admin, ADMIN, {"team-b"}) == {"team-a", "team-b"}


def test_which_namespaces_a_restore_may_write() -> None:
    backup = {"spec": {"namespaces": ["team-a"]}, "status": {"volumes": [{"namespace": "team-c"}]}}
    tenant = {"metadata": {"namespace": "team-a"}, "spec": {"namespaceMapping": {"team-a": "team-b"}}}
    assert restore_namespaces(tenant, backup, ADMIN) == {"team-a"}
    admin = {"metadata": {"namespace": ADMIN}, "spec": {"namespaceMapping": {"team-a": "copy"}}}
    assert restore_namespaces(admin, backup, ADMIN) == {"copy", "team-c"}


def test_the_trees_a_restore_may_write_come_from_the_manifest_after_mapping() -> None:
    manifest = {
        "volumes": [
            {"namespace": "team-a", "persistentVolumeClaim": "data", "mode": "filesystem",
             "status": "Successful", "tree": "t1"},
            {"namespace": "team-a", "persistentVolumeClaim": "failed", "mode": "filesystem",
             "status": "Failed", "tree": "t2"},
            {"namespace": "team-a", "persistentVolumeClaim": "snap", "mode": "snapshot",
             "status": "Successful", "tree": "t3"},
            {"namespace": "team-a", "persistentVolumeClaim": "odd", "mode": "filesystem",
             "status": "Successful", "tree": {"not": "an id"}},
            "not a volume",
        ]
    }  # fmt: skip
    assert backup_trees(manifest, {}) == {"team-a/data": "t1"}
    assert backup_trees(manifest, {"team-a": "copy"}) == {"copy/data": "t1"}
    assert backup_trees({}, {}) == {}
