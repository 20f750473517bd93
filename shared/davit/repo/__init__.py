"""The volume-data repository (docs/format.md, "Volume data repository"): content-defined chunks,
deduplicated across every backup in a location, packed, compressed, sealed, indexed; snapshot trees of
directories; restore that never writes outside its target (all of a tree or the paths selected), and
reading single files back; a check of what trees reference; and garbage collection of what nothing
references any more.

Everything lives under ``repo/`` in the location and is named by content, so concurrent writers never
overwrite each other's different data and need no lock.
"""

from davit.repo.check import CheckReport, check
from davit.repo.errors import CorruptChunk, FileUnreadable, MissingChunk, RepoError, UnsafePath
from davit.repo.files import file_data
from davit.repo.gc import GcError, GcReport, collect
from davit.repo.index import IndexEntry, RepoIndex
from davit.repo.reader import RepoReader
from davit.repo.restore import RestoreStats, restore_tree
from davit.repo.selection import PathSelection
from davit.repo.shards import ShardPlan, plan_shards
from davit.repo.snapshot import snapshot_tree
from davit.repo.tree_format import Entry, Tree, iter_entries, load_tree, merge_trees
from davit.repo.writer import Extent, FileEntry, RepoWriter, WriterStats

__all__ = [
    "CheckReport",
    "CorruptChunk",
    "Entry",
    "Extent",
    "FileEntry",
    "FileUnreadable",
    "GcError",
    "GcReport",
    "IndexEntry",
    "MissingChunk",
    "PathSelection",
    "RepoError",
    "RepoIndex",
    "RepoReader",
    "RepoWriter",
    "RestoreStats",
    "ShardPlan",
    "Tree",
    "UnsafePath",
    "WriterStats",
    "check",
    "collect",
    "file_data",
    "iter_entries",
    "load_tree",
    "merge_trees",
    "plan_shards",
    "restore_tree",
    "snapshot_tree",
]
