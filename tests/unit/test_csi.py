"""Snapshot mode's pure parts: which VolumeSnapshotClass, the snapshot's name and labels, reading its
status and the manifest entry, and finding a backup's snapshots when it is deleted."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from davit import labels
from davit.kube import csi
from davit.volumes.claims import VolumePlan

DRIVER = "dev.csi.davit.dev"
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def snapshot_class(name: str, driver: str = DRIVER, default: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default is not None:
        meta["annotations"] = {csi.DEFAULT_CLASS_ANNOTATION: default}
    return {"metadata": meta, "driver": driver, "deletionPolicy": "Delete"}


def plan(claim: str = "data", mode: str = "snapshot") -> VolumePlan:
    return VolumePlan(namespace="app", claim=claim, volume="pv-1", driver=DRIVER, mode=mode)  # type: ignore[arg-type]


# --- class choice ------------------------------------------------------------------------------------------


def test_the_only_class_of_the_driver_is_chosen() -> None:
    classes = [snapshot_class("other", driver="ebs.csi.aws.com", default="true"), snapshot_class("mine")]
    assert csi.choose_class(classes, DRIVER) == "mine"


def test_among_several_the_default_class_is_chosen() -> None:
    classes = [
        snapshot_class("a"),
        snapshot_class("b", default="true"),
        snapshot_class("c", default="false"),
        snapshot_class("d", driver="other", default="true"),
    ]
    assert csi.choose_class(classes, DRIVER) == "b"


def test_the_default_annotation_is_case_insensitive() -> None:
    assert csi.choose_class([snapshot_class("a"), snapshot_class("b", default="True")], DRIVER) == "b"


def test_no_class_for_the_driver_is_an_error() -> None:
    with pytest.raises(csi.SnapshotError, match=r"no VolumeSnapshotClass for driver dev\.csi\.davit\.dev"):
        csi.choose_class([snapshot_class("x", driver="other")], DRIVER)


def test_several_classes_without_a_default_is_an_error_naming_them() -> None:
    with pytest.raises(csi.SnapshotError, match=r"2 VolumeSnapshotClasses .*\(a, b\) and none is annotated"):
        csi.choose_class([snapshot_class("b"), snapshot_class("a")], DRIVER)


def test_several_defaults_is_an_error() -> None:
    classes = [snapshot_class("a", default="true"), snapshot_class("b", default="true")]
    with pytest.raises(csi.SnapshotError, match=r"2 VolumeSnapshotClasses .* \(a, b\); exactly one may be"):
        csi.choose_class(classes, DRIVER)


# --- naming ------------------------------------------------------------------------------------------------


def test_snapshot_name_is_backup_claim_and_short_uid() -> None:
    assert csi.snapshot_name("nightly", "data", UID) == "nightly-data-0f1e2d3c"


def test_snapshot_name_is_deterministic_and_differs_per_backup_uid_and_claim() -> None:
    first = csi.snapshot_name("nightly", "data", UID)
    assert csi.snapshot_name("nightly", "data", UID) == first
    assert csi.snapshot_name("nightly", "data", "ffffffff-0000-0000-0000-000000000000") != first
    assert csi.snapshot_name("nightly", "logs", UID) != first


@pytest.mark.parametrize(
    ("backup", "claim"),
    [
        ("b" * 200, "c" * 200),
        ("a" * 240 + ".x", "data"),
        ("backup", "c" * 243 + "-" + "d" * 9),
        ("backup." + "x" * 230, "y.z" * 10),
    ],
)
def test_long_snapshot_names_are_cut_to_a_valid_subdomain(backup: str, claim: str) -> None:
    name = csi.snapshot_name(backup, claim, UID)
    assert len(name) <= 253
    assert SUBDOMAIN.match(name), name
    assert name.endswith("-0f1e2d3c")
    assert csi.snapshot_name(backup, claim, UID) == name


def test_long_names_sharing_a_prefix_stay_apart() -> None:
    backup = "b" * 200
    first = csi.snapshot_name(backup, "c" * 100 + "-one", UID)
    second = csi.snapshot_name(backup, "c" * 100 + "-two", UID)
    assert first != second
    assert len(first) == len(second) == 253


def test_label_values_fit() -> None:
    assert labels.label_value("nightly") == "nightly"
    long = "a" * 60 + "-" + "b" * 100
    value = labels.label_value(long)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value)
    assert value != labels.label_value("a" * 60 + "-" + "c" * 100)
    assert LABEL_VALUE.match(labels.label_value("a" * 61 + "." + "b" * 10))


def test_snapshot_body() -> None:
    body = csi.snapshot_body("nightly-data-0f1e2d3c", plan(), "csi-class", "nightly", UID)
    assert body == {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": "nightly-data-0f1e2d3c",
            "namespace": "app",
            "labels": {"davit.dev/backup": "nightly", "davit.dev/backup-uid": UID},
        },
        "spec": {"volumeSnapshotClassName": "csi-class", "source": {"persistentVolumeClaimName": "data"}},
    }


def test_owned_by_checks_the_backup_uid_and_the_claim() -> None:
    body = csi.snapshot_body("n", plan(), "c", "nightly", UID)
    assert csi.owned_by(body, plan(), UID)
    assert not csi.owned_by(body, plan(), "another-uid")
    assert not csi.owned_by(body, plan("logs"), UID)


# --- finding a backup's snapshots --------------------------------------------------------------------------


def test_the_backup_selector_matches_the_label_the_snapshot_carries() -> None:
    body = csi.snapshot_body("n", plan(), "c", "nightly", UID)
    key, value = csi.backup_selector(UID).split("=")
    assert body["metadata"]["labels"][key] == value == UID


def _volume(namespace: str, mode: str, status: str = "Successful") -> dict[str, Any]:
    return {"namespace": namespace, "persistentVolumeClaim": "data", "mode": mode, "status": status}


def test_snapshot_namespaces_are_those_of_snapshot_volumes_whatever_their_outcome() -> None:
    backup = {
        "status": {
            "volumes": [
                _volume("web", "snapshot"),
                _volume("db", "snapshot", status="Failed"),  # a timed-out snapshot is still there
                _volume("web", "snapshot"),
                _volume("logs", "filesystem"),
                _volume("cache", "skip"),
            ]
        }
    }
    assert csi.snapshot_namespaces(backup) == ["db", "web"]


@pytest.mark.parametrize("status", [None, {}, {"volumes": None}, {"volumes": []}])
def test_a_backup_without_volumes_has_no_snapshot_namespaces(status: dict[str, Any] | None) -> None:
    assert csi.snapshot_namespaces({"metadata": {"name": "b"}, "status": status}) == []


def test_api_reason_is_the_api_servers_message_else_the_http_status() -> None:
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = json.dumps({"kind": "Status", "message": 'volumesnapshots "s" is forbidden'})
    assert csi.api_reason(refused) == 'volumesnapshots "s" is forbidden'
    bare = ApiException(status=503, reason="Service Unavailable")
    bare.body = "upstream connect error"
    assert csi.api_reason(bare) == "503 Service Unavailable"
    assert (
        csi.api_reason(ApiException(status=500, reason="Internal Server Error"))
        == "500 Internal Server Error"
    )


# --- status ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1Gi", 2**30),
        ("512Mi", 512 * 2**20),
        ("10G", 10**10),
        ("1500k", 1_500_000),
        ("1073741824", 2**30),
        (1073741824, 2**30),
        ("1e3", 1000),
        ("1.5Ki", 1536),
        ("100m", 1),
        ("2E", 2 * 10**18),
        (None, 0),
        ("", 0),
        ("lots", 0),
        ("-1Gi", 0),
        (True, 0),
    ],
)
def test_parse_quantity(value: Any, expected: int) -> None:
    assert csi.parse_quantity(value) == expected


def test_state_of_a_new_snapshot() -> None:
    state = csi.SnapshotState.of({"metadata": {"name": "s"}})
    assert not state.ready
    assert state.error == ""
    assert state.content == ""
    assert state.restore_size is None


def test_state_of_a_ready_snapshot() -> None:
    state = csi.SnapshotState.of(
        {
            "status": {
                "readyToUse": True,
                "boundVolumeSnapshotContentName": "snapcontent-1",
                "restoreSize": "1Gi",
                "creationTime": "2024-01-02T03:04:05Z",
            }
        }
    )
    assert state == csi.SnapshotState(True, "", "snapcontent-1", "1Gi", "2024-01-02T03:04:05Z")


def test_state_reads_the_error_message() -> None:
    state = csi.SnapshotState.of({"status": {"readyToUse": False, "error": {"message": "quota exceeded"}}})
    assert state.error == "quota exceeded"
    assert not state.ready
    assert csi.SnapshotState.of({"status": {"error": {"time": "2024-01-02T03:04:05Z"}}}).error


def test_ready_to_use_must_be_true_not_truthy() -> None:
    assert not csi.SnapshotState.of({"status": {"readyToUse": "true"}}).ready


def test_outcome() -> None:
    assert csi.outcome(csi.SnapshotState(False, "", "", None, "")) == "waiting"
    assert csi.outcome(csi.SnapshotState(False, "quota exceeded", "", None, "")) == "failed"
    # The snapshotter keeps the last error it saw while retrying; a snapshot that became ready is usable.
    assert csi.outcome(csi.SnapshotState(True, "transient", "c", "1Gi", "")) == "ready"


def test_result_entry() -> None:
    state = csi.SnapshotState(True, "", "snapcontent-1", "1Gi", "")
    assert csi.result_entry("nightly-data-0f1e2d3c", "csi-class", state) == {
        "status": "Successful",
        "reason": "",
        "volumeSnapshot": "nightly-data-0f1e2d3c",
        "volumeSnapshotContent": "snapcontent-1",
        "volumeSnapshotClass": "csi-class",
        "restoreSize": "1Gi",
        "totalSize": 2**30,
        "bytesDone": 2**30,
    }


def test_result_entry_falls_back_to_the_content_size() -> None:
    state = csi.SnapshotState(True, "", "snapcontent-1", None, "")
    entry = csi.result_entry("s", "c", state, 4096)
    assert (entry["restoreSize"], entry["totalSize"], entry["bytesDone"]) == ("4096", 4096, 4096)
    entry = csi.result_entry("s", "c", state)
    assert (entry["restoreSize"], entry["totalSize"]) == ("", 0)


def test_only_snapshot_plans_are_taken() -> None:
    with pytest.raises(ValueError, match="planned as filesystem"):
        csi.snapshot_volume(None, plan(mode="filesystem"), "b", UID, 1)
