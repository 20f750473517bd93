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
    LocationPolicy,
    LocationRefused,
    ResolvedLocation,
    describe,
    endpoint_allowed,
    endpoint_of,
    guard,
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


# --- What a tenant's location may point at ---------------------------------------------------------

ADMIN = "kube-system"
TENANT = "team-a"


def tenant_local(path: str, prefix: str = "", namespace: str = TENANT) -> ResolvedLocation:
    return resolve_credentials(location(type="local", path=path, prefix=prefix), None, namespace=namespace)


def policy(roots: tuple[str, ...] = (), allowlist: tuple[str, ...] = ()) -> LocationPolicy:
    return LocationPolicy(admin_namespace=ADMIN, local_roots=roots, endpoint_allowlist=allowlist)


def test_without_roots_a_tenant_may_not_use_a_local_location(tmp_path: Path) -> None:
    with pytest.raises(LocationRefused) as refused:
        open_store(tenant_local(str(tmp_path)), policy())
    assert refused.value.code == "LocalPathNotAllowed"
    assert "DAVIT_LOCAL_LOCATION_ROOTS" in refused.value.message


def test_a_tenant_local_location_under_its_root_opens(tmp_path: Path) -> None:
    (tmp_path / TENANT / "store").mkdir(parents=True)
    store = open_store(
        tenant_local(str(tmp_path / TENANT / "store"), "p"), policy((f"{tmp_path}/{{namespace}}",))
    )
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / TENANT / "store" / "p"


@pytest.mark.parametrize("target", ["other-tenant", "/etc", "", "team-a-evil"])
def test_a_tenant_local_location_outside_its_root_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / TENANT).mkdir()
    path = target if target.startswith("/") else str(tmp_path / target)
    with pytest.raises(LocationRefused) as refused:
        open_store(tenant_local(path), policy((f"{tmp_path}/{{namespace}}",)))
    assert refused.value.code == "LocalPathNotAllowed"
    assert path in refused.value.message and str(tmp_path / TENANT) in refused.value.message


def test_dot_dot_is_refused_in_any_local_path(tmp_path: Path) -> None:
    for namespace in (TENANT, ADMIN, None):
        with pytest.raises(LocationConfigError, match=r"'\.\.'"):
            tenant_local(f"{tmp_path}/{TENANT}/../other-tenant", namespace=namespace)  # type: ignore[arg-type]


def test_a_symlink_inside_a_root_cannot_lead_out_of_it(tmp_path: Path) -> None:
    root, outside = tmp_path / "roots" / TENANT, tmp_path / "other-tenant"
    root.mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "inside").mkdir()
    (root / "prefix-link").symlink_to(outside)
    tenant_policy = policy((f"{tmp_path}/roots/{{namespace}}",))
    with pytest.raises(LocationRefused, match="which leads to") as refused:
        open_store(tenant_local(str(root / "link")), tenant_policy)
    assert str(outside) in refused.value.message
    # The prefix is a directory below the path: a link there is followed by every write, so it counts too.
    with pytest.raises(LocationRefused):
        open_store(tenant_local(str(root), "prefix-link"), tenant_policy)
    # A link that stays inside is opened at its target, so swapping the link later moves nothing.
    (root / "to-inside").symlink_to(root / "inside")
    store = open_store(tenant_local(str(root / "to-inside")), tenant_policy)
    assert isinstance(store, LocalStore) and store.directory == root / "inside"


def test_a_root_that_is_itself_a_link_is_resolved_too(tmp_path: Path) -> None:
    (tmp_path / "data" / TENANT).mkdir(parents=True)
    (tmp_path / "srv").symlink_to(tmp_path / "data")
    store = open_store(
        tenant_local(str(tmp_path / "data" / TENANT)), policy((f"{tmp_path}/srv/{{namespace}}",))
    )
    assert isinstance(store, LocalStore)


def test_the_admin_namespace_and_operators_may_use_any_directory(tmp_path: Path) -> None:
    for namespace in (ADMIN, None):
        store = open_store(tenant_local("/etc", namespace=namespace), policy())  # type: ignore[arg-type]
        assert isinstance(store, LocalStore) and store.directory == Path("/etc")


@pytest.mark.parametrize(
    ("url", "allowlist", "allowed"),
    [
        ("http://minio.storage.svc:9000", ("minio.storage.svc:9000",), True),
        ("http://minio.storage.svc:9000", ("minio.storage.svc",), True),
        ("http://minio.storage.svc:9001", ("minio.storage.svc:9000",), False),
        ("https://MinIO.Storage.svc./x", ("minio.storage.svc:443",), True),
        ("http://minio.storage.svc", ("minio.storage.svc:443",), False),
        ("https://s3.eu-west-1.amazonaws.com", ("*.amazonaws.com",), True),
        ("https://amazonaws.com.evil.example", ("*.amazonaws.com",), False),
        ("http://127.0.0.1:6379", ("*.amazonaws.com", "minio:9000"), False),
        ("http://169.254.169.254/latest/meta-data", ("minio",), False),
        ("http://[::1]:9000", ("[::1]:9000",), True),
        ("http://[::1]:9000", ("[::1]",), True),
        ("http://[::1]:9000", ("[::2]:9000",), False),
    ],
)
def test_endpoint_allowed(url: str, allowlist: tuple[str, ...], allowed: bool) -> None:
    assert endpoint_allowed(url, allowlist) is allowed


TENANT_S3 = {
    "type": "s3",
    "path": "b",
    "s3Config": {"endpoint": "http://10.0.0.1:6379", "accessKeyID": "k", "secretAccessKey": "s"},
}


def test_a_tenant_endpoint_off_the_allowlist_is_refused_before_any_client_exists() -> None:
    resolved = resolve_credentials(location(**TENANT_S3), None, namespace=TENANT)
    with pytest.raises(LocationRefused) as refused:
        open_store(resolved, policy(allowlist=("minio.storage.svc:9000",)))
    assert refused.value.code == "EndpointNotAllowed"
    assert "http://10.0.0.1:6379" in refused.value.message and "not contacted" in refused.value.message
    # An empty list allows any endpoint; the admin namespace is never held to the list.
    assert isinstance(open_store(resolved, policy()), S3Store)
    admin = resolve_credentials(location(**TENANT_S3), None, namespace=ADMIN)
    assert isinstance(open_store(admin, policy(allowlist=("minio.storage.svc:9000",))), S3Store)


AWS_DEFAULT = {"type": "s3", "path": "b", "s3Config": {"region": "eu-west-1"}}
GOOGLE_DEFAULT = {"type": "google", "path": "g", "googleConfig": {"accessKeyID": "k", "secretAccessKey": "s"}}
AZURE_DEFAULT = {
    "type": "azure",
    "path": "c",
    "azureConfig": {"storageAccountName": "acct", "storageAccountKey": "k"},
}


@pytest.mark.parametrize(
    ("spec", "host"),
    [
        (AWS_DEFAULT, "https://s3.eu-west-1.amazonaws.com"),
        (GOOGLE_DEFAULT, GOOGLE_ENDPOINT),
        (AZURE_DEFAULT, "https://acct.blob.core.windows.net"),
    ],
)
def test_a_cloud_default_endpoint_is_held_to_the_allowlist_too(spec: dict[str, Any], host: str) -> None:
    resolved = resolve_credentials(location(**spec), None, namespace=TENANT)
    assert endpoint_of(resolved) == host
    with pytest.raises(LocationRefused, match="not on the administrator's list"):
        open_store(resolved, policy(allowlist=("minio:9000",)))
    assert guard(resolved, policy(allowlist=(host.split("://")[1],))) == resolved


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "s3", "path": "b", "s3Config": {"endpoint": "http://user:pw@minio:9000"}},
        {"type": "s3", "path": "b", "s3Config": {"endpoint": "ftp://minio"}},
        {"type": "s3", "path": "b", "s3Config": {"endpoint": "http://minio:99999"}},
        {"type": "s3", "path": "b", "s3Config": {"region": "x.evil.example/"}},
        {"type": "azure", "path": "c",
         "azureConfig": {"storageAccountName": "evil.example:80/", "storageAccountKey": "k"}},
    ],
)  # fmt: skip
def test_endpoints_that_hide_their_host_are_refused(spec: dict[str, Any]) -> None:
    for namespace in (TENANT, ADMIN):
        with pytest.raises(LocationConfigError):
            open_store(resolve_credentials(location(**spec), None, namespace=namespace), policy())


def _s3_verifies(store: Any) -> Any:
    return store._client._endpoint.http_session._verify


def test_disable_ssl_with_an_https_endpoint_keeps_verification_on() -> None:
    spec = {
        "type": "s3",
        "path": "b",
        "s3Config": {"endpoint": "https://minio.example:9000", "disableSSL": True},
    }
    store = open_store(resolve_credentials(location(**spec), None, namespace=TENANT), policy())
    assert isinstance(store, S3Store)
    assert store.endpoint == "https://minio.example:9000"
    assert store._client.meta.endpoint_url == "https://minio.example:9000"
    assert _s3_verifies(store) is True
    store.close()


@pytest.mark.parametrize(
    ("inline", "secret"),
    [(True, None), (None, {"insecureSkipTLSVerify": "true"})],
    ids=["inline", "secret"],
)
def test_only_insecure_skip_tls_verify_turns_verification_off(
    inline: bool | None, secret: dict[str, str] | None
) -> None:
    s3 = {
        "type": "s3",
        "path": "b",
        "s3Config": {"endpoint": "https://minio.example", "insecureSkipTLSVerify": inline},
    }
    store = open_store(resolve_credentials(location(**s3), secret), policy())
    assert _s3_verifies(store) is False
    store.close()
    azure = {
        "type": "azure",
        "path": "c",
        "azureConfig": {
            "storageAccountName": "acct",
            "storageAccountKey": "k",
            "endpoint": "https://azure.example/acct",
            "insecureSkipTLSVerify": inline,
        },
    }
    az = open_store(resolve_credentials(location(**azure), secret), policy())
    assert isinstance(az, AzureStore)
    assert _azure_verifies(az) is False
    plain = {**azure, "azureConfig": {**azure["azureConfig"], "insecureSkipTLSVerify": None}}  # type: ignore[dict-item]
    assert _azure_verifies(open_store(resolve_credentials(location(**plain), None), policy())) is True


def _azure_verifies(store: Any) -> Any:
    return store._client._pipeline._transport.connection_config.verify
