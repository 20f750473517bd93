"""How every object in a location is encoded: zstd, then either a BLAKE3 checksum or AES-256-GCM.

Sealed object::

    magic "DVT" | version (1 byte) | mode (1 byte) | body
    mode 0 (plain):      blake3(compressed) (32 bytes) | compressed
    mode 1 (encrypted):  salt (16 bytes) | nonce (12 bytes) | AES-256-GCM(compressed, aad=key)

The encryption key is derived from the location's ``encryptionKey`` with scrypt, the location's salt and
the scrypt parameters its location record names. Each encrypted object carries the salt it was sealed
with, so an object stays readable whatever happens to the location record, and the object's key is bound
in as associated data, so an object moved to another key (a swapped backup, a replayed page) fails to open
instead of being read as the wrong thing. Every read is verified: a checksum mismatch or a failed tag
raises ``CorruptObject``.

A location's contents are untrusted input (anyone with write access to its bucket can put bytes there),
so reading is bounded too: with an encryption key only objects sealed with it open (a plain object is
refused, whatever its checksum), nothing decompresses to more than its reader allows, and JSON nested
deeper than ``MAX_JSON_DEPTH`` is refused before any code walks it recursively.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Final

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from davit import errors, jsonbytes

MAGIC: Final = b"DVT"
VERSION: Final = 1
MODE_PLAIN: Final = 0
MODE_ENCRYPTED: Final = 1
SALT_BYTES: Final = 16
NONCE_BYTES: Final = 12
#: AES-GCM's authentication tag, at the end of the ciphertext.
TAG_BYTES: Final = 16
#: scrypt cost of locations created by this version: about 0.3-0.5 s and 128 MiB (128 * N * r bytes)
#: once per process and location; a brute-force guess of the encryptionKey costs the same.
SCRYPT_N: Final = 2**17
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: What format version 1 locations used; their location record names no parameters.
LEGACY_SCRYPT_N: Final = 2**14
#: Bounds on what a location record may ask for. The parameters are read before the record can be
#: authenticated (its MAC key is derived with them), so an altered record must not make a worker spend
#: unbounded memory or time: 2^18 * 8 * 128 bytes = 256 MiB at most.
MAX_SCRYPT_N: Final = 2**18
MAX_SCRYPT_R: Final = 8
MAX_SCRYPT_P: Final = 4
#: zstd level 3: the library's default, a good balance for JSON (dense, repetitive) at high speed.
ZSTD_LEVEL: Final = 3
#: What a sealed object may decompress to unless its reader allows another size (chunks: the size their
#: index gives; resource parts: more). Manifests, index objects, tree parts and logs stay far below.
MAX_CONTENT: Final = 64 << 20
#: JSON nesting a location's objects may have. Kubernetes objects nest a few dozen levels (deep CRD
#: schemas perhaps a hundred); Python walks JSON recursively (the parser itself, copies, transforms), and
#: an object nested a thousand levels deep would end in a RecursionError wherever it is first walked.
MAX_JSON_DEPTH: Final = 200
#: Salts other than the location record's that one location's objects may carry (writers that raced to
#: create the record each sealed with their own). Every new salt costs a key derivation, so a location
#: whose objects carry more is refused rather than let its objects cost 128 MiB and half a second each.
MAX_FOREIGN_SALTS: Final = 8


class CorruptObject(errors.Unreadable):
    """An object failed verification (checksum, authentication tag, or framing)."""


class RefusedObject(CorruptObject):
    """An object is not read because of what it is, not because it is damaged: not encrypted in an
    encrypted location, larger or more deeply nested than a reader allows. Never transient."""


class NotEncrypted(RefusedObject):
    """A plain (checksummed only) object where the location's encryptionKey must have sealed it."""


class ObjectTooLarge(RefusedObject):
    """An object that is, or would decompress to, more than its reader allows."""


class ObjectTooDeep(RefusedObject):
    """JSON nested deeper than ``MAX_JSON_DEPTH``."""


@dataclass(frozen=True)
class Kdf:
    """scrypt's parameters, as a location record names them."""

    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def __post_init__(self) -> None:
        if not (
            isinstance(self.n, int)
            and isinstance(self.r, int)
            and isinstance(self.p, int)
            and 2 <= self.n <= MAX_SCRYPT_N
            and self.n & (self.n - 1) == 0
            and 1 <= self.r <= MAX_SCRYPT_R
            and 1 <= self.p <= MAX_SCRYPT_P
        ):
            raise ValueError(
                f"scrypt parameters N={self.n}, r={self.r}, p={self.p} are outside what Davit accepts "
                f"(N a power of two up to {MAX_SCRYPT_N}, r up to {MAX_SCRYPT_R}, p up to {MAX_SCRYPT_P})"
            )

    def to_record(self) -> dict[str, Any]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p}

    @classmethod
    def from_record(cls, value: Any) -> Kdf:
        if not isinstance(value, dict) or value.get("name") != "scrypt":
            raise ValueError(f"unknown key derivation {value!r}")
        n, r, p = value.get("n"), value.get("r"), value.get("p")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
            raise ValueError(f"malformed scrypt parameters {value!r}")
        return cls(n=int(n or 0), r=int(r or 0), p=int(p or 0))


LEGACY_KDF: Final = Kdf(n=LEGACY_SCRYPT_N)
#: What a location created now records. A variable rather than a constant so that tests which are not
#: about key derivation can create locations with cheaper parameters.
DEFAULT_KDF = Kdf()


@functools.lru_cache(maxsize=32)
def derive_key(passphrase: str, salt: bytes, kdf: Kdf) -> bytes:
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase.encode())


_foreign_salts: dict[tuple[str, bytes], set[bytes]] = {}
_foreign_lock = threading.Lock()


def _admit_salt(location: tuple[str, bytes], salt: bytes, key: str) -> None:
    with _foreign_lock:
        seen = _foreign_salts.setdefault(location, set())
        if salt not in seen and len(seen) >= MAX_FOREIGN_SALTS:
            raise RefusedObject(
                f"{key}: sealed with a salt the location record does not name, and the location's objects "
                f"already carry {MAX_FOREIGN_SALTS} such salts"
            )
        seen.add(salt)


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def decompress(
    key: str,
    compressed: bytes | memoryview,
    max_size: int,
    decompressor: zstandard.ZstdDecompressor | None = None,
) -> bytes:
    """``compressed``'s content, refused before anything is allocated when its frame header says it is
    more than ``max_size`` bytes. Davit writes the content size into every frame (one-shot compression),
    so a frame without one is refused too: a streaming reader could not know what it would produce."""
    try:
        size = zstandard.frame_content_size(compressed)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"{key}: {exc}") from exc
    if size < 0:
        raise CorruptObject(f"{key}: no content size in its zstd frame header")
    if size > max_size:
        raise ObjectTooLarge(f"{key}: its content is {size} bytes, more than the {max_size} allowed")
    try:
        return (decompressor or zstandard.ZstdDecompressor()).decompress(compressed, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"{key}: {exc}") from exc


def sealed_limit(max_content: int) -> int:
    """The most a sealed object of at most ``max_content`` bytes of content takes in the store: zstd's
    bound for incompressible input (``ZSTD_COMPRESSBOUND``, below n + n/256 + 64 KiB) and the header."""
    return max_content + (max_content >> 8) + (64 << 10) + 128


def load_json(key: str, data: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``data`` parsed as JSON, refused (``ObjectTooDeep``) when nested deeper than ``max_depth``."""
    try:
        value = jsonbytes.loads_stored(data)
    except RecursionError as exc:
        raise ObjectTooDeep(f"{key}: JSON nested deeper than {max_depth} levels") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise CorruptObject(f"{key}: not valid JSON: {exc}") from exc
    # Iteratively, so that the check itself cannot overflow the stack it protects.
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > max_depth:
                    raise ObjectTooDeep(f"{key}: JSON nested deeper than {max_depth} levels")
                stack.append((child, depth + 1))
    return value


@dataclass(frozen=True)
class Sealer:
    """Seals and opens objects for one location. Without ``passphrase``, objects are only checksummed;
    with it, only objects encrypted with it open."""

    passphrase: str | None = field(default=None, repr=False)
    salt: bytes | None = None
    kdf: Kdf = field(default_factory=lambda: DEFAULT_KDF)

    def __post_init__(self) -> None:
        if self.passphrase and (self.salt is None or len(self.salt) != SALT_BYTES):
            raise ValueError("an encrypting Sealer needs the location's 16-byte salt")

    @property
    def encrypts(self) -> bool:
        return bool(self.passphrase)

    def key(self, salt: bytes | None = None, for_object: str = "an object") -> bytes:
        """The AES key for objects sealed with ``salt`` (the location's by default); cached per process."""
        assert self.passphrase and self.salt is not None
        if salt is not None and salt != self.salt:
            # Keyed by a digest: the passphrase itself is kept nowhere but in the Sealer.
            location = (blake3.blake3(self.passphrase.encode()).hexdigest(), self.salt)
            _admit_salt(location, salt, for_object)
            return derive_key(self.passphrase, salt, self.kdf)
        return derive_key(self.passphrase, self.salt, self.kdf)

    def seal(self, key: str, data: bytes) -> bytes:
        compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
        if not self.passphrase:
            return MAGIC + bytes([VERSION, MODE_PLAIN]) + blake3.blake3(compressed).digest() + compressed
        assert self.salt is not None
        nonce = os.urandom(NONCE_BYTES)
        aead = AESGCM(self.key())
        sealed = aead.encrypt(nonce, compressed, key.encode())
        return MAGIC + bytes([VERSION, MODE_ENCRYPTED]) + self.salt + nonce + sealed

    def open(self, key: str, blob: bytes | memoryview, max_size: int = MAX_CONTENT) -> bytes:
        """``blob``'s content, verified; at most ``max_size`` bytes of it (``ObjectTooLarge`` otherwise)."""
        if len(blob) < 5 or bytes(blob[:3]) != MAGIC:
            raise CorruptObject(f"{key}: not a Davit object")
        version, mode = blob[3], blob[4]
        if version != VERSION:
            raise CorruptObject(f"{key}: unsupported object version {version}")
        body = memoryview(blob)[5:]
        if mode == MODE_PLAIN:
            if self.passphrase:
                # A checksum is no proof of origin: anyone who can write to the bucket can compute one.
                raise NotEncrypted(
                    f"{key}: not encrypted, in a location with an encryptionKey: refused, only objects "
                    "sealed with the location's key are read"
                )
            digest, compressed = body[:32], body[32:]
            if len(digest) != 32 or blake3.blake3(compressed).digest() != digest:
                raise CorruptObject(f"{key}: checksum mismatch")
        elif mode == MODE_ENCRYPTED:
            if not self.passphrase:
                raise CorruptObject(f"{key}: encrypted, and the location has no encryptionKey")
            if len(body) < SALT_BYTES + NONCE_BYTES + TAG_BYTES:
                # AESGCM raises ValueError, not InvalidTag, for a nonce cut short.
                raise CorruptObject(f"{key}: truncated encrypted object")
            salt = bytes(body[:SALT_BYTES])
            nonce = bytes(body[SALT_BYTES : SALT_BYTES + NONCE_BYTES])
            try:
                compressed = memoryview(
                    AESGCM(self.key(salt, key)).decrypt(nonce, body[SALT_BYTES + NONCE_BYTES :], key.encode())
                )
            except InvalidTag as exc:
                reason = "authentication failed (wrong encryptionKey, or the object was altered)"
                raise CorruptObject(f"{key}: {reason}") from exc
        else:
            raise CorruptObject(f"{key}: unknown mode {mode}")
        return decompress(key, compressed, max_size)

    def open_json(self, key: str, blob: bytes, max_size: int = MAX_CONTENT) -> Any:
        """``open``, then ``load_json``: every JSON object of a location is read this way."""
        return load_json(key, self.open(key, blob, max_size))
