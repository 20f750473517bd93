"""The repository index: which pack holds each chunk, at which offset, how long sealed and raw.

One index object per pack, ``repo/index/<pack id>``, written after its pack. Loading lists
``repo/index/`` and reads every index object not read before; a process keeps one index per store
object and sealer, so the next backup in the same worker only reads what was added since.

Packs that garbage collection has marked for deletion (``repo/gc/doomed/packs/<pack id>.<since>``,
docs/format.md "Garbage collection") stay readable, but their chunks do not count as stored for a
writer: ``chunk in index`` is false unless another, unmarked pack holds the chunk too. A writer therefore
never makes a new reference to a chunk the collector may delete; it stores its own copy instead.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import msgpack

from davit.format.repository import fetch_sealed
from davit.format.sealing import CorruptObject, Sealer
from davit.repo import layout
from davit.repo.errors import RepoError
from davit.storage.base import ObjectNotFound, ObjectStore

#: Index objects read at once: they are small, so a remote store's latency is what loading waits on.
LOAD_CONCURRENCY = 16
#: Where garbage collection marks the packs it will delete: ``<pack id>.<unix seconds marked>``.
DOOMED_PACKS = "repo/gc/doomed/packs/"


class IndexEntry(NamedTuple):
    pack: str
    offset: int
    length: int
    raw_size: int


def encode_index(pack_id: str, chunks: Iterable[tuple[bytes, int, int, int]]) -> bytes:
    """The unsealed index object of a pack: ``chunks`` are (id, offset, sealed length, raw size)."""
    body = {"version": layout.REPO_VERSION, "pack": pack_id, "chunks": [list(c) for c in chunks]}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_index(key: str, pack_id: str, raw: bytes) -> list[tuple[bytes, IndexEntry]]:
    try:
        body = msgpack.unpackb(raw, raw=False)
        if not isinstance(body, dict) or int(body["version"]) > layout.REPO_VERSION:
            raise RepoError(f"{key}: unsupported index version {body.get('version')!r}")
        if body["pack"] != pack_id:
            raise RepoError(f"{key}: index of pack {body['pack']!r} stored under another pack's name")
        out = []
        for chunk_id, offset, length, raw_size in body["chunks"]:
            if not isinstance(chunk_id, bytes) or len(chunk_id) != 32:
                raise RepoError(f"{key}: malformed chunk id {chunk_id!r}")
            out.append((chunk_id, IndexEntry(pack_id, int(offset), int(length), int(raw_size))))
        return out
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise RepoError(f"{key}: unreadable index object: {exc!r}") from exc


def parse_doom_marker(key: str, prefix: str) -> tuple[str, int] | None:
    """(object id, unix seconds it was marked) of a doom marker key under ``prefix``, or None."""
    object_id, dot, since = key[len(prefix) :].partition(".")
    if key.startswith(prefix) and dot and layout.is_id(object_id) and since.isdigit():
        return object_id, int(since)
    return None


class RepoIndex:
    """Chunk id (32 raw bytes) → where it is stored. Thread-safe; shared by a process's writers."""

    def __init__(self, store: ObjectStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        self._entries: dict[bytes, IndexEntry] = {}
        #: Chunks stored in more than one pack: the copies other than the one in ``_entries``.
        self._copies: dict[bytes, list[IndexEntry]] = {}
        #: Packs marked for deletion → the keys of their markers.
        self._doomed: dict[str, list[str]] = {}
        self._packs: set[str] = set()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    # One index per store object and sealer: a store object is one location, and a different key must
    # never see what another key loaded. Keyed by object, not URL: two S3 endpoints can have equal URLs.
    _cache: weakref.WeakKeyDictionary[ObjectStore, dict[Sealer, RepoIndex]] = weakref.WeakKeyDictionary()
    _cache_lock = threading.Lock()

    @classmethod
    def load(cls, store: ObjectStore, sealer: Sealer) -> RepoIndex:
        """The process's index of ``store``, brought up to date with what other writers added."""
        with cls._cache_lock:
            per_store = cls._cache.setdefault(store, {})
            index = per_store.get(sealer)
            if index is None:
                index = per_store[sealer] = cls(store, sealer)
        index.refresh()
        return index

    def refresh(self, errors: list[str] | None = None) -> int:
        """Read index objects not read yet; returns how many. An index object that went away (garbage
        collection) makes the next refresh start over, since its chunks may be duplicated elsewhere (a
        repacked pack's are); the index read so far keeps answering until the new one is complete.

        With ``errors``, unreadable index objects are reported there instead of raised (check)."""
        with self._refresh_lock:
            # Markers before index objects: a pack marked after this listing was marked after this
            # view was taken, which is what the collector's grace period allows for.
            doomed: dict[str, list[str]] = {}
            for info in self.store.list(DOOMED_PACKS):
                marker = parse_doom_marker(info.key, DOOMED_PACKS)
                if marker is not None:
                    doomed.setdefault(marker[0], []).append(info.key)
            listed = {}
            for info in self.store.list(layout.INDEX):
                pack_id = info.key[len(layout.INDEX) :]
                if layout.is_id(pack_id):
                    listed[pack_id] = info.key
            with self._lock:
                self._doomed = doomed
                start_over = bool(self._packs - listed.keys())
                new = [pack_id for pack_id in listed if start_over or pack_id not in self._packs]
            if not new:
                return 0
            # Readers in the middle of a restore use this index meanwhile: starting over, the new one is
            # built apart and put in place at once, so a chunk never looks missing while it loads.
            target = RepoIndex(self.store, self.sealer) if start_over else self
            with ThreadPoolExecutor(min(LOAD_CONCURRENCY, len(new))) as pool:
                for pack_id, result in zip(new, pool.map(self._read_one, new), strict=True):
                    if isinstance(result, Exception):
                        if errors is None:
                            raise result
                        errors.append(str(result))
                        continue
                    if result is not None:
                        target._record(pack_id, result)
            if target is not self:
                with self._lock:
                    self._entries, self._copies, self._packs = target._entries, target._copies, target._packs
            return len(new)

    def _read_one(self, pack_id: str) -> list[tuple[bytes, IndexEntry]] | Exception | None:
        key = layout.index_key(pack_id)
        try:
            return decode_index(key, pack_id, self.sealer.open(key, fetch_sealed(self.store, key)))
        except ObjectNotFound:
            return None  # removed between listing and reading
        except (CorruptObject, RepoError) as exc:
            return exc

    def add(self, pack_id: str, entries: Iterable[tuple[bytes, IndexEntry]]) -> None:
        """Record the chunks of a pack this process has just stored (its index object written).

        A pack marked for deletion that a writer stores again (unencrypted, the same chunks in the same
        order make the same pack) is in use again: its markers are withdrawn, so a collector, which
        looks at a pack's marker just before deleting it, leaves it alone. One that looked just before
        the withdrawal may be deleting it: then the pack is not recorded and the writer fails (a retry
        stores the chunks again) rather than reference chunks that are gone."""
        with self._lock:
            markers = list(self._doomed.get(pack_id, ()))
        if markers:
            for key in markers:
                self.store.delete(key)
            if not (
                self.store.exists(layout.pack_key(pack_id)) and self.store.exists(layout.index_key(pack_id))
            ):
                raise RepoError(f"pack {pack_id} was deleted by garbage collection as it was stored again")
            with self._lock:
                self._doomed.pop(pack_id, None)
        self._record(pack_id, entries)

    def _record(self, pack_id: str, entries: Iterable[tuple[bytes, IndexEntry]]) -> None:
        """Record a pack's chunks; a chunk already known keeps its first location, other copies are
        kept aside for when that one's pack is marked for deletion."""
        with self._lock:
            self._packs.add(pack_id)
            for chunk_id, entry in entries:
                first = self._entries.setdefault(chunk_id, entry)
                if first is not entry and first.pack != entry.pack:
                    self._copies.setdefault(chunk_id, []).append(entry)

    def get(self, chunk_id: bytes) -> IndexEntry | None:
        """Where to read the chunk: a copy in a pack not marked for deletion if there is one."""
        entry = self._entries.get(chunk_id)
        if entry is not None and self._doomed and entry.pack in self._doomed:
            for other in self._copies.get(chunk_id, ()):
                if other.pack not in self._doomed:
                    return other
        return entry

    def __contains__(self, chunk_id: object) -> bool:
        """Whether the chunk is stored in a pack not marked for deletion: what a writer may skip."""
        if not isinstance(chunk_id, bytes):
            return False
        entry = self._entries.get(chunk_id)
        if entry is None:
            return False
        doomed = self._doomed
        if not doomed or entry.pack not in doomed:
            return True
        return any(other.pack not in doomed for other in self._copies.get(chunk_id, ()))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[bytes]:
        with self._lock:
            return iter(list(self._entries))

    @property
    def packs(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._packs)

    @property
    def doomed(self) -> frozenset[str]:
        """The packs marked for deletion when last refreshed."""
        with self._lock:
            return frozenset(self._doomed)
