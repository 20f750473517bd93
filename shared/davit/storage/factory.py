"""From a BackupLocation's ``location`` (and the Secret its ``secretConfig`` names) to an open store.

Stork's rule: every key present in the Secret overrides the inline value of the same name, so credentials
can live in a Secret while the rest of the location stays readable. Secret values are used as written,
except that a trailing newline (what ``kubectl create secret --from-file`` keeps) is dropped, and an empty
value means "not set".
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

from davit.api.types import GOOGLE_PROJECT, AzureConfig, GoogleConfig, LocationSpec, S3Config
from davit.settings import Settings, parse_list
from davit.storage.azure import AzureStore, default_endpoint
from davit.storage.base import ObjectStore, StorageError
from davit.storage.local import LocalStore
from davit.storage.retry import RetryPolicy
from davit.storage.s3 import S3Store, endpoint_url

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


class LocationRefused(StorageError):
    """The location points where its namespace may not go (a directory outside the administrator's roots,
    an endpoint off the allow-list); nothing was opened or contacted."""


@dataclass(frozen=True)
class LocationPolicy:
    """Where BackupLocations outside the admin namespace may point: the administrator's settings
    (``DAVIT_LOCAL_LOCATION_ROOTS``, ``DAVIT_TENANT_ENDPOINT_ALLOWLIST``)."""

    admin_namespace: str
    #: Directories a tenant's local location must lie under; "{namespace}" stands for its namespace.
    local_roots: tuple[str, ...] = ()
    #: ``host`` / ``host:port`` patterns a tenant's endpoint must match; empty: any.
    endpoint_allowlist: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocationPolicy:
        return cls(
            admin_namespace=settings.admin_namespace,
            local_roots=parse_list(settings.local_location_roots),
            endpoint_allowlist=parse_list(settings.tenant_endpoint_allowlist),
        )


@dataclass(frozen=True)
class S3Settings:
    region: str
    endpoint: str | None
    disable_ssl: bool
    insecure_skip_tls_verify: bool = False
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AzureSettings:
    storage_account_name: str
    endpoint: str | None
    storage_account_key: str = field(repr=False)
    insecure_skip_tls_verify: bool = False


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
    #: The namespace of the BackupLocation this came from, which decides what it may point at (see
    #: ``guard``); None for a location an operator hands over directly (the CLI's checks, tools, tests),
    #: which acts with that operator's own authority.
    namespace: str | None = None


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


def resolve_credentials(
    location: LocationSpec, secret_data: dict[str, str] | None, namespace: str | None = None
) -> ResolvedLocation:
    """Apply ``secret_data`` (the decoded data of the Secret named by ``location.secretConfig``, or None)
    to ``location``, a BackupLocation of ``namespace``. Raises LocationConfigError when the result cannot
    work."""
    secret = secret_data or {}

    def pick(inline: str | None, *names: str) -> str | None:
        present, value = _secret_value(secret, *names)
        return value if present else (inline or None)

    def flag(inline: bool | None, name: str) -> bool:
        present, raw = _secret_value(secret, name)
        return _parse_bool(raw or "false", name) if present else bool(inline)

    path = pick(location.path, "path")
    if not path:
        raise LocationConfigError("location.path is empty")
    prefix = (pick(location.prefix, "prefix") or "").strip("/")
    encryption_key = pick(location.encryption_key, "encryptionKey")
    kind = location.type

    if kind == "s3":
        inline_s3 = location.s3_config or S3Config()
        s3 = S3Settings(
            region=pick(inline_s3.region, "region") or DEFAULT_S3_REGION,
            endpoint=pick(inline_s3.endpoint, "endpoint"),
            disable_ssl=flag(inline_s3.disable_ssl, "disableSSL"),
            insecure_skip_tls_verify=flag(inline_s3.insecure_skip_tls_verify, "insecureSkipTLSVerify"),
            access_key_id=pick(inline_s3.access_key_id, "accessKeyID"),
            secret_access_key=pick(inline_s3.secret_access_key, "secretAccessKey"),
        )
        if bool(s3.access_key_id) != bool(s3.secret_access_key):
            raise LocationConfigError("s3Config: accessKeyID and secretAccessKey go together")
        return ResolvedLocation(kind, path, prefix, encryption_key, s3=s3, namespace=namespace)

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
            insecure_skip_tls_verify=flag(inline_az.insecure_skip_tls_verify, "insecureSkipTLSVerify"),
        )
        return ResolvedLocation(kind, path, prefix, encryption_key, azure=azure, namespace=namespace)

    if kind == "google":
        inline_gc = location.google_config or GoogleConfig()
        key_id = pick(inline_gc.access_key_id, "accessKeyID")
        secret_key = pick(inline_gc.secret_access_key, "secretAccessKey")
        if not key_id or not secret_key:
            # Without HMAC keys boto3 would fall back to whatever AWS credentials the pod has.
            raise LocationConfigError(
                "googleConfig: accessKeyID and secretAccessKey (HMAC keys) are required"
            )
        project_id = pick(inline_gc.project_id, "projectID")
        if project_id is not None and not re.fullmatch(GOOGLE_PROJECT, project_id):
            # The CRD checks the inline value; one from the Secret goes into a request header.
            raise LocationConfigError(
                "googleConfig.projectID: not a project id (my-project, example.com:my-project) or number"
            )
        google = GoogleSettings(
            project_id=project_id,
            endpoint=pick(inline_gc.endpoint, "endpoint") or GOOGLE_ENDPOINT,
            access_key_id=key_id,
            secret_access_key=secret_key,
        )
        return ResolvedLocation(kind, path, prefix, encryption_key, google=google, namespace=namespace)

    if kind == "local":
        if not os.path.isabs(path):
            raise LocationConfigError(f"location.path {path!r}: a local location needs an absolute directory")
        if ".." in path.split("/"):
            # An absolute directory never needs one, and it would hide where the path really leads.
            raise LocationConfigError(
                f"location.path {path!r}: '..' is not allowed in a local location's path"
            )
        return ResolvedLocation(kind, os.path.normpath(path), prefix, encryption_key, namespace=namespace)

    raise LocationConfigError(f"location.type {kind!r} is not one of s3, azure, google, local")


#: A label of a DNS name (what an AWS region must be, since it becomes part of the endpoint's host).
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: An Azure storage account's name: 3 to 24 lowercase letters and digits.
_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


def endpoint_of(resolved: ResolvedLocation) -> str | None:
    """The URL the store of ``resolved`` contacts (a cloud's default when none is set); None for a local
    directory. Raises LocationConfigError for an endpoint that is not a plain ``http(s)://host[:port]``."""
    if resolved.s3 is not None:
        if resolved.s3.endpoint:
            url = endpoint_url(resolved.s3.endpoint, resolved.s3.disable_ssl) or ""
        elif _DNS_LABEL.match(resolved.s3.region):
            url = f"https://s3.{resolved.s3.region}.amazonaws.com"
        else:
            raise LocationConfigError(f"s3Config.region {resolved.s3.region!r} is not a region name")
    elif resolved.google is not None:
        url = resolved.google.endpoint
    elif resolved.azure is not None:
        account = resolved.azure.storage_account_name
        if not resolved.azure.endpoint and not _AZURE_ACCOUNT.match(account):
            # The account name becomes the host of the default endpoint.
            raise LocationConfigError(f"azureConfig.storageAccountName {account!r} is not an account name")
        url = resolved.azure.endpoint or default_endpoint(account)
    else:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise LocationConfigError(f"endpoint {url!r} is not a URL: {exc}") from exc
    # Credentials in the URL, or anything but http(s), would make the host we check differ from the one a
    # client library contacts.
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise LocationConfigError(f"endpoint {url!r} is not of the form http(s)://host[:port][/path]")
    return url


def endpoint_allowed(url: str, allowlist: tuple[str, ...]) -> bool:
    """Pure: whether ``url``'s host (and port) match one of ``allowlist``'s ``host`` or ``host:port``
    patterns (``*`` matches any run of characters; a pattern without a port allows any port)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for pattern in allowlist:
        want_host, want_port = _split_pattern(pattern.strip().lower())
        if want_port is not None and want_port != port:
            continue
        if fnmatch.fnmatchcase(host, want_host.rstrip(".")):
            return True
    return False


def _split_pattern(pattern: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host, port or None)."""
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = pattern.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return pattern, None


def confined_directory(path: str, prefix: str, roots: tuple[str, ...], namespace: str) -> str:
    """``path`` with every symlink resolved, if it (and its ``prefix`` below it) lies under one of
    ``roots`` (resolved the same way, "{namespace}" replaced); LocationRefused otherwise. Resolving here,
    on the machine that opens the store, means a link planted in a root cannot lead out of it."""
    if not roots:
        raise LocationRefused(
            "LocalPathNotAllowed",
            f"local locations are not allowed outside the admin namespace: {path} cannot be used "
            "(an administrator allows directories with DAVIT_LOCAL_LOCATION_ROOTS)",
        )
    real = os.path.realpath(path)
    real_with_prefix = os.path.realpath(os.path.join(path, *prefix.split("/"))) if prefix else real
    for root in roots:
        real_root = os.path.realpath(root.replace("{namespace}", namespace))
        if all(os.path.commonpath([real_root, p]) == real_root for p in (real, real_with_prefix)):
            return real
    shown = path if real == path else f"{path} (which leads to {real})"
    raise LocationRefused(
        "LocalPathNotAllowed",
        f"{shown} is not under a directory this namespace may use "
        f"({', '.join(r.replace('{namespace}', namespace) for r in roots)})",
    )


def guard(resolved: ResolvedLocation, policy: LocationPolicy) -> ResolvedLocation:
    """``resolved`` as it may be opened, or LocationRefused / LocationConfigError before anything is
    opened or contacted. A location outside the admin namespace is a tenant's: its directory must lie
    under the administrator's roots (and is returned resolved) and its endpoint must be on the
    allow-list, when there is one."""
    url = endpoint_of(resolved)
    if resolved.namespace is None or resolved.namespace == policy.admin_namespace:
        return resolved
    if resolved.type == "local":
        return replace(
            resolved,
            path=confined_directory(resolved.path, resolved.prefix, policy.local_roots, resolved.namespace),
        )
    if url is not None and policy.endpoint_allowlist and not endpoint_allowed(url, policy.endpoint_allowlist):
        parts = urlsplit(url)
        raise LocationRefused(
            "EndpointNotAllowed",
            f"endpoint {parts.scheme}://{parts.netloc} is not on the administrator's list of endpoints "
            "tenant locations may use (DAVIT_TENANT_ENDPOINT_ALLOWLIST); it was not contacted",
        )
    return resolved


def retry_policy(settings: Settings) -> RetryPolicy:
    """The stores' retries and timeouts as the settings (``store_*``) give them."""
    return RetryPolicy(
        total_seconds=settings.store_retry_seconds,
        connect_timeout_seconds=settings.store_connect_timeout_seconds,
        read_timeout_seconds=settings.store_read_timeout_seconds,
    )


def open_store(
    resolved: ResolvedLocation, policy: LocationPolicy | None = None, retry: RetryPolicy | None = None
) -> ObjectStore:
    """The store for ``resolved``, once ``guard`` has let it through under ``policy``, its requests
    bounded by ``retry`` (both by default from the environment's settings); nothing is contacted until it
    is used (see ObjectStore.check)."""
    if policy is None or retry is None:
        settings = Settings.from_env()
        policy = policy or LocationPolicy.from_settings(settings)
        retry = retry or retry_policy(settings)
    resolved = guard(resolved, policy)
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
            verify_tls=not s3.insecure_skip_tls_verify,
            retry=retry,
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
            retry=retry,
            bucket_headers={"x-goog-project-id": google.project_id} if google.project_id else None,
        )
    if resolved.azure is not None:
        azure = resolved.azure
        return AzureStore(
            resolved.path,
            resolved.prefix,
            account_name=azure.storage_account_name,
            account_key=azure.storage_account_key,
            endpoint=azure.endpoint,
            verify_tls=not azure.insecure_skip_tls_verify,
            retry=retry,
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
