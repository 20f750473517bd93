"""How every object in a location is encoded: zstd, then either a BLAKE3 checksum or AES-256-GCM.

Sealed object::

    magic "DVT" | version (1 byte) | mode (1 byte) | body
    mode 0 (plain):      blake3(compressed) (32 bytes) | compressed
    mode 1 (encrypted):  salt (16 bytes) | nonce (12 bytes) | AES-256-GCM(compressed, aad=key)

The encryption key is derived from the location's ``encryptionKey`` with scrypt and the location's salt.
Each encrypted object carries the salt it was sealed with, so an object stays readable whatever happens
to the location record, and the object's key is bound in as associated data, so an object moved to
another key (a swapped backup, a replayed page) fails to open instead of being read as the wrong thing.
Every read is verified: a checksum mismatch or a failed tag raises ``CorruptObject``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Final

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC: Final = b"DVT"
VERSION: Final = 1
MODE_PLAIN: Final = 0
MODE_ENCRYPTED: Final = 1
SALT_BYTES: Final = 16
NONCE_BYTES: Final = 12
#: AES-GCM's authentication tag, at the end of the ciphertext.
TAG_BYTES: Final = 16
#: scrypt cost: about 50 ms and 16 MiB once per process and salt; a brute-force guess costs the same.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: zstd level 3: the library's default, a good balance for JSON (dense, repetitive) at high speed.
ZSTD_LEVEL: Final = 3


class CorruptObject(Exception):
    """An object failed verification (checksum, authentication tag, or framing)."""


@functools.lru_cache(maxsize=16)
def derive_key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase.encode())


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


@dataclass(frozen=True)
class Sealer:
    """Seals and opens objects for one location. Without ``passphrase``, objects are only checksummed."""

    passphrase: str | None = field(default=None, repr=False)
    salt: bytes | None = None

    def __post_init__(self) -> None:
        if self.passphrase and (self.salt is None or len(self.salt) != SALT_BYTES):
            raise ValueError("an encrypting Sealer needs the location's 16-byte salt")

    @property
    def encrypts(self) -> bool:
        return bool(self.passphrase)

    def seal(self, key: str, data: bytes) -> bytes:
        compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
        if not self.passphrase:
            return MAGIC + bytes([VERSION, MODE_PLAIN]) + blake3.blake3(compressed).digest() + compressed
        assert self.salt is not None
        nonce = os.urandom(NONCE_BYTES)
        aead = AESGCM(derive_key(self.passphrase, self.salt))
        sealed = aead.encrypt(nonce, compressed, key.encode())
        return MAGIC + bytes([VERSION, MODE_ENCRYPTED]) + self.salt + nonce + sealed

    def open(self, key: str, blob: bytes) -> bytes:
        if len(blob) < 5 or blob[:3] != MAGIC:
            raise CorruptObject(f"{key}: not a Davit object")
        version, mode = blob[3], blob[4]
        if version != VERSION:
            raise CorruptObject(f"{key}: unsupported object version {version}")
        body = blob[5:]
        if mode == MODE_PLAIN:
            digest, compressed = body[:32], body[32:]
            if len(digest) != 32 or blake3.blake3(compressed).digest() != digest:
                raise CorruptObject(f"{key}: checksum mismatch")
        elif mode == MODE_ENCRYPTED:
            if not self.passphrase:
                raise CorruptObject(f"{key}: encrypted, and the location has no encryptionKey")
            if len(body) < SALT_BYTES + NONCE_BYTES + TAG_BYTES:
                # AESGCM raises ValueError, not InvalidTag, for a nonce cut short.
                raise CorruptObject(f"{key}: truncated encrypted object")
            salt = body[:SALT_BYTES]
            nonce = body[SALT_BYTES : SALT_BYTES + NONCE_BYTES]
            try:
                compressed = AESGCM(derive_key(self.passphrase, salt)).decrypt(
                    nonce, body[SALT_BYTES + NONCE_BYTES :], key.encode()
                )
            except InvalidTag as exc:
                reason = "authentication failed (wrong encryptionKey, or the object was altered)"
                raise CorruptObject(f"{key}: {reason}") from exc
        else:
            raise CorruptObject(f"{key}: unknown mode {mode}")
        try:
            return zstandard.ZstdDecompressor().decompress(compressed)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"{key}: {exc}") from exc
