"""Restore options on the real stack, each checked by listing the cluster: ``replacePolicy: Update``
(same uid, the backup's content; an immutable object refused and counted failed), node ports cleared
or kept (``preserveNodePorts``), resource modifiers (patches applied; a failing patch and a malformed
ConfigMap reported), and ``backupNamespace`` (an admin restores a tenant's backup), with the attacks on
the guards: a tenant's patch moving an object into another namespace, another tenant naming the backup."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StackEnv
from tests.integration.conftest import Services
from tests.integration.tenants import TenantUser, events_of, wait_final
from tests.integration.test_backup_resources import apply, location_manifest
from tests.integration.test_restore import ADMIN, admin_location, backup, restore, volume_of

pytestmark = pytest.mark.integration
__all__ = ["admin_location"]  # the fixture, shared with the restore tests

APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: NS, labels: {app: web}}
data: {mode: production}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: frozen, namespace: NS}
immutable: true
data: {version: "1"}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: NS}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""

#: A claim with data and the pod that mounts it: the admin's restore of the tenant's backup writes the data.
VOLUME = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: NS}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: NS}
spec:
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
"""

MODIFIERS = """
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps, resourceNameRegex: "^settings$", namespaces: [NS]}
  patches:
  - {operation: replace, path: /data/mode, value: patched}
  - {operation: add, path: /metadata/labels/patched, value: "yes"}
- conditions: {groupResource: services}
  patches:
  - {operation: replace, path: /spec/ports/0/targetPort, value: "9999"}
- conditions: {groupResource: configmaps, resourceNameRegex: "^frozen$"}
  patches:
  - {operation: remove, path: /data/missing}
"""


def get(stack: StackEnv, namespace: str, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)
    return found


def names(stack: StackEnv, namespace: str, kind: str) -> list[str]:
    items = json.loads(stack.kubectl("-n", namespace, "get", kind, "-o", "json").stdout)["items"]
    return sorted(i["metadata"]["name"] for i in items if i["metadata"]["name"] != "kube-root-ca.crt")


def config_map(namespace: str, name: str, rules: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"rules.yaml": rules}}  # fmt: skip


def test_update_in_place_node_ports_and_resource_modifiers(
    stack: StackEnv, namespace: str, services: Services, admin_location: str
) -> None:
    apply(stack, APP.replace("NS", namespace))
    node_port = get(stack, namespace, "service", "web")["spec"]["ports"][0]["nodePort"]
    backup(stack, services, admin_location, namespace, "opts")
    modified, broken = f"{namespace}-mod", f"{namespace}-bad"
    try:
        # --- Update: the objects there become the backup's version, in place ---------------------
        stack.kubectl("-n", namespace, "patch", "configmap", "settings", "--type=merge",
                      "-p", '{"data": {"mode": "changed", "extra": "kept"}}')  # fmt: skip
        stack.kubectl("-n", namespace, "delete", "configmap", "frozen")
        apply(stack, APP.replace("NS", namespace).split("---")[1].replace('"1"', '"2"'))
        stack.kubectl("-n", namespace, "patch", "service", "web", "--type=merge",
                      "-p", '{"spec": {"selector": {"app": "other"}}}')  # fmt: skip
        watched = (("configmap", "settings"), ("configmap", "frozen"), ("service", "web"))
        before = {name: get(stack, namespace, kind, name)["metadata"]["uid"] for kind, name in watched}
        status = restore(stack, services, admin_location, "opts-update", "opts", replacePolicy="Update")
        assert status["status"] == "PartialSuccess", status
        by_kind = status["resourcesByKind"]
        assert by_kind["ConfigMap"] == {
            "restored": 0,
            "retained": 0,
            "replaced": 0,
            "updated": 1,
            "failed": 1,
        }
        assert by_kind["Service"]["updated"] == 1 and by_kind["Namespace"]["retained"] == 1, by_kind
        assert "ConfigMap" in status["reason"] and "frozen" in status["reason"], status["reason"]
        assert "immutable" in status["reason"], status["reason"]
        settings = get(stack, namespace, "configmap", "settings")
        assert settings["metadata"]["uid"] == before["settings"]
        assert settings["data"] == {"mode": "production", "extra": "kept"}, (
            "a merge keeps what it does not name"
        )
        assert settings["metadata"]["labels"]["davit.dev/restore"] == "opts-update"
        frozen = get(stack, namespace, "configmap", "frozen")
        assert (frozen["metadata"]["uid"], frozen["data"]) == (before["frozen"], {"version": "2"}), "refused"
        service = get(stack, namespace, "service", "web")
        assert service["metadata"]["uid"] == before["web"]
        assert service["spec"]["selector"] == {"app": "web"}
        assert service["spec"]["ports"][0]["nodePort"] == node_port, "an updated Service keeps its node port"

        # --- resource modifiers: patched before creation; a failing patch fails its object --------
        apply(stack, config_map(ADMIN, "opts-mods", MODIFIERS.replace("NS", namespace)))
        status = restore(stack, services, admin_location, "opts-mod", "opts",
                         namespaceMapping={namespace: modified},
                         resourceModifier={"kind": "ConfigMap", "name": "opts-mods"})  # fmt: skip
        assert status["status"] == "PartialSuccess", status
        by_kind = status["resourcesByKind"]
        assert (by_kind["ConfigMap"]["restored"], by_kind["ConfigMap"]["failed"]) == (1, 1), by_kind
        assert "resource modifier rule 2" in status["reason"] and "frozen" in status["reason"], status
        assert names(stack, modified, "configmaps") == ["settings"]
        patched = get(stack, modified, "configmap", "settings")
        assert patched["data"] == {"mode": "patched"} and patched["metadata"]["labels"]["patched"] == "yes"
        copied = get(stack, modified, "service", "web")["spec"]["ports"][0]
        assert copied["targetPort"] == 9999
        reasons = [e["reason"] for e in events_of(stack, ADMIN, "opts-mod")]
        assert "ResourceModifierFailed" in reasons, reasons

        # --- node ports: allocated anew by default, kept with preserveNodePorts -------------------
        assert copied["nodePort"] != node_port  # the original still holds its port: the copy got another
        stack.kubectl("-n", namespace, "delete", "service", "web")
        status = restore(stack, services, admin_location, "opts-ports", "opts", resourceTypes=["Service"],
                         preserveNodePorts=True)  # fmt: skip
        assert status["status"] == "Successful", status
        recreated = get(stack, namespace, "service", "web")
        assert recreated["metadata"]["uid"] != before["web"]
        assert recreated["spec"]["ports"][0]["nodePort"] == node_port

        # A malformed ConfigMap fails the restore before anything is written.
        apply(stack, config_map(ADMIN, "opts-mods-bad", MODIFIERS.replace("version: v1", "version: v2")))
        status = restore(stack, services, admin_location, "opts-bad", "opts",
                         namespaceMapping={namespace: broken},
                         resourceModifier={"kind": "ConfigMap", "name": "opts-mods-bad"})  # fmt: skip
        assert status["status"] == "Failed", status
        assert (
            status["reason"].startswith("spec.resourceModifier: ConfigMap")
            and "version must be 'v1'" in (status["reason"])
        ), status["reason"]
        assert "ResourceModifiersInvalid" in [e["reason"] for e in events_of(stack, ADMIN, "opts-bad")]
        assert stack.kubectl("get", "namespace", broken, check=False).returncode != 0, (
            "the failed restore wrote"
        )
    finally:
        for created in (modified, broken):
            stack.kubectl("delete", "namespace", created, "--wait=false", check=False)
        stack.kubectl("-n", ADMIN, "delete", "configmap", "opts-mods", "opts-mods-bad", "--ignore-not-found")


def test_tenant_guards_and_an_admin_restore_of_a_tenant_backup(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    tenant = TenantUser(stack, namespace)
    tenant.apply(location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, APP.replace("NS", namespace).split("---")[0])  # the settings ConfigMap
    apply(stack, VOLUME.replace("NS", namespace))
    (volume_of(stack, namespace, "data") / "notes.txt").write_text("the tenant's data\n")
    tenant.apply({"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": "mine", "namespace": namespace},
                  "spec": {"backupLocation": "loc", "namespaces": [namespace]}})  # fmt: skip
    assert wait_final(stack, services, "applicationbackup", namespace, "mine")["status"] == "Successful"
    victim, rival, target = (f"{namespace}-{s}" for s in ("victim", "rival", "copy"))
    admin_restore = f"tenant-copy-{uuid.uuid4().hex[:6]}"
    for created in (victim, rival, target):
        stack.kubectl("create", "namespace", created)
    try:
        # Attack: the tenant's resource modifier moves an object into another namespace.
        escape = """
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps, resourceNameRegex: "^settings$"}
  patches: [{operation: replace, path: /metadata/namespace, value: VICTIM}]
"""
        apply(stack, config_map(namespace, "escape", escape.replace("VICTIM", victim)))
        tenant.apply({"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                      "metadata": {"name": "escape", "namespace": namespace},
                      "spec": {"backupName": "mine", "backupLocation": "loc", "replacePolicy": "Delete",
                               "resourceModifier": {"kind": "ConfigMap", "name": "escape"}}})  # fmt: skip
        status = wait_final(stack, services, "applicationrestore", namespace, "escape")
        assert status["status"] == "Failed" and status["reason"].startswith("RestoreRefused"), status
        assert victim in status["reason"], status["reason"]
        assert names(stack, victim, "configmaps") == [], "the patched object reached the other namespace"
        settings = get(stack, namespace, "configmap", "settings")
        assert "davit.dev/restore" not in (settings["metadata"].get("labels") or {}), "Delete replaced it"

        # Attack: another tenant names this tenant's backup.
        rival_user = TenantUser(stack, rival)
        rival_user.apply({"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                          "metadata": {"name": "steal", "namespace": rival},
                          "spec": {"backupName": "mine", "backupLocation": "loc",
                                   "backupNamespace": namespace}})  # fmt: skip
        status = wait_final(stack, services, "applicationrestore", rival, "steal")
        assert status["status"] == "Failed" and status["reason"].startswith("spec.backupNamespace:"), status
        assert names(stack, rival, "configmaps") == [], "another tenant's backup was restored"

        # The administrator restores the tenant's backup into another namespace.
        apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                      "metadata": {"name": admin_restore, "namespace": ADMIN},
                      "spec": {"backupName": "mine", "backupLocation": "loc", "backupNamespace": namespace,
                               "namespaceMapping": {namespace: target}}})  # fmt: skip
        status = wait_final(stack, services, "applicationrestore", ADMIN, admin_restore, timeout=240)
        assert status["status"] == "Successful", status
        assert status["volumesProgress"] == "1/1", status
        assert (volume_of(stack, target, "data") / "notes.txt").read_text() == "the tenant's data\n"
        assert names(stack, target, "configmaps") == ["settings"]
        copied = get(stack, target, "configmap", "settings")
        assert copied["data"] == {"mode": "production"}
        assert copied["metadata"]["labels"]["davit.dev/restore"] == admin_restore
    finally:
        stack.kubectl("-n", ADMIN, "delete", "applicationrestore", admin_restore, "--wait=false", check=False)
        for created in (victim, rival, target):
            stack.kubectl("delete", "namespace", created, "--wait=false", check=False)
