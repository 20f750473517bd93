"""A tenant's attacks on the node agent, which runs as root on every node, on the real stack.

* Someone who can write Redis rewrites a tenant backup's volume plans so that the node agent would read
  another namespace's volume (by its path, or by that namespace's pod directory) or /etc into the
  tenant's bucket: every such volume ends Failed with the reason, and the bucket holds no volume data.
* A tenant's volume holds a symlink where the restore's marker goes (``.davit-restore`` → a directory
  outside) and setuid/setgid root files; it is backed up and restored by the tenant: the marker is not
  written through the link (nothing outside is created or chowned, the volume ends Failed with the
  reason) and the other volume's files come back without their setuid/setgid bits.
* The same with trees the tenant crafts in its own bucket (a mode that fits no filesystem call ends its
  volume Failed, the node agent keeps running), while someone who can write Redis redirects the
  restore of another volume into another namespace's volume, and hands a third a tree its backup does
  not record for it: both refused, the other volume untouched, the third left empty.

Everything is checked by listing the filesystem and the store, not by trusting Davit's status alone.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from davit.api.types import LocationSpec
from davit.format.layout import BackupRef
from davit.operations.scratch import OperationState
from davit.repo import Entry, RepoWriter, load_tree
from davit.repo.tree_format import DIR, FILE, SYMLINK, TreeBuilder, iter_entries
from davit.restore.init_container import MARKER_DIR
from davit.storage import factory
from davit.volumes.restore_stage import TARGETS
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import SERVICES, Services
from tests.integration.test_backup_resources import apply, location_manifest, repository_for
from tests.integration.test_backup_volumes import STATEFULSET
from tests.integration.test_restore import volume_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: The owner the tenant gives its volumes: a node agent that followed a link would hand what it
#: touched outside to this user.
TENANT_UID = 4321


def claim(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"storageClassName": "davit-dev", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    }  # fmt: skip


def pod(namespace: str, name: str, node: str, claims: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "app", "image": "busybox",
                            "volumeMounts": [{"name": c, "mountPath": f"/data/{c}"} for c in claims]}],
            "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims],
        },
    }  # fmt: skip


def get(stack: StackEnv, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def running(stack: StackEnv, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        found = get(stack, namespace, "pod", name)
        return found if found["status"].get("phase") == "Running" else None

    return wait_for(f"pod {namespace}/{name} to run", ready, timeout=60)


def final(stack: StackEnv, services: Services, namespace: str, kind: str, name: str,
          timeout: float = 180) -> dict[str, Any]:  # fmt: skip
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = get(stack, namespace, kind, name).get("status") or {}
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"{kind} {namespace}/{name} to finish", done, timeout=timeout)
    except AssertionError:
        print(services.logs())
        raise


def store_keys(location: dict[str, Any], prefix: str) -> list[str]:
    """Every key under ``prefix`` in the tenant's bucket, listed with the tenant's own credentials."""
    spec = LocationSpec.model_validate(location["location"])
    store = factory.open_store(factory.resolve_credentials(spec, None))
    try:
        return sorted(info.key for info in store.list(prefix))
    finally:
        store.close()


def tree_state(root: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """Every entry below (and including) ``root``: type and mode, owner, group, size, content."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, content)
    return out


@pytest.fixture
def services(stack: StackEnv, tmp_path: Path) -> Iterator[Services]:
    """The services as real processes, the node agents started by the test (after it has tampered)."""
    redis.Redis.from_url(stack.redis_url).flushdb()
    running_services = Services(stack, tmp_path / "logs")
    running_services.log_dir.mkdir()
    yield running_services
    running_services.stop_all()
    stack.kubectl("-n", "kube-system", "delete", "lease", running_services.lease, "--ignore-not-found")


def start_workers(stack: StackEnv, services: Services) -> None:
    for service in SERVICES:
        services.start(service)


def start_node_agents(stack: StackEnv, services: Services) -> None:
    for node in stack.env["DEV_NODES"].split(","):
        services.start("uploader", name=f"uploader-{node}", DAVIT_NODE_NAME=node,
                       DAVIT_KUBELET_ROOT=stack.env["KUBELET_ROOT"])  # fmt: skip


@pytest.fixture
def victim(stack: StackEnv, namespace: str) -> Iterator[str]:
    name = f"{namespace}-victim"
    stack.kubectl("create", "namespace", name)
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_tampered_redis_plan_cannot_point_the_node_agent_at_another_directory(
    stack: StackEnv, namespace: str, victim: str, services: Services, tmp_path: Path
) -> None:
    node = stack.env["DEV_NODES"].split(",")[0]
    # Another tenant's database, on the same node, with data the attacker wants.
    apply(stack, claim(victim, "secret-data"))
    apply(stack, pod(victim, "db", node, ["secret-data"]))
    victim_dir = volume_of(stack, victim, "secret-data")
    (victim_dir / "secret.bin").write_bytes(os.urandom(2 * MiB))
    victim_pod = running(stack, victim, "db")
    victim_pv = get(stack, victim, "pvc", "secret-data")["spec"]["volumeName"]
    victim_before = tree_state(victim_dir)

    # The tenant's own application with three volumes, and its own bucket.
    claims = ["by-path", "by-pod", "etc"]
    for name in claims:
        apply(stack, claim(namespace, name))
    apply(stack, pod(namespace, "app", node, claims))
    for name in claims:
        (volume_of(stack, namespace, name) / "mine.txt").write_text("the tenant's own data\n")
    running(stack, namespace, "app")
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)

    # The workers plan the volumes; the node agents are not running yet, so the plans wait in Redis.
    start_workers(stack, services)
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": "grab", "namespace": namespace},
                  "spec": {"backupLocation": "loc", "namespaces": [namespace],
                           "volumeMode": "filesystem"}})  # fmt: skip
    uid = get(stack, namespace, "applicationbackup", "grab")["metadata"]["uid"]
    r = redis.Redis.from_url(stack.redis_url)
    key = OperationState(r, uid).key("volumes")  # where davit.volumes.backup_stage keeps the plans
    parts = [f"{namespace}/{name}" for name in claims]

    def planned() -> dict[bytes, bytes] | None:
        raw: dict[bytes, bytes] = r.hgetall(key)
        return raw if all(p.encode() in raw for p in parts) else None

    plans = wait_for("the volume plans in Redis", planned, timeout=90)
    crafted: dict[str | bytes, bytes | float | int | str] = {}
    for part in parts:
        plan = json.loads(plans[part.encode()])
        assert plan["mode"] == "filesystem", plan
        if part.endswith("/by-path"):  # the other namespace's volume, by its path on the node
            plan.update(source="local", path=str(victim_dir))
        elif part.endswith("/by-pod"):  # ... by the other namespace's pod directory
            plan.update(source="pod", pod_uid=victim_pod["metadata"]["uid"],
                        plugin_dir="kubernetes.io~local-volume", volume=victim_pv)  # fmt: skip
        else:  # the node's own configuration
            plan.update(source="local", path="/etc")
        crafted[part] = json.dumps(plan)
    r.hset(key, mapping=crafted)

    start_node_agents(stack, services)
    status = final(stack, services, namespace, "applicationbackup", "grab")
    volumes = {v["persistentVolumeClaim"]: v for v in status.get("volumes") or []}
    assert sorted(volumes) == sorted(claims), status
    expected = {
        "by-path": f"has the path {volume_of(stack, namespace, 'by-path')}",
        "by-pod": f"the volume plan names volume '{victim_pv}', the claim is bound to "
        f"{get(stack, namespace, 'pvc', 'by-pod')['spec']['volumeName']}",
        "etc": "names the directory '/etc'",
    }
    for name, reason in expected.items():
        assert volumes[name]["status"] == "Failed", volumes[name]
        assert "refused the volume's directory" in volumes[name]["reason"], volumes[name]
        assert reason in volumes[name]["reason"], volumes[name]
    assert status["status"] in ("Failed", "PartialSuccess"), status

    # Not one chunk, tree or pointer reached the tenant's bucket; the victim's volume is as it was.
    assert store_keys(location, "repo/packs/") == []
    assert store_keys(location, "repo/trees/") == []
    assert store_keys(location, "repo/latest/") == []
    assert tree_state(victim_dir) == victim_before


def test_a_crafted_volume_cannot_make_the_restore_write_outside_or_keep_setuid(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"  # stands in for /etc: a root-owned directory on the node
    outside.mkdir()
    (outside / "victim").write_text("original\n")
    outside_before = tree_state(outside)

    apply(stack, STATEFULSET.replace("NS", namespace))  # db-0 and db-1, one per dev node
    planted, setuid = volume_of(stack, namespace, "data-db-0"), volume_of(stack, namespace, "data-db-1")
    # What a tenant's container running as root can leave in its own volumes.
    (planted / "data.txt").write_text("ordinary data\n")
    os.symlink(outside, planted / MARKER_DIR)
    tools = {"suid-tool": 0o4755, "sgid-tool": 0o2755, "both-tool": 0o6750, "plain": 0o644}
    for name, mode in tools.items():
        (setuid / name).write_bytes(b"#!/bin/sh\necho " + name.encode() + b"\n")
        os.chown(setuid / name, 0, 0)
        os.chmod(setuid / name, mode)
    for volume in (planted, setuid):
        os.chown(volume, TENANT_UID, TENANT_UID)
    for i in range(2):
        running(stack, namespace, f"db-{i}")
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)

    start_workers(stack, services)
    start_node_agents(stack, services)
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": "crafted", "namespace": namespace},
                  "spec": {"backupLocation": "loc", "namespaces": [namespace]}})  # fmt: skip
    status = final(stack, services, namespace, "applicationbackup", "crafted")
    assert status["status"] == "Successful", status

    # The tenant removes its application and restores it from its backup, in its own namespace.
    stack.kubectl("-n", namespace, "delete", "statefulset", "db", "--wait=false")
    stack.kubectl("-n", namespace, "delete", "pvc", "data-db-0", "data-db-1", "--wait=false")
    wait_for(
        "the claims to be gone",
        lambda: not json.loads(stack.kubectl("-n", namespace, "get", "pvc", "-o", "json").stdout)["items"],
        timeout=120,
    )
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "back", "namespace": namespace},
                  "spec": {"backupName": "crafted", "backupLocation": "loc"}})  # fmt: skip
    status = final(stack, services, namespace, "applicationrestore", "back", timeout=240)
    restore_uid = get(stack, namespace, "applicationrestore", "back")["metadata"]["uid"]
    volumes = {v["persistentVolumeClaim"]: v for v in status.get("volumes") or []}
    assert volumes["data-db-0"]["status"] == "Failed", status
    assert f"refusing '{MARKER_DIR}'" in volumes["data-db-0"]["reason"], volumes["data-db-0"]
    assert volumes["data-db-1"]["status"] == "Successful", status
    assert status["status"] == "PartialSuccess", status

    # Nothing outside was created, written or chowned; no marker exists anywhere outside a volume.
    assert tree_state(outside) == outside_before
    assert [p for p in tmp_path.rglob(restore_uid)] == []

    # The setuid/setgid files came back, their content and owner intact, without the bits.
    restored = volume_of(stack, namespace, "data-db-1")
    wait_for("db-1 to run (the marker released it)", lambda: not (restored / MARKER_DIR).exists(), timeout=60)
    for name, mode in tools.items():
        st = os.lstat(restored / name)
        assert stat.S_IMODE(st.st_mode) == mode & ~(stat.S_ISUID | stat.S_ISGID), (name, oct(st.st_mode))
        assert (st.st_uid, st.st_gid) == (0, 0), name
        assert (restored / name).read_bytes() == b"#!/bin/sh\necho " + name.encode() + b"\n"
    assert os.stat(restored).st_uid == TENANT_UID


def crafted_tree(
    location: dict[str, Any], tmp_path: Path, entries: list[tuple[bytes, str, int, int, bytes | None]]
) -> str:
    """A tree written into the tenant's bucket with the tenant's credentials, by Davit's own repository
    writer (docs/format.md): ``(path, kind, mode, uid, symlink target)`` under a root the tenant owns;
    each file holds a short script."""
    repository = repository_for(location)
    script = tmp_path / "script"
    script.write_bytes(SCRIPT)
    with RepoWriter(repository.store, repository.sealer) as writer:
        stored = writer.store_file(script)
    builder = TreeBuilder(repository.store, repository.sealer)
    builder.add(Entry(b"", DIR, 0o755, TENANT_UID, TENANT_UID, 10**18, 0, 1))
    for path, kind, mode, uid, target in entries:
        extents = stored.extents if kind == FILE else ()
        size = len(SCRIPT) if kind == FILE else 0
        builder.add(Entry(path, kind, mode, uid, uid, 10**18, size, 1, target, extents))
    return builder.finish().id


SCRIPT = b"#!/bin/sh\nid\n"


def test_crafted_trees_and_a_tampered_restore_plan_write_nothing_outside_the_tenants_volumes(
    stack: StackEnv, namespace: str, victim: str, services: Services, tmp_path: Path
) -> None:
    """The tenant rewrites its own backup in its own bucket so that its volumes' trees are crafted (a
    symlink where the marker goes, setuid root files, a mode no filesystem call takes), and someone who
    can write Redis redirects the restore of a fourth volume into another namespace's volume."""
    node = stack.env["DEV_NODES"].split(",")[0]
    outside = tmp_path / "outside"  # stands in for /etc: a root-owned directory on the node
    outside.mkdir()
    (outside / "victim").write_text("original\n")
    outside_before = tree_state(outside)
    apply(stack, claim(victim, "secret-data"))
    apply(stack, pod(victim, "db", node, ["secret-data"]))
    victim_dir = volume_of(stack, victim, "secret-data")
    (victim_dir / "secret.txt").write_text("the other tenant's data\n")
    running(stack, victim, "db")
    victim_before = tree_state(victim_dir)

    claims = ["marker", "setuid", "mode", "redirect", "swapped"]
    for name in claims:
        apply(stack, claim(namespace, name))
    apply(stack, pod(namespace, "app", node, claims))
    for name in claims:
        (volume_of(stack, namespace, name) / "mine.txt").write_text("the tenant's own data\n")
    running(stack, namespace, "app")
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    start_workers(stack, services)
    start_node_agents(stack, services)
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": "base", "namespace": namespace},
                  "spec": {"backupLocation": "loc", "namespaces": [namespace]}})  # fmt: skip
    assert final(stack, services, namespace, "applicationbackup", "base")["status"] == "Successful"

    # The tenant's own bucket, rewritten with its own credentials.
    trees = {
        "marker": crafted_tree(
            location, tmp_path, [(MARKER_DIR.encode(), SYMLINK, 0o777, 0, os.fsencode(outside))]
        ),
        "setuid": crafted_tree(
            location,
            tmp_path,
            [
                (b"both", FILE, 0o6755, 0, None),
                (b"sgid", FILE, 0o2755, 0, None),
                (b"suid", FILE, 0o4755, 0, None),
            ],
        ),
        "mode": crafted_tree(location, tmp_path, [(b"odd", FILE, 2**40, 0, None)]),
    }
    repository = repository_for(location)
    backup_uid = get(stack, namespace, "applicationbackup", "base")["metadata"]["uid"]
    ref = BackupRef(namespace, "base", backup_uid)
    manifest = repository.read_manifest(ref)
    for volume in manifest["volumes"]:
        if volume["persistentVolumeClaim"] in trees:
            volume["tree"] = trees[volume["persistentVolumeClaim"]]
    repository.write_manifest(ref, manifest)

    # The tenant removes its application; the node agents are stopped so that the restore's plans wait.
    stack.kubectl("-n", namespace, "delete", "pod", "app", "--wait=false")
    stack.kubectl("-n", namespace, "delete", "pvc", *claims, "--wait=false")
    wait_for(
        "the claims to be gone",
        lambda: not json.loads(stack.kubectl("-n", namespace, "get", "pvc", "-o", "json").stdout)["items"],
        timeout=120,
    )
    for agent in [name for name in services.procs if name.startswith("uploader-")]:
        services.kill(agent)
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "back", "namespace": namespace},
                  "spec": {"backupName": "base", "backupLocation": "loc"}})  # fmt: skip
    restore_uid = get(stack, namespace, "applicationrestore", "back")["metadata"]["uid"]
    r = redis.Redis.from_url(stack.redis_url)
    key = OperationState(r, restore_uid).key(TARGETS)  # where the restore keeps each volume's target

    def handed_out() -> dict[str, dict[str, Any]] | None:
        found = {c: json.loads(r.hget(key, f"{namespace}/{c}") or "{}") for c in ("redirect", "swapped")}
        return found if all("plan" in t for t in found.values()) else None

    targets = wait_for("the volumes' targets in Redis", handed_out, timeout=120)
    # One volume's data goes into the other namespace's volume; another gets a tree the backup does not
    # record for it (here the tenant's crafted setuid tree, in a shared location another tenant's).
    targets["redirect"]["plan"].update(source="local", path=str(victim_dir))
    targets["swapped"]["tree"] = trees["setuid"]
    r.hset(key, mapping={f"{namespace}/{c}": json.dumps(t) for c, t in targets.items()})
    start_node_agents(stack, services)

    status = final(stack, services, namespace, "applicationrestore", "back", timeout=240)
    volumes = {v["persistentVolumeClaim"]: v for v in status.get("volumes") or []}
    assert volumes["marker"]["status"] == "Failed", volumes["marker"]
    assert f"refusing '{MARKER_DIR}'" in volumes["marker"]["reason"], volumes["marker"]
    assert volumes["mode"]["status"] == "Failed", volumes["mode"]
    assert f"refusing 'odd': its mode {2**40} is out of range" in volumes["mode"]["reason"], volumes["mode"]
    assert volumes["redirect"]["status"] == "Failed", volumes["redirect"]
    assert "refused the volume's directory" in volumes["redirect"]["reason"], volumes["redirect"]
    assert f"names the directory '{victim_dir}'" in volumes["redirect"]["reason"], volumes["redirect"]
    assert volumes["swapped"]["status"] == "Failed", volumes["swapped"]
    assert (
        f"refused the volume's data: the tree '{trees['setuid']}' handed out for {namespace}/swapped is not"
        in (volumes["swapped"]["reason"])
    ), volumes["swapped"]
    assert volumes["setuid"]["status"] == "Successful", volumes["setuid"]
    assert status["status"] == "PartialSuccess", status
    # The node agents handled every failure as a volume's, and are still running.
    assert all(p.poll() is None for name, p in services.procs.items() if name.startswith("uploader-"))

    # Listed on the node: nothing outside created or chowned, the other namespace's volume untouched,
    # no marker of this restore anywhere but in the tenant's volumes.
    assert tree_state(outside) == outside_before
    assert tree_state(victim_dir) == victim_before
    assert list(tmp_path.rglob(restore_uid)) == []
    assert os.listdir(volume_of(stack, namespace, "swapped")) == []
    restored = volume_of(stack, namespace, "setuid")
    for name, mode in (("both", 0o755), ("sgid", 0o755), ("suid", 0o755)):
        st = os.lstat(restored / name)
        assert stat.S_IMODE(st.st_mode) == mode, (name, oct(st.st_mode))
        assert (st.st_uid, (restored / name).read_bytes()) == (0, SCRIPT), name


def test_a_csi_volume_is_read_from_the_directory_its_pod_has_on_the_node(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    """The other way a directory is derived: a claim of a CSI volume (no path of its own) is read from
    ``<kubeletRoot>/pods/<podUID>/volumes/kubernetes.io~csi/<pv>/mount`` of the tenant's pod that mounts
    it on the node, found through the API."""
    node = stack.env["DEV_NODES"].split(",")[0]
    pv_name = f"{namespace}-csi"
    stack.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                              "name": "data"},
                 "csi": {"driver": "dev.csi.davit.dev", "volumeHandle": f"vol-{pv_name}"}},
    }))  # fmt: skip
    try:
        body = claim(namespace, "data")
        body["spec"].update(storageClassName="", volumeName=pv_name)
        apply(stack, body)
        wait_for(
            "the claim to bind to the CSI volume",
            lambda: get(stack, namespace, "pvc", "data").get("status", {}).get("phase") == "Bound",
            timeout=60,
        )
        apply(stack, pod(namespace, "app", node, ["data"]))
        uid = running(stack, namespace, "app")["metadata"]["uid"]
        mount = Path(stack.env["KUBELET_ROOT"], "pods", uid, "volumes", "kubernetes.io~csi", pv_name, "mount")
        (mount / "notes.txt").write_text("kept in a CSI volume\n")
        location = location_manifest(stack, "s3", namespace, tmp_path)
        apply(stack, location)
        start_workers(stack, services)
        start_node_agents(stack, services)
        apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                      "metadata": {"name": "csi", "namespace": namespace},
                      "spec": {"backupLocation": "loc", "namespaces": [namespace],
                               "volumeMode": "filesystem"}})  # fmt: skip
        status = final(stack, services, namespace, "applicationbackup", "csi")
        assert status["status"] == "Successful", status
        [volume] = status["volumes"]
        assert (volume["mode"], volume["status"]) == ("filesystem", "Successful"), volume

        repository = repository_for(location)
        tree_id = repository.get(f"repo/latest/{namespace}/data").decode()
        tree = load_tree(repository.store, repository.sealer, tree_id)
        names = {e.path for e in iter_entries(repository.store, repository.sealer, tree)}
        assert names == {b"", b"notes.txt"}, names
    finally:
        stack.kubectl("delete", "pv", pv_name, "--wait=false", "--ignore-not-found", check=False)
