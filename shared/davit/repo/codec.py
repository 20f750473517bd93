"""Sealing chunks in the location's object format (``davit.format.sealing``), faster for many objects.

``Sealer`` builds a zstd context and an AES-GCM key schedule for every object: negligible for manifests,
but for a volume of small files (one chunk each) it is most of the work. A codec keeps one compressor,
decompressor and AEAD per thread and produces byte-for-byte the same format, with the same primitives
(``derive_key``, AES-256-GCM, zstd level 3, BLAKE3), so ``Sealer.open`` reads what a codec seals and the
other way round. Objects carrying a salt other than the location's (sealed by a writer that raced to
create the location record) are handed to ``Sealer.open``. As there, a codec with an encryption key
opens only objects sealed with it, and nothing decompresses to more than its reader allows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from davit.format.sealing import (
    MAGIC,
    MAX_CONTENT,
    MODE_ENCRYPTED,
    MODE_PLAIN,
    NONCE_BYTES,
    SALT_BYTES,
    TAG_BYTES,
    VERSION,
    ZSTD_LEVEL,
    CorruptObject,
    Sealer,
    decompress,
)

_HEADER_PLAIN = MAGIC + bytes([VERSION, MODE_PLAIN])
_HEADER_ENCRYPTED = MAGIC + bytes([VERSION, MODE_ENCRYPTED])


#: A sealed object as pieces that concatenate to it (a header, then the body): a pack joins the pieces of
#: all its objects once, rather than each object being copied into a string of its own first.
SealedParts = tuple[bytes | memoryview, ...]


class _Contexts(threading.local):
    compressor: zstandard.ZstdCompressor | None = None
    decompressor: zstandard.ZstdDecompressor | None = None
    aead: AESGCM | None = None


class ChunkCodec:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self._key = sealer.key() if sealer.passphrase and sealer.salt else None
        self._local = _Contexts()

    def _compressor(self) -> zstandard.ZstdCompressor:
        if self._local.compressor is None:
            self._local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return self._local.compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        if self._local.decompressor is None:
            self._local.decompressor = zstandard.ZstdDecompressor()
        return self._local.decompressor

    def _aead(self, key: bytes) -> AESGCM:
        if self._local.aead is None:
            self._local.aead = AESGCM(key)
        return self._local.aead

    @property
    def encrypts(self) -> bool:
        return self._key is not None

    def seal(self, key: str, data: bytes | memoryview) -> bytes:
        return b"".join(self.seal_parts(key, data))

    def seal_parts(self, key: str, data: bytes | memoryview) -> SealedParts:
        """``seal``, as the pieces that concatenate to the sealed object."""
        return self._sealed(key, self._compressor().compress(data))

    def seal_many(self, keys: Sequence[str], datas: Sequence[bytes]) -> list[SealedParts]:
        """``seal_parts`` of each of ``datas`` with its key; the compression in one call that holds the
        GIL only once (``multi_compress_to_buffer``, to the same bytes as ``compress``), where the zstd
        backend has it. For many small objects, where a call per object costs more than compressing it.
        ``keys`` are only used (and needed) when encrypting."""
        if not datas:
            return []
        compressor = self._compressor()
        multi = getattr(compressor, "multi_compress_to_buffer", None)
        if multi is None:  # the CFFI backend
            compressed: list[bytes | memoryview] = [compressor.compress(data) for data in datas]
        else:
            compressed = [memoryview(segment) for segment in multi(list(datas))]
        if self._key is None:
            return [self._sealed("", c) for c in compressed]
        return [self._sealed(key, c) for key, c in zip(keys, compressed, strict=True)]

    def _sealed(self, key: str, compressed: bytes | memoryview) -> SealedParts:
        if self._key is None:
            return _HEADER_PLAIN + blake3.blake3(compressed).digest(), compressed
        assert self.sealer.salt is not None
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead(self._key).encrypt(nonce, compressed, key.encode())
        return _HEADER_ENCRYPTED + self.sealer.salt + nonce, sealed

    def open(self, key: str, blob: bytes | memoryview, max_size: int = MAX_CONTENT) -> bytes:
        """``blob``'s content, verified, refused if more than ``max_size`` bytes (a chunk's: the size its
        index entry gives)."""
        view = memoryview(blob)
        head = bytes(view[:5])
        if head == _HEADER_PLAIN and self._key is None:
            digest, compressed = view[5:37], view[37:]
            if len(digest) != 32 or blake3.blake3(compressed).digest() != digest:
                raise CorruptObject(f"{key}: checksum mismatch")
        elif (
            head == _HEADER_ENCRYPTED
            and self._key is not None
            and len(view) >= 5 + SALT_BYTES + NONCE_BYTES + TAG_BYTES
            and bytes(view[5 : 5 + SALT_BYTES]) == self.sealer.salt
        ):
            nonce = bytes(view[5 + SALT_BYTES : 5 + SALT_BYTES + NONCE_BYTES])
            try:
                compressed = memoryview(
                    self._aead(self._key).decrypt(nonce, view[5 + SALT_BYTES + NONCE_BYTES :], key.encode())
                )
            except InvalidTag as exc:
                reason = "authentication failed (wrong encryptionKey, or the object was altered)"
                raise CorruptObject(f"{key}: {reason}") from exc
        else:
            # Other salts, versions, truncated or foreign objects: the general path and its messages.
            # A plain object in an encrypted location is refused there, too.
            return self.sealer.open(key, blob, max_size)
        return decompress(key, compressed, max_size, self._decompressor())
