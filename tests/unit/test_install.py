"""The install as `kubectl kustomize` renders it (the kubectl the project builds, whose kustomize is v2.0):
the production overlay and an overlay of the test's own. Every Davit image follows the overlay's one image
setting, the helpers included; every workload has its probes and grace period; every worker queue has its
ScaledObject; the base's tag is the release. tests/integration/test_install.py applies the render to the
local API server with a server-side dry run."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from davit.constants import Queue
from devstack.cluster import kube_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PRODUCTION = DEPLOY / "overlays" / "production"
WORKLOADS = ("Deployment", "DaemonSet")
#: Containers that are not Davit's own image.
THIRD_PARTY = {"davit-redis"}
#: Worker Deployment → the queue it consumes (the node agents' per-node queues have no Deployment).
WORKER_QUEUES = {
    "davit-backup": Queue.SNAPSHOT.value,
    "davit-resources": Queue.EXPORT.value,
    "davit-restore": Queue.RESTORE.value,
    "davit-retention": Queue.RETENTION.value,
}


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(kube_binary("kubectl")), "kustomize", str(directory)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(PRODUCTION)


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (doc for doc in docs if doc["kind"] in WORKLOADS)


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def davit_images(docs: list[dict[str, Any]]) -> set[str]:
    return {
        c["image"] for w in workloads(docs) if w["metadata"]["name"] not in THIRD_PARTY for c in containers(w)
    }


def overlay_image(directory: Path) -> str:
    [image] = yaml.safe_load((directory / "kustomization.yaml").read_text())["images"]
    return f"{image['newName']}:{image['newTag']}"


def test_every_davit_image_follows_the_production_overlay(production: list[dict[str, Any]]) -> None:
    assert davit_images(production) == {overlay_image(PRODUCTION)}


def test_every_davit_image_follows_any_overlay(tmp_path: Path) -> None:
    """An overlay of the install's own (a mirror registry, a pinned release) moves every image, and no
    manifest names the helper image on the side: the helpers run the image of the service that starts
    them (davit.kube.mover.resolve_helper_image), which it finds through its own pod."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "bases": [os.path.relpath(DEPLOY / "base", overlay)],  # kustomize v2 takes no absolute path
        "images": [{"name": "davit", "newName": "mirror.internal:5000/davit", "newTag": "9.9.9"}],
    }))  # fmt: skip
    docs = render(overlay)
    assert davit_images(docs) == {"mirror.internal:5000/davit:9.9.9"}
    for workload in workloads(docs):
        for container in containers(workload):
            assert "DAVIT_RESTORE_HELPER_IMAGE" not in env(container), workload["metadata"]["name"]
    for name in ("davit-backup", "davit-restore"):
        [workload] = [w for w in workloads(docs) if w["metadata"]["name"] == name]
        variables = env(workload["spec"]["template"]["spec"]["containers"][0])
        assert variables["DAVIT_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert variables["DAVIT_POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "davit:latest" not in yaml.safe_dump_all(docs)


def test_the_base_tag_is_the_release() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    [image] = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())["images"]
    assert image == {"name": "davit", "newTag": version}


def test_third_party_images_are_versioned(production: list[dict[str, Any]]) -> None:
    for workload in workloads(production):
        for container in containers(workload):
            name, _, tag = container["image"].rpartition(":")
            assert name and tag and tag != "latest", container["image"]
            assert container.get("imagePullPolicy") == "IfNotPresent", container["name"]


def test_every_workload_has_probes_and_a_grace_period(production: list[dict[str, Any]]) -> None:
    for workload in workloads(production):
        spec = workload["spec"]["template"]["spec"]
        assert spec.get("terminationGracePeriodSeconds"), workload["metadata"]["name"]
        for container in spec["containers"]:
            assert container.get("readinessProbe") and container.get("livenessProbe"), container["name"]
            probe = container["livenessProbe"].get("exec", {}).get("command", [])
            if probe:
                assert probe[:3] == ["python", "-m", "davit.health"], probe


def test_workers_finish_their_tasks_before_they_stop(production: list[dict[str, Any]]) -> None:
    grace = {w["metadata"]["name"]: w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
             for w in workloads(production)}  # fmt: skip
    for name in [*WORKER_QUEUES, "davit-uploader"]:
        assert grace[name] >= 300, name


def test_each_worker_queue_scales_with_keda(production: list[dict[str, Any]]) -> None:
    scaled = {
        doc["spec"]["scaleTargetRef"]["name"]: doc for doc in production if doc["kind"] == "ScaledObject"
    }
    assert set(scaled) == set(WORKER_QUEUES)
    deployments = {w["metadata"]["name"] for w in workloads(production) if w["kind"] == "Deployment"}
    [auth] = [doc for doc in production if doc["kind"] == "TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "davit-redis", "key": "password"}
    ]
    for name, scaled_object in scaled.items():
        assert name in deployments
        [trigger] = scaled_object["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == WORKER_QUEUES[name]
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert scaled_object["spec"]["minReplicaCount"] >= 1, (
            "a queue's unacknowledged messages need a consumer"
        )


def test_disruption_budgets_cover_the_replicated_services(production: list[dict[str, Any]]) -> None:
    budgets = {doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: doc["spec"]
               for doc in production if doc["kind"] == "PodDisruptionBudget"}  # fmt: skip
    assert budgets["davit-watcher"] == {"minAvailable": 1, "selector": budgets["davit-watcher"]["selector"]}
    for name in WORKER_QUEUES:
        assert budgets[name]["maxUnavailable"] == 1


def test_monitoring_is_rendered_with_the_install(production: list[dict[str, Any]]) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in production}
    assert {("ServiceMonitor", "davit-exporter"), ("PrometheusRule", "davit"),
            ("ConfigMap", "davit-dashboard")} <= kinds  # fmt: skip
    [monitor] = [doc for doc in production if doc["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    [service] = [
        doc for doc in production if doc["kind"] == "Service" and doc["metadata"]["name"] == "davit-exporter"
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {p["name"] for p in service["spec"]["ports"]} >= {monitor["spec"]["endpoints"][0]["port"]}
    namespaces = {doc["metadata"].get("namespace") for doc in production if doc["kind"] != "Namespace"}
    # kube-system: the watcher's Lease (its Role and RoleBinding), in the admin namespace.
    assert namespaces <= {"davit-system", "kube-system", None}
