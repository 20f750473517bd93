"""Restore hooks on the real stack: an init-container hook runs in the restored pod after its data is back
and before the application, and the post-restore exec rule runs once the pod is Running; a hook that
fails, and a rule whose pods never run, make the restore PartialSuccess naming them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StackEnv
from tests.integration.conftest import Services
from tests.integration.tenants import wait_final
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest
from tests.integration.test_backup_resources import wait_final as wait_backup
from tests.integration.test_exec_rules import APP, POD, data_dir  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

WARM_UP = {
    "apiVersion": "davit.dev/v1alpha1",
    "kind": "Rule",
    "metadata": {"name": "warm-up"},
    "rules": [
        {
            "podSelector": {"app": "mysql"},
            "container": "mysql",
            "actions": [{"type": "command", "value": "cat /var/lib/mysql/migrated > /var/lib/mysql/warmed"}],
        }
    ],
}


def hook(name: str, script: str) -> dict[str, Any]:
    return {
        "name": name,
        "podSelector": {"app": "mysql"},
        "containersToAdd": [
            {
                "name": name,
                "image": "mysql:8",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}],
            }
        ],
    }


def restore_manifest(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationRestore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backupName": "app", "backupLocation": "loc", **spec},
    }


def delete_app(stack: StackEnv, namespace: str) -> None:
    """The workload and its claim gone (as after an accident), waited for."""
    stack.kubectl("-n", namespace, "delete", "statefulset", "mysql", "--wait=true")
    stack.kubectl("-n", namespace, "delete", "pod", POD, "--ignore-not-found", "--wait=true")
    stack.kubectl("-n", namespace, "delete", "pvc", "data-mysql-0", "--wait=true", "--timeout=60s")


def volume_of(stack: StackEnv, namespace: str, claim: str) -> tuple[str, Path]:
    """The claim's PV: its name and its directory on this machine."""
    pvc = json.loads(stack.kubectl("-n", namespace, "get", "pvc", claim, "-o", "json").stdout)
    pv = json.loads(stack.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    return pv["metadata"]["name"], Path(pv["spec"]["local"]["path"])


def volume_dir(stack: StackEnv, namespace: str) -> Path:
    return volume_of(stack, namespace, "data-mysql-0")[1]


def test_restore_hooks_run_after_the_data_and_a_failing_hook_is_named(
    stack: StackEnv,
    namespace: str,
    services: Services,
    tmp_path: Path,
    data_dir: Path,  # noqa: F811
) -> None:
    (data_dir / "table.ibd").write_text("rows\n")
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, {**WARM_UP, "metadata": {"name": "warm-up", "namespace": namespace}})
    apply(stack, backup_manifest(namespace, "app"))
    assert wait_backup(stack, namespace, "app", services)["status"] == "Successful"

    # The hook sees the restored data (it fails otherwise); the rule sees what the hook wrote.
    delete_app(stack, namespace)
    migrate = "test -f /var/lib/mysql/table.ibd && echo migrated > /var/lib/mysql/migrated"
    apply(stack, restore_manifest(namespace, "hooked", initContainerHooks=[hook("migrate", migrate)],
                                  postExecRule="warm-up"))  # fmt: skip
    status = wait_final(stack, services, "applicationrestore", namespace, "hooked", timeout=180)
    assert status["status"] == "Successful", (status["reason"], status.get("resourcesByKind"))
    assert "PostExecRule" in [h["stage"] for h in status["stageHistory"]], status["stageHistory"]
    restored = volume_dir(stack, namespace)
    assert restored != data_dir, "a new volume"
    assert (restored / "table.ibd").read_text() == "rows\n"
    assert (restored / "migrated").read_text() == "migrated\n"
    assert (restored / "warmed").read_text() == "migrated\n", "the rule ran after the init container"
    pod = json.loads(stack.kubectl("-n", namespace, "get", "pod", POD, "-o", "json").stdout)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["davit-restore-wait", "migrate"]

    # A hook that exits non-zero: the pod never runs, so neither can the rule; both are named.
    delete_app(stack, namespace)
    failing = "echo 'schema 7 is newer than this binary' >&2; exit 4"
    apply(stack, restore_manifest(namespace, "failing", initContainerHooks=[hook("bad-migrate", failing)],
                                  postExecRule="warm-up", hookTimeout="5s"))  # fmt: skip
    status = wait_final(stack, services, "applicationrestore", namespace, "failing", timeout=180)
    assert status["status"] == "PartialSuccess", status
    reason: str = status["reason"]
    assert (
        f"initContainerHooks bad-migrate: pod {namespace}/{POD}: init container bad-migrate exited with 4"
        in (reason)
    ), reason
    assert "schema 7 is newer than this binary" in reason, reason
    assert "postExecRule warm-up" in reason, reason
    # The objects and data came back all the same; the application did not start.
    assert (volume_dir(stack, namespace) / "table.ibd").read_text() == "rows\n"
    assert not (volume_dir(stack, namespace) / "warmed").exists()
    pod = json.loads(stack.kubectl("-n", namespace, "get", "pod", POD, "-o", "json").stdout)
    assert pod["status"]["phase"] == "Pending"
    events = json.loads(stack.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    assert any(
        e["involvedObject"].get("name") == "failing" and "PostExecRule" in e.get("message", "")
        for e in events
    ), [e.get("message") for e in events]
