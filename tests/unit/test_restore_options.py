"""The restore options Velero and Stork users reach for, on the restore handler with in-memory ports
(``tests.unit.restore_world``) and as pure rules: ``replacePolicy: Update``, resource modifiers,
``preserveNodePorts`` and ``backupNamespace``, with the attacks on the guards they touch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.format.layout import restore_log
from davit.restore import fields
from davit.tenancy import RESTORE_REFUSED, RestoreGuard, restore_guard
from davit.validation import validate_restore
from davit.volumes import node_dirs
from davit_services.restore import restore
from tests.fakes import cluster as fakes
from tests.fakes.cluster import FakeCluster, api_error
from tests.fakes.scratch import ScratchFactory
from tests.unit.restore_world import ADMIN, LOCATION, NAMESPACE, RESTORE, World, configmap, live_configmap

MODIFIERS = """
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps, resourceNameRegex: "^a$", namespaces: [NS]}
  patches:
  - {operation: replace, path: /data/key, value: patched}
  - {operation: add, path: /metadata/labels, value: {patched: "yes"}}
"""


@pytest.fixture
def world(tmp_path: Path, scratch_factory: ScratchFactory, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr("davit_services.restore.apply.time.sleep", lambda _seconds: None)
    return World.create(tmp_path, scratch_factory)


def counts(**outcomes: int) -> dict[str, int]:
    return {"restored": 0, "retained": 0, "replaced": 0, "updated": 0, "failed": 0, **outcomes}


def modifiers_config_map(text: str, namespace: str = NAMESPACE, name: str = "mods") -> RawObject:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"rules.yaml": text.replace("NS", NAMESPACE)}}  # fmt: skip


def events(world: World, reason: str) -> list[str]:
    return [e.message for e in world.cluster.events if e.reason == reason]


# --- replacePolicy: Update -------------------------------------------------------------------------


def test_update_patches_what_exists_in_place_and_creates_the_rest(world: World) -> None:
    world.cluster.put(live_configmap("a"))
    before = world.objects()["a"]
    world.write_backup([configmap("a", key="from-backup", more="x"), configmap("b")])
    world.deliver(world.new_restore(replacePolicy="Update"))
    world.run()

    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful"), status
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, updated=1)}
    after = world.objects()
    assert after["a"]["metadata"]["uid"] == before["metadata"]["uid"], "updated in place, not recreated"
    assert after["a"]["data"] == {"key": "from-backup", "more": "x"}
    assert (
        after["a"]["metadata"]["annotations"][fields.RESTORE_UID_ANNOTATION]
        == world.restore()["metadata"]["uid"]
    )
    assert sorted(after) == ["a", "b"]


def test_an_update_the_api_server_refuses_fails_that_object_with_the_reason(world: World) -> None:
    world.cluster.put(live_configmap("a"))
    world.write_backup([configmap("a", key="from-backup"), configmap("b")])
    world.cluster.fail_next("patch_object", api_error(422, message="data: Forbidden: field is immutable"))
    world.deliver(world.new_restore(replacePolicy="Update"))
    world.run()

    status = world.status()
    assert status["status"] == "PartialSuccess", status
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, failed=1)}
    assert "ConfigMap app/a (v1): not updated: data: Forbidden: field is immutable" in status["reason"]
    assert world.objects()["a"]["data"] == {"key": "live"}


def test_a_dry_run_with_update_counts_what_it_would_update(world: World) -> None:
    world.cluster.put(live_configmap("a"))
    world.write_backup([configmap("a", key="from-backup"), configmap("b")])
    world.deliver(world.new_restore(replacePolicy="Update", dryRun=True))
    status = world.status()
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, updated=1)}
    assert world.objects()["a"]["data"] == {"key": "live"} and "b" not in world.objects()


def test_an_updated_claim_keeps_the_data_in_its_volume(world: World) -> None:
    world.cluster.put(fakes.claim("data", NAMESPACE, volume="pv-live", uid="live-claim"))
    backed_up = fakes.claim("data", NAMESPACE, volume="pv-old", labels={"tier": "db"})
    volume = {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "mode": "filesystem",
              "status": "Successful", "tree": "tree-data", "totalSize": 10}  # fmt: skip
    world.write_backup([backed_up], volumes=[volume])
    world.deliver(world.new_restore(replacePolicy="Update"))
    world.run()
    status = world.status()
    assert status["resourcesByKind"]["PersistentVolumeClaim"] == counts(updated=1)
    claim = world.objects("PersistentVolumeClaim")["data"]
    assert claim["metadata"]["uid"] == "live-claim" and claim["metadata"]["labels"]["tier"] == "db"
    assert claim["spec"]["volumeName"] == "pv-live", "the binding the restore leaves out stays"
    entry = status["volumes"][0]
    assert entry["status"] == "Successful"
    kept = "the claim already existed and was updated in place: its data was left as it was"
    assert entry["reason"] == kept
    assert not [q for q, _m in world.dispatch.sent if q.startswith("davit.node.")], "no node agent writes it"


def test_an_updated_service_keeps_its_node_ports() -> None:
    desired = {"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}}
    live = {"spec": {"type": "NodePort", "ports": [
        {"port": 80, "protocol": "TCP", "nodePort": 30080},
        {"port": 53, "protocol": "TCP", "nodePort": 30053},
    ]}}  # fmt: skip
    fields.carry_node_ports(desired, live)
    assert desired["spec"]["ports"] == [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]


# --- resource modifiers ----------------------------------------------------------------------------


def test_modifiers_patch_the_objects_they_select_before_they_are_created(world: World) -> None:
    world.cluster.put(modifiers_config_map(MODIFIERS))
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore(resourceModifier={"kind": "ConfigMap", "name": "mods"}))
    world.run()
    assert world.status()["status"] == "Successful"
    created = world.objects()
    assert (
        created["a"]["data"] == {"key": "patched"} and created["a"]["metadata"]["labels"]["patched"] == "yes"
    )
    assert created["b"]["data"] == {"key": "b"}


def test_an_object_a_patch_fails_on_is_counted_failed_with_an_event(world: World) -> None:
    failing = MODIFIERS.replace("/data/key, value: patched", "/data/missing, value: patched").replace(
        "replace", "remove"
    )
    world.cluster.put(modifiers_config_map(failing))
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore(resourceModifier={"kind": "ConfigMap", "name": "mods"}))
    world.run()
    status = world.status()
    assert status["status"] == "PartialSuccess", status
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, failed=1)}
    assert "resource modifier rule 0: its patch could not be applied to ConfigMap app/a" in status["reason"]
    assert sorted(world.objects()) == ["b", "mods"]
    assert [m for m in events(world, restore.MODIFIER_FAILED) if "ConfigMap app/a" in m]


@pytest.mark.parametrize(
    ("config_map", "says"),
    [
        (None, "spec.resourceModifier: ConfigMap app/mods not found"),
        (modifiers_config_map("version: v1\nresourceModifierRules: ["), "not valid YAML"),
        (modifiers_config_map(MODIFIERS.replace("replace", "replace-all")), "'replace-all' is not one of"),
    ],
)
def test_unusable_modifiers_fail_the_restore_before_it_writes(
    world: World, config_map: RawObject | None, says: str
) -> None:
    if config_map is not None:
        world.cluster.put(config_map)
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore(resourceModifier={"kind": "ConfigMap", "name": "mods"}))
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert says in status["reason"] and status["reason"].startswith("spec.resourceModifier: ")
    assert events(world, restore.MODIFIERS_INVALID)
    assert sorted(world.objects()) == ([] if config_map is None else ["mods"])


def test_a_tenant_patch_moving_an_object_to_another_namespace_is_refused_and_nothing_written(
    world: World,
) -> None:
    escape = """
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps, resourceNameRegex: "^a$"}
  patches: [{operation: replace, path: /metadata/namespace, value: victim}]
"""
    world.cluster.put(modifiers_config_map(escape))
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore(resourceModifier={"kind": "ConfigMap", "name": "mods"}))
    world.run()
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith(RESTORE_REFUSED) and "victim" in status["reason"], status["reason"]
    assert world.objects(namespace=None).keys() == {"mods"}, "something was written"


# --- preserveNodePorts -----------------------------------------------------------------------------


def node_port_service() -> RawObject:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.9",
                     "ports": [{"port": 80, "nodePort": 30080}]}}  # fmt: skip


@pytest.mark.parametrize(("preserve", "node_port"), [(None, None), (False, None), (True, 30080)])
def test_node_ports_are_kept_only_on_request(
    world: World, preserve: bool | None, node_port: int | None
) -> None:
    world.write_backup([node_port_service()])
    spec: dict[str, Any] = {} if preserve is None else {"preserveNodePorts": preserve}
    world.deliver(world.new_restore(**spec))
    world.run()
    service = world.objects("Service")["web"]
    assert service["spec"]["ports"][0].get("nodePort") == node_port
    assert "clusterIP" not in service["spec"], "the cluster IP is allocated anew either way"


# --- backupNamespace -------------------------------------------------------------------------------


def restore_in(namespace: str, **spec: Any) -> RawObject:
    return fakes.restore(RESTORE, namespace, backupName="b1", backupLocation=LOCATION, **spec)


def test_only_the_admin_namespace_may_name_a_backup_in_another_namespace() -> None:
    lookup = FakeCluster()
    lookup.put(
        fakes.location(LOCATION, "shop"),
        fakes.backup("b1", "shop", stage="Final", status="Successful", backupLocation=LOCATION,
                     namespaces=["shop"]),
    )  # fmt: skip
    assert validate_restore(restore_in(ADMIN, backupNamespace="shop"), lookup, ADMIN).accepted
    refused = validate_restore(restore_in("rival", backupNamespace="shop"), lookup, ADMIN)
    assert refused.problems == (
        "spec.backupNamespace: a restore in namespace rival may only restore its own namespace's backups; "
        f"only a restore in the admin namespace {ADMIN} may name a backup in shop",
    )
    # Naming its own namespace is what it does anyway.
    own = validate_restore(restore_in("shop", backupNamespace="shop"), lookup, ADMIN)
    assert own.accepted
    # The backup is looked up where spec.backupNamespace says, not in the admin namespace.
    missing = validate_restore(restore_in(ADMIN, backupNamespace="other"), lookup, ADMIN)
    assert "ApplicationBackup other/b1 not found" in " ".join(missing.problems)


def test_a_restore_of_another_namespaces_backup_is_held_to_where_that_namespace_goes() -> None:
    guard = restore_guard(ADMIN, ADMIN, {"backupNamespace": "shop", "namespaceMapping": {"shop": "shop2"}})
    assert not guard.admin and guard.tenant_targets == frozenset({"shop2"})
    assert guard.refusal(configmap("a", namespace="shop2"), True) is None
    assert "outside shop2" in str(guard.refusal(configmap("a", namespace=ADMIN), True))
    binding = {"kind": "ClusterRoleBinding", "metadata": {"name": "escalate"}}
    assert "cluster-scoped" in str(guard.refusal(binding, False))
    # The spec only narrows: outside the admin namespace it changes nothing, and the admin's own backups
    # keep the admin's reach.
    assert restore_guard("shop", ADMIN, {"backupNamespace": "other"}) == RestoreGuard("shop", ADMIN)
    assert restore_guard(ADMIN, ADMIN, {"backupNamespace": ADMIN}).admin


def test_an_admin_restore_of_a_tenant_backup_writes_into_its_namespace(world: World) -> None:
    world.cluster.put(fakes.namespace(NAMESPACE))
    world.write_backup([configmap("a"), {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                         "metadata": {"name": "forged"}, "rules": []}])  # fmt: skip
    world.deliver(world.new_restore(namespace=ADMIN, backupNamespace=NAMESPACE))
    world.run()
    status = world.status(ADMIN)
    assert status["status"] == "Successful", status
    assert sorted(world.objects()) == ["a"]
    assert world.cluster.of_kind("ClusterRole") == [], "a tenant's bytes create nothing cluster-scoped"
    # Its log is kept in the location it read from: the tenant's.
    uid = world.restore(ADMIN)["metadata"]["uid"]
    log = world.stores.repository(NAMESPACE, LOCATION).get(restore_log(ADMIN, RESTORE, uid)).decode()
    assert "restore.finished" in log


def test_an_admin_restore_of_a_tenant_backup_reads_its_modifiers_from_the_admin_namespace(
    world: World,
) -> None:
    world.cluster.put(fakes.namespace(NAMESPACE), modifiers_config_map(MODIFIERS, namespace=ADMIN))
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore(namespace=ADMIN, backupNamespace=NAMESPACE,
                                    resourceModifier={"kind": "ConfigMap", "name": "mods"}))  # fmt: skip
    world.run()
    assert world.status(ADMIN)["status"] == "Successful", world.status(ADMIN)
    assert world.objects()["a"]["data"] == {"key": "patched"}


def test_an_admin_restore_of_a_forged_tenant_backup_writes_nothing(world: World) -> None:
    world.cluster.put(fakes.namespace(NAMESPACE))
    world.write_backup([configmap("a"), configmap("planted", namespace=ADMIN)])
    world.deliver(world.new_restore(namespace=ADMIN, backupNamespace=NAMESPACE))
    status = world.status(ADMIN)
    assert status["status"] == "Failed" and status["reason"].startswith(RESTORE_REFUSED), status
    assert world.objects(namespace=None) == {}


def test_an_admin_restore_of_a_tenant_backup_needs_its_target_namespace(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore(namespace=ADMIN, backupNamespace=NAMESPACE,
                                    namespaceMapping={NAMESPACE: "fresh"}))  # fmt: skip
    status = world.status(ADMIN)
    assert status["status"] == "Failed" and "namespace fresh does not exist" in status["reason"], status
    assert world.objects(namespace=None) == {}


def test_the_node_agent_writes_volumes_only_where_another_namespaces_backup_goes() -> None:
    backup = fakes.backup("b1", "shop", namespaces=["shop"])
    restore = restore_in(ADMIN, backupNamespace="shop", namespaceMapping={"shop": "shop2", "other": "x"})
    assert node_dirs.restore_namespaces(restore, backup, ADMIN) == {"shop2"}
    assert node_dirs.restore_namespaces(restore_in("shop", backupNamespace="shop"), backup, ADMIN) == {"shop"}
    # The admin's restore of its own backups keeps its reach: every mapped namespace.
    assert node_dirs.restore_namespaces(restore_in(ADMIN, namespaceMapping={"shop": "x"}), backup, ADMIN) == {
        "x"
    }
