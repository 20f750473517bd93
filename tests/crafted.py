"""Objects a hostile writer of a location could craft, built by hand from docs/format.md and the zstd
frame format (RFC 8878), without Davit's own writer: tests use them to show readers refuse them."""

from __future__ import annotations

import struct

import blake3

#: zstd's frame magic number, little-endian.
ZSTD_MAGIC = struct.pack("<I", 0xFD2FB528)
#: zstd's largest block.
BLOCK = 128 << 10


def _block(kind: int, size: int, last: bool, body: bytes) -> bytes:
    """A block header (3 bytes: last flag, type, size) and its body; kind 0 raw, 1 RLE."""
    header = int(last) | kind << 1 | size << 3
    return header.to_bytes(3, "little") + body


def zstd_header(content_size: int, window_log: int = 20) -> bytes:
    """A frame header declaring ``content_size`` in its 8-byte Frame_Content_Size field."""
    descriptor = 0b1100_0000  # Frame_Content_Size 8 bytes; no single segment, checksum, dictionary
    window = (window_log - 10) << 3  # exponent only, mantissa 0
    return ZSTD_MAGIC + bytes([descriptor, window]) + struct.pack("<Q", content_size)


def zstd_claiming(content_size: int) -> bytes:
    """A tiny frame (17 bytes) whose header claims ``content_size`` bytes and whose only block is empty."""
    return zstd_header(content_size) + _block(0, 0, True, b"")


def zstd_of_zeros(content_size: int, compressed_size: int) -> bytes:
    """A valid frame that really decompresses to ``content_size`` zero bytes, about ``compressed_size``
    long: raw blocks of zeros up to that size, then run-length blocks (4 bytes for 128 KiB) for the rest.
    Built directly, so that a 10 GiB frame takes no time to make."""
    parts = [zstd_header(content_size)]
    left, written = content_size, 0
    while left:
        size = min(BLOCK, left)
        left -= size
        if written + size + 3 <= compressed_size:
            parts.append(_block(0, size, not left, bytes(size)))
            written += size + 3
        else:
            parts.append(_block(1, size, not left, b"\0"))
            written += 4
    return b"".join(parts)


def sealed_plain(payload: bytes) -> bytes:
    """A plain sealed object around an already compressed ``payload``: ``DVT`` | 1 | 0 | BLAKE3 | payload.
    Anyone can make one; no key is needed."""
    return b"DVT\x01\x00" + blake3.blake3(payload).digest() + payload


def nested_json(depth: int) -> bytes:
    """``depth`` lists inside each other."""
    return b"[" * depth + b"]" * depth
