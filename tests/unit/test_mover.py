"""The data mover's temporary objects (davit.volumes.mover) and the planning of datamover volumes."""

from __future__ import annotations

import datetime
from typing import Any

from davit.volumes import mover
from davit.volumes.claims import plan_volume
from tests.fakes import cluster as k

LABELS = mover.backup_labels("nightly", "uid-1")
NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def source_claim(**spec: object) -> dict[str, object]:
    requests = {"requests": {"storage": "5Gi"}}
    return {"metadata": {"name": "data", "namespace": "app"},
            "spec": {"storageClassName": "fast", "resources": requests, **spec}}  # fmt: skip


def test_a_claim_with_move_data_planned_for_a_snapshot_is_a_datamover_volume() -> None:
    pvc = k.claim("data", volume="pv-1")
    pv = k.volume("pv-1", claim=("app", "data"), driver="csi.example.com")
    moved = plan_volume(pvc, pv, [], "auto", {"csi.example.com"}, move_data=True)
    kept = plan_volume(pvc, pv, [], "auto", {"csi.example.com"})
    assert (moved.mode, kept.mode) == ("datamover", "snapshot")
    assert moved.status_entry()["mode"] == "datamover"
    # A volume read from a pod is read from it, whatever snapshotMoveData says.
    pod = k.pod("db-0", claims=["data"], uid="pod-1")
    assert plan_volume(pvc, pv, [pod], "auto", {"csi.example.com"}, move_data=True).mode == "filesystem"


def test_the_temporary_claim_is_made_from_the_snapshot_in_the_source_claims_class_and_size() -> None:
    body = mover.temp_claim(source_claim(volumeMode="Filesystem"), "tmp", "snap-1", 0, LABELS)
    assert body["metadata"] == {"name": "tmp", "namespace": "app", "labels": LABELS}
    assert body["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                          "name": "snap-1"}  # fmt: skip
    assert (body["spec"]["storageClassName"], body["spec"]["volumeMode"]) == ("fast", "Filesystem")
    assert body["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # The snapshot's own size wins: a volume made from it may not be smaller.
    grown = mover.temp_claim(source_claim(), "tmp", "snap-1", 6 << 30, LABELS)
    assert grown["spec"]["resources"]["requests"]["storage"] == str(6 << 30)


def test_a_claim_is_the_temporary_claim_only_with_this_operations_labels_and_snapshot() -> None:
    made = mover.temp_claim(source_claim(), "tmp", "snap-1", 0, LABELS)
    assert mover.claim_made_from(made, "snap-1", LABELS) == ""
    assert "not there" in mover.claim_made_from(None, "snap-1", LABELS)
    assert "labels" in mover.claim_made_from(made, "snap-1", mover.backup_labels("nightly", "uid-2"))
    assert "VolumeSnapshot snap-2" in mover.claim_made_from(made, "snap-2", LABELS)
    tenants = {**made, "metadata": {**made["metadata"], "labels": {}}}
    assert mover.claim_made_from(tenants, "snap-1", LABELS) != ""


def test_the_helper_pod_runs_unprivileged_and_mounts_only_its_claim() -> None:
    pod = mover.helper_pod("h", "app", "tmp", "davit:1.0", LABELS, read_only=True)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert (container["image"], container["imagePullPolicy"]) == ("davit:1.0", "IfNotPresent")
    assert spec["automountServiceAccountToken"] is False
    assert spec["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "tmp", "readOnly": True}}
    ]
    assert mover.pod_placed(pod) is None
    placed = {**pod, "metadata": {**pod["metadata"], "uid": "u1"}, "spec": {**spec, "nodeName": "n1"},
              "status": {"phase": "Running"}}  # fmt: skip
    assert mover.pod_placed(placed) == ("n1", "u1")


def test_names_are_derived_short_enough_and_apart() -> None:
    assert mover.derived_name("nightly", "data", "ABCDEF12-3456") == "nightly-data-abcdef12"
    long_a = mover.derived_name("b" * 200, "c" * 60 + "a", "uid")
    long_b = mover.derived_name("b" * 200, "c" * 60 + "b", "uid")
    assert len(long_a) <= 253 and long_a != long_b


def test_unmounted_claims_are_those_no_restored_pod_mounts() -> None:
    pod = k.pod("db-0", claims=["a"], uid="p1")
    template = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "app"},
                "spec": {"volumes": [{"persistentVolumeClaim": {"claimName": "b"}}]}}  # fmt: skip
    assert mover.unmounted_claims({("app", "a"), ("app", "b"), ("other", "a")}, [pod, template]) == {
        ("app", "b"), ("other", "a")}  # fmt: skip


def temp(kind: str, name: str, uid: str, minutes_old: int, operation: str = mover.BACKUP) -> dict[str, Any]:
    labels = (mover.backup_labels if operation == mover.BACKUP else mover.restore_labels)("op", uid)
    created = (NOW - datetime.timedelta(minutes=minutes_old)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": kind, "metadata": {"name": name, "namespace": "app", "labels": labels,
                                       "creationTimestamp": created}}  # fmt: skip


def test_leftovers_are_the_old_objects_of_operations_no_longer_running_pods_first() -> None:
    items = [
        temp("PersistentVolumeClaim", "ended", "u-ended", 20),
        temp("Pod", "ended", "u-ended", 20),
        temp("Pod", "running", "u-running", 20),
        temp("Pod", "young", "u-new", 1),
        temp("Pod", "restore", "u-ended", 20, operation=mover.RESTORE),
        {
            "kind": "Pod",
            "metadata": {
                "name": "app-0",
                "namespace": "app",
                "labels": {"app": "db"},
                "creationTimestamp": "2020-01-01T00:00:00Z",
            },
        },
    ]
    found = mover.leftovers(items, mover.BACKUP, {"u-running"}, NOW, 600)
    assert [(i["kind"], i["metadata"]["name"]) for i in found] == [
        ("Pod", "ended"), ("PersistentVolumeClaim", "ended")]  # fmt: skip
    found = mover.leftovers(items, mover.RESTORE, set(), NOW, 600)
    assert [i["metadata"]["name"] for i in found] == ["restore"]
