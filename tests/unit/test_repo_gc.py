"""Garbage collection on a real LocalStore: a deleted backup's unique data is freed a grace period after
it was marked, data in use never is, a backup written while collections run stays complete, and a
collection interrupted at any step is finished by the next one."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.format.sealing import Sealer
from davit.repo import (
    GcError,
    IndexEntry,
    RepoError,
    RepoIndex,
    RepoWriter,
    Tree,
    check,
    collect,
    iter_entries,
    snapshot_tree,
)
from davit.repo import gc as repo_gc
from davit.repo.gc import Doom, plan
from davit.repo.index import encode_index
from davit.repo.layout import CHUNK_MIN, pack_key
from davit.storage.base import ObjectInfo, ObjectStore
from tests.unit.test_repo_support import Location, MiB, open_location, write

KEY = "correct horse battery staple"
GRACE = 6 * 3600.0
#: The clock of the tests: a fixed "now" each collection is given.
T0 = 1_900_000_000.0


@pytest.fixture(params=[None, KEY], ids=["plain", "encrypted"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    return open_location(tmp_path / "location", request.param)


# --- helpers ---------------------------------------------------------------------------------------


def new_writer(store: ObjectStore, sealer: Sealer, pack_size: int = 1) -> RepoWriter:
    """A writer as a new process has it (its own index, loaded now); by default one chunk per pack, so
    that packs belong to one file and a deleted file's packs are wholly garbage."""
    index = RepoIndex(store, sealer)
    index.refresh()
    return RepoWriter(store, sealer, index=index, pack_size=pack_size, workers=2)


def finish_backup(
    loc: Location, tree: Tree, name: str, claim: str = "data", namespace: str = "ns"
) -> BackupRef:
    """What the services do once a volume's tree is stored: the claim's latest pointer, then (once every
    volume is done) the manifest naming the tree."""
    repository = BackupRepository(loc.store, loc.sealer)
    repository.put(f"{repo_gc.LATEST}{namespace}/{claim}", tree.id.encode())
    ref = BackupRef(namespace, name, f"uid-{name}")
    repository.write_manifest(ref, {"volumes": [{"persistentVolumeClaim": claim, "tree": tree.id}]})
    return ref


def backup(loc: Location, source: Path, name: str, claim: str = "data") -> tuple[Tree, BackupRef]:
    with new_writer(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    return tree, finish_backup(loc, tree, name, claim)


def delete_backup(loc: Location, ref: BackupRef) -> None:
    BackupRepository(loc.store, loc.sealer).delete_backup(ref)


def repo_bytes(loc: Location) -> int:
    """What the repository's data takes: packs, index objects, trees and tree parts."""
    prefixes = ("repo/packs/", "repo/index/", "repo/trees/", "repo/tree-parts/")
    return sum(info.size for prefix in prefixes for info in loc.store.list(prefix))


def chunks_of(loc: Location, tree: Tree, path: bytes) -> set[bytes]:
    return {c for e in iter_entries(loc.store, loc.sealer, tree) if e.path == path for c in e.chunk_ids()}


def packs_of(loc: Location, chunks: set[bytes]) -> set[str]:
    index = RepoIndex(loc.store, loc.sealer)
    index.refresh()
    out = set()
    for chunk in chunks:
        entry = index.get(chunk)
        assert entry is not None
        out.add(entry.pack)
    return out


def present_packs(loc: Location) -> set[str]:
    return {info.key.rsplit("/", 1)[1] for info in loc.store.list("repo/packs/")}


def keys(loc: Location) -> dict[str, int]:
    return {info.key: info.size for info in loc.store.list("")}


def assert_complete(loc: Location, *trees: Tree) -> None:
    report = check(loc.store, loc.sealer, list(trees), read_data=True)
    assert report.ok, report


def two_backups(loc: Location, tmp_path: Path) -> tuple[Tree, BackupRef, Tree, BackupRef, set[str]]:
    """Backup "old" of a volume, then "new" after one file was replaced: returns both, and the packs
    only "old" uses (the replaced file's)."""
    source = tmp_path / "volume"
    write(source / "shared.bin", os.urandom(2 * MiB))
    write(source / "replaced.bin", os.urandom(3 * MiB))
    old_tree, old = backup(loc, source, "old")
    replaced = packs_of(loc, chunks_of(loc, old_tree, b"replaced.bin"))
    (source / "replaced.bin").unlink()
    write(source / "added.bin", os.urandom(3 * MiB))
    new_tree, new = backup(loc, source, "new")
    kept = chunks_of(loc, new_tree, b"added.bin") | chunks_of(loc, new_tree, b"shared.bin")
    assert replaced.isdisjoint(packs_of(loc, kept))
    return old_tree, old, new_tree, new, replaced


# --- the decision -----------------------------------------------------------------------------------

MARKED_LONG_AGO = Doom(int(T0 - GRACE), "m-old", ("m-old",))
MARKED_RECENTLY = Doom(int(T0 - GRACE + 1), "m-new", ("m-new",))


@pytest.mark.parametrize(
    ("used", "doom", "grace", "expected"),
    [
        pytest.param(True, None, GRACE, set(), id="in-use"),
        pytest.param(True, MARKED_LONG_AGO, GRACE, {"unmark"}, id="in-use-again"),
        pytest.param(False, None, GRACE, {"mark", "waiting"}, id="newly-unused"),
        pytest.param(False, None, 0.0, {"mark", "delete"}, id="newly-unused-no-grace"),
        pytest.param(False, MARKED_RECENTLY, GRACE, {"waiting"}, id="marked-too-recently"),
        pytest.param(False, Doom(int(T0) + 1, "m", ("m",)), 0.0, {"delete"}, id="marked-no-grace"),
        pytest.param(False, MARKED_LONG_AGO, GRACE, {"delete"}, id="marked-a-grace-period-ago"),
    ],
)
def test_plan(used: bool, doom: Doom | None, grace: float, expected: set[str]) -> None:
    decided = plan(["x"], {"x"} if used else set(), {"x": doom} if doom else {}, T0, grace)
    got = {name for name in ("mark", "unmark", "delete", "waiting") if "x" in getattr(decided, name)}
    assert got == expected
    assert decided.stray == ()


def test_plan_drops_the_markers_of_objects_gone() -> None:
    decided = plan([], set(), {"x": Doom(1, "k1", ("k1", "k2"))}, T0, GRACE)
    assert decided.stray == ("k1", "k2")
    assert not (decided.mark or decided.delete or decided.unmark)


# --- freeing --------------------------------------------------------------------------------------


def test_a_deleted_backups_unique_data_is_freed_a_grace_period_after_it_was_marked(
    loc: Location, tmp_path: Path
) -> None:
    old_tree, old, new_tree, _new, replaced = two_backups(loc, tmp_path)
    delete_backup(loc, old)
    before = repo_bytes(loc)
    replaced_bytes = sum(
        info.size for info in loc.store.list("repo/packs/") if info.key.rsplit("/")[-1] in replaced
    )

    # The old tree, named by neither a manifest nor the latest pointer any more, is marked; while it is
    # there it keeps its parts and chunks in use.
    first = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)
    assert first.deleted == 0 and repo_bytes(loc) == before
    assert (first.trees.marked, first.trees.waiting, first.packs.marked, first.tree_parts.marked) == (
        1,
        1,
        0,
        0,
    )
    assert first.backups == 1 and first.latest == 1

    too_early = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE - 1)
    assert too_early.deleted == 0 and too_early.trees.waiting == 1

    # Its grace period over, the tree goes; what only it used is marked now, and freed a period later.
    second = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    assert second.trees.deleted == 1 and not loc.store.exists(f"repo/trees/{old_tree.id}")
    assert second.packs.marked == second.packs.waiting == len(replaced) and second.packs.deleted == 0
    assert second.tree_parts.marked >= 1
    assert collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE - 1).packs.deleted == 0
    third = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)
    assert third.packs.deleted == len(replaced)
    assert third.tree_parts.deleted == second.tree_parts.marked
    assert replaced.isdisjoint(present_packs(loc))

    freed = second.freed_bytes + third.freed_bytes
    assert before - repo_bytes(loc) == freed
    assert freed >= replaced_bytes >= 3 * MiB
    assert_complete(loc, new_tree)
    # Nothing marked is left over, and the next collection finds nothing to do.
    assert not list(loc.store.list(repo_gc.DOOMED))
    idle = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 3 * GRACE)
    assert (idle.deleted, idle.packs.marked, idle.trees.marked, idle.tree_parts.marked) == (0, 0, 0, 0)


def test_without_a_grace_period_one_run_marks_and_frees(loc: Location, tmp_path: Path) -> None:
    _old_tree, old, new_tree, _new, replaced = two_backups(loc, tmp_path)
    delete_backup(loc, old)
    report = collect(loc.store, loc.sealer, grace_seconds=0, now=T0)
    assert report.trees.deleted == 1 and report.tree_parts.deleted >= 1
    assert report.packs.deleted == len(replaced)
    assert replaced.isdisjoint(present_packs(loc))
    assert {i.key.rsplit("/", 1)[1] for i in loc.store.list("repo/index/")} == present_packs(loc)
    assert not list(loc.store.list(repo_gc.DOOMED))
    assert_complete(loc, new_tree)


def test_data_in_use_is_never_deleted(loc: Location, tmp_path: Path) -> None:
    """Trees named by a manifest, or only by a latest pointer (their backup deleted): none of their
    objects go, however often a collection runs and even without a grace period."""
    trees = []
    for i, claim in enumerate(("a", "b")):
        source = tmp_path / claim
        write(source / "file.bin", os.urandom(MiB + i))
        write(source / "common.bin", b"common" * 50_000)
        with new_writer(loc.store, loc.sealer) as writer:
            trees.append(snapshot_tree(source, writer))
    finish_backup(loc, trees[0], "named", claim="a")
    latest_only = finish_backup(loc, trees[1], "deleted", claim="b")
    delete_backup(loc, latest_only)
    everything = keys(loc)
    for step in range(4):
        report = collect(loc.store, loc.sealer, grace_seconds=0, now=T0 + step * GRACE)
        assert (report.deleted, report.waiting, report.packs.marked) == (0, 0, 0), report
    assert report.trees.live == 2 and report.packs.live == len(present_packs(loc))
    assert keys(loc) == everything
    assert_complete(loc, *trees)


def test_a_tree_root_protects_its_data_until_it_is_deleted_itself(loc: Location, tmp_path: Path) -> None:
    """A root no manifest or pointer names (a shard waiting for its merge, a backup still running) is
    deleted a grace period after it was marked; its parts and chunks only a grace period after that."""
    source = tmp_path / "shard"
    write(source / "file.bin", os.urandom(MiB))
    with new_writer(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    first = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)
    assert (first.trees.marked, first.packs.marked, first.tree_parts.marked) == (1, 0, 0)
    second = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    assert second.trees.deleted == 1 and second.packs.deleted == 0 and second.packs.marked >= 1
    third = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)
    assert third.packs.deleted == second.packs.marked and third.tree_parts.deleted == len(tree.parts)
    assert repo_bytes(loc) == 0


def test_an_object_used_again_is_unmarked_and_its_grace_period_starts_over(
    loc: Location, tmp_path: Path
) -> None:
    source = tmp_path / "volume"
    write(source / "file.bin", os.urandom(MiB))
    with new_writer(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    assert collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0).trees.marked == 1
    ref = finish_backup(loc, tree, "late")  # named before the grace period is over
    assert collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE).trees.unmarked == 1
    delete_backup(loc, ref)
    loc.store.delete(f"{repo_gc.LATEST}ns/data")
    again = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)
    assert again.trees.marked == 1 and again.deleted == 0  # counted from now, not from the first mark
    assert collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 3 * GRACE).trees.deleted == 1


def test_a_pack_without_an_index_is_deleted_after_the_grace_period(loc: Location) -> None:
    orphan = b"a pack whose writer died before writing its index"
    key = pack_key("ab" + "0" * 62)
    loc.store.put(key, orphan)
    assert collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0).packs.marked == 1
    assert loc.store.exists(key)
    report = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    assert report.packs.deleted == 1 and report.packs.freed_bytes == len(orphan)
    assert not loc.store.exists(key)


def test_a_dry_run_changes_nothing_and_says_what_a_run_would_do(loc: Location, tmp_path: Path) -> None:
    _old_tree, old, _new_tree, _new, replaced = two_backups(loc, tmp_path)
    delete_backup(loc, old)
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)
    before = keys(loc)
    dry = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE, dry_run=True)
    assert keys(loc) == before
    assert dry.trees.deleted == 1 and dry.packs.marked == len(replaced) and dry.freed_bytes > 0
    real = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    assert dry.to_dict() | {"dryRun": False} == real.to_dict()
    everything = collect(loc.store, loc.sealer, grace_seconds=0, now=T0 + GRACE, dry_run=True)
    assert everything.packs.deleted == len(replaced)


def test_an_unreadable_manifest_stops_the_collection_before_it_changes_anything(
    loc: Location, tmp_path: Path
) -> None:
    _old_tree, old, _new_tree, _new, _replaced = two_backups(loc, tmp_path)
    delete_backup(loc, old)
    # Another cluster's backup in the same store, sealed with a key this one does not have.
    foreign = BackupRepository(
        loc.store, Sealer(passphrase="another key", salt=loc.sealer.salt, kdf=loc.sealer.kdf)
    )
    foreign.write_manifest(BackupRef("other", "b", "u"), {"volumes": [{"tree": "0" * 64}]})
    before = keys(loc)
    with pytest.raises(GcError, match="backups/other/b/u/manifest"):
        collect(loc.store, loc.sealer, grace_seconds=0, now=T0)
    assert keys(loc) == before


# --- writers and marked packs -----------------------------------------------------------------------


def test_a_marked_pack_stays_readable_but_writers_store_their_own_copy(loc: Location, tmp_path: Path) -> None:
    old_tree, old, _new_tree, _new, replaced = two_backups(loc, tmp_path)
    delete_backup(loc, old)
    chunks = chunks_of(loc, old_tree, b"replaced.bin")
    data = b"".join(_content(loc, old_tree, b"replaced.bin"))
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)  # marks the old tree
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)  # deletes it, marks its data
    index = RepoIndex(loc.store, loc.sealer)
    index.refresh()
    assert index.doomed == replaced
    assert all(chunk not in index and index.get(chunk) is not None for chunk in chunks)

    # The same data again: stored anew, so deleting the marked packs cannot hurt the new backup.
    source = tmp_path / "again"
    write(source / "replaced.bin", data)
    with new_writer(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
        assert writer.stats.chunks_new == len(chunks)
    finish_backup(loc, tree, "again", claim="again")
    again = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)
    if loc.sealer.encrypts:
        assert again.packs.deleted == len(replaced) and replaced.isdisjoint(present_packs(loc))
    else:
        # Unencrypted, the same chunks in the same order make the same packs: stored again, in use.
        assert again.packs.deleted == 0 and replaced <= present_packs(loc)
    assert_complete(loc, tree)


def _content(loc: Location, tree: Tree, path: bytes) -> Iterator[bytes]:
    from davit.repo import RepoReader

    reader = RepoReader(loc.store, loc.sealer)
    for entry in iter_entries(loc.store, loc.sealer, tree):
        if entry.path == path:
            for chunk in entry.chunk_ids():
                yield reader.read_chunk(chunk)


def test_a_writer_storing_a_marked_pack_again_withdraws_its_marker(tmp_path: Path) -> None:
    """Without encryption the same chunks in the same order make the same pack: stored again, it is in
    use, and a collection that finds its marker gone at the last moment leaves it alone."""
    loc = open_location(tmp_path / "location")
    source = tmp_path / "volume"
    write(source / "file.bin", os.urandom(CHUNK_MIN))
    tree, ref = backup(loc, source, "first")
    delete_backup(loc, ref)
    loc.store.delete(f"{repo_gc.LATEST}ns/data")
    (pack,) = packs_of(loc, chunks_of(loc, tree, b"file.bin"))
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)  # marks the tree
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)  # deletes it, marks the pack
    assert list(loc.store.list(f"{repo_gc.DOOMED}packs/{pack}"))

    # Stored again by a writer whose index saw the mark: same pack id, marker withdrawn.
    with new_writer(loc.store, loc.sealer) as writer:
        writer.store_file(source / "file.bin")
        assert writer.stats.chunks_new == 1
    assert not list(loc.store.list(f"{repo_gc.DOOMED}packs/{pack}"))

    # And a collection that listed the marker before it was withdrawn does not delete the pack.
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)  # marks it again (unused)
    withdrawing = Hooked(loc.store, on_exists=lambda key: key.startswith(f"{repo_gc.DOOMED}packs/{pack}"))
    report = collect(withdrawing, loc.sealer, grace_seconds=GRACE, now=T0 + 3 * GRACE)
    assert report.packs.withdrawn == 1 and report.packs.deleted == 0
    assert loc.store.exists(pack_key(pack))


def test_a_writer_whose_stored_again_pack_is_deleted_meanwhile_fails_instead_of_using_it(
    tmp_path: Path,
) -> None:
    """A collection that looked at the marker just before the writer withdrew it deletes the pack: the
    writer notices, records nothing of it, and fails, so no tree references chunks that are gone."""
    loc = open_location(tmp_path / "location")
    source = tmp_path / "volume"
    write(source / "file.bin", os.urandom(CHUNK_MIN))
    tree, ref = backup(loc, source, "first")
    delete_backup(loc, ref)
    loc.store.delete(f"{repo_gc.LATEST}ns/data")
    (pack,) = packs_of(loc, chunks_of(loc, tree, b"file.bin"))
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    marker_prefix = f"{repo_gc.DOOMED}packs/{pack}"

    def collector_deletes_the_pack(key: str) -> None:
        if key.startswith(marker_prefix):  # the writer withdraws the marker: too late
            loc.store.delete(f"repo/index/{pack}")
            loc.store.delete(pack_key(pack))

    racing = Hooked(loc.store, on_delete=collector_deletes_the_pack)
    writer = new_writer(racing, loc.sealer)
    with pytest.raises(RepoError, match="deleted by garbage collection"), writer:
        writer.store_file(source / "file.bin")
        writer.flush()
    # Its chunks stay hidden from this process's writers (the next refresh drops the pack).
    assert pack in writer.index.doomed
    assert not any(chunk in writer.index for chunk in chunks_of(loc, tree, b"file.bin"))


def test_an_index_counts_a_chunk_as_stored_while_one_copy_is_in_an_unmarked_pack(loc: Location) -> None:
    chunk = os.urandom(32)
    first, second = "1" * 64, "2" * 64
    for pack_id in (first, second):  # two writers stored the chunk at once
        key = f"repo/index/{pack_id}"
        loc.store.put(key, loc.sealer.seal(key, encode_index(pack_id, [(chunk, 0, 10, 5)])))
    index = RepoIndex(loc.store, loc.sealer)
    index.refresh()
    assert chunk in index and index.get(chunk) == IndexEntry(first, 0, 10, 5)
    loc.store.put(f"{repo_gc.DOOMED}packs/{first}.{int(T0)}", b"")
    index.refresh()
    assert index.doomed == {first}
    assert chunk in index and index.get(chunk) == IndexEntry(second, 0, 10, 5)
    loc.store.put(f"{repo_gc.DOOMED}packs/{second}.{int(T0)}", b"")
    index.refresh()
    assert chunk not in index and index.get(chunk) is not None  # still readable


class Hooked(ObjectStore):
    """A store passing everything to ``inner``, with hooks: ``on_put(key)`` before a put (raising there
    interrupts the caller), ``on_delete(key)`` likewise, and ``on_exists(key)``: when it returns true
    the object is deleted first, as a writer withdrawing a marker at that moment would."""

    def __init__(
        self,
        inner: ObjectStore,
        on_put: Callable[[str], None] | None = None,
        on_delete: Callable[[str], None] | None = None,
        on_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.on_put = on_put
        self.on_delete = on_delete
        self.on_exists = on_exists

    def check(self) -> None:
        self.inner.check()

    def put(self, key: str, data: bytes) -> None:
        if self.on_put is not None:
            self.on_put(key)
        self.inner.put(key, data)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        return self.inner.get(key, max_size)

    def exists(self, key: str) -> bool:
        if self.on_exists is not None and self.on_exists(key):
            self.inner.delete(key)
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        if self.on_delete is not None:
            self.on_delete(key)
        self.inner.delete(key)


# --- a backup written while collections run ----------------------------------------------------------


@pytest.mark.parametrize(
    "moment", ["repo/packs/", "repo/tree-parts/"], ids=["before-its-pack", "before-its-tree"]
)
def test_a_backup_written_during_collections_stays_complete(
    loc: Location, tmp_path: Path, moment: str
) -> None:
    """Garbage whose content new backups hold again. One writer loaded its index before the garbage was
    marked and reuses it; another loaded it after and stores its own copy. A collection runs in the
    middle of each writer's work (at its first put under ``moment``): the first marks the garbage, the
    second, a grace period later, deletes what is still unused while the second writer has no tree yet."""
    source = tmp_path / "volume"
    write(source / "reused.bin", os.urandom(2 * MiB))
    write(source / "gone.bin", os.urandom(2 * MiB))
    old_tree, old = backup(loc, source, "old")
    content = {name: b"".join(_content(loc, old_tree, name.encode())) for name in ("reused.bin", "gone.bin")}
    gone_packs = packs_of(loc, chunks_of(loc, old_tree, b"gone.bin"))
    delete_backup(loc, old)
    loc.store.delete(f"{repo_gc.LATEST}ns/data")
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 - GRACE)  # marks the old tree

    def during(store: ObjectStore, run: Callable[[], object]) -> Hooked:
        """``store``, running ``run`` once, at a writer's first put under ``moment``."""
        pending = [run]

        def hook(key: str) -> None:
            if key.startswith(moment) and pending:
                pending.pop()()

        return Hooked(store, on_put=hook)

    early_source, late_source = tmp_path / "early", tmp_path / "late"
    write(early_source / "own.bin", os.urandom(2 * MiB))
    write(early_source / "reused.bin", content["reused.bin"])
    write(late_source / "own.bin", os.urandom(2 * MiB))
    write(late_source / "reused.bin", content["reused.bin"])
    write(late_source / "gone.bin", content["gone.bin"])

    # "early" loads its index before the garbage is marked; the collection that deletes the old tree
    # and marks its data runs while it writes.
    marking = during(loc.store, lambda: collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0))
    with new_writer(marking, loc.sealer) as early:
        early_tree = snapshot_tree(early_source, early)
        reused = len(chunks_of(loc, old_tree, b"reused.bin"))
        assert early.stats.chunks_new == early.stats.chunks - reused  # it took the garbage's chunks
    assert RepoIndex.load(loc.store, loc.sealer).doomed >= gone_packs
    finish_backup(loc, early_tree, "early", claim="early")

    # "late" loads its index after the marking: it stores its own copy of everything, and the deletion
    # of the marked packs runs while it writes, before its tree exists.
    deletions: list[repo_gc.GcReport] = []
    deleting = during(loc.store, lambda: deletions.append(
        collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)))  # fmt: skip
    # One pack of all its chunks: never byte for byte one of the garbage's packs (one chunk each; see
    # the test of a pack stored again), and at the moment of the collection either not stored yet or
    # stored whole, whatever the timing of the writer's upload threads. With several packs, one holding
    # a single chunk of the garbage is that garbage pack stored again (rightly kept), and one uploaded
    # while the collection runs becomes the kept copy of the reused chunks.
    with new_writer(deleting, loc.sealer, pack_size=64 * MiB) as late:
        late_tree = snapshot_tree(late_source, late)
        assert late.stats.chunks_new == late.stats.chunks
    finish_backup(loc, late_tree, "late", claim="late")

    (report,) = deletions
    assert report.packs.deleted >= len(gone_packs) and gone_packs.isdisjoint(present_packs(loc))
    # What "early" reused was in use by its tree by then: unmarked and kept.
    assert report.packs.unmarked >= 1
    assert_complete(loc, early_tree, late_tree)
    for step in range(2, 5):
        collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + step * GRACE)
    assert_complete(loc, early_tree, late_tree)


# --- interruptions ----------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_a_collection_interrupted_at_any_step_is_finished_by_the_next(tmp_path: Path) -> None:
    """Every put and delete of three collections (marking, deleting the marked, deleting what that
    released), each in turn made to fail: rerunning from there ends where an uninterrupted run ends."""
    prepared = open_location(tmp_path / "prepared", KEY)
    old_tree, old, new_tree, _new, _replaced = two_backups(prepared, tmp_path)
    delete_backup(prepared, old)
    steps = [T0, T0 + GRACE, T0 + 2 * GRACE]

    def run_all(directory: Path, fail_at: int | None) -> tuple[dict[str, int], int]:
        loc = open_location(directory, KEY)
        writes = [0]
        lock = threading.Lock()

        def count(key: str) -> None:
            with lock:
                writes[0] += 1
                failing = writes[0] == fail_at
            if failing:
                raise Interrupted(key)

        hooked = Hooked(loc.store, on_put=count, on_delete=count)
        for now in steps:
            try:
                collect(hooked, loc.sealer, grace_seconds=GRACE, now=now)
            except Interrupted:
                collect(loc.store, loc.sealer, grace_seconds=GRACE, now=now)  # the retry
        assert_complete(loc, new_tree)
        return keys(loc), writes[0]

    shutil.copytree(tmp_path / "prepared", tmp_path / "clean")
    expected, total = run_all(tmp_path / "clean", None)
    assert not any(k.startswith(("repo/gc/", f"repo/trees/{old_tree.id}")) for k in expected)
    assert total > 10
    for fail_at in range(1, total + 1):
        directory = tmp_path / f"run-{fail_at}"
        shutil.copytree(tmp_path / "prepared", directory)
        assert run_all(directory, fail_at)[0] == expected, f"interrupted at write {fail_at}"
        shutil.rmtree(directory)


# --- repacking ------------------------------------------------------------------------------------

SHARED_PACK = 16 * MiB


@pytest.mark.parametrize(
    ("live", "size", "marked", "below", "repacked"),
    [
        pytest.param(40, 100, False, 0.5, True, id="less-than-half-in-use"),
        pytest.param(50, 100, False, 0.5, False, id="exactly-half-in-use"),
        pytest.param(90, 100, False, 0.5, False, id="mostly-in-use"),
        pytest.param(1, 100, False, 0.0, False, id="threshold-zero-never"),
        pytest.param(99, 100, False, 1.0, True, id="threshold-one-any-garbage"),
        pytest.param(100, 100, False, 1.0, False, id="threshold-one-all-in-use"),
        pytest.param(40, 100, True, 0.5, False, id="marked-in-use-waits-for-the-next-run"),
        pytest.param(None, 100, False, 0.5, False, id="unused-is-deleted-not-repacked"),
        pytest.param(40, None, False, 0.5, False, id="indexed-but-gone"),
    ],
)
def test_choose_repacks(
    live: int | None, size: int | None, marked: bool, below: float, repacked: bool
) -> None:
    pack = "p" * 64
    chosen = repo_gc.choose_repacks(
        {} if size is None else {pack: size, "q" * 64: 100},
        {} if live is None else {pack: live, "q" * 64: 100},
        {pack} if marked else set(),
        below,
    )
    assert chosen == ((pack,) if repacked else ())


def test_choose_repacks_orders_packs_by_id() -> None:
    sizes = {pack: 100 for pack in ("c" * 64, "a" * 64, "b" * 64)}
    assert repo_gc.choose_repacks(sizes, dict.fromkeys(sizes, 10), (), 0.5) == ("a" * 64, "b" * 64, "c" * 64)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, 0.5, id="unset"),
        pytest.param({"location": {"repackBelowPercent": 30}}, 0.3, id="set"),
        pytest.param({"location": {"repackBelowPercent": 0}}, 0.0, id="zero"),
        pytest.param({"location": {"repackBelowPercent": 100}}, 1.0, id="hundred"),
        pytest.param({"location": {"repackBelowPercent": 101}}, 0.5, id="out-of-range"),
        pytest.param({"location": {"repackBelowPercent": "30"}}, 0.5, id="not-a-number"),
        pytest.param({"location": {"repackBelowPercent": True}}, 0.5, id="not-a-percentage"),
    ],
)
def test_a_locations_repacking_threshold(spec: dict[str, object], expected: float) -> None:
    assert repo_gc.repack_below_of(spec) == expected


def test_the_repacking_threshold_is_a_share(loc: Location) -> None:
    for below in (-0.1, 1.5):
        with pytest.raises(ValueError, match="from 0 to 1"):
            collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0, repack_below=below)


def shared_pack_backups(loc: Location, tmp_path: Path) -> tuple[Tree, Tree, str, dict[str, bytes]]:
    """Backup "old" of a volume whose files share one pack (a 1 MiB file that stays, a 3 MiB one that is
    deleted), then "new" without the large file, then "old" deleted: the pack is a quarter in use.
    Returns both trees, the shared pack and the files' contents."""
    source = tmp_path / "volume"
    content = {"kept.bin": os.urandom(MiB), "replaced.bin": os.urandom(3 * MiB)}
    for name, data in content.items():
        write(source / name, data)
    with new_writer(loc.store, loc.sealer, pack_size=SHARED_PACK) as writer:
        old_tree = snapshot_tree(source, writer)
    old = finish_backup(loc, old_tree, "old")
    (shared,) = packs_of(
        loc, chunks_of(loc, old_tree, b"kept.bin") | chunks_of(loc, old_tree, b"replaced.bin")
    )
    (source / "replaced.bin").unlink()
    with new_writer(loc.store, loc.sealer, pack_size=SHARED_PACK) as writer:
        new_tree = snapshot_tree(source, writer)
        assert writer.stats.chunks_new == 0
    finish_backup(loc, new_tree, "new")
    delete_backup(loc, old)
    return old_tree, new_tree, shared, content


def test_a_mostly_unused_pack_is_repacked_and_freed_a_grace_period_later(
    loc: Location, tmp_path: Path
) -> None:
    old_tree, new_tree, shared, content = shared_pack_backups(loc, tmp_path)
    kept = chunks_of(loc, new_tree, b"kept.bin")
    before = repo_bytes(loc)
    first = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)  # marks the old tree
    assert first.repack.packs == 0 and first.trees.marked == 1
    stale_reader = RepoIndex(loc.store, loc.sealer)
    stale_reader.refresh()

    # The old tree goes: the shared pack is a quarter in use, so that quarter is stored anew and the
    # pack marked like an unused one; it stays readable for the grace period.
    second = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    assert second.trees.deleted == 1
    assert (second.repack.packs, second.repack.written) == (1, 1), second.repack
    assert second.repack.live_bytes < 0.5 * second.repack.packs_bytes
    assert second.packs.marked == 1 and second.packs.deleted == 0
    assert loc.store.exists(pack_key(shared)) and list(loc.store.list(f"{repo_gc.DOOMED}packs/{shared}."))
    (new_pack,) = present_packs(loc) - {shared}
    # Readers: one that loaded its index before still reads the old copy, a fresh one reads the new.
    assert {stale_reader.get(chunk).pack for chunk in kept} == {shared}  # type: ignore[union-attr]
    assert packs_of(loc, kept) == {new_pack}
    # Writers count the chunks as stored (in the new pack), so they keep deduplicating against them.
    fresh = RepoIndex(loc.store, loc.sealer)
    fresh.refresh()
    assert all(chunk in fresh for chunk in kept)
    assert_complete(loc, new_tree)

    assert collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE - 1).packs.deleted == 0
    third = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)
    assert third.packs.deleted == 1 and third.repack.packs == 0
    assert present_packs(loc) == {new_pack}
    freed = before - repo_bytes(loc)
    assert freed == second.freed_bytes + third.freed_bytes - second.repack.written_bytes
    assert freed >= 0.9 * len(content["replaced.bin"]), (freed, len(content["replaced.bin"]))
    assert_complete(loc, new_tree)
    assert b"".join(_content(loc, new_tree, b"kept.bin")) == content["kept.bin"]
    assert not list(loc.store.list(repo_gc.DOOMED))
    idle = collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 3 * GRACE)
    assert (idle.repack.packs, idle.packs.marked, idle.deleted) == (0, 0, 0)
    assert old_tree.id not in {info.key.rsplit("/", 1)[1] for info in loc.store.list("repo/trees/")}


def test_without_repacking_a_partly_used_pack_stays(loc: Location, tmp_path: Path) -> None:
    _old_tree, new_tree, shared, _ = shared_pack_backups(loc, tmp_path)
    report = collect(loc.store, loc.sealer, grace_seconds=0, now=T0, repack_below=0)
    assert report.trees.deleted == 1 and report.repack.packs == 0 and report.packs.deleted == 0
    assert present_packs(loc) == {shared}
    assert_complete(loc, new_tree)


def test_without_a_grace_period_one_run_repacks_and_frees(loc: Location, tmp_path: Path) -> None:
    _old_tree, new_tree, shared, content = shared_pack_backups(loc, tmp_path)
    before = repo_bytes(loc)
    dry = collect(loc.store, loc.sealer, grace_seconds=0, now=T0, dry_run=True)
    assert repo_bytes(loc) == before
    report = collect(loc.store, loc.sealer, grace_seconds=0, now=T0)
    # A dry run says what would be repacked and freed; only what the copies take is unknown to it.
    assert (dry.repack.packs, dry.repack.packs_bytes, dry.repack.written) == (1, report.repack.packs_bytes, 0)
    assert dry.repack.live_bytes == report.repack.live_bytes
    assert dry.freed_bytes == report.freed_bytes and dry.packs.deleted == report.packs.deleted == 1
    assert shared not in present_packs(loc) and len(present_packs(loc)) == 1
    freed = before - repo_bytes(loc)
    assert freed == report.freed_bytes - report.repack.written_bytes >= 0.9 * len(content["replaced.bin"])
    assert not list(loc.store.list(repo_gc.DOOMED))
    assert_complete(loc, new_tree)
    assert b"".join(_content(loc, new_tree, b"kept.bin")) == content["kept.bin"]


def test_a_repack_killed_after_its_new_pack_is_written_is_finished_by_the_next_run(
    loc: Location, tmp_path: Path
) -> None:
    """Killed once the new pack and its index are stored, before the old pack is marked: each chunk in
    use is stored twice, which the next run resolves, ending where an uninterrupted run ends."""
    _old_tree, new_tree, shared, _ = shared_pack_backups(loc, tmp_path)
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)
    clean_copy = tmp_path / "clean"
    shutil.copytree(loc.directory, clean_copy)

    def killed_at_the_mark(key: str) -> None:
        if key.startswith(f"{repo_gc.DOOMED}packs/"):
            raise Interrupted(key)

    with pytest.raises(Interrupted):
        collect(Hooked(loc.store, on_put=killed_at_the_mark), loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    assert len(present_packs(loc)) == 2 and not list(loc.store.list(f"{repo_gc.DOOMED}packs/"))
    assert_complete(loc, new_tree)

    for step in (1, 2, 3):
        collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + step * GRACE)
        assert_complete(loc, new_tree)
    clean = open_location(clean_copy, KEY if loc.sealer.encrypts else None)
    for step in (1, 2, 3):
        collect(clean.store, clean.sealer, grace_seconds=GRACE, now=T0 + step * GRACE)
    assert shared not in present_packs(loc)
    assert keys(loc) == keys(clean)


def test_a_repack_interrupted_at_any_step_is_finished_by_the_next(tmp_path: Path) -> None:
    """Every put and delete of the collections that repack a pack and free the old one, each in turn
    made to fail: rerunning from there ends where an uninterrupted run ends."""
    prepared = open_location(tmp_path / "prepared", KEY)
    _old_tree, new_tree, _shared, _ = shared_pack_backups(prepared, tmp_path)
    collect(prepared.store, prepared.sealer, grace_seconds=GRACE, now=T0)
    steps = [T0 + GRACE, T0 + 2 * GRACE]

    def run_all(directory: Path, fail_at: int | None) -> tuple[dict[str, int], int]:
        loc = open_location(directory, KEY)
        writes = [0]
        lock = threading.Lock()

        def count(key: str) -> None:
            with lock:
                writes[0] += 1
                failing = writes[0] == fail_at
            if failing:
                raise Interrupted(key)

        hooked = Hooked(loc.store, on_put=count, on_delete=count)
        for now in steps:
            try:
                collect(hooked, loc.sealer, grace_seconds=GRACE, now=now)
            except Interrupted:
                assert_complete(loc, new_tree)
                collect(loc.store, loc.sealer, grace_seconds=GRACE, now=now)  # the retry
            assert_complete(loc, new_tree)
        collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 3 * GRACE)  # what a retry left
        return keys(loc), writes[0]

    shutil.copytree(tmp_path / "prepared", tmp_path / "clean")
    expected, total = run_all(tmp_path / "clean", None)
    assert len([k for k in expected if k.startswith("repo/packs/")]) == 1
    assert total > 5
    for fail_at in range(1, total + 1):
        directory = tmp_path / f"run-{fail_at}"
        shutil.copytree(tmp_path / "prepared", directory)
        assert run_all(directory, fail_at)[0] == expected, f"interrupted at write {fail_at}"
        shutil.rmtree(directory)


def test_two_collectors_repacking_at_once_keep_every_chunk(loc: Location, tmp_path: Path) -> None:
    """A second collector runs in full while the first is writing its new pack: both store the same
    pack (the same chunks in the same order, sealed as they were) and mark the old one."""
    _old_tree, new_tree, shared, _ = shared_pack_backups(loc, tmp_path)
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0)
    other: list[repo_gc.GcReport] = []

    def meanwhile(key: str) -> None:
        if key.startswith("repo/packs/") and not other:
            other.append(collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + GRACE))

    first = collect(Hooked(loc.store, on_put=meanwhile), loc.sealer, grace_seconds=GRACE, now=T0 + GRACE)
    (second,) = other
    assert first.repack.packs == second.repack.packs == 1
    assert len(present_packs(loc)) == 2
    assert_complete(loc, new_tree)
    collect(loc.store, loc.sealer, grace_seconds=GRACE, now=T0 + 2 * GRACE)
    assert shared not in present_packs(loc) and len(present_packs(loc)) == 1
    assert_complete(loc, new_tree)


def test_a_pack_with_a_damaged_chunk_in_use_is_not_repacked(loc: Location, tmp_path: Path) -> None:
    _old_tree, new_tree, shared, _ = shared_pack_backups(loc, tmp_path)
    index = RepoIndex(loc.store, loc.sealer)
    index.refresh()
    entry = index.get(next(iter(chunks_of(loc, new_tree, b"kept.bin"))))
    assert entry is not None
    data = bytearray(loc.store.get(pack_key(shared)))
    data[entry.offset + entry.length - 1] ^= 1
    loc.store.put(pack_key(shared), bytes(data))
    report = collect(loc.store, loc.sealer, grace_seconds=0, now=T0)
    assert report.repack.packs == report.repack.written == 0
    assert any(f"pack {shared} not repacked" in warning for warning in report.warnings), report.warnings
    assert present_packs(loc) == {shared}


def test_a_reader_whose_pack_was_repacked_and_deleted_finds_the_new_copy(
    loc: Location, tmp_path: Path
) -> None:
    """A restore longer than the grace period: its index was loaded before the repack, and the old pack
    is deleted while it reads. Its next read of a moved chunk reloads the index and reads the new copy."""
    from davit.repo import RepoReader

    _old_tree, new_tree, shared, content = shared_pack_backups(loc, tmp_path)
    index = RepoIndex(loc.store, loc.sealer)
    index.refresh()
    reader = RepoReader(loc.store, loc.sealer, index=index)
    kept = [
        c
        for e in iter_entries(loc.store, loc.sealer, new_tree)
        if e.path == b"kept.bin"
        for c in e.chunk_ids()
    ]
    assert {index.get(chunk).pack for chunk in kept} == {shared}  # type: ignore[union-attr]
    report = collect(loc.store, loc.sealer, grace_seconds=0, now=T0)
    assert report.repack.packs == 1 and shared not in present_packs(loc)
    assert b"".join(reader.read_chunk(chunk) for chunk in kept) == content["kept.bin"]
    assert {index.get(chunk).pack for chunk in kept} == present_packs(loc)  # type: ignore[union-attr]
