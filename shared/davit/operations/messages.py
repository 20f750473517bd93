"""The message envelope every queue carries: ids, never payloads.

A message only says *which* operation should move *which* stage (and part) forward; the worker reads the
operation's custom resource for everything else, because the API server, not the queue, is the source of
truth (SPEC §1). Encoded with msgpack, versioned, and never pickled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from davit import errors
from davit.constants import Kind

#: Bumped when a field is added or changes meaning; a decoder refuses versions it does not know.
ENVELOPE_VERSION: Final = 1


class MessageDecodeError(errors.Invalid, ValueError):
    """A message could not be decoded; it says why, and keeps the raw bytes for the dead-letter log."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__(f"cannot decode message: {reason}")
        self.reason = reason
        self.data = data


@dataclass(frozen=True)
class Message:
    """A trigger for one piece of work: (operation uid, stage, part) is its idempotency key."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    stage: str
    #: Which slice of the stage (a resource type and page, a volume, a file range); "" for the whole stage.
    part: str = ""
    #: When the watcher or a worker issued it (seconds since the epoch); for latency metrics only.
    issued_at: float = field(default_factory=time.time)
    version: int = ENVELOPE_VERSION

    @property
    def key(self) -> str:
        """The idempotency key, also used as the Celery task id, so a duplicate is recognisable."""
        return f"{self.uid}:{self.stage}:{self.part}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "kind": self.kind.value,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "stage": self.stage,
            "part": self.part,
            "issued_at": self.issued_at,
        }

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(self.to_dict(), use_bin_type=True)
        return packed

    @classmethod
    def decode(cls, data: bytes) -> Message:
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:
            raise MessageDecodeError(f"not msgpack ({exc})", data) from exc
        return cls.from_dict(raw, data)

    @classmethod
    def from_dict(cls, raw: Any, data: bytes = b"") -> Message:
        if not isinstance(raw, dict):
            raise MessageDecodeError(f"expected a map, got {type(raw).__name__}", data)
        version = raw.get("v")
        if version != ENVELOPE_VERSION:
            raise MessageDecodeError(f"unsupported envelope version {version!r}", data)
        try:
            kind = Kind(raw["kind"])
        except (KeyError, ValueError) as exc:
            raise MessageDecodeError(f"unknown kind {raw.get('kind')!r}", data) from exc
        required = ("namespace", "name", "uid", "stage")
        missing = [k for k in required if not isinstance(raw.get(k), str) or not raw[k]]
        if missing:
            raise MessageDecodeError(f"missing or empty field(s): {', '.join(missing)}", data)
        part = raw.get("part", "")
        issued_at = raw.get("issued_at", 0.0)
        if not isinstance(part, str) or not isinstance(issued_at, int | float):
            raise MessageDecodeError("malformed part or issued_at", data)
        return cls(
            kind=kind,
            namespace=raw["namespace"],
            name=raw["name"],
            uid=raw["uid"],
            stage=raw["stage"],
            part=part,
            issued_at=float(issued_at),
            version=version,
        )
