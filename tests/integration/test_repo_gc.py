"""Garbage collection on the real stack: the retention service marks a deleted backup's data on its own
schedule, and ``davit repo gc`` gives that data's space back; the backups left stay complete."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, wait_final
from tests.integration.test_backup_volumes import deploy
from tests.integration.test_cli import davit, ok

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: Per volume: the file only the first backup holds (first in tree order, so it fills packs of its own).
REPLACED = 40 * MiB
#: Per volume: the small files both backups hold.
KEPT_FILES, KEPT_SIZE = 64, 64 * 1024


def repo_bytes(store: Path) -> int:
    """What the repository's data takes: packs, index objects, trees and tree parts."""
    parts = ("packs", "index", "trees", "tree-parts")
    return sum(f.stat().st_size for part in parts for f in (store / "repo" / part).rglob("*") if f.is_file())


def test_deleting_a_backup_then_collecting_gives_its_unique_data_back(
    stack: StackEnv, namespace: str, stack_services: Any, tmp_path: Path
) -> None:
    # Checks every 2 s and a collection every 3 s, with the default grace period: while the backups run,
    # the retention service's collections only mark (and unmark) what is not yet in use.
    services: Services = stack_services(DAVIT_LOCATION_CHECK_SECONDS="2", DAVIT_GC_INTERVAL_SECONDS="3")
    volumes = deploy(stack, namespace)
    rng = random.Random(7)  # noqa: S311 - test data
    for path in volumes.values():
        (path / "a-replaced.bin").write_bytes(rng.randbytes(REPLACED))
        # What stays is small files: they are packed apart from large files, so the replaced file's packs
        # hold its chunks alone. (Large files read at the same time share packs, and a pack is freed only
        # once all its chunks are: docs/format.md, "Garbage collection".)
        for i in range(KEPT_FILES):
            (path / "kept" / f"{i:02d}.bin").parent.mkdir(exist_ok=True)
            (path / "kept" / f"{i:02d}.bin").write_bytes(rng.randbytes(KEPT_SIZE))
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "old", reclaimPolicy="Delete"))
    assert wait_final(stack, namespace, "old", services, timeout=300)["status"] == "Successful"
    for path in volumes.values():
        (path / "a-replaced.bin").unlink()
        (path / "new.bin").write_bytes(rng.randbytes(8 * MiB))
    apply(stack, backup_manifest(namespace, "new", reclaimPolicy="Delete"))
    assert wait_final(stack, namespace, "new", services, timeout=300)["status"] == "Successful"

    store = tmp_path / "store"
    stack.kubectl("-n", namespace, "delete", "applicationbackup", "old", "--wait=true", "--timeout=60s")
    # The old backup's trees, named by nothing now, are marked by the service's next collection.
    marks = store / "repo" / "gc" / "doomed" / "trees"
    wait_for("the retention service to mark the old trees", lambda: marks.is_dir() and any(marks.iterdir()),
             timeout=60)  # fmt: skip

    before = repo_bytes(store)
    flags = ["-n", namespace, "repo", "gc", "--location", "loc"]
    dry = json.loads(ok(stack, *flags, "--grace", "0s", "--dry-run", "-o", "json"))
    assert dry["dryRun"] is True and dry["freedBytes"] > 0
    assert repo_bytes(store) == before, "a dry run deleted something"

    report = json.loads(ok(stack, *flags, "--grace", "0s", "-o", "json"))
    freed = before - repo_bytes(store)
    assert freed == report["freedBytes"], report
    assert report["trees"]["deleted"] == 2 and report["packs"]["deleted"] > 0, report
    # The replaced files' data, but for the pack each shares with what stays. At most the old backup's
    # whole data: a collection may have marked the small files' packs while the old backup was still
    # writing them (marks are withdrawn once a tree names them); a writer that sees a chunk only in a
    # marked pack stores it again, so the new backup can hold its own copy of them and the old copies go.
    unique = len(volumes) * REPLACED
    written_by_old = len(volumes) * (REPLACED + KEPT_FILES * KEPT_SIZE)
    assert 0.6 * unique <= freed <= written_by_old + 2 * MiB, (freed, unique, written_by_old)
    assert dry["freedBytes"] <= freed, "the dry run promised what no run would free"

    check = davit(stack, "-n", namespace, "repo", "check", "--location", "loc", "--read-data")
    assert check.exit_code == 0, check.output
    assert "every chunk read and verified" in check.output

    # A table by default; nothing left to free.
    table = ok(stack, *flags, "--grace", "0s")
    assert table.splitlines()[0].split()[:3] == ["KIND", "IN", "USE"]
    assert "freed 0 B in 0 object(s)" in table

    # And the repository takes the next backup, incremental from the remaining one's trees.
    apply(stack, backup_manifest(namespace, "after", reclaimPolicy="Delete"))
    assert wait_final(stack, namespace, "after", services, timeout=300)["status"] == "Successful"
    check = davit(stack, "-n", namespace, "repo", "check", "--location", "loc", "--read-data")
    assert check.exit_code == 0, check.output


def test_repo_gc_fails_clearly(stack: StackEnv, namespace: str, tmp_path: Path) -> None:
    missing = davit(stack, "-n", namespace, "repo", "gc", "--location", "nowhere")
    assert missing.exit_code == 1
    assert "BackupLocation" in missing.output and "nowhere" in missing.output, missing.output
    bad = davit(stack, "-n", namespace, "repo", "gc", "--location", "nowhere", "--grace", "soon")
    assert bad.exit_code == 2 and "--grace" in bad.output, bad.output
