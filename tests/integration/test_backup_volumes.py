"""Volume data, end to end on the real stack: node agents on both dev nodes store two volumes in the
deduplicating repository; the repository read back holds every byte, mode and link; a second backup is
incremental; a failed volume makes a PartialSuccess; exec rules are planned against the real pods (their
runs over the real exec path are in ``test_exec_rules``)."""

from __future__ import annotations

import filecmp
import json
import os
import random
import shutil
import stat
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from davit.format.layout import BackupRef
from davit.operations.runtime import Runtime
from davit.repo import RepoReader, load_tree, restore_tree
from davit.settings import Settings
from davit_services.backup import rule_runner
from tests.conftest import StackEnv
from tests.fakes.exec import RecordingExecutor
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import (
    apply,
    backup_manifest,
    location_manifest,
    repository_for,
    wait_final,
)

pytestmark = pytest.mark.integration

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: NS, labels: {app: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: db}}, topologyKey: kubernetes.io/hostname}
      containers: [{name: db, image: postgres}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""

MiB = 1024 * 1024


def deploy(stack: StackEnv, namespace: str) -> dict[str, Path]:
    """The StatefulSet, Running with one pod per dev node; returns claim → its volume's directory."""
    apply(stack, STATEFULSET.replace("NS", namespace))

    def bound() -> dict[str, Path] | None:
        paths = {}
        for i in range(2):
            out = stack.kubectl("-n", namespace, "get", "pvc", f"data-db-{i}", "-o", "json", check=False)
            if out.returncode:
                return None
            pvc = json.loads(out.stdout)
            if pvc.get("status", {}).get("phase") != "Bound":
                return None
            pv = json.loads(stack.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
            paths[f"data-db-{i}"] = Path(pv["spec"]["local"]["path"])
        pods = json.loads(stack.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return paths if len(running) == 2 else None

    return wait_for("both pods running with bound volumes", bound, timeout=60)


def fill_mixed(root: Path, seed: int, big: int = 64 * MiB) -> None:
    """Random data, library files, text, 2,000 small files, a symlink, an empty directory, a 64 MiB sparse
    file, a zero-byte file, non-ASCII names and a deep path."""
    rng = random.Random(seed)  # noqa: S311 - test data, reproducible on purpose
    (root / "random.bin").write_bytes(rng.randbytes(big))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib / "email", root / "lib" / "email", symlinks=True)
    shutil.copytree(stdlib / "json", root / "lib" / "json", symlinks=True)
    (root / "text.log").write_text("".join(f"line {i} of a log file\n" for i in range(200_000)))
    small = root / "small"
    small.mkdir()
    for i in range(2000):
        (small / f"f{i:04d}.txt").write_bytes(rng.randbytes(rng.randint(1, 3000)))
    (root / "link-to-text").symlink_to("text.log")
    (root / "empty-dir").mkdir()
    with (root / "sparse.img").open("wb") as f:
        f.truncate(64 * MiB)
        f.seek(32 * MiB)
        f.write(b"data in the middle of a hole")
    (root / "zero-bytes").touch()
    (root / "Grüße-日本語-файл.txt").write_text("non-ASCII name\n")
    deep = root.joinpath(*[f"level{i}" for i in range(40)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("deep\n")
    os.chmod(root / "text.log", 0o640)


def assert_same_tree(original: Path, restored: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(original):
        rel = Path(dirpath).relative_to(original)
        for name in dirnames + filenames:
            a, b = original / rel / name, restored / rel / name
            sa, sb = os.lstat(a), os.lstat(b)
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), a
            assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), a
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b), a
            elif stat.S_ISREG(sa.st_mode):
                assert sa.st_size == sb.st_size, a
                assert sa.st_mtime_ns == sb.st_mtime_ns, a
                assert filecmp.cmp(a, b, shallow=False), a
        for name in set(os.listdir(restored / rel)) - set(dirnames + filenames):
            raise AssertionError(f"restored holds an extra entry {rel / name}")


def store_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def backup_uid(stack: StackEnv, namespace: str, name: str) -> str:
    out = stack.kubectl("-n", namespace, "get", "applicationbackup", name, "-o", "json").stdout
    uid: str = json.loads(out)["metadata"]["uid"]
    return uid


def test_two_volumes_on_two_nodes_are_backed_up_byte_for_byte_then_incrementally(
    stack: StackEnv, namespace: str, stack_services: Any, tmp_path: Path
) -> None:
    # Shards of 16 MiB: each volume is stored by several tasks, merged into one tree.
    services: Services = stack_services(DAVIT_VOLUME_SHARD_BYTES=str(16 * MiB))
    volumes = deploy(stack, namespace)
    for seed, path in enumerate(volumes.values()):
        fill_mixed(path, seed)
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "first"))
    status = wait_final(stack, namespace, "first", services, timeout=300)
    assert status["status"] == "Successful", status
    assert status["volumesProgress"] == "2/2"
    assert {v["status"] for v in status["volumes"]} == {"Successful"}

    repository = repository_for(location)
    first = BackupRef(namespace, "first", backup_uid(stack, namespace, "first"))
    manifest = repository.read_manifest(first)
    sharded = [json.loads(line) for line in repository.read_log(first) if '"volume.sharded"' in line]
    assert sorted(e["claim"] for e in sharded) == sorted(f"{namespace}/{c}" for c in volumes), sharded
    assert all(e["shards"] >= 3 for e in sharded), sharded
    by_claim = {v["persistentVolumeClaim"]: v for v in manifest["volumes"]}
    assert set(by_claim) == set(volumes)
    reader = RepoReader(repository.store, repository.sealer)
    for claim, source in volumes.items():
        tree = load_tree(repository.store, repository.sealer, by_claim[claim]["tree"])
        target = tmp_path / "restored" / claim
        restore_tree(tree, target, reader)
        assert_same_tree(source, target)
        sparse = target / "sparse.img"
        assert sparse.stat().st_blocks * 512 < 4 * MiB, "the sparse file came back without its holes"

    # Unchanged volumes: nothing is read again and next to nothing is stored.
    apply(stack, backup_manifest(namespace, "second"))
    status = wait_final(stack, namespace, "second", services, timeout=300)
    assert status["status"] == "Successful", status
    second = repository.read_manifest(BackupRef(namespace, "second", backup_uid(stack, namespace, "second")))
    for volume in second["volumes"]:
        assert volume["bytesRead"] == 0, volume
        assert volume["storedSize"] < MiB, volume

    # 1 MiB changed in one file and 20 small files added: the location grows by at most 3% + 2 MiB.
    data_size = sum(f.stat().st_size for v in volumes.values() for f in v.rglob("*") if f.is_file())
    before = store_size(tmp_path / "store")
    changed = next(iter(volumes.values()))
    with (changed / "random.bin").open("r+b") as f:
        f.seek(10 * MiB)
        f.write(random.Random(99).randbytes(MiB))  # noqa: S311
    for i in range(20):
        (changed / "small" / f"new-{i}.txt").write_text(f"new small file {i}\n" * 50)
    apply(stack, backup_manifest(namespace, "third"))
    assert wait_final(stack, namespace, "third", services, timeout=300)["status"] == "Successful"
    growth = store_size(tmp_path / "store") - before
    assert growth <= 0.03 * data_size + 2 * MiB, (growth, data_size)


def test_a_failed_volume_makes_a_partial_success(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    volumes = deploy(stack, namespace)
    broken, path = sorted(volumes.items())[0]
    (path / "kept.txt").write_text("x")
    shutil.rmtree(path)  # the node agent will not find the volume's directory
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "partial"))
    status = wait_final(stack, namespace, "partial", services, timeout=120)
    assert status["status"] == "PartialSuccess", status
    by_claim = {v["persistentVolumeClaim"]: v for v in status["volumes"]}
    assert by_claim[broken]["status"] == "Failed" and "not found" in by_claim[broken]["reason"]
    other = next(c for c in volumes if c != broken)
    assert by_claim[other]["status"] == "Successful"
    assert "1 of 2 volume(s) failed" in status["reason"]


RULE = {
    "apiVersion": "davit.dev/v1alpha1",
    "kind": "Rule",
    "metadata": {"name": "quiesce"},
    "rules": [
        {
            "podSelector": {"app": "db"},
            "container": "db",
            "actions": [{"type": "command", "value": "psql -c CHECKPOINT"}],
        }
    ],
}


def test_exec_rules_run_through_the_executor_interface(stack: StackEnv, namespace: str) -> None:
    deploy(stack, namespace)
    apply(stack, {**RULE, "metadata": {"name": "quiesce", "namespace": namespace}})
    backup = backup_manifest(namespace, "ruled", preExecRule="quiesce")
    backup["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    runtime = Runtime.create(
        Settings.from_env({"DAVIT_KUBECONFIG": stack.kubeconfig, "DAVIT_REDIS_URL": stack.redis_url}), "test"
    )
    executor = RecordingExecutor()
    run = rule_runner.run(runtime.cluster, runtime.settings.admin_namespace, backup, "preExecRule", executor)
    assert run is not None
    ran = [(c.pod, c.container, c.command) for c in executor.calls if "CHECKPOINT" in c.command]
    assert sorted(p for p, _, _ in ran) == ["db-0", "db-1"]
    assert {c for _, c, _ in ran} == {"db"}


def test_repo_check_finds_missing_and_corrupt_chunks_and_names_the_files(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from davit_cli.main import cli

    volumes = deploy(stack, namespace)
    for seed, path in enumerate(volumes.values()):
        (path / "data.bin").write_bytes(random.Random(seed).randbytes(3 * MiB))  # noqa: S311
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "checked"))
    assert wait_final(stack, namespace, "checked", services)["status"] == "Successful"

    def run_check(*extra: str) -> Any:
        return CliRunner().invoke(
            cli,
            ["--kubeconfig", stack.kubeconfig, "-n", namespace, "repo", "check", "--location", "loc", *extra],
            catch_exceptions=False,
        )

    healthy = run_check("--read-data")
    assert healthy.exit_code == 0, healthy.output
    assert "every chunk read and verified" in healthy.output

    packs = sorted((tmp_path / "store" / "repo" / "packs").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    assert packs
    # Flip a byte in the middle of one pack: found only when the data is read.
    data = bytearray(packs[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    packs[0].write_bytes(bytes(data))
    assert run_check().exit_code == 0
    corrupt = run_check("--read-data")
    assert corrupt.exit_code == 1
    assert "corrupt" in corrupt.output and "data.bin" in corrupt.output, corrupt.output

    # Remove every pack: every chunk is missing, even without reading data.
    for pack in packs:
        pack.unlink()
    missing = run_check("-o", "json")
    assert missing.exit_code == 1
    report = json.loads(missing.stdout)
    assert report["ok"] is False
    problems = [p for b in report["backups"] for p in b["problems"]]
    assert any(p["problem"] == "missing" and any("data.bin" in f for f in p["files"]) for p in problems)


def test_node_agent_killed_mid_volume_then_backup_succeeds_without_storing_a_chunk_twice(
    stack: StackEnv, namespace: str, stack_services: Any, tmp_path: Path
) -> None:
    from davit.repo import layout as repo_layout
    from davit.repo.index import decode_index

    services: Services = stack_services()
    volumes = deploy(stack, namespace)
    for seed, path in enumerate(volumes.values()):
        (path / "big.bin").write_bytes(random.Random(seed).randbytes(160 * MiB))  # noqa: S311
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "interrupted"))

    packs_dir = tmp_path / "store" / "repo" / "packs"
    wait_for(
        "the first packs to be written", lambda: packs_dir.exists() and any(packs_dir.rglob("*")), timeout=60
    )
    killed = [name for name in list(services.procs) if name.startswith("uploader-")]
    for name in killed:
        services.kill(name)
    out = stack.kubectl("-n", namespace, "get", "applicationbackup", "interrupted", "-o", "json").stdout
    assert json.loads(out)["status"]["stage"] == "Volumes", "the agents were killed too late to test anything"
    for name in killed:
        services.start("uploader", name=name, DAVIT_NODE_NAME=name.removeprefix("uploader-"),
                       DAVIT_KUBELET_ROOT=stack.env["KUBELET_ROOT"])  # fmt: skip

    status = wait_final(stack, namespace, "interrupted", services, timeout=300)
    assert status["status"] == "Successful", status
    assert status["volumesProgress"] == "2/2"

    repository = repository_for(location)
    written: list[bytes] = []
    for info in repository.store.list("repo/index/"):
        pack_id = repo_layout.pack_id_of_key(info.key) or info.key.rsplit("/", 1)[-1]
        raw = repository.sealer.open(info.key, repository.store.get(info.key))
        written += [chunk for chunk, _entry in decode_index(info.key, pack_id, raw)]
    assert written, "no chunk was indexed"
    assert len(written) == len(set(written)), f"{len(written) - len(set(written))} chunk(s) stored twice"
