"""Redis losing its data, and Redis restarting with it, in the middle of backups and restores on the
real stack. The operation is held at a stage boundary by not running the service of the next stage yet
(the resource writer, the node agents), so the fault lands exactly there without waiting on a clock:

* flushed with a backup of resources only at Applications: the state is planned again, the backup ends
  Successful and the manifest read from the location lists every object;
* flushed with a backup at Volumes: the volumes' results are gone, the backup ends Failed ``StateLost``
  and leaves no manifest;
* flushed with a restore at Volumes: the volumes are handed out again from the status and the manifest,
  the restore ends Successful and the restored files are identical;
* Redis stopped and started again (its append-only file) with a backup at Applications: the volumes'
  results survive and the backup completes with their trees in its manifest.

The faults go through the stack's helpers (``Stack.flush_redis``, ``Stack.restart_redis``), which the
chaos suite uses too."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.format.layout import BackupRef
from devstack.stack import Stack
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration import test_restore
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import (
    apply,
    backup_manifest,
    backup_status,
    location_manifest,
    repository_for,
    wait_final,
)
from tests.integration.test_backup_volumes import assert_same_tree, backup_uid, deploy

# Each test deploys, backs up (and restores) an application with volumes: minutes on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

#: How long an operation may take to end after the fault (the watcher's stall detection is 5 s here).
BOUND_SECONDS = 120.0
CONFIGMAPS = 30


class Partial(Services):
    """The services started one by one, so that a stage's owner can be left out until the fault."""

    def node_agents(self, **env: str) -> None:
        for node in self.stack.env["DEV_NODES"].split(","):
            self.start("uploader", name=f"uploader-{node}", DAVIT_NODE_NAME=node,
                       DAVIT_KUBELET_ROOT=self.stack.env["KUBELET_ROOT"], **env)  # fmt: skip

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def partial(stack: StackEnv, tmp_path: Path) -> Iterator[Partial]:
    Stack(stack.state_dir).flush_redis()  # nothing of an earlier test's queues
    running = Partial(stack, tmp_path / "logs")
    running.log_dir.mkdir()
    yield running
    running.stop_all()
    stack.kubectl("-n", "kube-system", "delete", "lease", running.lease, "--ignore-not-found")


def dev_stack(stack: StackEnv) -> Stack:
    return Stack(stack.state_dir)


def events_of(stack: StackEnv, namespace: str, name: str) -> list[str]:
    out = stack.kubectl("-n", namespace, "get", "events", "--field-selector",
                        f"involvedObject.name={name}", "-o", "json").stdout  # fmt: skip
    return [e["reason"] for e in json.loads(out)["items"]]


def wait_status(stack: StackEnv, namespace: str, name: str, what: str, check: Any) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        status = backup_status(stack, namespace, name)
        return status if check(status) else None

    return wait_for(what, seen, timeout=120)


def fill_small(root: Path, seed: int) -> None:
    """A little of everything a volume holds (files of random bytes, a directory, a symlink, an empty
    directory, a mode): enough to compare byte for byte, small enough to keep the tests quick."""
    rng = random.Random(seed)  # noqa: S311 - test data, reproducible on purpose
    (root / "dir").mkdir()
    for i in range(40):
        (root / ("dir" if i % 2 else ".") / f"file-{i}.bin").write_bytes(
            rng.randbytes(rng.randint(1, 96 * 1024))
        )
    (root / "link").symlink_to("dir/file-1.bin")
    (root / "empty").mkdir()
    os.chmod(root / "file-0.bin", 0o640)


def configmaps(namespace: str) -> str:
    return "\n---\n".join(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: {namespace}}}\n"
        f"data: {{i: '{i}'}}"
        for i in range(CONFIGMAPS)
    )


def test_a_backup_flushed_at_applications_is_planned_again_and_stores_everything(
    stack: StackEnv, namespace: str, partial: Partial, tmp_path: Path
) -> None:
    apply(stack, configmaps(namespace))
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    partial.start("watcher")
    partial.start("backup")  # not the resource writer: the backup waits at Applications
    apply(stack, backup_manifest(namespace, "flushed"))
    wait_status(stack, namespace, "flushed", "the backup to wait at Applications",
                lambda s: (s.get("stage"), s.get("status")) == ("Applications", "Pending"))  # fmt: skip

    dev_stack(stack).flush_redis()
    partial.start("resources")

    status = wait_final(stack, namespace, "flushed", partial, timeout=BOUND_SECONDS)
    assert status["status"] == "Successful", status
    repository = repository_for(location)
    manifest = repository.read_manifest(
        BackupRef(namespace, "flushed", backup_uid(stack, namespace, "flushed"))
    )
    names = sorted(r["name"] for r in manifest["resources"] if r["kind"] == "ConfigMap")
    assert [n for n in names if n.startswith("cm-")] == sorted(f"cm-{i}" for i in range(CONFIGMAPS))
    assert len(names) == len(set(names)), "an object was stored twice"
    assert manifest["summary"]["resourceCount"] == status["resourceCount"] == len(manifest["resources"])
    assert "StateRebuilt" in events_of(stack, namespace, "flushed")


def test_a_backup_flushed_at_volumes_fails_state_lost_and_leaves_no_manifest(
    stack: StackEnv, namespace: str, partial: Partial, tmp_path: Path
) -> None:
    volumes = deploy(stack, namespace)
    for seed, path in enumerate(volumes.values()):
        fill_small(path, seed)
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    for service in ("watcher", "backup", "resources"):
        partial.start(service)  # not the node agents: the volumes wait in their nodes' queues
    apply(stack, backup_manifest(namespace, "flushed"))
    wait_status(stack, namespace, "flushed", "the backup to hand its volumes out",
                lambda s: s.get("stage") == "Volumes" and s.get("volumesProgress") == "0/2")  # fmt: skip

    dev_stack(stack).flush_redis()
    partial.node_agents()

    status = wait_final(stack, namespace, "flushed", partial, timeout=BOUND_SECONDS)
    assert status["status"] == "Failed", status
    assert status["reason"].startswith("StateLost: "), status["reason"]
    assert "StateLost" in events_of(stack, namespace, "flushed")
    ref = BackupRef(namespace, "flushed", backup_uid(stack, namespace, "flushed"))
    assert not repository_for(location).has_manifest(ref), "a backup that lost its state wrote a manifest"


ADMIN = "kube-system"


#: A local BackupLocation in the admin namespace (a restore there may map namespaces), cleaned up after
#: the test: the restore tests' fixture.
admin_location = test_restore.admin_location


def test_a_restore_flushed_at_volumes_writes_the_volume_again_and_completes(
    stack: StackEnv, namespace: str, partial: Partial, admin_location: str, tmp_path: Path
) -> None:
    volumes = deploy(stack, namespace)
    for seed, path in enumerate(volumes.values()):
        fill_small(path, seed)
    originals = {claim: tmp_path / "original" / claim for claim in volumes}
    for claim, path in volumes.items():
        shutil.copytree(path, originals[claim], symlinks=True)
    for service in ("watcher", "backup", "resources", "restore"):
        partial.start(service)
    partial.node_agents()
    source = f"source-{uuid.uuid4().hex[:6]}"
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": source, "namespace": ADMIN},
                  "spec": {"backupLocation": admin_location, "namespaces": [namespace]}})  # fmt: skip
    # Before any fault: as long as a backup may take on a busy machine.
    assert wait_final(stack, ADMIN, source, partial, timeout=300)["status"] == "Successful"

    # Restored beside the original with the node agents stopped: the restore waits at Volumes.
    for node in stack.env["DEV_NODES"].split(","):
        partial.stop(f"uploader-{node}")
    target = f"{namespace}-r"
    name = f"back-{uuid.uuid4().hex[:6]}"
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": name, "namespace": ADMIN},
                  "spec": {"backupName": source, "backupLocation": admin_location,
                           "namespaceMapping": {namespace: target}}})  # fmt: skip
    try:
        restore_status = _restore_status(stack, ADMIN, name)
        wait_for("the restore to hand its volumes out", lambda: (
            (s := restore_status()).get("stage") == "Volumes"
            and [v["status"] for v in s.get("volumes") or []] == ["InProgress", "InProgress"]
        ), timeout=120)  # fmt: skip

        dev_stack(stack).flush_redis()
        partial.node_agents()

        status = wait_for("the restore to end", lambda: (s := restore_status()).get("stage") == "Final" and s,
                          timeout=BOUND_SECONDS)  # fmt: skip
        # Ending Failed with StateLost would be allowed, never Successful with parts missing; but a
        # restore's Volumes stage is rebuilt (docs/architecture.md), so this one must come back whole.
        assert status["status"] == "Successful", status
        assert status["volumesProgress"] == "2/2", status
        # The counts of the Applications stage came back from the status after the flush.
        assert status["resourcesByKind"]["StatefulSet"]["restored"] == 1, status
        items = json.loads(stack.kubectl("-n", target, "get", "statefulsets,pvc", "-o", "json").stdout)[
            "items"
        ]
        assert sorted(o["metadata"]["name"] for o in items) == ["data-db-0", "data-db-1", "db"]
        for claim, original in originals.items():
            restored = _volume_dir(stack, target, claim)
            _wait_gone(restored / ".davit-restore")  # the pods' init container consumed the markers
            assert_same_tree(original, restored)
        assert "StateRebuilt" in events_of(stack, ADMIN, name)
    finally:
        stack.kubectl("delete", "namespace", target, "--wait=false", check=False)


def test_a_redis_restart_keeps_the_state_and_the_backup_completes_with_its_volumes(
    stack: StackEnv, namespace: str, partial: Partial, tmp_path: Path
) -> None:
    volumes = deploy(stack, namespace)
    for seed, path in enumerate(volumes.values()):
        fill_small(path, seed)
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    partial.start("watcher")
    partial.start("backup")
    partial.node_agents()  # the volumes are stored; the backup then waits at Applications
    apply(stack, backup_manifest(namespace, "restarted"))
    wait_status(stack, namespace, "restarted", "the volumes to be stored",
                lambda s: (s.get("stage"), s.get("status")) == ("Applications", "Pending"))  # fmt: skip

    devstack = dev_stack(stack)
    before = devstack.procs.get(devstack.redis_process())
    new_pid = devstack.restart_redis()
    assert before is not None and new_pid != before.pid
    partial.start("resources")

    status = wait_final(stack, namespace, "restarted", partial, timeout=BOUND_SECONDS)
    assert status["status"] == "Successful", status
    assert "StateRebuilt" not in events_of(stack, namespace, "restarted")
    manifest = repository_for(location).read_manifest(
        BackupRef(namespace, "restarted", backup_uid(stack, namespace, "restarted"))
    )
    assert sorted(v["persistentVolumeClaim"] for v in manifest["volumes"]) == sorted(volumes)
    assert all(v["status"] == "Successful" and v.get("tree") for v in manifest["volumes"]), manifest[
        "volumes"
    ]


def _restore_status(stack: StackEnv, namespace: str, name: str) -> Any:
    def read() -> dict[str, Any]:
        out = stack.kubectl("-n", namespace, "get", "applicationrestore", name, "-o", "json").stdout
        status: dict[str, Any] = json.loads(out).get("status") or {}
        return status

    return read


def _volume_dir(stack: StackEnv, namespace: str, claim: str) -> Path:
    def bound() -> Path | None:
        out = stack.kubectl("-n", namespace, "get", "pvc", claim, "-o", "json", check=False)
        if out.returncode or json.loads(out.stdout).get("status", {}).get("phase") != "Bound":
            return None
        pv = json.loads(stack.kubectl("get", "pv", json.loads(out.stdout)["spec"]["volumeName"], "-o",
                                      "json").stdout)  # fmt: skip
        return Path(pv["spec"]["local"]["path"])

    return wait_for(f"claim {claim} to be bound", bound, timeout=60)


def _wait_gone(path: Path) -> None:
    wait_for(f"{path} to be gone", lambda: not path.exists(), timeout=60)
