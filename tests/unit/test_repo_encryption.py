"""Encryption of the volume-data repository: with an encryptionKey nothing stored reveals a file's
content or name, and a wrong key fails with a clear authentication error, never garbage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.format.repository import BackupRepository, FormatError
from davit.format.sealing import CorruptObject, Sealer
from davit.repo import RepoError, RepoIndex, RepoReader, RepoWriter, load_tree, restore_tree, snapshot_tree
from tests.unit.test_repo_support import assert_same_tree, open_location, write

KEY = "correct horse battery staple"
MARKER = b"DAVIT-PLAINTEXT-MARKER-7f3a9c"
SECRET_NAME = "payroll-export-Zq81.csv"


def stored_objects(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name != "davit-location.json"]


def test_nothing_stored_reveals_content_or_names(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "location", KEY)
    source = tmp_path / "source"
    random_part = os.urandom(3 << 20)
    # Compressible (so a plain store would hold it nearly verbatim inside zstd frames) and random.
    write(source / SECRET_NAME, (MARKER + b" salary=123456\n") * 20_000)
    write(source / "random.bin", random_part)
    write(source / "small.txt", MARKER)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)

    objects = stored_objects(loc.directory)
    assert len(objects) >= 4  # pack, index, tree part, tree root
    probes = [
        MARKER,
        SECRET_NAME.encode(),
        b"salary",
        *(random_part[i : i + 32] for i in range(0, 3 << 20, 1 << 18)),
    ]
    for blob in objects:
        assert blob.startswith(b"DVT\x01\x01")  # every object sealed in the encrypted mode
        for probe in probes:
            assert probe not in blob

    restore_tree(tree, tmp_path / "restored", RepoReader(loc.store, loc.sealer))
    assert_same_tree(source, tmp_path / "restored")


def test_a_plain_location_still_compresses(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "location")
    write(tmp_path / "src" / "log.txt", (MARKER + b"\n") * 100_000)
    with RepoWriter(loc.store, loc.sealer) as writer:
        snapshot_tree(tmp_path / "src", writer)
    packs = [p for p in (loc.directory / "repo" / "packs").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in packs) < 100_000 * len(MARKER) // 50


def test_a_wrong_key_fails_clearly(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "location", KEY)
    write(tmp_path / "src" / "f.txt", MARKER)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(tmp_path / "src", writer)

    # The location record is authenticated with the key: another key, or none, is told at once.
    with pytest.raises(FormatError, match="not authenticated by the BackupLocation's encryptionKey"):
        BackupRepository.open(loc.store, "not the key")
    with pytest.raises(FormatError, match=r"is encrypted .* has no encryptionKey"):
        BackupRepository.open(loc.store, None)
    # The objects themselves refuse another key, too.
    wrong = Sealer(passphrase="not the key", salt=loc.sealer.salt, kdf=loc.sealer.kdf)
    with pytest.raises(CorruptObject, match="authentication failed"):
        RepoIndex.load(loc.store, wrong)
    with pytest.raises(RepoError, match="authentication failed"):
        load_tree(loc.store, wrong, tree.id)
    keyless = Sealer()
    with pytest.raises(CorruptObject, match="has no encryptionKey"):
        RepoIndex.load(loc.store, keyless)
