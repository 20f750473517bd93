"""An in-place restore on the real stack: a running database's volume gets the backup's data back, its
StatefulSet stopped meanwhile and started again, with the claim, its PV and every other object the same
objects (same uids) as before; files written after the backup are gone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from davit.volumes import in_place
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.tenants import wait_final
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest
from tests.integration.test_backup_resources import wait_final as wait_backup
from tests.integration.test_exec_rules import POD, data_dir  # noqa: F401 - the fixture
from tests.integration.test_restore_hooks import restore_manifest, volume_of

pytestmark = pytest.mark.integration

#: A pod no controller owns, mounting a claim of its own: an in-place restore cannot stop it.
BARE = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: scratch, namespace: NS}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: NS, labels: {app: bare}}
spec:
  containers: [{name: c, image: busybox, volumeMounts: [{name: s, mountPath: /s}]}]
  volumes: [{name: s, persistentVolumeClaim: {claimName: scratch}}]
"""


def uids(stack: StackEnv, namespace: str) -> dict[str, str]:
    """Every object of the namespace Davit could have touched, ``Kind/name`` → uid (pods, whose
    controller makes them anew, left out)."""
    kinds = "statefulsets,configmaps,persistentvolumeclaims,services,serviceaccounts,secrets,rules"
    items = json.loads(stack.kubectl("-n", namespace, "get", kinds, "-o", "json").stdout)["items"]
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["uid"] for o in items}


def test_an_in_place_restore_rewrites_the_running_apps_volume_and_starts_it_again(
    stack: StackEnv,
    namespace: str,
    services: Services,
    tmp_path: Path,
    data_dir: Path,  # noqa: F811
) -> None:
    (data_dir / "table.ibd").write_text("rows as backed up\n")
    (data_dir / "logs").mkdir()
    (data_dir / "logs" / "0001").write_text("log\n")
    apply(stack, BARE.replace("NS", namespace))

    def bare_running() -> bool:
        pod = json.loads(stack.kubectl("-n", namespace, "get", "pod", "bare", "-o", "json").stdout)
        return bool(pod["status"].get("phase") == "Running")

    wait_for("the bare pod running", bare_running)
    _, scratch_dir = volume_of(stack, namespace, "scratch")
    (scratch_dir / "work").write_text("as backed up\n")
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "app"))
    assert wait_backup(stack, namespace, "app", services)["status"] == "Successful"

    # After the backup the database goes on: a table changes, files and a directory appear.
    (data_dir / "table.ibd").write_text("rows changed after the backup\n")
    (data_dir / "logs" / "0002").write_text("newer log\n")
    (data_dir / "tmp").mkdir()
    (data_dir / "tmp" / "sort").write_text("x\n")
    (scratch_dir / "work").write_text("changed\n")
    before = uids(stack, namespace)
    pv_before = volume_of(stack, namespace, "data-mysql-0")
    pod_before = json.loads(stack.kubectl("-n", namespace, "get", "pod", POD, "-o", "json").stdout)

    apply(stack, restore_manifest(namespace, "in-place", inPlaceVolumes=True))
    status = wait_final(stack, services, "applicationrestore", namespace, "in-place", timeout=180)
    assert status["status"] == "PartialSuccess", status
    by_claim: dict[str, Any] = {v["persistentVolumeClaim"]: v for v in status["volumes"]}
    assert by_claim["data-mysql-0"]["status"] == "Successful", by_claim
    assert by_claim["scratch"]["status"] == "Failed", by_claim
    assert "mounted by pod bare (no controller)" in by_claim["scratch"]["reason"], by_claim
    assert status.get("resourceCount") == 0

    # The same objects, the same claim and PV; the StatefulSet back at one replica with a new pod.
    assert uids(stack, namespace) == before
    assert volume_of(stack, namespace, "data-mysql-0") == pv_before
    statefulset = json.loads(
        stack.kubectl("-n", namespace, "get", "statefulset", "mysql", "-o", "json").stdout
    )
    assert statefulset["spec"]["replicas"] == 1
    annotations = statefulset["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("davit.dev/")], annotations

    def running_again() -> dict[str, Any] | None:
        pod = json.loads(
            stack.kubectl("-n", namespace, "get", "pod", POD, "-o", "json", check=False).stdout or "{}"
        )
        fresh = pod.get("metadata", {}).get("uid") != pod_before["metadata"]["uid"]
        return pod if fresh and pod.get("status", {}).get("phase") == "Running" else None

    wait_for("the database running again in a new pod", running_again, timeout=60)
    # The volume is the backup's: the table as it was, what came after gone.
    files = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))
    assert files == ["logs", "logs/0001", "table.ibd"], files
    assert (data_dir / "table.ibd").read_text() == "rows as backed up\n"
    # The bare pod's claim was left alone.
    assert (scratch_dir / "work").read_text() == "changed\n"


def test_workloads_a_gone_in_place_restore_left_stopped_are_scaled_back_and_nothing_else(
    stack: StackEnv, namespace: str, stack_services: Any
) -> None:
    """An in-place restore that failed or was deleted before its end scaled a workload back leaves it
    stopped, with its record: the watcher gives it its replicas back at its next relist of the restores.
    A workload without a record is left as it is (one of a restore still running too:
    ``tests/unit/test_in_place.py``)."""
    services = stack_services(DAVIT_MOVER_GRACE_SECONDS="0")

    def deployment(name: str, holder: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if holder:
            metadata["labels"] = {in_place.RESTORE_LABEL: holder}
            metadata["annotations"] = {in_place.RESTORE_ANNOTATION: holder, in_place.REPLICAS_ANNOTATION: "3",
                                       in_place.SINCE_ANNOTATION: "2026-01-01T00:00:00Z"}  # fmt: skip
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        }  # fmt: skip

    for name, holder in (("stranded", str(uuid.uuid4())), ("plain", None)):
        apply(stack, deployment(name, holder))

    def replicas() -> dict[str, int]:
        items = json.loads(stack.kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout)["items"]
        return {d["metadata"]["name"]: d["spec"]["replicas"] for d in items}

    try:
        wait_for("the stranded deployment scaled back", lambda: replicas()["stranded"] == 3, timeout=120)
    except AssertionError:
        print(services.logs())
        raise
    assert replicas() == {"stranded": 3, "plain": 0}
    stranded = json.loads(
        stack.kubectl("-n", namespace, "get", "deployment", "stranded", "-o", "json").stdout
    )
    assert not [k for k in stranded["metadata"].get("labels") or {} if k.startswith("davit.dev/")]
    assert not [k for k in stranded["metadata"].get("annotations") or {} if k.startswith("davit.dev/")]
