"""The chunk codec writes and reads exactly the location's sealed-object format (docs/format.md): what it
seals ``Sealer`` opens and the other way round, with the same verification and the same messages."""

from __future__ import annotations

import os

import pytest

from davit.format.sealing import CorruptObject, Sealer
from davit.repo.codec import ChunkCodec

SALT = bytes(range(16))
SEALERS = {"plain": Sealer(), "encrypted": Sealer(passphrase="correct horse battery staple", salt=SALT)}
DATA = [b"", b"x", os.urandom(5000), b"compressible " * 100_000]


@pytest.mark.parametrize("mode", sorted(SEALERS))
def test_codec_and_sealer_read_each_other(mode: str) -> None:
    sealer = SEALERS[mode]
    codec = ChunkCodec(sealer)
    for data in DATA:
        assert sealer.open("repo/chunks/k", codec.seal("repo/chunks/k", data)) == data
        assert codec.open("repo/chunks/k", sealer.seal("repo/chunks/k", data)) == data
        assert codec.open("repo/chunks/k", codec.seal("repo/chunks/k", memoryview(data))) == data


def test_an_object_sealed_with_another_salt_still_opens() -> None:
    # A writer that lost the race to create the location record sealed with its own salt.
    other = Sealer(passphrase="correct horse battery staple", salt=bytes(16))
    codec = ChunkCodec(SEALERS["encrypted"])
    assert codec.open("k", other.seal("k", b"data")) == b"data"


@pytest.mark.parametrize("mode", sorted(SEALERS))
def test_the_codec_verifies_like_the_sealer(mode: str) -> None:
    codec = ChunkCodec(SEALERS[mode])
    sealed = bytearray(codec.seal("k", b"some data" * 100))
    sealed[-3] ^= 1
    with pytest.raises(CorruptObject, match=r"checksum mismatch|authentication failed"):
        codec.open("k", bytes(sealed))
    with pytest.raises(CorruptObject, match="not a Davit object"):
        codec.open("k", b"garbage")
    if mode == "encrypted":
        with pytest.raises(CorruptObject, match="authentication failed"):
            codec.open("other-key", codec.seal("k", b"data"))
        wrong = ChunkCodec(Sealer(passphrase="wrong", salt=SALT))
        with pytest.raises(CorruptObject, match="wrong encryptionKey"):
            wrong.open("k", codec.seal("k", b"data"))
