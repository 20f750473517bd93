"""Getting a backup out of its location without the cluster, on the real stack: a real backup (by the
services, the node agent reading the dev kubelet's volume) of a namespace with a volume in an encrypted
S3 location whose credentials and key sit in a Secret; then the ``davit`` console script, with a
kubeconfig that points nowhere and the location given as the YAML ``kubectl get`` printed for it,
lists, restores, dumps and downloads it. Every restored entry equals the original (type, mode, owner,
mtime, sha256, link target); a corrupted pack fails the restore naming the file, leaving no such file;
a crafted tree written into the store cannot write outside the target; the downloaded YAML equals the
objects the backup stored."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from davit.api.types import LocationSpec
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.repo import Entry, RepoIndex, RepoWriter, iter_entries, load_tree
from davit.repo.layout import pack_key
from davit.repo.tree_format import DIR, FILE, SYMLINK, TreeBuilder
from davit.storage import factory
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, backup_manifest, wait_final
from tests.unit.test_repo_support import snapshot_of

pytestmark = pytest.mark.integration

MiB = 1 << 20
ENCRYPTION_KEY = "correct-horse-battery-staple-EXTRACT"

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: NS, labels: {app: db}}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""
CLAIM = "data-db-0"


def deploy(stack: StackEnv, namespace: str) -> Path:
    """The StatefulSet's pod Running on its bound volume; returns the volume's directory."""
    apply(stack, STATEFULSET.replace("NS", namespace))

    def running() -> Path | None:
        out = stack.kubectl("-n", namespace, "get", "pvc", CLAIM, "-o", "json", check=False)
        if out.returncode or json.loads(out.stdout).get("status", {}).get("phase") != "Bound":
            return None
        pv = json.loads(
            stack.kubectl("get", "pv", json.loads(out.stdout)["spec"]["volumeName"], "-o", "json").stdout
        )
        pods = json.loads(stack.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
        return (
            Path(pv["spec"]["local"]["path"])
            if [p for p in pods if p["status"].get("phase") == "Running"]
            else None
        )

    return wait_for("the pod running on its bound volume", running, timeout=60)


def fill(root: Path) -> None:
    """Files of several chunks and of none, modes, mtimes, owners, symlinks (relative, absolute,
    dangling), an empty directory, a sparse file, a non-ASCII name, a nested tree."""
    rng = random.Random(7)  # noqa: S311 - test data, reproducible on purpose
    (root / "big.bin").write_bytes(rng.randbytes(6 * MiB))
    (root / "conf").mkdir()
    (root / "conf" / "app.yaml").write_text("replicas: 3\n")
    os.chmod(root / "conf" / "app.yaml", 0o600)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)  # noqa: S103 - a mode to restore
    for i in range(50):
        (root / "small" / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (root / "small" / f"d{i % 5}" / f"f{i:03d}.txt").write_bytes(rng.randbytes(rng.randint(0, 4000)))
    (root / "empty").touch()
    (root / "empty-dir").mkdir()
    (root / "Grüße-日本語.txt").write_text("non-ASCII name\n")
    (root / "link-relative").symlink_to("conf/app.yaml")
    (root / "link-absolute").symlink_to("/etc/hostname")
    (root / "small" / "link-dangling").symlink_to("../../nowhere")
    with (root / "sparse.img").open("wb") as f:
        f.truncate(16 * MiB)
        f.seek(8 * MiB)
        f.write(b"in the middle of a hole")
    os.chown(root / "conf" / "app.yaml", 1234, 5678)
    os.utime(root / "big.bin", ns=(1_234_567_890_123_456_789,) * 2)
    os.utime(root / "empty-dir", ns=(1_600_000_000_000_000_000,) * 2)
    os.utime(root / "link-relative", ns=(1_500_000_000_000_000_001,) * 2, follow_symlinks=False)


def unreachable_kubeconfig(stack: StackEnv, path: Path) -> Path:
    """The stack's kubeconfig with every server moved to a port nothing listens on."""
    config: dict[str, Any] = yaml.safe_load(Path(stack.kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    path.write_text(yaml.safe_dump(config))
    return path


def davit(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The console script, as a user runs it."""
    script = Path(sys.executable).parent / "davit"
    return subprocess.run(
        [str(script), "--kubeconfig", str(kubeconfig), *args], capture_output=True, timeout=300, check=False
    )


def ok(kubeconfig: Path, *args: str) -> bytes:
    result = davit(kubeconfig, *args)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout


def test_a_backup_is_listed_restored_dumped_and_downloaded_without_the_cluster(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    volume = deploy(stack, namespace)
    fill(volume)
    stack.kubectl("-n", namespace, "create", "configmap", "settings", "--from-literal=colour=blue")
    stack.kubectl("-n", namespace, "create", "secret", "generic", "app-secret", "--from-literal=token=abc")
    env = stack.env
    stack.kubectl("-n", namespace, "create", "secret", "generic", "loc-creds",
                  f"--from-literal=accessKeyID={env['S3_ACCESS_KEY']}",
                  f"--from-literal=secretAccessKey={env['S3_SECRET_KEY']}",
                  f"--from-literal=encryptionKey={ENCRYPTION_KEY}")  # fmt: skip
    location = {
        "apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation",
        "metadata": {"name": "loc", "namespace": namespace},
        "location": {"type": "s3", "path": env["S3_BUCKET"], "prefix": f"extract-{uuid.uuid4().hex[:8]}",
                     "secretConfig": "loc-creds",
                     "s3Config": {"region": env["S3_REGION"], "endpoint": env["S3_ENDPOINT"],
                                  "disableSSL": True}},
    }  # fmt: skip
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "nightly"))
    status = wait_final(stack, namespace, "nightly", services, timeout=180)
    assert status["status"] == "Successful", status
    services.stop_all()  # from here on nothing of the cluster's is needed
    original = snapshot_of(volume)

    # What an administrator keeps for a disaster: the location and its Secret, as kubectl prints them.
    location_file = tmp_path / "location.yaml"
    location_file.write_text(
        stack.kubectl("-n", namespace, "get", "backuplocation", "loc", "-o", "yaml").stdout + "---\n"
        + stack.kubectl("-n", namespace, "get", "secret", "loc-creds", "-o", "yaml").stdout
    )  # fmt: skip
    nowhere = unreachable_kubeconfig(stack, tmp_path / "kubeconfig-nowhere")
    assert davit(nowhere, "-n", namespace, "backup", "get").returncode == 1, "the cluster is out of reach"
    where = ["--location-file", str(location_file)]

    listed = json.loads(ok(nowhere, "repo", "ls", *where, "--backup", f"{namespace}/nightly", "-o", "json"))
    (stored_volume,) = listed["volumes"]
    assert (stored_volume["namespace"], stored_volume["claim"], stored_volume["mode"]) == (
        namespace, CLAIM, "filesystem"
    )  # fmt: skip

    entries = json.loads(
        ok(nowhere, "repo", "ls", *where, "--backup", "nightly", "-o", "json", "--volume", CLAIM)
    )
    by_path = {e["path"]: e for e in entries["entries"]}
    assert set(by_path) == {p.decode() for p in original}
    assert (
        by_path["link-relative"]["target"] == "conf/app.yaml"
        and by_path["link-relative"]["type"] == "symlink"
    )
    assert (by_path["conf/app.yaml"]["mode"], by_path["conf/app.yaml"]["uid"]) == ("0600", 1234)
    assert (
        by_path["big.bin"]["size"] == 6 * MiB and by_path["big.bin"]["mtimeNs"] == 1_234_567_890_123_456_789
    )

    # Restored: every entry as it was (type, mode, owner, mtime, size and sha256, link target).
    target = tmp_path / "restored"
    report = json.loads(ok(nowhere, "repo", "restore", *where, "--backup", "nightly", "--target", str(target),
                           "-o", "json"))  # fmt: skip
    assert [v["volume"] for v in report["volumes"]] == [f"{namespace}/{CLAIM}"]
    restored = snapshot_of(target / namespace / CLAIM)
    assert restored == original
    assert sorted(os.listdir(target)) == [namespace]

    assert (
        ok(nowhere, "repo", "dump", *where, "--backup", "nightly", "big.bin")
        == (volume / "big.bin").read_bytes()
    )

    # The resources: one YAML file per object the backup stored, equal to it.
    spec = LocationSpec.model_validate(location["location"])
    secret = {"accessKeyID": env["S3_ACCESS_KEY"], "secretAccessKey": env["S3_SECRET_KEY"],
              "encryptionKey": ENCRYPTION_KEY}  # fmt: skip
    resolved = factory.resolve_credentials(spec, secret)
    repository = BackupRepository.open(factory.open_store(resolved), ENCRYPTION_KEY, create=False)
    (ref,) = repository.list_backups(namespace)
    manifest = repository.read_manifest(ref)
    objects = [o for part in manifest["parts"] for o in repository.read_part(part["key"])]
    downloaded = tmp_path / "resources"
    ok(nowhere, "backup", "download", f"{namespace}/nightly/{ref.uid}", *where, "--target", str(downloaded))
    files = {
        str(p.relative_to(downloaded)): yaml.safe_load(p.read_text()) for p in downloaded.rglob("*.yaml")
    }
    assert len(files) == len(objects)
    assert sorted(files.values(), key=json.dumps) == sorted(objects, key=json.dumps)
    configmap = files[f"{namespace}/ConfigMap/settings.yaml"]
    assert configmap["data"] == {"colour": "blue"}
    assert base64.b64decode(files[f"{namespace}/Secret/app-secret.yaml"]["data"]["token"]) == b"abc"
    assert files[f"{namespace}/StatefulSet.apps/db.yaml"]["spec"]["replicas"] == 1
    assert files[f"_cluster/Namespace/{namespace}.yaml"]["metadata"]["name"] == namespace
    # Through the cluster (the BackupLocation and its Secret read from it), by the ApplicationBackup's
    # name: the same files.
    again = tmp_path / "resources-again"
    ok(Path(stack.kubeconfig), "-n", namespace, "backup", "download", "nightly", "--target", str(again))
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*.yaml")) == sorted(files)

    # A crafted tree (whoever holds the bucket and its key can write one) with an entry through a symlink
    # it plants, named in the manifest of a backup of its own: nothing is written outside the target.
    outside = tmp_path / "outside"
    outside.mkdir()
    payload = tmp_path / "payload"
    payload.write_bytes(b"planted\n")
    with RepoWriter(repository.store, repository.sealer) as writer:
        stored_payload = writer.store_file(payload)
    builder = TreeBuilder(repository.store, repository.sealer)
    builder.add(Entry(b"", DIR, 0o755, 0, 0, 10**18, 0, 1))
    builder.add(Entry(b"escape", SYMLINK, 0o777, 0, 0, 10**18, 0, 2, os.fsencode(outside)))
    builder.add(Entry(b"escape/planted", FILE, 0o644, 0, 0, 10**18, 8, 3, None, stored_payload.extents))
    evil = BackupRef(namespace, "evil", str(uuid.uuid4()))
    repository.write_manifest(
        evil, {**manifest, "volumes": [{**manifest["volumes"][0], "tree": builder.finish().id}]}
    )
    attacked = davit(
        nowhere, "repo", "restore", *where, "--backup", "evil", "--target", str(tmp_path / "evil")
    )
    assert attacked.returncode == 1 and b"refusing" in attacked.stderr, attacked.stderr
    assert os.listdir(outside) == []

    # A damaged pack: the restore stops naming the file and leaves no file that looks complete.
    tree = load_tree(repository.store, repository.sealer, stored_volume["tree"])
    big = next(e for e in iter_entries(repository.store, repository.sealer, tree) if e.path == b"big.bin")
    located = RepoIndex.load(repository.store, repository.sealer).get(list(big.chunk_ids())[-1])
    assert located is not None
    damaged = bytearray(repository.store.get(pack_key(located.pack)))
    damaged[located.offset + located.length // 2] ^= 0x01
    repository.store.put(pack_key(located.pack), bytes(damaged))
    broken_target = tmp_path / "broken"
    failed = davit(nowhere, "repo", "restore", *where, "--backup", "nightly", "--target", str(broken_target))
    assert failed.returncode == 1
    message = failed.stderr.decode()
    assert "file 'big.bin' cannot be read" in message and "is corrupt" in message, message
    assert not (broken_target / namespace / CLAIM / "big.bin").exists()
    for printed in (attacked.stderr, failed.stderr):
        assert env["S3_SECRET_KEY"].encode() not in printed and ENCRYPTION_KEY.encode() not in printed
