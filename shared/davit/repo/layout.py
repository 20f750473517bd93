"""Where the repository's objects live in a location, and the fixed parameters of format version 1.

::

    repo/packs/<first 2 hex of pack id>/<pack id>   sealed chunks, concatenated; pack id = BLAKE3(pack bytes)
    repo/index/<pack id>                            sealed msgpack: the chunks of that pack; written AFTER it
    repo/trees/<tree id>                            sealed msgpack: a snapshot tree's root; tree id = BLAKE3
    repo/tree-parts/<part id>                       sealed msgpack: a run of tree entries; part id = BLAKE3
"""

from __future__ import annotations

import re
from typing import Final

REPO_VERSION: Final = 1

PREFIX: Final = "repo/"
PACKS: Final = "repo/packs/"
INDEX: Final = "repo/index/"
TREES: Final = "repo/trees/"
TREE_PARTS: Final = "repo/tree-parts/"

# Chunking. FastCDC's real average is avg + min (its "cut-point skipping" starts looking after the
# minimum), so these give chunks of ~1.25 MiB: large enough that per-chunk costs (an index entry of ~45
# bytes, a sealing header, a pool task) stay well under 1% and an index of a TiB fits in memory (~900k
# entries); small enough that an edit in a large file re-stores about a megabyte, not a whole file.
# The 256 KiB minimum bounds how small chunks get in data with many cut points; the 4 MiB maximum bounds
# the memory of a chunk in flight and what a single change can cost when no cut point is found.
CHUNK_AVG: Final = 1 << 20
CHUNK_MIN: Final = 256 << 10
CHUNK_MAX: Final = 4 << 20
#: Pack files close once they reach this size: few objects (cheap listing, few requests per GiB) while
#: a lost pack (a writer killed mid-upload) loses little work.
PACK_SIZE: Final = 16 << 20
#: What a reader fetches of a pack at most: a pack closes once it reaches ``PACK_SIZE``, so it is at most
#: one sealed chunk (4 MiB, zstd's bound for incompressible data and a header) longer.
MAX_PACK: Final = PACK_SIZE + CHUNK_MAX + (CHUNK_MAX >> 8) + (64 << 10)
#: Tree entries are stored in parts of about this many serialised bytes, so neither writing nor reading
#: a tree of millions of entries holds it whole.
TREE_PART_SIZE: Final = 4 << 20
#: What a reader accepts as one tree part: a part closes after the entry that takes it past
#: ``TREE_PART_SIZE``, and one entry lists every chunk id of its file (~34 bytes per 1.25 MiB), so a part
#: may hold a file of several TiB; anything larger is refused rather than decompressed.
MAX_TREE_PART: Final = 512 << 20

_HEX_ID = re.compile(r"[0-9a-f]{64}")


def is_id(text: str) -> bool:
    """Whether ``text`` is an object id: 64 lowercase hex digits (BLAKE3-256)."""
    return _HEX_ID.fullmatch(text) is not None


def pack_key(pack_id: str) -> str:
    return f"{PACKS}{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    return f"{INDEX}{pack_id}"


def tree_key(tree_id: str) -> str:
    return f"{TREES}{tree_id}"


def tree_part_key(part_id: str) -> str:
    return f"{TREE_PARTS}{part_id}"


def chunk_aad(chunk_id: str) -> str:
    """The associated data a chunk is sealed with: binds the sealed bytes to the chunk's id, so a blob
    moved to another index entry fails to open instead of being read as other data."""
    return f"repo/chunks/{chunk_id}"


def pack_id_of_key(key: str) -> str | None:
    """The pack id of a ``repo/packs/..`` key, or None if ``key`` is not one."""
    parts = key.split("/")
    if len(parts) == 4 and parts[:2] == ["repo", "packs"] and is_id(parts[3]) and parts[2] == parts[3][:2]:
        return parts[3]
    return None
