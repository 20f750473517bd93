"""The chunk codec writes and reads exactly the location's sealed-object format (docs/format.md): what it
seals ``Sealer`` opens and the other way round, with the same verification and the same messages."""

from __future__ import annotations

import os

import pytest

from davit.format.sealing import CorruptObject, Kdf, NotEncrypted, ObjectTooLarge, Sealer
from davit.repo.codec import ChunkCodec

SALT = bytes(range(16))
FAST = Kdf(n=2**10)
SEALERS = {
    "plain": Sealer(),
    "encrypted": Sealer(passphrase="correct horse battery staple", salt=SALT, kdf=FAST),
}
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
    other = Sealer(passphrase="correct horse battery staple", salt=bytes(16), kdf=FAST)
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
        wrong = ChunkCodec(Sealer(passphrase="wrong", salt=SALT, kdf=FAST))
        with pytest.raises(CorruptObject, match="wrong encryptionKey"):
            wrong.open("k", codec.seal("k", b"data"))


def test_an_encrypting_codec_refuses_plain_chunks() -> None:
    codec = ChunkCodec(SEALERS["encrypted"])
    forged = ChunkCodec(SEALERS["plain"]).seal("repo/chunks/k", b"forged data")
    with pytest.raises(NotEncrypted, match=r"^repo/chunks/k: not encrypted"):
        codec.open("repo/chunks/k", forged)


@pytest.mark.parametrize("mode", sorted(SEALERS))
def test_the_codec_refuses_content_larger_than_promised(mode: str) -> None:
    codec = ChunkCodec(SEALERS[mode])
    sealed = codec.seal("repo/chunks/k", bytes(1 << 20))
    assert codec.open("repo/chunks/k", sealed, 1 << 20) == bytes(1 << 20)
    with pytest.raises(ObjectTooLarge, match=r"its content is 1048576 bytes, more than the 1048575 allowed"):
        codec.open("repo/chunks/k", sealed, (1 << 20) - 1)
