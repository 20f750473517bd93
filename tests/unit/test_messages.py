"""The queue envelope: msgpack round trip, the idempotency key, and refusal of anything malformed."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import pytest

from davit.constants import Kind
from davit.operations.messages import ENVELOPE_VERSION, Message, MessageDecodeError


def _valid_raw(**changes: Any) -> dict[str, Any]:
    """A well-formed envelope dict; ``changes`` replace fields, a value of ``...`` removes the field."""
    raw: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "kind": "ApplicationBackup",
        "namespace": "app",
        "name": "nightly",
        "uid": "3f2c9a4e-0000-4000-8000-000000000001",
        "stage": "Volumes",
        "part": "pvc/data-0",
        "issued_at": 1714564800.25,
    }
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


# --- round trip ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "stage", "part", "issued_at"),
    [
        pytest.param(Kind.APPLICATION_BACKUP, "Initial", "", 0.0, id="backup-whole-stage"),
        pytest.param(Kind.APPLICATION_BACKUP, "Applications", "apps/v1/Deployment:2", 1.5, id="backup-page"),
        pytest.param(Kind.APPLICATION_RESTORE, "Volumes", "pvc/db-0", 1714564800.123456, id="restore-volume"),
        pytest.param(Kind.APPLICATION_CLONE, "PostExecRule", "", 42.0, id="clone-whole-stage"),
        pytest.param(Kind.APPLICATION_BACKUP, "Volumes", "päx:ünïcode/ß", 7.0, id="unicode-part"),
    ],
)
def test_round_trip_keeps_every_field(kind: Kind, stage: str, part: str, issued_at: float) -> None:
    message = Message(
        kind=kind,
        namespace="tenant-a",
        name="op-1",
        uid="uid-123",
        stage=stage,
        part=part,
        issued_at=issued_at,
    )

    decoded = Message.decode(message.encode())

    assert decoded == message
    assert decoded.kind is kind
    assert decoded.namespace == "tenant-a"
    assert decoded.name == "op-1"
    assert decoded.uid == "uid-123"
    assert decoded.stage == stage
    assert decoded.part == part
    assert decoded.issued_at == issued_at
    assert isinstance(decoded.issued_at, float)
    assert decoded.version == ENVELOPE_VERSION


@pytest.mark.parametrize(
    ("uid", "stage", "part", "key"),
    [
        pytest.param("u-1", "Initial", "", "u-1:Initial:", id="whole-stage-has-trailing-colon"),
        pytest.param("u-1", "Volumes", "pvc/data-0", "u-1:Volumes:pvc/data-0", id="with-part"),
        pytest.param(
            "abc", "Applications", "v1/ConfigMap:3", "abc:Applications:v1/ConfigMap:3", id="colon-in-part"
        ),
    ],
)
def test_key_is_uid_stage_part(uid: str, stage: str, part: str, key: str) -> None:
    message = Message(Kind.APPLICATION_BACKUP, "ns", "n", uid, stage, part)
    assert message.key == key
    assert Message.decode(message.encode()).key == key


def test_default_part_is_whole_stage_and_issued_at_is_now() -> None:
    message = Message(Kind.APPLICATION_RESTORE, "ns", "n", "u", "Initial")
    assert message.part == ""
    assert message.key == "u:Initial:"
    assert message.issued_at > 1_600_000_000  # seconds since the epoch, not zero


def test_decoding_without_part_or_issued_at_uses_defaults() -> None:
    decoded = Message.decode(_pack(_valid_raw(part=..., issued_at=...)))
    assert decoded.part == ""
    assert decoded.issued_at == 0.0


def test_integer_issued_at_is_accepted_as_float() -> None:
    decoded = Message.decode(_pack(_valid_raw(issued_at=17)))
    assert decoded.issued_at == 17.0
    assert isinstance(decoded.issued_at, float)


def test_to_dict_has_the_wire_field_names() -> None:
    message = Message(Kind.APPLICATION_CLONE, "kube-system", "c", "u", "Initial", "p", 3.0)
    assert message.to_dict() == {
        "v": ENVELOPE_VERSION,
        "kind": "ApplicationClone",
        "namespace": "kube-system",
        "name": "c",
        "uid": "u",
        "stage": "Initial",
        "part": "p",
        "issued_at": 3.0,
    }


# --- never pickle ----------------------------------------------------------------------------------


def test_encoding_is_a_msgpack_map_not_a_pickle() -> None:
    data = Message(Kind.APPLICATION_BACKUP, "ns", "n", "u", "Initial").encode()

    # fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf); a pickle (protocol >= 2) starts with PROTO, 0x80
    # followed by a protocol number, which here is a map header byte with a string key behind it.
    assert 0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)
    assert data[0] == 0x80 + len(Message(Kind.APPLICATION_BACKUP, "ns", "n", "u", "Initial").to_dict())
    assert msgpack.unpackb(data, raw=False)["kind"] == "ApplicationBackup"
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)  # noqa: S301 - proving the bytes are not a pickle


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda m: pickle.dumps(m.to_dict()), id="pickled-dict"),
        pytest.param(pickle.dumps, id="pickled-message"),
        pytest.param(lambda m: pickle.dumps(m.to_dict(), protocol=0), id="pickled-dict-protocol-0"),
    ],
)
def test_pickled_payload_is_refused(payload: Any) -> None:
    message = Message(Kind.APPLICATION_BACKUP, "ns", "n", "u", "Initial")
    data = payload(message)

    with pytest.raises(MessageDecodeError) as info:
        Message.decode(data)

    assert info.value.data == data


# --- malformed messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason_part"),
    [
        pytest.param(b"\xc1", "not msgpack", id="never-used-byte"),
        pytest.param(b"", "not msgpack", id="empty"),
        pytest.param(b"\x88\xa1v", "not msgpack", id="truncated"),
        pytest.param(b"hello world", "not msgpack", id="text-with-extra-data"),
        pytest.param(_pack({1: "int key"}), "not msgpack", id="non-string-map-key"),
        pytest.param(_pack([1, 2, 3]), "expected a map, got list", id="list"),
        pytest.param(_pack("a string"), "expected a map, got str", id="string"),
        pytest.param(_pack(None), "expected a map, got NoneType", id="nil"),
        pytest.param(_pack(_valid_raw(v=...)), "unsupported envelope version None", id="missing-version"),
        pytest.param(_pack(_valid_raw(v=2)), "unsupported envelope version 2", id="future-version"),
        pytest.param(_pack(_valid_raw(v=0)), "unsupported envelope version 0", id="version-zero"),
        pytest.param(_pack(_valid_raw(v="1")), "unsupported envelope version '1'", id="version-as-string"),
        pytest.param(_pack(_valid_raw(kind="Banana")), "unknown kind 'Banana'", id="unknown-kind"),
        pytest.param(
            _pack(_valid_raw(kind="applicationbackup")),
            "unknown kind 'applicationbackup'",
            id="kind-lowercase",
        ),
        pytest.param(_pack(_valid_raw(kind=...)), "unknown kind None", id="missing-kind"),
        pytest.param(_pack(_valid_raw(uid=...)), "missing or empty field(s): uid", id="missing-uid"),
        pytest.param(_pack(_valid_raw(name="")), "missing or empty field(s): name", id="empty-name"),
        pytest.param(
            _pack(_valid_raw(namespace=None)), "missing or empty field(s): namespace", id="nil-namespace"
        ),
        pytest.param(_pack(_valid_raw(stage=3)), "missing or empty field(s): stage", id="stage-not-a-string"),
        pytest.param(_pack(_valid_raw(uid=b"raw-bytes")), "missing or empty field(s): uid", id="uid-as-bin"),
        pytest.param(
            _pack(_valid_raw(uid="", name=...)),
            "missing or empty field(s): name, uid",
            id="two-fields-listed",
        ),
        pytest.param(_pack(_valid_raw(part=7)), "malformed part or issued_at", id="part-is-int"),
        pytest.param(_pack(_valid_raw(part=None)), "malformed part or issued_at", id="part-is-nil"),
        pytest.param(_pack(_valid_raw(part=["a"])), "malformed part or issued_at", id="part-is-list"),
        pytest.param(
            _pack(_valid_raw(issued_at="now")), "malformed part or issued_at", id="issued-at-string"
        ),
    ],
)
def test_decode_error_says_why(data: bytes, reason_part: str) -> None:
    with pytest.raises(MessageDecodeError) as info:
        Message.decode(data)

    error = info.value
    assert reason_part in error.reason
    assert str(error) == f"cannot decode message: {error.reason}"
    assert error.data == data  # kept for the dead-letter log
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        pytest.param([], "expected a map, got list", id="list"),
        pytest.param(b"bytes", "expected a map, got bytes", id="bytes"),
        pytest.param(_valid_raw(v=...), "unsupported envelope version", id="no-version"),
    ],
)
def test_from_dict_refuses_non_envelopes(raw: Any, reason_part: str) -> None:
    with pytest.raises(MessageDecodeError) as info:
        Message.from_dict(raw)
    assert reason_part in info.value.reason
    assert info.value.data == b""


def test_from_dict_accepts_a_valid_envelope() -> None:
    message = Message.from_dict(_valid_raw())
    assert message.kind is Kind.APPLICATION_BACKUP
    assert message.key == "3f2c9a4e-0000-4000-8000-000000000001:Volumes:pvc/data-0"
