"""In-place restores, the pure part: which volumes can be written in place, how replicas are recorded
and given back, and pruning a restored directory to exactly its tree (never through a symlink)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from davit import timeutil
from davit.repo.prune import prune
from davit.volumes import in_place

NOW = timeutil.parse_time("2026-12-04T10:00:00Z") or timeutil.utcnow()


def volume(
    claim: str, mode: str = "filesystem", status: str = "Successful", tree: str = "t1"
) -> dict[str, object]:
    return {"namespace": "shop", "persistentVolumeClaim": claim, "mode": mode, "status": status, "tree": tree,
            "totalSize": 10}  # fmt: skip


def test_volumes_with_files_are_targets_and_the_others_are_refused_with_why() -> None:
    volumes = [volume("data"), volume("moved", mode="datamover"), volume("snap", mode="snapshot"),
               volume("broken", status="Failed", tree="")]  # fmt: skip
    manifest = {"volumes": volumes}
    targets, refused = in_place.volume_targets(manifest, {"shop": "shop-2"})
    assert sorted(targets) == ["shop-2/data", "shop-2/moved"]
    assert targets["shop-2/data"]["helper"] is True and targets["shop-2/data"]["tree"] == "t1"
    assert "cannot be written in place" in refused["shop-2/snap"]
    assert "holds no data" in refused["shop-2/broken"]


def test_replicas_are_recorded_once_and_given_back_and_another_restores_hold_is_respected() -> None:
    workload = {"metadata": {"name": "db"}, "spec": {"replicas": 3}}
    assert in_place.replicas_before(workload, "r1") == 3
    patch = in_place.scale_down_patch("r1", 3, NOW)
    scaled = {
        "metadata": {"name": "db", "annotations": patch["metadata"]["annotations"]},
        "spec": {"replicas": 0},
    }
    # A retried task finds its own record, not the zero it set.
    assert in_place.replicas_before(scaled, "r1") == 3
    assert in_place.replicas_before(scaled, "r2") is None
    back = in_place.scale_back_patch(scaled)
    assert back["spec"]["replicas"] == 3
    assert set(back["metadata"]["annotations"].values()) == {None}
    assert back["metadata"]["labels"] == {in_place.RESTORE_LABEL: None}


def test_an_unreadable_record_gives_one_replica_back() -> None:
    for text in ("x", "-1", "10000000"):
        workload = {"metadata": {"annotations": {in_place.REPLICAS_ANNOTATION: text}}}
        assert in_place.recorded_replicas(workload) == 1


def test_prune_leaves_exactly_the_tree_and_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("not the volume's")
    root = tmp_path / "volume"
    (root / "keep" / "deep").mkdir(parents=True)
    (root / "keep" / "deep" / "file").write_text("kept")
    (root / "keep" / "new").write_text("after the backup")
    (root / "gone-dir" / "sub").mkdir(parents=True)
    (root / "gone-dir" / "sub" / "f").write_text("x")
    (root / ".davit-restore").mkdir()
    os.symlink(outside, root / "link-out")  # a link the application made: removed, not followed
    removed = prune(root, [b"keep", b"keep/deep", b"keep/deep/file"], reserved=(b".davit-restore",))
    assert removed == 3  # keep/new, gone-dir with what it holds, link-out
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        ".davit-restore", "keep", "keep/deep", "keep/deep/file"]  # fmt: skip
    assert (outside / "precious").read_text() == "not the volume's"


def test_the_sweep_takes_workloads_of_restores_not_running_once_their_grace_is_over() -> None:
    def held(uid: str, minutes_ago: int) -> dict[str, Any]:
        since = timeutil.format_time(NOW - datetime.timedelta(minutes=minutes_ago))
        return {"metadata": {"name": f"{uid}-{minutes_ago}", "annotations": {
            in_place.RESTORE_ANNOTATION: uid, in_place.SINCE_ANNOTATION: since}}}  # fmt: skip

    workloads: list[dict[str, Any]] = [held("running", 60), held("gone", 60), held("gone", 1),
                                       {"metadata": {"name": "plain"}}]  # fmt: skip
    stranded = in_place.stranded(workloads, {"running"}, NOW, grace_seconds=600)
    assert [w["metadata"]["name"] for w in stranded] == ["gone-60"]
