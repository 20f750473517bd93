"""Restore never writes outside its target: crafted trees with absolute paths, ``..``, empty components
or entries below a symlink are refused, and what already sits in the target (a symlink, a hard link) is
replaced, never written through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.repo import Entry, Extent, RepoReader, RepoWriter, Tree, UnsafePath, restore_tree
from davit.repo.restore import safe_components
from davit.repo.tree import DIR, FILE, SYMLINK, TreeBuilder
from tests.unit.test_repo_support import Location, open_location, snapshot_of, write

PAYLOAD = b"written by a crafted tree\n"


@pytest.fixture
def loc(tmp_path: Path) -> Location:
    return open_location(tmp_path / "location")


def entry(
    path: bytes, kind: str = FILE, target: bytes | None = None, extents: tuple[Extent, ...] = ()
) -> Entry:
    size = sum(e.length for e in extents)
    return Entry(path, kind, 0o644 if kind != DIR else 0o755, 0, 0, 10**18, size, 1, target, extents)


def crafted_tree(loc: Location, tmp_path: Path, specs: list[tuple[bytes, str, bytes | None]]) -> Tree:
    """A tree with the given entries, each file holding PAYLOAD (stored for real)."""
    write(tmp_path / "payload", PAYLOAD)
    with RepoWriter(loc.store, loc.sealer) as writer:
        stored = writer.store_file(tmp_path / "payload")
    builder = TreeBuilder(loc.store, loc.sealer)
    builder.add(entry(b"", DIR))
    for path, kind, target in specs:
        builder.add(entry(path, kind, target, stored.extents if kind == FILE else ()))
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
