"""How every object in a location is sealed (docs/format.md, "Sealed objects"): zstd, then a BLAKE3
checksum or AES-256-GCM bound to the object's key; every read verified, every failure a CorruptObject."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable

import blake3
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from davit.format.sealing import (
    LEGACY_KDF,
    MAGIC,
    MODE_ENCRYPTED,
    MODE_PLAIN,
    NONCE_BYTES,
    SALT_BYTES,
    VERSION,
    CorruptObject,
    Kdf,
    NotEncrypted,
    Sealer,
    derive_key,
)

PASSPHRASE = "correct horse battery staple"
SECRET_TEXT = "hunter2-SECRET"
KEY = "backups/shop/nightly/0b6c2f4e/resources/shop_v1_secrets-0123456789ab.bin"
OTHER_KEY = "backups/shop/nightly/0b6c2f4e/resources/shop_v1_configmaps-ba9876543210.bin"
SALT = bytes(range(SALT_BYTES))
OTHER_SALT = bytes(range(100, 100 + SALT_BYTES))
HEADER = len(MAGIC) + 2
PLAIN_BODY = HEADER + 32  # header | blake3 digest | payload
ENC_BODY = HEADER + SALT_BYTES + NONCE_BYTES  # header | salt | nonce | ciphertext+tag
TAG_BYTES = 16

#: Most tests here are not about key derivation: they derive with cheap parameters.
FAST = Kdf(n=2**10)
PLAIN = Sealer()
ENCRYPTED = Sealer(passphrase=PASSPHRASE, salt=SALT, kdf=FAST)

SECRET_JSON = json.dumps(
    [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"db-{i}", "namespace": "shop"},
            "stringData": {"password": SECRET_TEXT},
        }
        for i in range(200)
    ]
).encode()

PAYLOADS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00", id="one-byte"),
    pytest.param(bytes(range(256)), id="all-byte-values"),
    pytest.param(random.Random(20240501).randbytes(5 * 1024 * 1024), id="5MiB-random"),  # noqa: S311
    pytest.param(SECRET_JSON, id="compressible-json"),
]

SEALERS = [pytest.param(PLAIN, id="plain"), pytest.param(ENCRYPTED, id="encrypted")]


# --- round trip and framing ------------------------------------------------------------------------


@pytest.mark.parametrize("sealer", SEALERS)
@pytest.mark.parametrize("data", PAYLOADS)
def test_round_trip(sealer: Sealer, data: bytes) -> None:
    sealed = sealer.seal(KEY, data)
    assert sealer.open(KEY, sealed) == data


@pytest.mark.parametrize(
    ("sealer", "mode"),
    [pytest.param(PLAIN, MODE_PLAIN, id="plain"), pytest.param(ENCRYPTED, MODE_ENCRYPTED, id="encrypted")],
)
@pytest.mark.parametrize("data", [pytest.param(b"", id="empty"), pytest.param(SECRET_JSON, id="json")])
def test_header(sealer: Sealer, mode: int, data: bytes) -> None:
    sealed = sealer.seal(KEY, data)
    assert sealed[:5] == b"DVT" + bytes([1, mode])
    assert (MAGIC, VERSION) == (b"DVT", 1)
    assert sealer.encrypts is (mode == MODE_ENCRYPTED)


@pytest.mark.parametrize("data", PAYLOADS)
def test_plain_body_is_blake3_then_zstd_with_content_size(data: bytes) -> None:
    """An independent reader following docs/format.md can open a plain object."""
    sealed = PLAIN.seal(KEY, data)
    digest, payload = sealed[HEADER:PLAIN_BODY], sealed[PLAIN_BODY:]
    assert digest == blake3.blake3(payload).digest()
    assert zstandard.frame_content_size(payload) == len(data)
    assert zstandard.ZstdDecompressor().decompress(payload) == data


@pytest.mark.parametrize("data", [pytest.param(b"", id="empty"), pytest.param(SECRET_JSON, id="json")])
def test_encrypted_body_follows_the_documented_layout(data: bytes) -> None:
    """salt | nonce | AES-256-GCM(zstd(data), aad=key), key = scrypt(passphrase, salt, record's N, r, p)."""
    sealed = ENCRYPTED.seal(KEY, data)
    salt = sealed[HEADER : HEADER + SALT_BYTES]
    nonce = sealed[HEADER + SALT_BYTES : ENC_BODY]
    assert salt == SALT
    assert len(nonce) == 12
    payload = AESGCM(derive_key(PASSPHRASE, salt, FAST)).decrypt(nonce, sealed[ENC_BODY:], KEY.encode())
    assert zstandard.ZstdDecompressor().decompress(payload) == data


# --- plain mode: every byte verified ---------------------------------------------------------------


def _flip(blob: bytes, position: int, mask: int = 0x01) -> bytes:
    out = bytearray(blob)
    out[position] ^= mask
    return bytes(out)


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(PLAIN_BODY - 32, id="checksum-first"),
        pytest.param(PLAIN_BODY - 17, id="checksum-middle"),
        pytest.param(PLAIN_BODY - 1, id="checksum-last"),
        pytest.param(PLAIN_BODY, id="payload-first"),
        pytest.param(PLAIN_BODY + 7, id="payload-early"),
        pytest.param(-100, id="payload-middle"),
        pytest.param(-1, id="payload-last"),
    ],
)
@pytest.mark.parametrize("mask", [pytest.param(0x01, id="low-bit"), pytest.param(0x80, id="high-bit")])
def test_plain_flipped_byte_is_detected(position: int, mask: int) -> None:
    sealed = PLAIN.seal(KEY, SECRET_JSON)
    with pytest.raises(CorruptObject, match="checksum mismatch"):
        PLAIN.open(KEY, _flip(sealed, position, mask))


def test_plain_every_single_byte_flip_is_detected() -> None:
    sealed = PLAIN.seal(KEY, b'{"kind":"ConfigMap","data":{"a":"b"}}')
    for position in range(len(sealed)):
        with pytest.raises(CorruptObject):
            PLAIN.open(KEY, _flip(sealed, position))


# --- encrypted mode: confidentiality and authentication --------------------------------------------


SMALL_SECRET_JSON = json.dumps({"kind": "Secret", "stringData": {"password": SECRET_TEXT}}).encode()


def test_zstd_alone_leaves_the_secret_readable() -> None:
    """What the next test guards against: a plain seal only compresses, and a small object's text stays."""
    assert SECRET_TEXT.encode() in PLAIN.seal(KEY, SMALL_SECRET_JSON)


@pytest.mark.parametrize(
    "data", [pytest.param(SMALL_SECRET_JSON, id="small"), pytest.param(SECRET_JSON, id="compressible")]
)
def test_encrypted_hides_plaintext_and_compressed_plaintext(data: bytes) -> None:
    plain_sealed = PLAIN.seal(KEY, data)
    enc_sealed = ENCRYPTED.seal(KEY, data)
    assert SECRET_TEXT.encode() not in enc_sealed
    assert b"stringData" not in enc_sealed
    compressed = plain_sealed[PLAIN_BODY:]
    assert compressed not in enc_sealed
    assert enc_sealed[ENC_BODY:-TAG_BYTES] != compressed
    # Nor is any sizeable run of the compressed form copied through.
    assert compressed[:16] not in enc_sealed
    assert compressed[-16:] not in enc_sealed


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param("correct horse battery stapl", id="truncated"),
        pytest.param("Correct horse battery staple", id="case"),
        pytest.param(PASSPHRASE + " ", id="trailing-space"),
        pytest.param("something else entirely", id="different"),
    ],
)
def test_wrong_passphrase_is_an_authentication_failure(wrong: str) -> None:
    sealed = ENCRYPTED.seal(KEY, SECRET_JSON)
    with pytest.raises(CorruptObject, match="authentication failed"):
        Sealer(passphrase=wrong, salt=SALT, kdf=FAST).open(KEY, sealed)


def test_salt_travels_with_the_object() -> None:
    """A reader whose location record has another salt (two clusters raced) still opens the object."""
    sealed = ENCRYPTED.seal(KEY, SECRET_JSON)
    assert Sealer(passphrase=PASSPHRASE, salt=OTHER_SALT, kdf=FAST).open(KEY, sealed) == SECRET_JSON


@pytest.mark.parametrize(
    "other_key",
    [
        pytest.param(OTHER_KEY, id="other-part"),
        pytest.param("backups/shop/nightly/ffffffff/manifest", id="other-backup"),
        pytest.param(KEY + " ", id="trailing-space"),
        pytest.param("", id="empty"),
    ],
)
def test_object_moved_to_another_key_fails(other_key: str) -> None:
    sealed = ENCRYPTED.seal(KEY, SECRET_JSON)
    with pytest.raises(CorruptObject, match="authentication failed"):
        ENCRYPTED.open(other_key, sealed)


def test_encrypted_object_without_passphrase() -> None:
    sealed = ENCRYPTED.seal(KEY, SECRET_JSON)
    with pytest.raises(CorruptObject, match="the location has no encryptionKey"):
        PLAIN.open(KEY, sealed)


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(HEADER, id="salt"),
        pytest.param(HEADER + SALT_BYTES, id="nonce-first"),
        pytest.param(ENC_BODY - 1, id="nonce-last"),
        pytest.param(ENC_BODY, id="ciphertext-first"),
        pytest.param(-TAG_BYTES - 1, id="ciphertext-last"),
        pytest.param(-TAG_BYTES, id="tag-first"),
        pytest.param(-1, id="tag-last"),
    ],
)
def test_encrypted_flipped_byte_is_detected(position: int) -> None:
    sealed = ENCRYPTED.seal(KEY, SECRET_JSON)
    with pytest.raises(CorruptObject, match="authentication failed"):
        ENCRYPTED.open(KEY, _flip(sealed, position))


@pytest.mark.parametrize("data", [pytest.param(b"", id="empty"), pytest.param(SECRET_JSON, id="json")])
def test_nonce_is_random(data: bytes) -> None:
    first, second = ENCRYPTED.seal(KEY, data), ENCRYPTED.seal(KEY, data)
    assert first != second
    assert first[HEADER + SALT_BYTES : ENC_BODY] != second[HEADER + SALT_BYTES : ENC_BODY]
    assert ENCRYPTED.open(KEY, first) == data
    assert ENCRYPTED.open(KEY, second) == data


# --- the Sealer itself ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "salt",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"", id="empty"),
        pytest.param(bytes(SALT_BYTES - 1), id="short"),
        pytest.param(bytes(SALT_BYTES + 1), id="long"),
    ],
)
def test_encrypting_sealer_needs_a_16_byte_salt(salt: bytes | None) -> None:
    with pytest.raises(ValueError, match="16-byte salt"):
        Sealer(passphrase=PASSPHRASE, salt=salt)


@pytest.mark.parametrize(
    ("passphrase", "salt", "encrypts"),
    [
        pytest.param(None, None, False, id="none"),
        pytest.param("", None, False, id="empty-passphrase-is-none"),
        pytest.param(None, SALT, False, id="salt-only"),
        pytest.param(PASSPHRASE, SALT, True, id="passphrase-and-salt"),
    ],
)
def test_encrypts(passphrase: str | None, salt: bytes | None, encrypts: bool) -> None:
    sealer = Sealer(passphrase=passphrase, salt=salt, kdf=FAST)
    assert sealer.encrypts is encrypts
    mode = sealer.seal(KEY, b"x")[4]
    assert mode == (MODE_ENCRYPTED if encrypts else MODE_PLAIN)


@pytest.mark.parametrize("render", [pytest.param(repr, id="repr"), pytest.param(str, id="str")])
def test_sealer_text_hides_passphrase(render: Callable[[object], str]) -> None:
    text = render(Sealer(passphrase=SECRET_TEXT, salt=SALT))
    assert SECRET_TEXT not in text
    assert "hunter2" not in text


# --- key derivation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("passphrase", "salt", "kdf"),
    [
        pytest.param(PASSPHRASE, SALT, Kdf(), id="ascii-current"),
        pytest.param("pässwörd-ключ", OTHER_SALT, LEGACY_KDF, id="unicode-legacy"),
        pytest.param("x", bytes(SALT_BYTES), LEGACY_KDF, id="zero-salt-legacy"),
        pytest.param(PASSPHRASE, SALT, Kdf(n=2**12, r=4, p=2), id="other-parameters"),
    ],
)
def test_derive_key_is_documented_scrypt(passphrase: str, salt: bytes, kdf: Kdf) -> None:
    key = derive_key(passphrase, salt, kdf)
    assert len(key) == 32
    # Deterministic: the uncached computation gives the same key again.
    assert derive_key.__wrapped__(passphrase, salt, kdf) == key
    expected = hashlib.scrypt(
        passphrase.encode(), salt=salt, n=kdf.n, r=kdf.r, p=kdf.p, dklen=32, maxmem=300 << 20
    )
    assert key == expected


def test_new_locations_use_at_least_n_2_17_and_old_ones_2_14() -> None:
    assert Kdf() == Kdf(n=2**17, r=8, p=1)
    assert Kdf(n=2**14, r=8, p=1) == LEGACY_KDF


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        pytest.param(2**19, 8, 1, id="n-too-large"),
        pytest.param(2**30, 8, 1, id="n-huge"),
        pytest.param(3 * 2**10, 8, 1, id="n-not-a-power-of-two"),
        pytest.param(1, 8, 1, id="n-one"),
        pytest.param(2**14, 64, 1, id="r-too-large"),
        pytest.param(2**14, 8, 1000, id="p-too-large"),
        pytest.param(2**14, 0, 1, id="r-zero"),
    ],
)
def test_parameters_a_record_may_not_ask_for(n: int, r: int, p: int) -> None:
    """A record is read before it can be authenticated: it must not make a reader spend unbounded memory."""
    with pytest.raises(ValueError, match="outside what Davit accepts"):
        Kdf(n=n, r=r, p=p)
    with pytest.raises(ValueError, match="outside what Davit accepts"):
        Kdf.from_record({"name": "scrypt", "n": n, "r": r, "p": p})


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param((PASSPHRASE, SALT, FAST), (PASSPHRASE, OTHER_SALT, FAST), id="salts"),
        pytest.param((PASSPHRASE, SALT, FAST), (PASSPHRASE + "!", SALT, FAST), id="passphrases"),
        pytest.param((PASSPHRASE, SALT, FAST), (PASSPHRASE, SALT, Kdf(n=2**11)), id="parameters"),
    ],
)
def test_derive_key_differs(a: tuple[str, bytes, Kdf], b: tuple[str, bytes, Kdf]) -> None:
    assert derive_key(*a) != derive_key(*b)


# --- malformed input --------------------------------------------------------------------------------


def _checksummed(payload: bytes) -> bytes:
    return b"DVT\x01\x00" + blake3.blake3(payload).digest() + payload


@pytest.mark.parametrize("sealer", SEALERS)
@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(b"", "not a Davit object", id="empty"),
        pytest.param(b"DVT", "not a Davit object", id="magic-only"),
        pytest.param(b"DVT\x01", "not a Davit object", id="no-mode"),
        pytest.param(b"garbage that is long enough to be anything", "not a Davit object", id="garbage"),
        pytest.param(b'[{"kind":"ConfigMap"}]', "not a Davit object", id="unsealed-json"),
        pytest.param(b"dvt\x01\x00" + bytes(40), "not a Davit object", id="lowercase-magic"),
        pytest.param(b"\x00" + random.Random(7).randbytes(63), "not a Davit object", id="random"),  # noqa: S311
        pytest.param(b"DVT\x00\x00" + bytes(40), "unsupported object version 0", id="version-0"),
        pytest.param(b"DVT\x02\x00" + bytes(40), "unsupported object version 2", id="version-2"),
        pytest.param(b"DVT\xff\x01" + bytes(40), "unsupported object version 255", id="version-255"),
        pytest.param(b"DVT\x01\x02" + bytes(40), "unknown mode 2", id="mode-2"),
        pytest.param(b"DVT\x01\xff" + bytes(40), "unknown mode 255", id="mode-255"),
        pytest.param(b"DVT\x01\x00", "checksum mismatch|not encrypted", id="plain-no-body"),
        pytest.param(b"DVT\x01\x00" + bytes(31), "checksum mismatch|not encrypted", id="plain-short-digest"),
        pytest.param(_checksummed(b"not zstd at all"), None, id="checksum-ok-not-zstd"),
        pytest.param(_checksummed(b""), None, id="checksum-ok-empty-payload"),
        pytest.param(
            _checksummed(zstandard.ZstdCompressor().compress(b"x" * 1000)[:-3]),
            None,
            id="checksum-ok-cut-frame",
        ),
    ],
)
def test_malformed_input(sealer: Sealer, blob: bytes, message: str | None) -> None:
    with pytest.raises(CorruptObject, match=message) as caught:
        sealer.open(KEY, blob)
    assert str(caught.value).startswith(f"{KEY}: ")


def _cuts(total: int, body: int) -> list[int]:
    return sorted({0, 3, 4, 5, HEADER + 1, body - 1, body, body + 1, total // 2, total - 1} - {total})


@pytest.mark.parametrize("sealer", SEALERS)
@pytest.mark.parametrize("data", [pytest.param(b"", id="empty"), pytest.param(SECRET_JSON, id="json")])
def test_truncated_object(sealer: Sealer, data: bytes) -> None:
    sealed = sealer.seal(KEY, data)
    body = ENC_BODY if sealer.encrypts else PLAIN_BODY
    for length in _cuts(len(sealed), body):
        with pytest.raises(CorruptObject):
            sealer.open(KEY, sealed[:length])


@pytest.mark.parametrize(
    "length",
    [pytest.param(HEADER + n, id=f"body-{n}") for n in (0, 1, SALT_BYTES, SALT_BYTES + 7, SALT_BYTES + 8)]
    + [pytest.param(ENC_BODY + n, id=f"after-nonce-{n}") for n in (0, 1, TAG_BYTES - 1, TAG_BYTES)],
)
def test_truncated_encrypted_object_every_short_length(length: int) -> None:
    """Salt and nonce cut short must read as corruption, not crash with a library error."""
    sealed = ENCRYPTED.seal(KEY, SECRET_JSON)
    with pytest.raises(CorruptObject):
        ENCRYPTED.open(KEY, sealed[:length])


@pytest.mark.parametrize("data", [pytest.param(b"", id="empty"), pytest.param(SECRET_JSON, id="json")])
def test_an_encrypted_location_refuses_plain_objects(data: bytes) -> None:
    """A plain object's checksum proves nothing about who wrote it: anyone who can write to the bucket
    can compute one. With an encryption key, only objects sealed with it open, and the error names the
    object."""
    forged = PLAIN.seal(KEY, data)
    with pytest.raises(NotEncrypted, match="not encrypted") as caught:
        ENCRYPTED.open(KEY, forged)
    assert str(caught.value).startswith(f"{KEY}: ")
    assert isinstance(caught.value, CorruptObject)  # every reader's existing handling applies
