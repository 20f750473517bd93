"""Azure Blob Storage (and Azurite) on azure-storage-blob, with a storage account's shared key."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import ContainerClient, ExponentialRetry

from davit.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, ObjectTooLarge, StorageError, scrub

# The SDK's HTTP logging policy writes request headers at DEBUG; keep the SDK at WARNING so raising the
# service's log level can never put them (or anything else about a request) into the logs.
logging.getLogger("azure").setLevel(logging.WARNING)

MiB = 1024 * 1024
#: From this size on, a blob is uploaded as blocks, several at once, and committed as one.
BLOCK_UPLOAD_THRESHOLD = 8 * MiB
BLOCK_SIZE = 4 * MiB
MAX_CONCURRENCY = 8


def default_endpoint(account: str) -> str:
    return f"https://{account}.blob.core.windows.net"


class AzureStore(ObjectStore):
    """One container (and blob name prefix) of a storage account."""

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_name: str,
        account_key: str,
        endpoint: str | None = None,
        verify_tls: bool = True,
    ) -> None:
        """``endpoint`` is the blob service URL (Azurite's is ``http://host:port/<account>``);
        ``verify_tls=False`` accepts any certificate from an https endpoint."""
        self.container = container
        self.prefix = prefix.strip("/")
        self.endpoint = (endpoint or default_endpoint(account_name)).rstrip("/")
        self.url = f"azure://{account_name}/{container}/{self.prefix}".rstrip("/")
        self._secrets = (account_key,)
        self._client = ContainerClient(
            self.endpoint,
            container,
            credential={"account_name": account_name, "account_key": account_key},
            max_single_put_size=BLOCK_UPLOAD_THRESHOLD,
            max_block_size=BLOCK_SIZE,
            connection_verify=verify_tls,
            # The SDK's default waits 15 s and more between attempts, so a wrong endpoint would hold a
            # location check for about a minute; this retries as often with waits of about 3, 5 and 9 s.
            retry_policy=ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
            ),
        )

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, what: str) -> NoReturn:
        if isinstance(exc, HttpResponseError):
            raw = _error_code(exc)
            code = raw or str(exc.status_code or type(exc).__name__)
            message = (exc.reason or str(exc)).splitlines()[0]
        elif isinstance(exc, ServiceRequestError | ServiceResponseError):
            code, message = "EndpointUnreachable", f"{self.endpoint}: {exc}"
        else:
            code, message = type(exc).__name__, str(exc)
        raise StorageError(code, scrub(f"{what} {self.url}: {message}", self._secrets)) from exc

    @staticmethod
    def _is_missing_blob(exc: HttpResponseError) -> bool:
        return _error_code(exc) == "BlobNotFound"

    # --- ObjectStore ---------------------------------------------------------------------------------

    def check(self) -> None:
        try:
            self._client.get_container_properties()
        except AzureError as exc:
            self._fail(exc, "cannot read")
        probe = self._name(f".davit-probe/{uuid.uuid4().hex}")
        try:
            self._client.upload_blob(probe, b"davit", overwrite=True)
            self._client.delete_blob(probe)
        except AzureError as exc:
            self._fail(exc, "cannot write to")

    def put(self, key: str, data: bytes) -> None:
        try:
            self._client.upload_blob(self._name(key), data, overwrite=True, max_concurrency=MAX_CONCURRENCY)
        except AzureError as exc:
            self._fail(exc, f"cannot write {key!r} to")

    def get(self, key: str, max_size: int | None = None) -> bytes:
        try:
            downloader = self._client.download_blob(self._name(key), max_concurrency=MAX_CONCURRENCY)
            # The blob's size is known from the first response, before the rest is fetched.
            if max_size is not None and downloader.size > max_size:
                raise ObjectTooLarge(key, downloader.size, max_size)
            data: bytes = downloader.readall()
        except HttpResponseError as exc:
            if self._is_missing_blob(exc):
                raise ObjectNotFound(key) from exc
            self._fail(exc, f"cannot read {key!r} from")
        except AzureError as exc:
            self._fail(exc, f"cannot read {key!r} from")
        return data

    def exists(self, key: str) -> bool:
        try:
            found: bool = self._client.get_blob_client(self._name(key)).exists()
        except AzureError as exc:
            self._fail(exc, f"cannot look up {key!r} in")
        return found

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._name(""))
        try:
            blobs: Any = self._client.list_blobs(name_starts_with=self._name(prefix))
            for blob in blobs:
                yield ObjectInfo(key=blob.name[strip:], size=int(blob.size))
        except AzureError as exc:
            self._fail(exc, "cannot list")

    def delete(self, key: str) -> None:
        try:
            self._client.delete_blob(self._name(key))
        except HttpResponseError as exc:
            if not self._is_missing_blob(exc):
                self._fail(exc, f"cannot delete {key!r} from")
        except AzureError as exc:
            self._fail(exc, f"cannot delete {key!r} from")

    def close(self) -> None:
        self._client.close()


def _error_code(exc: HttpResponseError) -> str | None:
    """The service's x-ms-error-code (the SDK sets it as a StorageErrorCode enum, or a plain string)."""
    raw = getattr(exc, "error_code", None)
    return str(getattr(raw, "value", raw)) if raw else None
