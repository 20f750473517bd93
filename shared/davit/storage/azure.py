"""Azure Blob Storage (and Azurite) on azure-storage-blob, with a storage account's shared key."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from davit.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, ObjectTooLarge, scrub
from davit.storage.retry import Failure, Retrier, RetryPolicy, parse_retry_after

T = TypeVar("T")

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
        retry: RetryPolicy | None = None,
    ) -> None:
        """``endpoint`` is the blob service URL (Azurite's is ``http://host:port/<account>``);
        ``verify_tls=False`` accepts any certificate from an https endpoint; ``retry`` bounds every
        operation's time (``davit.storage.retry``)."""
        self.container = container
        self.prefix = prefix.strip("/")
        self.endpoint = (endpoint or default_endpoint(account_name)).rstrip("/")
        self.url = f"azure://{account_name}/{container}/{self.prefix}".rstrip("/")
        self._secrets = (account_key,)
        policy = retry or RetryPolicy()
        self._retrier = Retrier(policy, "Azure")
        self._client = ContainerClient(
            self.endpoint,
            container,
            credential={"account_name": account_name, "account_key": account_key},
            max_single_put_size=BLOCK_UPLOAD_THRESHOLD,
            max_block_size=BLOCK_SIZE,
            connection_verify=verify_tls,
            # One attempt per call: davit.storage.retry retries, honouring Retry-After, within a total
            # time; the SDK's storage retry policy ignores Retry-After and has no total bound.
            retry_total=0,
            # A hung connection ends: worker threads are not stopped by Celery's time limits.
            connection_timeout=policy.connect_timeout_seconds,
            read_timeout=policy.read_timeout_seconds,
        )

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _run(self, what: str, operation: Callable[[], T]) -> T:
        """``operation()``, retried by the store's policy; a failure raised as a StorageError naming
        ``what`` was done and the store's reason."""
        return self._retrier.call(operation, lambda exc: self._failure(exc, what))

    def _failure(self, exc: Exception, what: str) -> Failure | None:
        """What ``exc``, raised by the SDK while doing ``what``, means (None: not the store's failure)."""
        status: int | None = None
        retry_after: float | None = None
        if isinstance(exc, IncompleteReadError):
            code, message = "IncompleteRead", str(exc).splitlines()[0] if str(exc) else "body cut short"
        elif isinstance(exc, HttpResponseError) and exc.status_code:
            status = exc.status_code
            code = _error_code(exc) or str(status)
            message = (exc.reason or str(exc)).splitlines()[0]
            headers = getattr(exc.response, "headers", None) or {}
            retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        elif isinstance(exc, ServiceRequestError):
            code, message = "EndpointUnreachable", f"{self.endpoint}: {exc}"
        elif isinstance(exc, ServiceResponseError | HttpResponseError):
            # No answer, or one cut off: a reset, a read timeout, a body shorter than announced.
            code, message = "ConnectionFailed", f"{self.endpoint}: {exc}"
        elif isinstance(exc, AzureError):
            code, message = type(exc).__name__, str(exc)
        else:
            return None
        return Failure(code, scrub(f"{what} {self.url}: {message}", self._secrets), status, retry_after)

    @staticmethod
    def _is_missing_blob(exc: HttpResponseError) -> bool:
        return _error_code(exc) == "BlobNotFound"

    # --- ObjectStore ---------------------------------------------------------------------------------

    def check(self) -> None:
        self._run("cannot read", self._client.get_container_properties)
        probe = self._name(f".davit-probe/{uuid.uuid4().hex}")
        self._run("cannot write to", lambda: self._client.upload_blob(probe, b"davit", overwrite=True))
        self._run("cannot write to", lambda: self._client.delete_blob(probe))

    def put(self, key: str, data: bytes) -> None:
        self._run(
            f"cannot write {key!r} to",
            lambda: self._client.upload_blob(
                self._name(key), data, overwrite=True, max_concurrency=MAX_CONCURRENCY
            ),
        )

    def get(self, key: str, max_size: int | None = None) -> bytes:
        def attempt() -> bytes:
            try:
                downloader = self._client.download_blob(self._name(key), max_concurrency=MAX_CONCURRENCY)
            except HttpResponseError as exc:
                if self._is_missing_blob(exc):
                    raise ObjectNotFound(key) from exc
                raise
            # The blob's size is known from the first response, before the rest is fetched.
            if max_size is not None and downloader.size > max_size:
                raise ObjectTooLarge(key, downloader.size, max_size)
            data: bytes = downloader.readall()
            return data

        # The read of the body is inside the attempt: a body cut short is retried like a failed request.
        return self._run(f"cannot read {key!r} from", attempt)

    def exists(self, key: str) -> bool:
        def attempt() -> bool:
            found: bool = self._client.get_blob_client(self._name(key)).exists()
            return found

        return self._run(f"cannot look up {key!r} in", attempt)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._name(""))
        token: str | None = None
        while True:
            # Page by page, each page's request retried on its own: a fault half-way through a long
            # listing repeats one page, not the listing.
            def page(token: str | None = token) -> tuple[list[Any], str | None]:
                pages: Any = self._client.list_blobs(name_starts_with=self._name(prefix)).by_page(
                    continuation_token=token
                )
                items = list(next(pages, []))
                return items, pages.continuation_token

            blobs, token = self._run("cannot list", page)
            for blob in blobs:
                yield ObjectInfo(key=blob.name[strip:], size=int(blob.size))
            if not token:
                return

    def delete(self, key: str) -> None:
        def attempt() -> None:
            try:
                self._client.delete_blob(self._name(key))
            except HttpResponseError as exc:
                if not self._is_missing_blob(exc):
                    raise

        self._run(f"cannot delete {key!r} from", attempt)

    def close(self) -> None:
        self._client.close()


def _error_code(exc: HttpResponseError) -> str | None:
    """The service's x-ms-error-code (the SDK sets it as a StorageErrorCode enum, or a plain string)."""
    raw = getattr(exc, "error_code", None)
    return str(getattr(raw, "value", raw)) if raw else None
