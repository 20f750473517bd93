"""Snapshot trees: every entry of a directory (path, type, metadata, and a file's data as chunk ids),
stored as sealed msgpack parts under a root object whose BLAKE3 is the tree's id.

Entries are in depth-first order with each directory's names sorted bytewise, which is the order of their
paths compared component by component (``tree_order``). A walk produces that order, so an incremental
snapshot merges the walk with the previous tree's entries as two sorted streams instead of holding either
in memory.

Paths are bytes, relative to the root, ``/``-separated; the root itself is the entry with the empty
path. Names are whatever bytes the filesystem holds (not necessarily UTF-8), so nothing is lost.

Making a tree of a directory is ``davit.repo.snapshot``; this module is the stored format.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import blake3
import msgpack

from davit.format.repository import fetch_sealed
from davit.format.sealing import MAX_CONTENT, CorruptObject, Sealer
from davit.repo import layout
from davit.repo.errors import RepoError
from davit.repo.writer import Extent
from davit.storage.base import ObjectNotFound, ObjectStore

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
KINDS = (FILE, DIR, SYMLINK)


@dataclass(frozen=True)
class Entry:
    path: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    inode: int
    target: bytes | None = None
    extents: tuple[Extent, ...] = ()

    @property
    def name(self) -> str:
        """The path for messages (undecodable bytes escaped)."""
        return os.fsdecode(self.path) if self.path else "."

    @property
    def components(self) -> list[bytes]:
        return self.path.split(b"/") if self.path else []

    def chunk_ids(self) -> Iterator[bytes]:
        for extent in self.extents:
            yield from extent.chunks


@dataclass(frozen=True)
class Tree:
    """A stored snapshot: its id, and where its entries are."""

    id: str
    parts: tuple[str, ...]
    entries: int
    #: Sum of the sizes of its files (holes included).
    size: int


# --- encoding ----------------------------------------------------------------------------------------


def encode_entry(entry: Entry) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": entry.path,
        "type": entry.kind,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "mtime": entry.mtime_ns,
        "size": entry.size,
        "inode": entry.inode,
    }
    if entry.target is not None:
        body["target"] = entry.target
    if entry.extents:
        body["extents"] = [[e.offset, e.length, list(e.chunks)] for e in entry.extents]
    return body


def decode_entry(body: Any) -> Entry:
    try:
        kind = body["type"]
        if kind not in KINDS:
            raise RepoError(f"unknown entry type {kind!r}")
        path, target = body["path"], body.get("target")
        if not isinstance(path, bytes) or not (target is None or isinstance(target, bytes)):
            raise RepoError("entry path and target must be bytes")
        extents = []
        for offset, length, chunks in body.get("extents", ()):
            if not all(isinstance(c, bytes) and len(c) == 32 for c in chunks):
                raise RepoError(f"malformed chunk id in {path!r}")
            extents.append(Extent(int(offset), int(length), tuple(chunks)))
        return Entry(
            path=path,
            kind=kind,
            mode=int(body["mode"]),
            uid=int(body["uid"]),
            gid=int(body["gid"]),
            mtime_ns=int(body["mtime"]),
            size=int(body["size"]),
            inode=int(body["inode"]),
            target=target,
            extents=tuple(extents),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RepoError(f"malformed tree entry: {exc!r}") from exc


def tree_order(path: bytes) -> list[bytes]:
    """The key that sorts paths in tree order (component by component)."""
    return path.split(b"/") if path else []


class TreeBuilder:
    """Writes entries in parts as they come, then the root: at most one part in memory."""

    def __init__(self, store: ObjectStore, sealer: Sealer, part_size: int = layout.TREE_PART_SIZE) -> None:
        self.store = store
        self.sealer = sealer
        self.part_size = part_size
        self._packer = msgpack.Packer(use_bin_type=True)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._parts: list[bytes] = []
        self._entries = 0
        self._size = 0
        self._last: list[bytes] | None = None

    def add(self, entry: Entry) -> None:
        key = tree_order(entry.path)
        if self._last is not None and key <= self._last:
            previous = os.fsdecode(b"/".join(self._last))
            raise RepoError(f"tree entries out of order: {entry.name} after {previous}")
        self._last = key
        packed: bytes = self._packer.pack(encode_entry(entry))
        self._buffer.append(packed)
        self._buffered += len(packed)
        self._entries += 1
        if entry.kind == FILE:
            self._size += entry.size
        if self._buffered >= self.part_size:
            self._write_part()

    def _write_part(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        digest = blake3.blake3(data).digest()
        key = layout.tree_part_key(digest.hex())
        self.store.put(key, self.sealer.seal(key, data))
        self._parts.append(digest)

    def finish(self) -> Tree:
        """Write the last part and the root. Every chunk the entries reference must be stored by now."""
        self._write_part()
        return _write_root(self.store, self.sealer, self._parts, self._entries, self._size)


def _open_verified(
    store: ObjectStore, sealer: Sealer, key: str, object_id: str, max_size: int = MAX_CONTENT
) -> bytes:
    try:
        data = sealer.open(key, fetch_sealed(store, key, max_size), max_size)
    except ObjectNotFound as exc:
        raise RepoError(f"{key} is missing") from exc
    except CorruptObject as exc:
        raise RepoError(str(exc)) from exc
    if blake3.blake3(data).hexdigest() != object_id:
        raise RepoError(f"{key}: content does not match its id")
    return data


def load_tree(store: ObjectStore, sealer: Sealer, tree_id: str) -> Tree:
    if not layout.is_id(tree_id):
        raise RepoError(f"{tree_id!r} is not a tree id")
    key = layout.tree_key(tree_id)
    try:
        root = msgpack.unpackb(_open_verified(store, sealer, key, tree_id), raw=False)
        if int(root["version"]) > layout.REPO_VERSION:
            raise RepoError(f"{key}: tree version {root['version']} is newer than this Davit reads")
        parts = tuple(bytes(p).hex() for p in root["parts"])
        return Tree(id=tree_id, parts=parts, entries=int(root["entries"]), size=int(root["size"]))
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise RepoError(f"{key}: malformed tree: {exc!r}") from exc


def iter_entries(store: ObjectStore, sealer: Sealer, tree: Tree) -> Iterator[Entry]:
    """The tree's entries in order, one part in memory at a time."""
    for part_id in tree.parts:
        data = _open_verified(store, sealer, layout.tree_part_key(part_id), part_id, layout.MAX_TREE_PART)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
        unpacker.feed(data)
        del data
        try:
            for body in unpacker:
                yield decode_entry(body)
        except (ValueError, msgpack.UnpackException) as exc:
            raise RepoError(f"tree part {part_id}: malformed: {exc!r}") from exc


def merge_trees(store: ObjectStore, sealer: Sealer, shards: list[Tree]) -> Tree:
    """One tree of the shards' trees, given in range order: their parts, one after the other, already
    are the whole tree's entries in order, so only a new root is written (no entry is read again)."""
    if len(shards) == 1:
        return shards[0]
    parts = [bytes.fromhex(p) for tree in shards for p in tree.parts]
    entries = sum(tree.entries for tree in shards)
    size = sum(tree.size for tree in shards)
    return _write_root(store, sealer, parts, entries, size)


def _write_root(store: ObjectStore, sealer: Sealer, parts: list[bytes], entries: int, size: int) -> Tree:
    body = {"version": layout.REPO_VERSION, "entries": entries, "size": size, "parts": parts}
    root: bytes = msgpack.packb(body, use_bin_type=True)
    tree_id = blake3.blake3(root).hexdigest()
    key = layout.tree_key(tree_id)
    store.put(key, sealer.seal(key, root))
    return Tree(id=tree_id, parts=tuple(p.hex() for p in parts), entries=entries, size=size)
