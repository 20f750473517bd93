"""Garbage collection on the real stack: the retention service marks a deleted backup's data on its own
schedule, and ``davit repo gc`` gives that data's space back, rewriting the packs it shares with what
stays; the backups left stay complete and restore byte for byte."""

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
from tests.integration.test_backup_volumes import assert_same_tree, deploy
from tests.integration.test_cli import davit, ok

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: Per volume: the file only the first backup holds (first in tree order).
REPLACED = 40 * MiB
#: Per volume: a larger file both backups hold. Read after (or alongside) the replaced one, it shares the
#: replaced file's last pack at least, so that pack stays partly in use once the replaced file is gone.
KEPT_LARGE = 4 * MiB
#: Per volume: the small files both backups hold (packed apart from larger files).
KEPT_FILES, KEPT_SIZE = 64, 64 * 1024


def repo_bytes(store: Path) -> int:
    """What the repository's data takes: packs, index objects, trees and tree parts."""
    parts = ("packs", "index", "trees", "tree-parts")
    return sum(f.stat().st_size for part in parts for f in (store / "repo" / part).rglob("*") if f.is_file())


def test_deleting_a_backup_then_collecting_gives_its_unique_data_back(
    stack: StackEnv, namespace: str, stack_services: Any, tmp_path: Path
) -> None:
    # Checks every 2 s and a collection every 3 s, with the default grace period: while the backups run,
    # the retention service's collections only mark (and unmark) what is not yet in use. The location
    # turns repacking off, so the service's collections never repack while ``davit repo gc`` runs (the
    # bytes the test counts are then its run's alone), and so that the CLI is seen to take the
    # location's setting.
    services: Services = stack_services(DAVIT_LOCATION_CHECK_SECONDS="2", DAVIT_GC_INTERVAL_SECONDS="3")
    volumes = deploy(stack, namespace)
    rng = random.Random(7)  # noqa: S311 - test data
    for path in volumes.values():
        (path / "a-replaced.bin").write_bytes(rng.randbytes(REPLACED))
        (path / "b-kept.bin").write_bytes(rng.randbytes(KEPT_LARGE))
        for i in range(KEPT_FILES):
            (path / "kept" / f"{i:02d}.bin").parent.mkdir(exist_ok=True)
            (path / "kept" / f"{i:02d}.bin").write_bytes(rng.randbytes(KEPT_SIZE))
    apply(stack, location_manifest(stack, "local", namespace, tmp_path, repackBelowPercent=0))
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
    unique = len(volumes) * REPLACED
    flags = ["-n", namespace, "repo", "gc", "--location", "loc", "--grace", "0s"]
    # The location's setting: no repacking. Only packs holding nothing of what stays would be freed.
    unpacked = json.loads(ok(stack, *flags, "--dry-run", "-o", "json"))
    assert unpacked["repack"]["below"] == 0 and unpacked["repack"]["packs"] == 0, unpacked["repack"]
    dry = json.loads(ok(stack, *flags, "--repack-below", "50", "--dry-run", "-o", "json"))
    assert dry["dryRun"] is True and dry["repack"]["packs"] > 0, dry["repack"]
    assert repo_bytes(store) == before, "a dry run deleted something"

    report = json.loads(ok(stack, *flags, "--repack-below", "50", "-o", "json"))
    freed = before - repo_bytes(store)
    repack = report["repack"]
    assert freed == report["freedBytes"] - repack["writtenBytes"], report
    assert report["trees"]["deleted"] == 2 and report["packs"]["deleted"] > 0, report
    assert repack["packs"] == dry["repack"]["packs"] and repack["written"] > 0, repack
    # What stays of the repacked packs is the large file both backups hold, and not much more.
    assert repack["liveBytes"] <= len(volumes) * (KEPT_LARGE + 2 * MiB), repack
    # The replaced files' data, all but 10%. At most the old backup's whole data: a collection may have
    # marked the kept files' packs while the old backup was still writing them (marks are withdrawn once
    # a tree names them); a writer that sees a chunk only in a marked pack stores it again, so the new
    # backup can hold its own copy of them and the old copies go.
    written_by_old = len(volumes) * (REPLACED + KEPT_LARGE + KEPT_FILES * KEPT_SIZE)
    assert 0.9 * unique <= freed <= written_by_old + 2 * MiB, (freed, unique, written_by_old)
    # Without repacking, the packs the replaced files share with what stays would have stayed.
    assert unpacked["freedBytes"] < 0.9 * unique, (unpacked["freedBytes"], unique)
    assert dry["freedBytes"] <= report["freedBytes"], "the dry run promised what no run would free"
    print(  # the measurement, shown with pytest -rP
        f"replaced {unique} bytes; freed without repacking {unpacked['freedBytes']} "
        f"({unpacked['freedBytes'] / unique:.0%}), with repacking {freed} ({freed / unique:.0%}, "
        f"{repack['packs']} pack(s) repacked, {repack['writtenBytes']} bytes rewritten)"
    )

    check = davit(stack, "-n", namespace, "repo", "check", "--location", "loc", "--read-data")
    assert check.exit_code == 0, check.output
    assert "every chunk read and verified" in check.output

    # The remaining backup restores byte for byte from what was rewritten.
    target = tmp_path / "restored"
    restore = ["-n", namespace, "repo", "restore", "--location", "loc", "--backup", "new"]
    ok(stack, *restore, "--target", str(target))
    for claim, path in volumes.items():
        assert_same_tree(path, target / namespace / claim)

    # A table by default; nothing left to free or to repack.
    table = ok(stack, *flags, "--repack-below", "50")
    assert table.splitlines()[0].split()[:3] == ["KIND", "IN", "USE"]
    assert "freed 0 B in 0 object(s)" in table and "repacked" not in table, table

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
    too_much = davit(stack, "-n", namespace, "repo", "gc", "--location", "nowhere", "--repack-below", "101")
    assert too_much.exit_code == 2 and "--repack-below" in too_much.output, too_much.output
