"""From a BackupLocation to a store: Stork's Secret-overrides-inline rule, secrets kept out of reprs and
messages, and the local store's refusal of keys that would leave its directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.api.types import LocationSpec
from davit.storage.azure import AzureStore
from davit.storage.base import StorageError, scrub
from davit.storage.factory import (
    GOOGLE_ENDPOINT,
    LocationConfigError,
    ResolvedLocation,
    describe,
    open_store,
    resolve_credentials,
)
from davit.storage.local import LocalStore
from davit.storage.s3 import S3Store

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
ACCOUNT_KEY = "c2VjcmV0IGFjY291bnQga2V5IGZvciB0aGUgdW5pdCB0ZXN0cw=="
ENCRYPTION_KEY = "correct horse battery staple"


def location(**fields: Any) -> LocationSpec:
    return LocationSpec.model_validate(fields)


S3_INLINE = {
    "type": "s3",
    "path": "bucket",
    "prefix": "inline-prefix",
    "encryptionKey": "inline-encryption",
    "s3Config": {
        "region": "eu-west-1",
        "accessKeyID": "INLINEKEY",
        "secretAccessKey": "inline-secret",
        "endpoint": "http://minio:9000",
        "disableSSL": False,
    },
}


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param(
            None,
            {"region": "eu-west-1", "access_key_id": "INLINEKEY", "secret_access_key": "inline-secret",
             "endpoint": "http://minio:9000", "disable_ssl": False, "path": "bucket",
             "prefix": "inline-prefix", "encryption_key": "inline-encryption"},
            id="no-secret-inline-wins",
        ),
        pytest.param(
            {"accessKeyID": KEY_ID, "secretAccessKey": SECRET},
            {"access_key_id": KEY_ID, "secret_access_key": SECRET, "region": "eu-west-1",
             "endpoint": "http://minio:9000"},
            id="secret-overrides-credentials-only",
        ),
        pytest.param(
            {"region": "us-west-2", "endpoint": "s3.example.com", "disableSSL": "true"},
            {"region": "us-west-2", "endpoint": "s3.example.com", "disable_ssl": True,
             "access_key_id": "INLINEKEY"},
            id="secret-overrides-endpoint-settings",
        ),
        pytest.param(
            {"path": "other-bucket", "prefix": "/team-a/", "encryptionKey": ENCRYPTION_KEY},
            {"path": "other-bucket", "prefix": "team-a", "encryption_key": ENCRYPTION_KEY},
            id="secret-overrides-path-prefix-encryption",
        ),
        pytest.param(
            {"secretAccessKey": f"{SECRET}\n", "accessKeyID": f"{KEY_ID}\r\n"},
            {"secret_access_key": SECRET, "access_key_id": KEY_ID},
            id="trailing-newline-of-from-file-dropped",
        ),
        pytest.param(
            {"endpoint": "", "region": ""},
            {"endpoint": None, "region": "us-east-1"},
            id="empty-secret-value-means-unset",
        ),
        pytest.param(
            {"unrelated": "x", "storageAccountKey": "not for s3"},
            {"access_key_id": "INLINEKEY", "secret_access_key": "inline-secret"},
            id="keys-of-other-types-ignored",
        ),
    ],
)  # fmt: skip
def test_secret_keys_override_inline_values(secret: dict[str, str] | None, expected: dict[str, Any]) -> None:
    resolved = resolve_credentials(location(**S3_INLINE), secret)
    assert resolved.type == "s3"
    assert resolved.s3 is not None
    top = {"path", "prefix", "encryption_key"}
    actual = {k: getattr(resolved if k in top else resolved.s3, k) for k in expected}
    assert actual == expected


def test_azure_values_from_the_secret() -> None:
    spec = location(
        type="azure",
        path="container",
        azureConfig={"storageAccountName": "inline", "storageAccountKey": "inline-key"},
    )
    resolved = resolve_credentials(
        spec, {"storageAccountName": "acct", "storageAccountKey": ACCOUNT_KEY, "endpoint": "http://az:1/acct"}
    )
    assert resolved.azure is not None
    assert (resolved.azure.storage_account_name, resolved.azure.storage_account_key) == ("acct", ACCOUNT_KEY)
    assert resolved.azure.endpoint == "http://az:1/acct"
    assert describe(resolved) == "azure://acct/container at http://az:1/acct"
    store = open_store(resolved)
    assert isinstance(store, AzureStore)
    assert store.url == "azure://acct/container"
    store.close()


def test_azure_default_endpoint_and_prefix() -> None:
    spec = location(
        type="azure",
        path="backups",
        prefix="cluster-a",
        azureConfig={"storageAccountName": "acct", "storageAccountKey": ACCOUNT_KEY},
    )
    resolved = resolve_credentials(spec, None)
    assert describe(resolved) == "azure://acct/backups/cluster-a at https://acct.blob.core.windows.net"


def test_google_uses_the_xml_api_with_hmac_keys() -> None:
    spec = location(type="google", path="gcs-bucket", googleConfig={"projectID": "proj"})
    resolved = resolve_credentials(spec, {"accessKeyID": "GOOGHMACKEY", "secretAccessKey": SECRET})
    assert resolved.google is not None
    assert resolved.google.endpoint == GOOGLE_ENDPOINT
    assert resolved.google.project_id == "proj"
    assert describe(resolved) == f"gs://gcs-bucket at {GOOGLE_ENDPOINT}"
    store = open_store(resolved)
    assert isinstance(store, S3Store)
    assert store.endpoint == GOOGLE_ENDPOINT
    assert store.url == "gs://gcs-bucket"
    store.close()


def test_describe_s3() -> None:
    resolved = resolve_credentials(location(**S3_INLINE), None)
    assert describe(resolved) == "s3://bucket/inline-prefix at http://minio:9000"
    aws = resolve_credentials(location(type="s3", path="b"), None)
    assert describe(aws) == "s3://b at AWS us-east-1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("True", True), ("1", True), ("t", True), ("false", False), ("0", False),
     ("F", False), ("false\n", False), ("", False)],
)  # fmt: skip
def test_disable_ssl_parsed_as_go_parses_booleans(raw: str, expected: bool) -> None:
    resolved = resolve_credentials(location(type="s3", path="b"), {"disableSSL": raw})
    assert resolved.s3 is not None
    assert resolved.s3.disable_ssl is expected


def test_disable_ssl_garbage_is_a_configuration_error() -> None:
    with pytest.raises(LocationConfigError) as refused:
        resolve_credentials(location(type="s3", path="b"), {"disableSSL": "yes please"})
    assert refused.value.code == "InvalidConfiguration"
    assert "disableSSL" in str(refused.value)


def test_disable_ssl_picks_the_scheme_of_a_bare_endpoint() -> None:
    plain = resolve_credentials(
        location(type="s3", path="b"), {"endpoint": "minio:9000", "disableSSL": "true"}
    )
    tls = resolve_credentials(location(type="s3", path="b"), {"endpoint": "minio:9000"})
    plain_store, tls_store = open_store(plain), open_store(tls)
    assert isinstance(plain_store, S3Store) and isinstance(tls_store, S3Store)
    assert plain_store.endpoint == "http://minio:9000"
    assert tls_store.endpoint == "https://minio:9000"
    plain_store.close()
    tls_store.close()


def test_reprs_and_descriptions_hide_every_secret() -> None:
    cases = [
        resolve_credentials(
            location(**S3_INLINE), {"secretAccessKey": SECRET, "encryptionKey": ENCRYPTION_KEY}
        ),
        resolve_credentials(
            location(type="azure", path="c", azureConfig={"storageAccountName": "a"}),
            {"storageAccountKey": ACCOUNT_KEY},
        ),
        resolve_credentials(
            location(type="google", path="g"), {"accessKeyID": KEY_ID, "secretAccessKey": SECRET}
        ),
    ]
    for resolved in cases:
        for text in (repr(resolved), str(resolved), describe(resolved)):
            for secret in (SECRET, ACCOUNT_KEY, ENCRYPTION_KEY, KEY_ID):
                assert secret not in text


def test_scrub_replaces_secrets() -> None:
    assert scrub(f"denied for {SECRET}", [SECRET, None, ""]) == "denied for [redacted]"


@pytest.mark.parametrize(
    ("spec", "secret", "complaint"),
    [
        ({"type": "azure", "path": "c"}, None, "storageAccountName"),
        (
            {"type": "azure", "path": "c", "azureConfig": {"storageAccountName": "a"}},
            None,
            "storageAccountKey",
        ),
        ({"type": "google", "path": "g"}, {"accessKeyID": "only-the-id"}, "HMAC"),
        ({"type": "s3", "path": "b"}, {"accessKeyID": "only-the-id"}, "go together"),
        ({"type": "local", "path": "relative/dir"}, None, "absolute"),
        ({"type": "s3", "path": "b"}, {"path": "\n"}, "location.path"),
    ],
)
def test_incomplete_locations_are_refused(
    spec: dict[str, Any], secret: dict[str, str] | None, complaint: str
) -> None:
    with pytest.raises(LocationConfigError, match=complaint):
        resolve_credentials(location(**spec), secret)


def test_unknown_type_is_refused() -> None:
    # The CRD's enum and the model refuse it first; this is the guard behind them.
    spec = LocationSpec.model_construct(type="nfs", path="/x")  # type: ignore[arg-type]
    with pytest.raises(LocationConfigError, match="nfs"):
        resolve_credentials(spec, None)
    with pytest.raises(LocationConfigError):
        open_store(ResolvedLocation(type="nfs", path="/x", prefix=""))  # type: ignore[arg-type]


def test_local_path_and_prefix(tmp_path: Path) -> None:
    resolved = resolve_credentials(
        location(type="local", path=f"{tmp_path}/./store/", prefix="cluster-a/"), None
    )
    assert (resolved.path, resolved.prefix) == (str(tmp_path / "store"), "cluster-a")
    assert describe(resolved) == f"{tmp_path}/store/cluster-a"
    store = open_store(resolved)
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "store" / "cluster-a"
    assert store.url == str(tmp_path / "store" / "cluster-a")


# --- LocalStore ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "/etc/passwd", "a\\..\\b", "a//b", "a/./b", "a/", "", ".", "..",
     "nul\0byte", "a/.davit-tmp-x"],
)  # fmt: skip
def test_local_store_refuses_keys_that_leave_its_root(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "root")
    (tmp_path / "root").mkdir()
    for operation in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(StorageError) as refused:
            operation()
        assert refused.value.code == "InvalidKey"
    assert list(tmp_path.rglob("*")) == [tmp_path / "root"], "nothing was written anywhere"


@pytest.mark.parametrize("prefix", ["../up", "a/../../up", "a//b"])
def test_local_store_refuses_prefixes_that_leave_its_directory(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(StorageError) as refused:
        LocalStore(tmp_path, prefix)
    assert refused.value.code == "InvalidKey"


def test_local_store_refuses_list_prefixes_that_leave_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(StorageError) as refused:
        list(store.list("../"))
    assert refused.value.code == "InvalidKey"


def test_local_store_never_creates_its_directory(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "missing", "prefix")
    for operation in (store.check, lambda: store.put("k", b"x"), lambda: store.get("k")):
        with pytest.raises(StorageError) as refused:
            operation()
        assert refused.value.code == "NoSuchDirectory"
    assert not (tmp_path / "missing").exists()
    assert list(store.list()) == []


def test_local_store_lists_in_key_order_across_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    keys = ["a-c", "a/b/c/d", "ab/c", "a!/x", "b", "a0", "a/bz"]
    for key in keys:
        store.put(key, key.encode())
    assert [info.key for info in store.list()] == sorted(keys)
    assert [info.key for info in store.list("a/")] == ["a/b/c/d", "a/bz"]
    assert [info.key for info in store.list("a/b")] == ["a/b/c/d", "a/bz"]
    assert [info.key for info in store.list("a")] == sorted(k for k in keys if k.startswith("a"))
    store.delete("a/b/c/d")
    assert not (tmp_path / "a" / "b").exists(), "empty directories are removed"
    assert (tmp_path / "a").is_dir()


def test_local_store_conflicting_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", b"file")
    with pytest.raises(StorageError) as refused:
        store.put("a/b", b"under a file")
    assert refused.value.code == "KeyConflict"
    assert [p.name for p in tmp_path.iterdir()] == ["a"], "no temporary file left behind"
