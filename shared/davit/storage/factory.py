"""From a BackupLocation's ``location`` (and the Secret its ``secretConfig`` names) to an open store.

Stork's rule: every key present in the Secret overrides the inline value of the same name, so credentials
can live in a Secret while the rest of the location stays readable. Secret values are used as written,
except that a trailing newline (what ``kubectl create secret --from-file`` keeps) is dropped, and an empty
value means "not set".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from davit.api.types import AzureConfig, GoogleConfig, LocationSpec, S3Config
from davit.storage.azure import AzureStore, default_endpoint
from davit.storage.base import ObjectStore, StorageError
from davit.storage.local import LocalStore
from davit.storage.s3 import S3Store

GOOGLE_ENDPOINT = "https://storage.googleapis.com"
#: Region in Google's HMAC signatures: the XML API accepts any, and "auto" is what its docs use.
GOOGLE_REGION = "auto"
DEFAULT_S3_REGION = "us-east-1"

#: Go's strconv.ParseBool, which Stork uses for the Secret's disableSSL.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class LocationConfigError(StorageError):
    """The location's settings cannot work (a required value is missing or malformed)."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidConfiguration", message)


@dataclass(frozen=True)
class S3Settings:
    region: str
    endpoint: str | None
    disable_ssl: bool
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AzureSettings:
    storage_account_name: str
    endpoint: str | None
    storage_account_key: str = field(repr=False)


@dataclass(frozen=True)
class GoogleSettings:
    project_id: str | None
    endpoint: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class ResolvedLocation:
    """A location with its Secret applied: everything needed to open its store. Its repr shows no
    credentials, so it may be logged."""

    type: Literal["s3", "azure", "google", "local"]
    path: str
    prefix: str
    encryption_key: str | None = field(default=None, repr=False)
    s3: S3Settings | None = None
    azure: AzureSettings | None = None
    google: GoogleSettings | None = None


def _secret_value(secret_data: dict[str, str], *names: str) -> tuple[bool, str | None]:
    """Whether the Secret has one of ``names`` (first wins), and its value ("" as None)."""
    for name in names:
        if name in secret_data:
            value = secret_data[name].removesuffix("\n").removesuffix("\r")
            return True, value or None
    return False, None


def _parse_bool(value: str, name: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise LocationConfigError(f"Secret key {name}: {value!r} is not a boolean (true or false)")


def resolve_credentials(location: LocationSpec, secret_data: dict[str, str] | None) -> ResolvedLocation:
    """Apply ``secret_data`` (the decoded data of the Secret named by ``location.secretConfig``, or None)
    to ``location``. Raises LocationConfigError when the result cannot work."""
    secret = secret_data or {}

    def pick(inline: str | None, *names: str) -> str | None:
        present, value = _secret_value(secret, *names)
        return value if present else (inline or None)

    path = pick(location.path, "path")
    if not path:
        raise LocationConfigError("location.path is empty")
    prefix = (pick(location.prefix, "prefix") or "").strip("/")
    encryption_key = pick(location.encryption_key, "encryptionKey")
    kind = location.type

    if kind == "s3":
        inline_s3 = location.s3_config or S3Config()
        present, raw_disable = _secret_value(secret, "disableSSL")
        if present:
            disable_ssl = _parse_bool(raw_disable or "false", "disableSSL")
        else:
            disable_ssl = bool(inline_s3.disable_ssl)
        s3 = S3Settings(
            region=pick(inline_s3.region, "region") or DEFAULT_S3_REGION,
            endpoint=pick(inline_s3.endpoint, "endpoint"),
            disable_ssl=disable_ssl,
            access_key_id=pick(inline_s3.access_key_id, "accessKeyID"),
            secret_access_key=pick(inline_s3.secret_access_key, "secretAccessKey"),
        )
        if bool(s3.access_key_id) != bool(s3.secret_access_key):
            raise LocationConfigError("s3Config: accessKeyID and secretAccessKey go together")
        return ResolvedLocation(kind, path, prefix, encryption_key, s3=s3)

    if kind == "azure":
        inline_az = location.azure_config or AzureConfig()
        account = pick(inline_az.storage_account_name, "storageAccountName")
        key = pick(inline_az.storage_account_key, "storageAccountKey")
        if not account or not key:
            raise LocationConfigError("azureConfig: storageAccountName and storageAccountKey are required")
        azure = AzureSettings(
            storage_account_name=account,
            endpoint=pick(inline_az.endpoint, "endpoint"),
            storage_account_key=key,
        )
        return ResolvedLocation(kind, path, prefix, encryption_key, azure=azure)

    if kind == "google":
        inline_gc = location.google_config or GoogleConfig()
        key_id = pick(inline_gc.access_key_id, "accessKeyID")
        secret_key = pick(inline_gc.secret_access_key, "secretAccessKey")
        if not key_id or not secret_key:
            # Without HMAC keys boto3 would fall back to whatever AWS credentials the pod has.
            raise LocationConfigError(
                "googleConfig: accessKeyID and secretAccessKey (HMAC keys) are required"
            )
        google = GoogleSettings(
            project_id=pick(inline_gc.project_id, "projectID"),
            endpoint=pick(inline_gc.endpoint, "endpoint") or GOOGLE_ENDPOINT,
            access_key_id=key_id,
            secret_access_key=secret_key,
        )
        return ResolvedLocation(kind, path, prefix, encryption_key, google=google)

    if kind == "local":
        if not os.path.isabs(path):
            raise LocationConfigError(f"location.path {path!r}: a local location needs an absolute directory")
        return ResolvedLocation(kind, os.path.normpath(path), prefix, encryption_key)

    raise LocationConfigError(f"location.type {kind!r} is not one of s3, azure, google, local")


def open_store(resolved: ResolvedLocation) -> ObjectStore:
    """The store for ``resolved``; nothing is contacted until it is used (see ObjectStore.check)."""
    if resolved.s3 is not None:
        s3 = resolved.s3
        return S3Store(
            resolved.path,
            resolved.prefix,
            region=s3.region,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            endpoint=s3.endpoint,
            disable_ssl=s3.disable_ssl,
        )
    if resolved.google is not None:
        google = resolved.google
        return S3Store(
            resolved.path,
            resolved.prefix,
            region=GOOGLE_REGION,
            access_key_id=google.access_key_id,
            secret_access_key=google.secret_access_key,
            endpoint=google.endpoint,
            scheme="gs",
            # The XML API has no multi-object delete.
            batch_delete=False,
        )
    if resolved.azure is not None:
        azure = resolved.azure
        return AzureStore(
            resolved.path,
            resolved.prefix,
            account_name=azure.storage_account_name,
            account_key=azure.storage_account_key,
            endpoint=azure.endpoint,
        )
    if resolved.type == "local":
        return LocalStore(resolved.path, resolved.prefix)
    raise LocationConfigError(f"location.type {resolved.type!r} has no settings")


def describe(resolved: ResolvedLocation) -> str:
    """Where the location is, for logs, events and status messages (never credentials)."""
    where = "/".join(p for p in (resolved.path, resolved.prefix) if p)
    if resolved.s3 is not None:
        endpoint = resolved.s3.endpoint or f"AWS {resolved.s3.region}"
        return f"s3://{where} at {endpoint}"
    if resolved.google is not None:
        return f"gs://{where} at {resolved.google.endpoint}"
    if resolved.azure is not None:
        account = resolved.azure.storage_account_name
        endpoint = resolved.azure.endpoint or default_endpoint(account)
        return f"azure://{account}/{where} at {endpoint}"
    return where
