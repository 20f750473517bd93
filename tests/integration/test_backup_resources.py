"""A backup of an application's resources, end to end on the real stack: watcher → snapshot →
resource-export → manifest, to every kind of location."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from davit.api.types import LocationSpec
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.storage import factory
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services

pytestmark = pytest.mark.integration


def location_manifest(
    stack: StackEnv, kind: str, namespace: str, tmp_path: Path, **extra: Any
) -> dict[str, Any]:
    env = stack.env
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    locations: dict[str, dict[str, Any]] = {
        "local": {"type": "local", "path": str(tmp_path / "store")},
        "s3": {
            "type": "s3",
            "path": env["S3_BUCKET"],
            "prefix": prefix,
            "s3Config": {
                "region": env["S3_REGION"],
                "endpoint": env["S3_ENDPOINT"],
                "disableSSL": True,
                "accessKeyID": env["S3_ACCESS_KEY"],
                "secretAccessKey": env["S3_SECRET_KEY"],
            },
        },
        "google": {
            "type": "google",
            "path": env["S3_BUCKET"],
            "prefix": prefix,
            "googleConfig": {
                "projectID": "davit-test",
                "endpoint": env["S3_ENDPOINT"],
                "accessKeyID": env["S3_ACCESS_KEY"],
                "secretAccessKey": env["S3_SECRET_KEY"],
            },
        },
        "azure": _azure_location(env, prefix),
    }
    if kind == "local":
        (tmp_path / "store").mkdir(exist_ok=True)
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "BackupLocation",
        "metadata": {"name": "loc", "namespace": namespace},
        "location": {**locations[kind], **extra},
    }


def _azure_location(env: dict[str, str], prefix: str) -> dict[str, Any]:
    parts = dict(p.split("=", 1) for p in env["AZURE_STORAGE_CONNECTION_STRING"].strip(";").split(";"))
    return {
        "type": "azure",
        "path": env["AZURE_CONTAINER"],
        "prefix": prefix,
        "azureConfig": {
            "storageAccountName": parts["AccountName"],
            "storageAccountKey": parts["AccountKey"],
            "endpoint": parts["BlobEndpoint"],
        },
    }


def backup_manifest(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backupLocation": "loc", "namespaces": [namespace], "reclaimPolicy": "Retain", **spec},
    }


def apply(stack: StackEnv, manifest: dict[str, Any] | str) -> None:
    stack.kubectl("apply", "-f", "-", stdin=manifest if isinstance(manifest, str) else json.dumps(manifest))


def backup_status(stack: StackEnv, namespace: str, name: str) -> dict[str, Any]:
    out = stack.kubectl("-n", namespace, "get", "applicationbackup", name, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def wait_final(
    stack: StackEnv, namespace: str, name: str, services: Services, timeout: float = 120
) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status = backup_status(stack, namespace, name)
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"backup {namespace}/{name} to finish", final, timeout=timeout)
    except AssertionError:
        print(services.logs())
        raise


def repository_for(location: dict[str, Any]) -> BackupRepository:
    spec = LocationSpec.model_validate(location["location"])
    resolved = factory.resolve_credentials(spec, None)
    return BackupRepository.open(factory.open_store(resolved), resolved.encryption_key, create=False)


#: What a backup never holds (docs/format.md): Events, Leases and Davit's own kinds.
NOT_BACKED_UP = ("events", "events.events.k8s.io", "leases.coordination.k8s.io")


def listed_in_scope(stack: StackEnv, namespace: str) -> set[tuple[str, str]]:
    """(kind, name) of every object the API lists in the namespace, for every listable namespaced
    resource kubectl knows (found independently of Davit's own discovery)."""
    import tempfile

    with tempfile.TemporaryDirectory() as fresh_cache:  # kubectl caches discovery for minutes otherwise
        cache = f"--cache-dir={fresh_cache}"
        names = stack.kubectl(
            cache, "api-resources", "--namespaced=true", "--verbs=list", "-o", "name"
        ).stdout.split()
        kinds = [n for n in names if n not in NOT_BACKED_UP and n.partition(".")[2] != "davit.dev"]
        out = stack.kubectl(cache, "-n", namespace, "get", ",".join(kinds), "-o", "json").stdout
    return {(i["kind"], i["metadata"]["name"]) for i in json.loads(out)["items"]}


APP = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.davit.dev}
spec:
  group: example.davit.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: NS}
data: {color: "blue-SECRETVALUE-cm"}
---
apiVersion: v1
kind: Secret
metadata: {name: db-password, namespace: NS}
stringData: {password: "hunter2-SECRETVALUE-secret"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: skipped, namespace: NS, annotations: {davit.dev/skip-resource: "true"}}
data: {a: b}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: NS}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: app, namespace: NS}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: NS}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: NS}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: NS}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: batch/v1beta1
kind: CronJob
metadata: {name: nightly, namespace: NS}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: job, image: busybox}]}
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: web, namespace: NS}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: NS}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def deploy_app(stack: StackEnv, namespace: str, extra_configmaps: int = 0) -> None:
    apply(stack, APP.replace("NS", namespace))
    wait_for(
        "the Widget kind to be served",
        lambda: (
            stack.kubectl("get", "crd", "widgets.example.davit.dev", "-o", "json", check=False).returncode
            == 0
            and any(
                c["type"] == "Established" and c["status"] == "True"
                for c in json.loads(
                    stack.kubectl("get", "crd", "widgets.example.davit.dev", "-o", "json").stdout
                )["status"].get("conditions", [])
            )
        ),
    )
    apply(stack, {"apiVersion": "example.davit.dev/v1", "kind": "Widget",
                  "metadata": {"name": "gadget", "namespace": namespace}, "spec": {"size": 3}})  # fmt: skip
    if extra_configmaps:
        from kubernetes import client

        from davit.kube import clients

        api = client.CoreV1Api(clients.api_client(stack.kubeconfig))
        for i in range(extra_configmaps):
            api.create_namespaced_config_map(
                namespace, {"metadata": {"name": f"extra-{i:04d}"}, "data": {"i": str(i)}}
            )
    wait_for(
        "the StatefulSet's claim to be bound",
        lambda: (
            json.loads(
                stack.kubectl("-n", namespace, "get", "pvc", "data-db-0", "-o", "json", check=False).stdout
                or "{}"
            )
            .get("status", {})
            .get("phase")
            == "Bound"
        ),
    )


@pytest.mark.parametrize("kind", ["local", "s3", "azure", "google"])
def test_backup_of_an_application_to_each_location_kind(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path, kind: str
) -> None:
    deploy_app(stack, namespace, extra_configmaps=1000)
    location = location_manifest(stack, kind, namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "full"))

    status = wait_final(stack, namespace, "full", services)
    assert status["status"] == "Successful", status
    assert status["totalSize"] > 0 and status["storedSize"] > 0
    assert status["backupPath"].endswith("/")

    repository = repository_for(location)
    uid = json.loads(stack.kubectl("-n", namespace, "get", "applicationbackup", "full", "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    ref = BackupRef(namespace, "full", uid)
    assert ref in list(repository.list_backups(namespace))
    manifest = repository.read_manifest(ref)
    stored = {(r["kind"], r["name"]) for r in manifest["resources"] if r.get("namespace") == namespace}
    expected = listed_in_scope(stack, namespace) - {("ConfigMap", "skipped")}
    for kind_name in sorted({k for k, _ in stored | expected}):
        assert {n for k, n in stored if k == kind_name} == {n for k, n in expected if k == kind_name}, (
            kind_name
        )
    assert ("ConfigMap", "skipped") not in stored
    assert status["resourceCount"] == len(manifest["resources"])
    cluster = {(r["kind"], r["name"]) for r in manifest["resources"] if "namespace" not in r}
    assert ("Namespace", namespace) in cluster
    assert ("CustomResourceDefinition", "widgets.example.davit.dev") in cluster
    assert any(k == "PersistentVolume" for k, _ in cluster)
    assert not any(k == "Event" for k, _ in stored)
    # Every part the manifest lists reads back and holds what the manifest says.
    read_back = {
        (o["kind"], o["metadata"]["name"]) for p in manifest["parts"] for o in repository.read_part(p["key"])
    }
    assert stored <= read_back
    assert repository.read_log(ref), "the operation's log is stored with the backup"


def test_wrong_credentials_fail_the_backup_with_the_store_reason(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    location = location_manifest(stack, "s3", namespace, tmp_path)
    location["location"]["s3Config"]["secretAccessKey"] = "not-the-secret-0123456789abcdefghijklmn"
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "refused"))

    status = wait_final(stack, namespace, "refused", services)
    assert status["status"] == "Failed"
    assert "SignatureDoesNotMatch" in status["reason"]
    assert "not-the-secret" not in json.dumps(status)
    events = json.loads(
        stack.kubectl(
            "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=refused", "-o", "json"
        ).stdout
    )["items"]
    assert any(e["reason"] == "Failed" and "SignatureDoesNotMatch" in e["message"] for e in events)
    # Nothing a reader would take for a backup: the prefix holds no manifest (nor anything else).
    good = location_manifest(stack, "s3", namespace, tmp_path)
    good["location"]["prefix"] = location["location"]["prefix"]
    store = factory.open_store(
        factory.resolve_credentials(LocationSpec.model_validate(good["location"]), None)
    )
    assert [i.key for i in store.list("backups/")] == []


def test_encrypted_backup_stores_no_value_or_name_in_clear(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    deploy_app(stack, namespace)
    location = location_manifest(
        stack, "local", namespace, tmp_path, encryptionKey="correct horse battery staple"
    )
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "sealed"))
    status = wait_final(stack, namespace, "sealed", services)
    assert status["status"] == "Successful", status

    secrets = [b"SECRETVALUE", b"hunter2", b"db-password", b"gadget", b"widgets.example", namespace.encode()]
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert len(files) > 3
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} in {path}"
    # ... and the backup reads back with the key.
    manifest_files = [p for p in files if p.name == "manifest"]
    assert len(manifest_files) == 1


def test_export_worker_killed_mid_backup_then_backup_completes_once(
    stack: StackEnv, namespace: str, stack_services: Callable[..., Services], tmp_path: Path
) -> None:
    # A page task lists the pages after its own itself, fast enough to be over before it is seen under
    # way: the client-side rate limit holds the export's 60-odd lists to ten a second.
    services = stack_services(
        DAVIT_EXPORT_PAGE_SIZE="25", DAVIT_WORKER_CONCURRENCY="1", DAVIT_API_QPS="10", DAVIT_API_BURST="1"
    )
    deploy_app(stack, namespace, extra_configmaps=1500)
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "interrupted"))

    def exporting() -> dict[str, Any] | None:
        status = backup_status(stack, namespace, "interrupted")
        return (
            status
            if status.get("stage") == "Applications" and (status.get("resourceCount") or 0) > 100
            else None
        )

    wait_for("the export to be under way", exporting, timeout=60)
    services.kill("resources")
    services.kill("watcher")
    assert backup_status(stack, namespace, "interrupted").get("stage") != "Final"
    services.start("watcher")
    services.start("resources", DAVIT_EXPORT_PAGE_SIZE="25", DAVIT_WORKER_CONCURRENCY="1")

    status = wait_final(stack, namespace, "interrupted", services, timeout=180)
    assert status["status"] == "Successful", status
    repository = repository_for(location_manifest(stack, "local", namespace, tmp_path))
    (ref,) = list(repository.list_backups(namespace))
    manifest = repository.read_manifest(ref)
    names = [r["name"] for r in manifest["resources"] if r["kind"] == "ConfigMap"]
    assert len([n for n in names if n.startswith("extra-")]) == 1500
    assert len(names) == len(set(names)), "an object was stored twice"
    started = [line for line in repository.read_log(ref) if '"backup.started"' in line]
    assert len(started) == 1, "the backup was started more than once"


def location_phase(stack: StackEnv, namespace: str, name: str = "loc") -> dict[str, Any] | None:
    out = stack.kubectl("-n", namespace, "get", "backuplocation", name, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status if status.get("phase") else None


def _unknown_s3_key(loc: dict[str, Any]) -> None:
    loc["s3Config"]["accessKeyID"] = "AKIAUNKNOWN000000000"


def _missing_bucket(loc: dict[str, Any]) -> None:
    loc["path"] = "no-such-bucket"


def _wrong_azure_key(loc: dict[str, Any]) -> None:
    loc["azureConfig"]["storageAccountKey"] = "d3Jvbmcga2V5IGZvciBhenVyaXRl"


def _missing_directory(loc: dict[str, Any]) -> None:
    # Beside the good one, so under the directories tenants' local locations may use.
    loc["path"] = loc["path"] + "-missing"


@pytest.mark.parametrize(
    ("kind", "break_it", "reason"),
    [
        pytest.param("s3", _unknown_s3_key, "InvalidAccessKeyId", id="s3-unknown-key"),
        pytest.param("s3", _missing_bucket, "NoSuchBucket", id="s3-no-bucket"),
        # Azurite answers a wrong account key with AuthorizationFailure (Azure itself: AuthenticationFailed).
        pytest.param("azure", _wrong_azure_key, "AuthorizationFailure", id="azure-wrong-key"),
        pytest.param("local", _missing_directory, "NoSuchDirectory", id="local-missing-dir"),
    ],
)
def test_location_status_tells_available_or_the_store_reason(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path, kind: str, break_it: Any, reason: str
) -> None:
    good = location_manifest(stack, kind, namespace, tmp_path)
    apply(stack, good)
    status = wait_for("the location to be checked", lambda: location_phase(stack, namespace))
    assert status["phase"] == "Available", status

    bad = location_manifest(stack, kind, namespace, tmp_path)
    bad["location"]["prefix"] = good["location"].get("prefix")
    break_it(bad["location"])
    apply(stack, bad)

    def unavailable() -> dict[str, Any] | None:
        s = location_phase(stack, namespace)
        return s if s and s["phase"] == "Unavailable" else None

    status = wait_for("the location to be found unavailable", unavailable)
    assert reason in status["message"], status
    events = json.loads(
        stack.kubectl(
            "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=loc", "-o", "json"
        ).stdout
    )["items"]
    assert any(e["reason"] == "Unavailable" and e["type"] == "Warning" for e in events)


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
def test_deleting_a_backup_honours_its_reclaim_policy(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path, policy: str
) -> None:
    apply(stack, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}})
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "doomed", reclaimPolicy=policy))
    assert wait_final(stack, namespace, "doomed", services)["status"] == "Successful"
    obj = json.loads(
        stack.kubectl("-n", namespace, "get", "applicationbackup", "doomed", "-o", "json").stdout
    )
    assert "davit.dev/backup-data" in obj["metadata"]["finalizers"]
    repository = repository_for(location)
    ref = BackupRef(namespace, "doomed", obj["metadata"]["uid"])
    assert repository.has_manifest(ref)

    stack.kubectl("-n", namespace, "delete", "applicationbackup", "doomed", "--wait=false")
    wait_for(
        "the backup CR to be gone",
        lambda: (
            stack.kubectl("-n", namespace, "get", "applicationbackup", "doomed", check=False).returncode != 0
        ),
    )
    files = [p for p in (tmp_path / "store" / "backups").rglob("*") if p.is_file()]
    if policy == "Delete":
        assert not repository.has_manifest(ref)
        assert files == []
    else:
        assert repository.has_manifest(ref)
        assert ref in list(repository.list_backups(namespace))


def test_backup_naming_another_namespace_fails_and_stores_nothing(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "overreach", namespaces=[namespace, "kube-system"]))
    status = wait_final(stack, namespace, "overreach", services)
    assert status["status"] == "Failed"
    assert "spec.namespaces" in status["reason"] and "kube-system" in status["reason"]
    assert not (tmp_path / "store" / "backups").exists()


def test_exporter_shows_a_running_backup_then_its_completion(
    stack: StackEnv, namespace: str, stack_services: Callable[..., Services], tmp_path: Path
) -> None:
    from tests.integration.test_exporter import ExporterProcess, value

    services = stack_services(DAVIT_EXPORT_PAGE_SIZE="25", DAVIT_WORKER_CONCURRENCY="1")
    exporter = ExporterProcess(stack, tmp_path)
    try:
        deploy_app(stack, namespace, extra_configmaps=1500)
        apply(stack, location_manifest(stack, "local", namespace, tmp_path))
        apply(stack, backup_manifest(namespace, "watched"))
        who = {"kind": "ApplicationBackup", "namespace": namespace, "name": "watched"}

        def running() -> dict[str, Any] | None:
            scrape = exporter.scrape()
            elapsed = value(scrape, "davit_operation_elapsed_seconds", **who, stage="Applications")
            return {"elapsed": elapsed} if elapsed is not None else None

        seen = wait_for("the running backup on /metrics", running, timeout=60)
        assert seen["elapsed"] >= 0

        wait_final(stack, namespace, "watched", services, timeout=180)

        def completed() -> dict[str, Any] | None:
            scrape = exporter.scrape()
            done = value(
                scrape, "davit_operations_completed_total",
                kind="ApplicationBackup", namespace=namespace, schedule="", result="Successful",
            )  # fmt: skip
            still_running = value(scrape, "davit_operation_elapsed_seconds", **who, stage="Applications")
            return {"done": done} if done and still_running is None else None

        assert wait_for("the completed backup on /metrics", completed)["done"] >= 1
        scrape = exporter.scrape()
        durations = value(
            scrape, "davit_operation_duration_seconds_count", kind="ApplicationBackup", result="Successful"
        )
        assert durations is not None and durations >= 1
    finally:
        exporter.stop()
