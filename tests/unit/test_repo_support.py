"""Shared helpers of the volume-data repository tests (test_repo_*.py): a location on a real LocalStore,
a directory with every kind of content the repository must keep, and a byte-for-byte comparison of two
directories (contents, types, modes, ownership, mtimes, link targets, holes). Holds no tests itself."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from davit.format.repository import BackupRepository
from davit.format.sealing import Sealer
from davit.storage.local import LocalStore

MiB = 1 << 20
SPARSE_SIZE = 64 * MiB
#: Names that are not ASCII, one of them not even UTF-8 (bytes a filesystem accepts anyway).
UNICODE_NAME = "ünïcødé-文件-😀.txt"
LATIN1_NAME = os.fsdecode(b"latin1-\xe9t\xe9.txt")
DEEP_LEVELS = 40


@dataclass
class Location:
    store: LocalStore
    sealer: Sealer
    directory: Path


def open_location(directory: Path, encryption_key: str | None = None) -> Location:
    directory.mkdir(parents=True, exist_ok=True)
    store = LocalStore(directory)
    return Location(store, BackupRepository.open(store, encryption_key).sealer, directory)


def stored_bytes(loc: Location, prefix: str = "repo/") -> int:
    return sum(info.size for info in loc.store.list(prefix))


def pack_keys(loc: Location) -> set[str]:
    return {info.key for info in loc.store.list("repo/packs/")}


def write(path: Path, data: bytes, mode: int = 0o644, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def text_data(rng: random.Random, size: int) -> bytes:
    words = [b"alpha", b"volume", b"backup", b"restore", b"pod", b"kubelet", b"chunk", b"pack", b"index"]
    out = bytearray()
    line = 0
    while len(out) < size:
        out += b"%08d %s\n" % (line, b" ".join(rng.choice(words) for _ in range(8)))
        line += 1
    return bytes(out[:size])


def make_dataset(root: Path, seed: int = 1, small_files: int = 2000) -> None:
    """A directory with random and text files, many small files, symlinks, an empty directory, sparse
    files, an empty file, non-ASCII names, a deep path, unusual modes, owners and mtimes."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    root.mkdir(parents=True, exist_ok=True)
    write(root / "data" / "random-3m.bin", rng.randbytes(3 * MiB + 12345))
    write(root / "data" / "random-700k.bin", rng.randbytes(700 * 1024), mode=0o600)
    write(root / "data" / "random-100k.bin", rng.randbytes(100 * 1024), mode=0o755)
    write(root / "text" / "readme.txt", b"Davit restores what it backed up.\n" * 100)
    write(root / "text" / "log.txt", text_data(rng, 2 * MiB), mtime_ns=1_234_567_890_123_456_789)
    write(root / "text" / "old.txt", b"from before 1970\n", mtime_ns=-86_400 * 10**9 + 5)
    for i in range(small_files):
        write(root / "many" / f"d{i % 20:02d}" / f"f{i:05d}.dat", rng.randbytes(rng.randrange(0, 2048)))
    write(root / "empty-file", b"")
    (root / "empty-dir").mkdir()
    os.symlink("text/readme.txt", root / "link-relative")
    os.symlink("/etc/hostname", root / "link-absolute")
    os.symlink("../../nowhere", root / "data" / "link-dangling")
    with open(root / "sparse-64m.img", "wb") as file:
        file.truncate(SPARSE_SIZE)
    with open(root / "sparse-mixed.img", "wb") as file:
        file.truncate(SPARSE_SIZE)
        file.write(b"head" * 1024)
        file.seek(10 * MiB)
        file.write(rng.randbytes(MiB))
        file.seek(SPARSE_SIZE - 100)
        file.write(b"t" * 100)
    write(root / UNICODE_NAME, "héllo wörld ✓\n".encode())
    write(root / LATIN1_NAME, b"latin-1 name\n")
    deep = root.joinpath(*[f"level{i:02d}" for i in range(DEEP_LEVELS)])
    write(deep / "leaf.txt", b"deep down\n")
    owned = root / "owned-by-someone-else"
    write(owned, b"uid 1234\n", mode=0o640)
    setuid = root / "setuid-tool"
    write(setuid, b"#!/bin/sh\n", mode=0o4755)
    if os.geteuid() == 0:
        os.chown(owned, 1234, 5678)
        os.chown(setuid, 0, 0)
        os.chmod(setuid, 0o4755)  # noqa: S103 - the mode under test; chown cleared it
        os.lchown(root / "link-relative", 4321, 8765)
    os.chmod(root / "empty-dir", 0o750)  # noqa: S103 - a mode to restore
    # Directory mtimes last: creating their contents changed them.
    os.utime(root / "empty-dir", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.utime(root / "link-relative", ns=(1_500_000_000_000_000_001,) * 2, follow_symlinks=False)
    os.utime(root / "data", ns=(1_700_000_000_000_000_007,) * 2)


def data_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    with open(path, "rb") as file:
        fd, size, pos = file.fileno(), os.fstat(file.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, end))
            pos = end
    return ranges


def snapshot_of(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything the repository must keep about ``root``, by relative path (bytes)."""
    out: dict[bytes, tuple[object, ...]] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            common = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (*common, os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(full, "rb") as file:
                    while block := file.read(MiB):
                        digest.update(block)
                out[rel] = (*common, st.st_size, digest.hexdigest())
            else:
                out[rel] = common
    return out


def assert_same_tree(source: Path, restored: Path) -> None:
    expected, actual = snapshot_of(source), snapshot_of(restored)
    assert sorted(actual) == sorted(expected)
    for path, value in expected.items():
        assert actual[path] == value, f"{os.fsdecode(path)} differs"
