"""The local stack does what docs/devstack.md says: the dev kubelet runs pods and provisions volumes,
the stores enforce credentials, and ``down`` stops exactly what ``up`` started."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient
from botocore.exceptions import ClientError

from devstack.procs import _start_ticks
from devstack.stack import Stack
from tests.conftest import StackEnv
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: NS}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      # One pod per node, always: the scheduler's spreading alone may put both on the emptier node.
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: db}}, topologyKey: kubernetes.io/hostname}
      containers: [{name: db, image: postgres:16}]
      volumes: [{name: scratch, emptyDir: {}}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      storageClassName: davit-dev
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""

#: A restored claim and the pod that mounts it, with the init container a restore injects (its pod volume
#: is named differently from the claim, as the mount refers to the pod's volume), after another one.
RESTORED_POD = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: NS}
spec:
  storageClassName: davit-dev
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: NS}
spec:
  initContainers:
  - {name: setup, image: busybox}
  - name: davit-restore-wait
    image: davit:dev
    command: [python, -m, davit.restore.init_container, /davit-restore/pgdata]
    env: [{name: DAVIT_RESTORE_UID, value: "UID"}]
    volumeMounts: [{name: pgdata, mountPath: /davit-restore/pgdata}]
  containers:
  - name: db
    image: postgres:16
    volumeMounts: [{name: pgdata, mountPath: /var/lib/postgresql/data}]
  volumes:
  - name: pgdata
    persistentVolumeClaim: {claimName: data}
"""

#: Two claims asking for seed data, one of them as a restore creates it (labelled ``davit.dev/restore``,
#: the annotation kept), and a pod that mounts both so that the scheduler picks their node.
SEEDED_CLAIMS = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: fresh, namespace: NS, annotations: {dev.davit.dev/seed-data: "1Mi"}}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: restored
  namespace: NS
  annotations: {dev.davit.dev/seed-data: "1Mi"}
  labels: {davit.dev/restore: app-back, davit.dev/restored-from-backup: app}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: NS}
spec:
  containers: [{name: app, image: postgres:16}]
  volumes:
  - {name: fresh, persistentVolumeClaim: {claimName: fresh}}
  - {name: restored, persistentVolumeClaim: {claimName: restored}}
"""

#: The keys SPEC §8 asks of .dev/env with the services running (DAVIT joins with the CLI).
ENV_KEYS = (
    "KUBECONFIG", "REDIS_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_CONTAINER", "KUBELET_ROOT", "DEV_NODES", "KUBECTL",
    "METRICS_URL",
)  # fmt: skip


def get_json(stack: StackEnv, *args: str) -> dict:  # type: ignore[type-arg]
    result: dict = json.loads(stack.kubectl(*args, "-o", "json").stdout)  # type: ignore[type-arg]
    return result


def test_dev_kubelet_runs_pods_and_provisions_node_local_volumes(stack: StackEnv, namespace: str) -> None:
    stack.kubectl("apply", "-f", "-", stdin=STATEFULSET.replace("NS", namespace))

    def running_pods() -> list[dict] | None:  # type: ignore[type-arg]
        pods = get_json(stack, "-n", namespace, "get", "pods")["items"]
        ready = [p for p in pods if p["status"].get("phase") == "Running"]
        return ready if len(ready) == 2 else None

    pods = wait_for("both pods running", running_pods)
    nodes = stack.env["DEV_NODES"].split(",")
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(nodes), "one pod per dev node"
    kubelet_root = Path(stack.env["KUBELET_ROOT"])
    pv_paths = []

    for pod in pods:
        claim = f"data-{pod['metadata']['name']}"
        pvc = get_json(stack, "-n", namespace, "get", "pvc", claim)
        assert pvc["status"]["phase"] == "Bound"
        pv = get_json(stack, "get", "pv", pvc["spec"]["volumeName"])
        node_terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert node_terms[0]["matchExpressions"][0]["values"] == [pod["spec"]["nodeName"]]
        local_path = Path(pv["spec"]["local"]["path"])
        assert local_path.is_dir()
        pv_paths.append(local_path)

        volumes = kubelet_root / "pods" / pod["metadata"]["uid"] / "volumes"
        mount = volumes / "kubernetes.io~local-volume" / pv["metadata"]["name"]
        assert mount.is_symlink() and mount.resolve() == local_path.resolve()
        assert (volumes / "kubernetes.io~empty-dir" / "scratch").is_dir()
        (mount / "written-through-the-pod-dir").write_text("data")
        assert (local_path / "written-through-the-pod-dir").read_text() == "data"

    # Deleting the namespace: pods go (a kubelet confirms their end), the PVs are released and deleted
    # with their directories, and the namespace itself disappears.
    stack.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_for(
        "the namespace to be gone",
        lambda: stack.kubectl("get", "namespace", namespace, check=False).returncode != 0,
        timeout=90,
    )
    for pod in pods:
        assert not (kubelet_root / "pods" / pod["metadata"]["uid"]).exists()
    wait_for("the volumes' directories to be removed", lambda: not any(p.exists() for p in pv_paths))


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["status"].get("conditions", []) if c["type"] == kind)
    return found


def test_dev_kubelet_holds_a_restored_pod_until_the_node_agents_marker_is_in_its_volume(
    stack: StackEnv, namespace: str
) -> None:
    restore_uid = "0d4c1c52-3f7a-4c0b-a3a5-8e7f1d2b9c61"
    stack.kubectl(
        "apply", "-f", "-", stdin=RESTORED_POD.replace("NS", namespace).replace('"UID"', f'"{restore_uid}"')
    )

    def held() -> dict | None:  # type: ignore[type-arg]
        pod = get_json(stack, "-n", namespace, "get", "pod", "db")
        statuses = {s["name"]: s for s in pod["status"].get("initContainerStatuses", [])}
        waiting = statuses.get("davit-restore-wait", {})
        return pod if "running" in waiting.get("state", {}) else None

    pod = wait_for("the restore's init container to run", held)
    # Held, not just slow: it stays so while nothing is written into the volume.
    observe_until = time.monotonic() + 4
    while time.monotonic() < observe_until:
        pod = held() or {}
        assert pod, "the restore's init container stopped running before its marker existed"
        assert pod["status"]["phase"] == "Pending"
        assert condition(pod, "Ready")["status"] == "False"
        assert condition(pod, "Initialized")["status"] == "False"
        time.sleep(0.5)
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert init["setup"]["state"]["terminated"]["reason"] == "Completed", "init containers run in order"
    assert init["davit-restore-wait"]["ready"] is False
    assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}

    # What the node agent does: the data, then the marker last.
    pv_name = get_json(stack, "-n", namespace, "get", "pvc", "data")["spec"]["volumeName"]
    volume = Path(stack.env["KUBELET_ROOT"]) / "pods" / pod["metadata"]["uid"] / "volumes"
    volume = volume / "kubernetes.io~local-volume" / pv_name
    assert volume.is_dir()
    (volume / "PG_VERSION").write_text("16\n")
    marker = volume / ".davit-restore" / restore_uid
    marker.parent.mkdir()
    marker.touch()

    def ready() -> dict | None:  # type: ignore[type-arg]
        pod = get_json(stack, "-n", namespace, "get", "pod", "db")
        conditions = pod["status"].get("conditions", [])
        return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    pod = wait_for("the restored pod to be Ready", ready, timeout=20)
    assert pod["status"]["phase"] == "Running"
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    terminated = init["davit-restore-wait"]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert "reason" not in condition(pod, "Initialized"), "a condition kept the reason it was held for"
    assert "running" in pod["status"]["containerStatuses"][0]["state"]
    assert sorted(p.name for p in volume.iterdir()) == ["PG_VERSION"], "the marker was left in the volume"


def test_dev_kubelet_fails_a_restore_wait_as_the_container_would(stack: StackEnv, namespace: str) -> None:
    """Without a restore uid the container exits 2 at once; with a timeout and no marker, 1 after it."""

    def pod(name: str, env: list[dict[str, str]]) -> str:
        return json.dumps({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [
                    {"name": "davit-restore-wait", "image": "davit:dev", "env": env,
                     "command": ["python", "-m", "davit.restore.init_container", "/davit-restore/scratch"],
                     "volumeMounts": [{"name": "scratch", "mountPath": "/davit-restore/scratch"}]},
                ],
                "containers": [{"name": "app", "image": "busybox"}],
                "volumes": [{"name": "scratch", "emptyDir": {}}],
            },
        })  # fmt: skip

    stack.kubectl("apply", "-f", "-", stdin=pod("no-uid", []))
    timeout_env = [
        {"name": "DAVIT_RESTORE_UID", "value": "9b2f0c4e-0000-4000-8000-000000000001"},
        {"name": "DAVIT_RESTORE_TIMEOUT_SECONDS", "value": "2"},
    ]
    stack.kubectl("apply", "-f", "-", stdin=pod("timed-out", timeout_env))

    def failed(name: str) -> dict[str, Any] | None:
        found: dict[str, Any] = get_json(stack, "-n", namespace, "get", "pod", name)
        return found if found["status"].get("phase") == "Failed" else None

    status = wait_for("the pod without a restore uid to fail", lambda: failed("no-uid"))["status"]
    terminated = status["initContainerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2
    assert "DAVIT_RESTORE_UID is not set" in terminated["message"]
    assert condition({"status": status}, "Ready")["status"] == "False"

    status = wait_for("the waiting pod to time out", lambda: failed("timed-out"))["status"]
    terminated = status["initContainerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert "no data after 2s" in terminated["message"]
    assert "running" not in status["containerStatuses"][0]["state"], "the app ran after a failed wait"


def test_dev_kubelet_seeds_a_new_claim_but_not_one_a_restore_created(stack: StackEnv, namespace: str) -> None:
    stack.kubectl("apply", "-f", "-", stdin=SEEDED_CLAIMS.replace("NS", namespace))

    def volume_of(claim: str) -> Path | None:
        pvc = get_json(stack, "-n", namespace, "get", "pvc", claim)
        if pvc["status"].get("phase") != "Bound":
            return None
        pv = get_json(stack, "get", "pv", pvc["spec"]["volumeName"])
        return Path(pv["spec"]["local"]["path"])

    # The dev kubelet seeds a volume before it creates its PV: once bound, the data is all there.
    fresh = wait_for("the fresh claim to be bound", lambda: volume_of("fresh"), timeout=60)
    restored = wait_for("the restored claim to be bound", lambda: volume_of("restored"), timeout=60)
    assert sorted(p.name for p in fresh.iterdir()) == ["base", "current", "pg_stat", "pg_wal.log"]
    assert len(list((fresh / "pg_stat").iterdir())) == 200
    assert sum(f.stat().st_size for f in fresh.rglob("*") if f.is_file()) >= 1024 * 1024 * 3 // 4
    assert restored.is_dir()
    assert list(restored.iterdir()) == [], "the claim a restore created was seeded"


def test_s3_emulator_refuses_a_wrong_key(stack: StackEnv) -> None:
    def s3(key: str, secret: str):
        return boto3.client(
            "s3",
            endpoint_url=stack.env["S3_ENDPOINT"],
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    good = s3(stack.env["S3_ACCESS_KEY"], stack.env["S3_SECRET_KEY"])
    good.put_object(Bucket=stack.env["S3_BUCKET"], Key="probe", Body=b"ok")
    assert good.get_object(Bucket=stack.env["S3_BUCKET"], Key="probe")["Body"].read() == b"ok"

    with pytest.raises(ClientError) as unknown:
        s3("AKIAUNKNOWNKEY000000", "x" * 40).list_objects_v2(Bucket=stack.env["S3_BUCKET"])
    assert unknown.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    with pytest.raises(ClientError) as wrong_secret:
        s3(stack.env["S3_ACCESS_KEY"], "y" * 40).list_objects_v2(Bucket=stack.env["S3_BUCKET"])
    assert wrong_secret.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_azurite_refuses_a_wrong_key(stack: StackEnv) -> None:
    connection = stack.env["AZURE_STORAGE_CONNECTION_STRING"]
    container = stack.env["AZURE_CONTAINER"]
    good = BlobServiceClient.from_connection_string(connection).get_container_client(container)
    good.upload_blob("probe", b"ok", overwrite=True)
    assert good.download_blob("probe").readall() == b"ok"

    parts = dict(p.split("=", 1) for p in connection.strip(";").split(";"))
    parts["AccountKey"] = "d3JvbmcgYWNjb3VudCBrZXkgZm9yIHRoZSB0ZXN0IG9mIHRoZSBlbXVsYXRvcg=="
    wrong = ";".join(f"{k}={v}" for k, v in parts.items())
    bad = BlobServiceClient.from_connection_string(wrong).get_container_client(container)
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as refused:
        bad.download_blob("probe").readall()
    assert "AuthorizationFailure" in str(refused.value)


def test_up_is_idempotent_and_down_leaves_nothing_running(stack: StackEnv, tmp_path: Path) -> None:
    """A second stack, with the Davit services, next to the session's: up twice, then down."""
    second = Stack(tmp_path / "stack")
    state = second.up(clusters=1, with_services=True)
    try:
        first_pids = {r.name: r.pid for r in second.procs.all()}
        assert set(first_pids) == set(second.expected_processes(state))
        assert "a-watcher" in first_pids
        env_file = second.env_path().read_text()
        for key in ENV_KEYS:
            assert f"\n{key}=" in f"\n{env_file}", key
        assert oct(second.env_path().stat().st_mode & 0o777) == "0o600"
        metrics_url = dict(line.split("=", 1) for line in env_file.splitlines())["METRICS_URL"]

        def scrape() -> str:
            with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310 - our http URL
                text: str = response.read().decode()
                return text

        assert "davit_queue_length" in wait_for("the exporter at METRICS_URL", scrape)

        second.up(clusters=1, with_services=True)
        assert {r.name: r.pid for r in second.procs.all()} == first_pids, "a second up restarted something"
    finally:
        records = second.procs.all()
        second.down()
    assert records, "nothing was recorded"
    for record in records:
        assert _start_ticks(record.pid) != record.start_ticks, f"{record.name} (pid {record.pid}) still runs"
    assert second.procs.all() == []
    assert not os.path.exists(second.state_file)
