"""Restore never writes outside its target: crafted trees with absolute paths, ``..``, empty components
or entries below a symlink are refused, and what already sits in the target (a symlink, a hard link) is
replaced, never written through. The node agent's marker is written without following links and a tree
holding an entry where the marker goes is refused; setuid/setgid bits are stripped unless kept; a mode,
owner or mtime that does not fit is a clear error naming the entry."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from davit.repo import Entry, Extent, RepoError, RepoReader, RepoWriter, Tree, UnsafePath, restore_tree
from davit.repo.restore import safe_components
from davit.repo.tree_format import DIR, FILE, SYMLINK, TreeBuilder
from davit.restore.init_container import MARKER_DIR, is_restored
from davit_services.uploader.restorer import keeps_setuid, leave_marker, marker_entry
from tests.unit.test_repo_support import Location, open_location, snapshot_of, write

PAYLOAD = b"written by a crafted tree\n"


@pytest.fixture
def loc(tmp_path: Path) -> Location:
    return open_location(tmp_path / "location")


def entry(
    path: bytes,
    kind: str = FILE,
    target: bytes | None = None,
    extents: tuple[Extent, ...] = (),
    mode: int | None = None,
    uid: int = 0,
) -> Entry:
    size = sum(e.length for e in extents)
    mode = mode if mode is not None else 0o644 if kind != DIR else 0o755
    return Entry(path, kind, mode, uid, 0, 10**18, size, 1, target, extents)


def crafted_tree(
    loc: Location,
    tmp_path: Path,
    specs: list[tuple[bytes, str, bytes | None]],
    modes: dict[bytes, int] | None = None,
    uids: dict[bytes, int] | None = None,
) -> Tree:
    """A tree with the given entries, each file holding PAYLOAD (stored for real); ``modes`` and ``uids``
    override an entry's mode and owner, as a crafted tree may."""
    write(tmp_path / "payload", PAYLOAD)
    with RepoWriter(loc.store, loc.sealer) as writer:
        stored = writer.store_file(tmp_path / "payload")
    builder = TreeBuilder(loc.store, loc.sealer)
    builder.add(entry(b"", DIR))
    for path, kind, target in specs:
        extents = stored.extents if kind == FILE else ()
        builder.add(entry(path, kind, target, extents, (modes or {}).get(path), (uids or {}).get(path, 0)))
    return builder.finish()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the target that a restore must never touch."""
    directory = tmp_path / "outside"
    write(directory / "victim", b"original\n")
    return directory


ESCAPES: dict[str, list[tuple[bytes, str, bytes | None]]] = {
    "absolute path": [(b"/tmp/davit-escape", FILE, None)],
    "dot-dot": [(b"../outside/escaped", FILE, None)],
    "dot-dot in the middle": [(b"a", DIR, None), (b"a/../../outside/escaped", FILE, None)],
    "dot component": [(b"./x", FILE, None)],
    "empty component": [(b"a", DIR, None), (b"a//x", FILE, None)],
    "NUL byte": [(b"x\0y", FILE, None)],
    "below an absolute symlink": [(b"link", SYMLINK, b"OUTSIDE"), (b"link/escaped", FILE, None)],
    "below a relative symlink": [(b"link", SYMLINK, b"../outside"), (b"link/escaped", FILE, None)],
    "below a symlink to a symlink": [
        (b"hop", SYMLINK, b"../outside"),
        (b"link", SYMLINK, b"hop"),
        (b"link/escaped", FILE, None),
    ],
    "dir below a symlink": [(b"link", SYMLINK, b"OUTSIDE"), (b"link/sub", DIR, None)],
    "symlink below a symlink": [(b"link", SYMLINK, b"OUTSIDE"), (b"link/l2", SYMLINK, b"/etc/passwd")],
    # Even a symlink that stays inside is not followed: walks never produce entries below one.
    "below a symlink to inside": [(b"a", DIR, None), (b"in", SYMLINK, b"a"), (b"in/x", FILE, None)],
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escaping_entries_are_refused(loc: Location, tmp_path: Path, outside: Path, case: str) -> None:
    specs = [(p, k, (os.fsencode(outside) if t == b"OUTSIDE" else t)) for p, k, t in ESCAPES[case]]
    tree = crafted_tree(loc, tmp_path, specs)
    before = snapshot_of(tmp_path)
    target = tmp_path / "target"
    with pytest.raises(UnsafePath, match="refusing"):
        restore_tree(tree, target, RepoReader(loc.store, loc.sealer))
    after = snapshot_of(tmp_path)
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    # Only the target (and the mtime of the directory it was created in) changed.
    assert all(p in (b".", b"target") or p.startswith(b"target/") for p in changed), changed
    assert not Path("/tmp/davit-escape").exists()


def test_existing_symlinks_in_the_target_are_replaced_not_followed(
    loc: Location, tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside / "victim", target / "file")
    os.symlink(outside, target / "dir")
    os.link(outside / "victim", target / "hardlink")
    tree = crafted_tree(
        loc,
        tmp_path,
        [(b"dir", DIR, None), (b"dir/x", FILE, None), (b"file", FILE, None), (b"hardlink", FILE, None)],
    )
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer))
    assert (outside / "victim").read_bytes() == b"original\n"
    assert sorted(os.listdir(outside)) == ["victim"]
    assert not (target / "dir").is_symlink() and (target / "dir" / "x").read_bytes() == PAYLOAD
    assert not (target / "file").is_symlink() and (target / "file").read_bytes() == PAYLOAD
    assert (target / "hardlink").read_bytes() == PAYLOAD


def test_an_existing_symlink_among_the_parents_is_refused(
    loc: Location, tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "dir")
    tree = crafted_tree(loc, tmp_path, [(b"dir/x", FILE, None)])  # no entry for "dir" itself
    with pytest.raises(UnsafePath, match="symlink"):
        restore_tree(tree, target, RepoReader(loc.store, loc.sealer))
    assert sorted(os.listdir(outside)) == ["victim"]


def test_symlinks_are_restored_verbatim_inside_the_target(
    loc: Location, tmp_path: Path, outside: Path
) -> None:
    tree = crafted_tree(
        loc, tmp_path, [(b"abs", SYMLINK, os.fsencode(outside)), (b"rel", SYMLINK, b"../../x")]
    )
    target = tmp_path / "target"
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer))
    assert os.readlink(target / "abs") == str(outside)
    assert os.readlink(target / "rel") == "../../x"
    assert sorted(os.listdir(outside)) == ["victim"]


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        (b"", []),
        (b"a", [b"a"]),
        (b"a/b/c", [b"a", b"b", b"c"]),
        (b"..a/b..", [b"..a", b"b.."]),
        (b"\xff", [b"\xff"]),
    ],
)
def test_safe_components_accepts_ordinary_paths(path: bytes, parts: list[bytes]) -> None:
    assert safe_components(path) == parts


@pytest.mark.parametrize("path", [b"/a", b"..", b"a/..", b"a/../b", b".", b"a/./b", b"a/", b"a//b", b"a\0"])
def test_safe_components_refuses_escapes(path: bytes) -> None:
    with pytest.raises(UnsafePath):
        safe_components(path)


# --- the node agent's marker -------------------------------------------------------------------------

RESTORE_UID = "4f1d6c1e-0000-4000-8000-000000000001"


def changed_outside(
    before: dict[bytes, tuple[object, ...]], after: dict[bytes, tuple[object, ...]]
) -> set[bytes]:
    return {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}


def test_the_marker_is_written_and_owned_like_the_volume(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    leave_marker(volume, RESTORE_UID)
    assert is_restored(volume, RESTORE_UID)
    st, marker = os.stat(volume), os.stat(volume / MARKER_DIR / RESTORE_UID)
    assert (marker.st_uid, marker.st_gid) == (st.st_uid, st.st_gid)
    # Whatever non-root user the init container runs as may remove the marker.
    assert stat.S_IMODE(os.stat(volume / MARKER_DIR).st_mode) == 0o777
    leave_marker(volume, RESTORE_UID)  # a retried task finds its own marker and is done
    assert os.listdir(volume / MARKER_DIR) == [RESTORE_UID]


@pytest.mark.parametrize("planted", ["marker directory", "marker file", "hard-linked marker"])
def test_a_planted_link_at_the_marker_is_refused_and_nothing_outside_changes(
    tmp_path: Path, outside: Path, planted: str
) -> None:
    """The restored tree (a tenant's data) puts a link where root writes and chowns the marker."""
    volume = tmp_path / "volume"
    volume.mkdir()
    if planted == "marker directory":
        os.symlink(outside, volume / MARKER_DIR)
    elif planted == "marker file":
        (volume / MARKER_DIR).mkdir()
        os.symlink(outside / "victim", volume / MARKER_DIR / RESTORE_UID)
    else:
        (volume / MARKER_DIR).mkdir()
        os.link(outside / "victim", volume / MARKER_DIR / RESTORE_UID)
    if os.geteuid() == 0:
        os.chown(volume, 4321, 4321)  # root would give what it touches to this owner
    before = snapshot_of(outside)
    with pytest.raises(UnsafePath, match="restore marker"):
        leave_marker(volume, RESTORE_UID)
    assert changed_outside(before, snapshot_of(outside)) == set()
    assert sorted(os.listdir(outside)) == ["victim"]


@pytest.mark.parametrize(
    "specs",
    [
        [(os.fsencode(MARKER_DIR), SYMLINK, b"OUTSIDE")],
        [(os.fsencode(MARKER_DIR), FILE, None)],
        [(os.fsencode(MARKER_DIR), DIR, None), (os.fsencode(f"{MARKER_DIR}/{RESTORE_UID}"), FILE, None)],
        [(os.fsencode(MARKER_DIR), DIR, None), (os.fsencode(f"{MARKER_DIR}/{RESTORE_UID}"), DIR, None)],
        [
            (os.fsencode(MARKER_DIR), DIR, None),
            (os.fsencode(f"{MARKER_DIR}/{RESTORE_UID}"), SYMLINK, b"OUTSIDE"),
        ],
    ],
    ids=["symlink-dir", "file-dir", "file-marker", "dir-marker", "symlink-marker"],
)
def test_a_tree_with_an_entry_where_the_marker_goes_is_refused(
    loc: Location, tmp_path: Path, outside: Path, specs: list[tuple[bytes, str, bytes | None]]
) -> None:
    specs = [(p, k, (os.fsencode(outside) if t == b"OUTSIDE" else t)) for p, k, t in specs]
    tree = crafted_tree(loc, tmp_path, specs)
    before = snapshot_of(outside)
    with pytest.raises(UnsafePath, match="the restore itself writes"):
        restore_tree(tree, tmp_path / "volume", RepoReader(loc.store, loc.sealer),
                     reserved=(marker_entry(RESTORE_UID),))  # fmt: skip
    assert changed_outside(before, snapshot_of(outside)) == set()


def test_another_restores_marker_in_the_tree_is_restored_as_data(loc: Location, tmp_path: Path) -> None:
    """A volume backed up while an earlier restore's marker was in it holds that marker as a plain file:
    it is data, and this restore's marker goes beside it."""
    earlier = os.fsencode(f"{MARKER_DIR}/an-earlier-restore")
    tree = crafted_tree(loc, tmp_path, [(os.fsencode(MARKER_DIR), DIR, None), (earlier, FILE, None)])
    volume = tmp_path / "volume"
    restore_tree(tree, volume, RepoReader(loc.store, loc.sealer), reserved=(marker_entry(RESTORE_UID),))
    leave_marker(volume, RESTORE_UID)
    assert sorted(os.listdir(volume / MARKER_DIR)) == sorted(["an-earlier-restore", RESTORE_UID])


# --- setuid, setgid and modes that do not fit ---------------------------------------------------------


def test_setuid_and_setgid_are_stripped_unless_kept(loc: Location, tmp_path: Path) -> None:
    modes = {b"suid": 0o4755, b"sgid": 0o2755, b"both": 0o6711, b"sticky-dir": 0o1777, b"sgid-dir": 0o2775}
    specs: list[tuple[bytes, str, bytes | None]] = [
        (b"both", FILE, None), (b"sgid", FILE, None), (b"sgid-dir", DIR, None), (b"sticky-dir", DIR, None),
        (b"suid", FILE, None),
    ]  # fmt: skip
    tree = crafted_tree(loc, tmp_path, specs, modes=modes)
    stripped, kept = tmp_path / "stripped", tmp_path / "kept"
    restore_tree(tree, stripped, RepoReader(loc.store, loc.sealer))
    mode_of = {name: stat.S_IMODE(os.lstat(stripped / name).st_mode) for name in ("suid", "sgid", "both")}
    assert mode_of == {"suid": 0o755, "sgid": 0o755, "both": 0o711}
    # Directories keep theirs: setgid on a directory only makes new files inherit its group.
    assert stat.S_IMODE(os.lstat(stripped / "sgid-dir").st_mode) == 0o2775
    assert stat.S_IMODE(os.lstat(stripped / "sticky-dir").st_mode) == 0o1777
    assert (stripped / "suid").read_bytes() == PAYLOAD

    restore_tree(tree, kept, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    assert stat.S_IMODE(os.lstat(kept / "suid").st_mode) == 0o4755
    if os.geteuid() == 0 or 0 in os.getgroups():  # setgid of a file of another group needs privilege
        assert stat.S_IMODE(os.lstat(kept / "both").st_mode) == 0o6711


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", 2**40), ("mode", 0o10000), ("mode", -1), ("uid", 2**40), ("uid", 2**32 - 1), ("uid", -5)],
)
def test_a_mode_or_owner_that_does_not_fit_is_a_clear_error(
    loc: Location, tmp_path: Path, field: str, value: int
) -> None:
    """Not OverflowError out of the node agent's handler: a RepoError naming the entry and the field."""
    tree = crafted_tree(loc, tmp_path, [(b"odd", FILE, None), (b"ok", FILE, None)],
                        modes={b"odd": value} if field == "mode" else None,
                        uids={b"odd": value} if field == "uid" else None)  # fmt: skip
    with pytest.raises(RepoError, match=rf"refusing 'odd': its {field} {value} is out of range"):
        restore_tree(tree, tmp_path / "target", RepoReader(loc.store, loc.sealer))


@pytest.mark.parametrize(
    ("namespace", "field", "kept"),
    [("kube-system", True, True), ("kube-system", None, False), ("kube-system", "true", False),
     ("team-a", True, False), ("team-a", None, False)],
)  # fmt: skip
def test_only_an_admin_location_may_keep_setuid(namespace: str, field: object, kept: bool) -> None:
    """A tenant's own location cannot opt in: the node agent would restore setuid-root programs for it."""
    spec: dict[str, object] = {"type": "s3", "path": "b"}
    if field is not None:
        spec["restoreSetuid"] = field
    location = {"metadata": {"namespace": namespace, "name": "loc"}, "location": spec}
    assert keeps_setuid(location, "kube-system") is kept
    assert keeps_setuid(None, "kube-system") is False
