"""One contract for every store, run against the real servers of the local stack: S3 on the emulator (moto,
IAM authentication on), Azure Blob on Azurite, Google through the S3-compatible XML API (pointed at the
same emulator) and a local directory. Stores are built from LocationSpec objects through
``resolve_credentials`` and ``open_store``, as the services build them."""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from davit.api.types import LocationSpec
from davit.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StoreRefused,
    StoreUnavailable,
)
from davit.storage.factory import describe, open_store, resolve_credentials
from davit.storage.retry import RetryPolicy
from devstack.net import free_port
from tests.conftest import StackEnv

pytestmark = pytest.mark.integration

BACKENDS = ["s3", "azure", "google", "local"]
MiB = 1024 * 1024
#: A well-formed key that no store knows, and a secret that appears nowhere but in the test's location.
UNKNOWN_KEY_ID = "AKIAUNKNOWNKEY000000"
WRONG_SECRET = "wrong/Secret+Key0000000000000000000000000"
WRONG_ACCOUNT_KEY = "d3JvbmcgYWNjb3VudCBrZXkgZm9yIHRoZSBjb250cmFjdCB0ZXN0cyBvZiBkYXZpdA=="


def azurite(stack: StackEnv) -> dict[str, str]:
    connection = stack.env["AZURE_STORAGE_CONNECTION_STRING"]
    return dict(part.split("=", 1) for part in connection.strip(";").split(";"))


def location_for(
    backend: str, stack: StackEnv, local_dir: Path, prefix: str
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A BackupLocation's ``location`` for ``backend`` on the stack, and its Secret's data (or None)."""
    env = stack.env
    if backend == "s3":
        # Credentials from the Secret, the rest inline: Stork's usual split.
        spec = {
            "type": "s3", "path": env["S3_BUCKET"], "prefix": prefix, "secretConfig": "s3-credentials",
            "s3Config": {"region": env["S3_REGION"], "endpoint": env["S3_ENDPOINT"], "disableSSL": True},
        }  # fmt: skip
        return spec, {"accessKeyID": env["S3_ACCESS_KEY"], "secretAccessKey": env["S3_SECRET_KEY"]}
    if backend == "google":
        spec = {
            "type": "google", "path": env["S3_BUCKET"], "prefix": prefix,
            "googleConfig": {
                "projectID": "davit-test", "accessKeyID": env["S3_ACCESS_KEY"],
                "secretAccessKey": env["S3_SECRET_KEY"], "endpoint": env["S3_ENDPOINT"],
            },
        }  # fmt: skip
        return spec, None
    if backend == "azure":
        parts = azurite(stack)
        spec = {
            "type": "azure", "path": env["AZURE_CONTAINER"], "prefix": prefix,
            "azureConfig": {
                "storageAccountName": parts["AccountName"], "storageAccountKey": parts["AccountKey"],
                "endpoint": parts["BlobEndpoint"],
            },
        }  # fmt: skip
        return spec, None
    assert backend == "local"
    return {"type": "local", "path": str(local_dir), "prefix": prefix}, None


def open_location(
    spec: dict[str, Any], secret: dict[str, str] | None, retry: RetryPolicy | None = None
) -> ObjectStore:
    return open_store(resolve_credentials(LocationSpec.model_validate(spec), secret), retry=retry)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "local-location"
    directory.mkdir()
    return directory


@pytest.fixture
def location(backend: str, stack: StackEnv, local_dir: Path) -> tuple[dict[str, Any], dict[str, str] | None]:
    return location_for(backend, stack, local_dir, f"contract/{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(location: tuple[dict[str, Any], dict[str, str] | None]) -> Iterator[ObjectStore]:
    opened = open_location(*location)
    try:
        yield opened
    finally:
        opened.delete_prefix("")
        opened.close()


def keys_and_sizes(store: ObjectStore, prefix: str = "") -> list[tuple[str, int]]:
    return [(info.key, info.size) for info in store.list(prefix)]


def parallel(jobs: Sequence[Callable[[], Any]], threads: int = 16) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


# --- reading and writing -----------------------------------------------------------------------------


def test_put_get_round_trip(store: ObjectStore) -> None:
    store.put("manifest.json", b'{"version": 1}')
    assert store.get("manifest.json") == b'{"version": 1}'
    assert list(store.list()) == [ObjectInfo("manifest.json", 14)]


def test_overwrite_replaces_the_whole_object(store: ObjectStore) -> None:
    store.put("k", b"a much longer first value")
    store.put("k", b"short")
    assert store.get("k") == b"short"
    assert keys_and_sizes(store) == [("k", 5)]


def test_get_of_a_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as missing:
        store.get("no/such/key")
    assert missing.value.key == "no/such/key"
    assert missing.value.code == "NotFound"


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("dir/k")
    store.put("dir/k", b"")
    assert store.exists("dir/k")
    assert not store.exists("dir"), "a key's parent is not an object"
    assert store.get("dir/k") == b""


def test_list_returns_exact_keys_in_order_with_sizes(store: ObjectStore) -> None:
    objects = {
        "backups/ns/b/manifest": b"m" * 3,
        "backups/ns/a/manifest": b"m" * 1,
        "backups/ns/a/resources/v1.ConfigMap.json": b"r" * 20,
        "backups/ns/a-2/manifest": b"m" * 2,
        "backups/ns-2/x/manifest": b"x" * 4,
        "backups/ns0": b"x" * 5,
        "packs/00/ff": b"p" * 6,
        "top": b"t" * 7,
    }
    parallel([partial(store.put, k, v) for k, v in objects.items()])
    everything = sorted((k, len(v)) for k, v in objects.items())
    assert keys_and_sizes(store) == everything
    assert keys_and_sizes(store, "backups/ns/") == [
        ("backups/ns/a-2/manifest", 2),
        ("backups/ns/a/manifest", 1),
        ("backups/ns/a/resources/v1.ConfigMap.json", 20),
        ("backups/ns/b/manifest", 3),
    ]
    assert keys_and_sizes(store, "backups/ns") == [e for e in everything if e[0].startswith("backups/ns")]
    assert keys_and_sizes(store, "backups/ns/a/") == [
        ("backups/ns/a/manifest", 1),
        ("backups/ns/a/resources/v1.ConfigMap.json", 20),
    ]
    assert keys_and_sizes(store, "packs/00/f") == [("packs/00/ff", 6)]
    assert keys_and_sizes(store, "nothing/here/") == []


def test_list_pages_through_more_than_a_thousand_objects(store: ObjectStore) -> None:
    # S3 (and the XML API) answer at most 1,000 keys per request; Azure 5,000.
    keys = [f"many/{i // 100:02d}/{i:05d}" for i in range(1100)]
    parallel([partial(store.put, k, k.encode()) for k in keys])
    store.put("other", b"not under many/")
    listed = list(store.list("many/"))
    assert [info.key for info in listed] == keys
    assert {info.size for info in listed} == {len(keys[0])}
    assert store.delete_prefix("many/") == 1100
    assert keys_and_sizes(store) == [("other", 15)]


def test_delete(store: ObjectStore) -> None:
    store.put("a/b/c", b"1")
    store.put("a/d", b"2")
    store.delete("a/b/c")
    assert not store.exists("a/b/c")
    assert keys_and_sizes(store) == [("a/d", 1)]
    store.delete("a/b/c")
    store.delete("never/existed")
    assert keys_and_sizes(store) == [("a/d", 1)]


def test_delete_prefix(store: ObjectStore) -> None:
    for key in ("backups/ns/a/1", "backups/ns/a/2", "backups/ns/a-b/1", "backups/ns/b/1", "keep"):
        store.put(key, b"x")
    assert store.delete_prefix("backups/ns/a/") == 2
    assert [i.key for i in store.list()] == ["backups/ns/a-b/1", "backups/ns/b/1", "keep"]
    assert store.delete_prefix("backups/") == 2
    assert store.delete_prefix("backups/") == 0
    assert [i.key for i in store.list()] == ["keep"]


def test_large_object_round_trip_is_byte_exact(store: ObjectStore) -> None:
    data = os.urandom(20 * MiB + 12345)  # several parts or blocks, the last one short
    store.put("packs/large", data)
    assert keys_and_sizes(store) == [("packs/large", len(data))]
    assert store.get("packs/large") == data


def test_binary_data_with_every_byte_value(store: ObjectStore) -> None:
    data = bytes(range(256)) * 17 + b"\r\n\x00\r" + bytes(reversed(range(256)))
    store.put("binary", data)
    assert store.get("binary") == data


def test_keys_with_non_ascii_and_spaces(store: ObjectStore) -> None:
    keys = ["dir with space/file name.txt", "naïve/ファイル ✓", "plus+sign and %20 and ~tilde", "émoji 🛟"]
    for key in keys:
        store.put(key, key.encode())
    assert [info.key for info in store.list()] == sorted(keys)
    for key in keys:
        assert store.exists(key)
        assert store.get(key) == key.encode()
    assert [info.key for info in store.list("naïve/")] == ["naïve/ファイル ✓"]
    assert store.delete_prefix("") == len(keys)


def test_concurrent_writers(store: ObjectStore) -> None:
    distinct = {f"distinct/{i:02d}": os.urandom(64 * 1024) for i in range(16)}
    same = [bytes([i]) * MiB + os.urandom(1024) for i in range(8)]
    start = threading.Barrier(len(distinct) + len(same))

    def put(key: str, data: bytes) -> None:
        start.wait()
        store.put(key, data)

    jobs = [partial(put, k, v) for k, v in distinct.items()]
    jobs += [partial(put, "same", v) for v in same]
    parallel(jobs, threads=len(jobs))
    for key, data in distinct.items():
        assert store.get(key) == data
    winner = store.get("same")
    assert any(winner == value for value in same), "the object is one writer's value, whole"
    assert [i.key for i in store.list()] == [*sorted(distinct), "same"]


# --- checks and refusals ----------------------------------------------------------------------------


def test_check_passes_and_leaves_nothing_behind(
    store: ObjectStore, location: tuple[dict[str, Any], dict[str, str] | None]
) -> None:
    store.check()
    store.check()
    assert list(store.list()) == []
    where = describe(resolve_credentials(LocationSpec.model_validate(location[0]), location[1]))
    assert location[0]["path"] in where


def assert_secrets_hidden(error: StorageError, *secrets: str) -> None:
    text = "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in text, "not even in the chained exceptions"


#: (backend, what is wrong, code the store gives). Azurite answers a wrong account key with
#: AuthorizationFailure where Azure itself says AuthenticationFailed; both reach the user unchanged.
WRONG_CREDENTIALS = [
    ("s3", "unknown-key", "InvalidAccessKeyId"),
    ("s3", "wrong-secret", "SignatureDoesNotMatch"),
    ("google", "unknown-key", "InvalidAccessKeyId"),
    ("google", "wrong-secret", "SignatureDoesNotMatch"),
    ("azure", "wrong-secret", "AuthorizationFailure"),
]


@pytest.mark.parametrize(("backend", "wrong", "code"), WRONG_CREDENTIALS, indirect=["backend"])
def test_wrong_credentials_fail_check_with_the_store_reason(
    location: tuple[dict[str, Any], dict[str, str] | None], stack: StackEnv, wrong: str, code: str
) -> None:
    spec, secret = location
    if spec["type"] == "s3":
        assert secret is not None
        secret = {**secret, "secretAccessKey": WRONG_SECRET}
        if wrong == "unknown-key":
            secret["accessKeyID"] = UNKNOWN_KEY_ID
    elif spec["type"] == "google":
        config = {**spec["googleConfig"], "secretAccessKey": WRONG_SECRET}
        if wrong == "unknown-key":
            config["accessKeyID"] = UNKNOWN_KEY_ID
        spec = {**spec, "googleConfig": config}
    else:
        spec = {**spec, "azureConfig": {**spec["azureConfig"], "storageAccountKey": WRONG_ACCOUNT_KEY}}
    store = open_location(spec, secret)
    started = time.monotonic()
    with pytest.raises(StoreRefused) as refused:
        store.check()
    assert refused.value.code == code
    assert time.monotonic() - started < 5, "refused credentials are not retried"
    with pytest.raises(StorageError) as also_refused:
        store.put("k", b"x")
    assert also_refused.value.code == code, "a write is refused with the same reason"
    with pytest.raises(StorageError) as large_refused:
        store.put("large", bytes(9 * MiB))
    assert large_refused.value.code == code, "and so is a write in parts"
    store.close()
    for error in (refused.value, also_refused.value, large_refused.value):
        assert_secrets_hidden(
            error, WRONG_SECRET, WRONG_ACCOUNT_KEY, stack.env["S3_SECRET_KEY"], azurite(stack)["AccountKey"]
        )


MISSING_CODES = {
    "s3": "NoSuchBucket",
    "google": "NoSuchBucket",
    "azure": "ContainerNotFound",
    "local": "NoSuchDirectory",
}


def test_missing_bucket_container_or_directory(
    backend: str, location: tuple[dict[str, Any], dict[str, str] | None], local_dir: Path, stack: StackEnv
) -> None:
    spec, secret = location
    missing = (
        str(local_dir / "not-mounted") if backend == "local" else f"davit-missing-{uuid.uuid4().hex[:8]}"
    )
    store = open_location({**spec, "path": missing}, secret)
    with pytest.raises(StorageError) as refused:
        store.check()
    assert refused.value.code == MISSING_CODES[backend]
    with pytest.raises(StorageError) as on_write:
        store.put("k", b"x")
    assert on_write.value.code == MISSING_CODES[backend]
    store.close()
    assert_secrets_hidden(refused.value, stack.env["S3_SECRET_KEY"], azurite(stack)["AccountKey"])
    if backend == "local":
        assert not Path(missing).exists(), "a missing directory is never created"


@pytest.mark.parametrize("backend", ["s3", "azure", "google"], indirect=True)
def test_unreachable_endpoint(backend: str, location: tuple[dict[str, Any], dict[str, str] | None]) -> None:
    spec, secret = location
    nowhere = f"http://127.0.0.1:{free_port()}"
    config = {"s3": "s3Config", "google": "googleConfig", "azure": "azureConfig"}[backend]
    suffix = "/devstoreaccount1" if backend == "azure" else ""
    retry = RetryPolicy(total_seconds=5)
    store = open_location({**spec, config: {**spec[config], "endpoint": nowhere + suffix}}, secret, retry)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        store.check()
    store.close()
    assert refused.value.code == "EndpointUnreachable"
    assert nowhere in str(refused.value)
    assert time.monotonic() - started < 5 + 10, "retries are bounded by the policy's total time"
