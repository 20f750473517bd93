"""S3 and S3-compatible stores (MinIO, Ceph, the moto emulator, and Google Cloud Storage's XML API) on
boto3."""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from davit.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, ObjectTooLarge, StorageError, scrub
from davit.storage.retry import Failure, Retrier, RetryPolicy, parse_retry_after

T = TypeVar("T")


class _ShortBody(Exception):
    """A response's body ended before its Content-Length: retried like a failed request."""


MiB = 1024 * 1024
#: From this size on, an object is uploaded in parts, several at once.
MULTIPART_THRESHOLD = 8 * MiB
#: Concurrent connections per store; worker threads share one store.
MAX_POOL_CONNECTIONS = 32
#: Parts of one large object uploaded at once.
MAX_TRANSFER_CONCURRENCY = 8
#: What boto3 raises for a refused or failed request (anything else is a bug, left as it is).
_STORE_ERRORS = (ClientError, BotoCoreError, Boto3Error)
#: S3's limit on keys per DeleteObjects request.
_DELETE_BATCH = 1000
#: Keys per ListObjectsV2 page (S3's maximum).
_LIST_PAGE = 1000
#: Failures of reading a response's body (cut short, reset half-way), by botocore's class name (the
#: classes moved between botocore versions).
_BODY_ERRORS = frozenset({"IncompleteReadError", "ResponseStreamingError", "ProtocolError"})


#: The requests Davit makes that address a bucket rather than an object.
_BUCKET_OPERATIONS = ("ListObjectsV2", "HeadBucket")


def _add_header(name: str, value: str, request: Any, **_: Any) -> None:
    request.headers[name] = value


class S3Store(ObjectStore):
    """One bucket (and key prefix) of an S3-compatible store."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        endpoint: str | None = None,
        disable_ssl: bool = False,
        verify_tls: bool = True,
        scheme: str = "s3",
        batch_delete: bool = True,
        retry: RetryPolicy | None = None,
        bucket_headers: Mapping[str, str] | None = None,
    ) -> None:
        """``endpoint`` is a URL (``http://host:port``) or a bare host; a bare host gets ``http://`` when
        ``disable_ssl`` is set, ``https://`` otherwise. ``disable_ssl`` never turns certificate
        verification off for an ``https://`` endpoint: only ``verify_tls=False`` does. Without keys
        boto3's default chain applies (IRSA, instance profiles, the environment). ``batch_delete=False``
        for stores without DeleteObjects (Google's XML API). ``retry`` bounds every operation's time
        (``davit.storage.retry``). ``bucket_headers`` go with every request that addresses the bucket
        rather than an object (its listings, the check): GCS's ``x-goog-project-id``."""
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint_url(endpoint, disable_ssl)
        self.url = f"{scheme}://{bucket}/{self.prefix}".rstrip("/")
        self._secrets = tuple(s for s in (secret_access_key, access_key_id) if s)
        self._batch_delete = batch_delete
        policy = retry or RetryPolicy()
        self._retrier = Retrier(policy, "GCS" if scheme == "gs" else "S3")
        aws = self.endpoint is None or (urlsplit(self.endpoint).hostname or "").endswith(".amazonaws.com")
        checksums = "when_supported" if aws else "when_required"
        config = Config(
            max_pool_connections=MAX_POOL_CONNECTIONS,
            # One attempt per call: davit.storage.retry retries, honouring Retry-After, within a total
            # time. botocore's standard mode reads no Retry-After, has no total bound, and stops retrying
            # altogether once its retry quota is spent, which a long outage with many threads does.
            retries={"mode": "standard", "total_max_attempts": 1},
            # A hung connection ends: worker threads are not stopped by Celery's time limits.
            connect_timeout=policy.connect_timeout_seconds,
            read_timeout=policy.read_timeout_seconds,
            # Virtual-host addressing needs wildcard DNS that self-hosted endpoints rarely have.
            s3={"addressing_style": "auto" if aws else "path"},
            # boto3's default CRC checksums (and aws-chunked uploads) are refused by GCS and by many
            # S3-compatible servers.
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        # A session per store: boto3's default session is not thread-safe, while the client it makes is.
        self._client: Any = boto3.session.Session().client(
            "s3",
            region_name=region or "us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            use_ssl=not disable_ssl,
            # Only the explicit insecureSkipTLSVerify turns verification off: disableSSL asks for plain
            # http, and an https:// endpoint next to it says TLS is wanted after all, so it is verified.
            verify=verify_tls,
            config=config,
        )
        for operation in _BUCKET_OPERATIONS:
            for name, value in (bucket_headers or {}).items():
                # Before signing, so the header is signed with the rest of the request.
                self._client.meta.events.register(
                    f"before-sign.s3.{operation}", functools.partial(_add_header, name, value)
                )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            max_concurrency=MAX_TRANSFER_CONCURRENCY,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _run(self, what: str, operation: Callable[[], T]) -> T:
        """``operation()``, retried by the store's policy; a failure raised as a StorageError naming
        ``what`` was done and the store's reason."""
        return self._retrier.call(operation, lambda exc: self._failure(exc, what))

    def _failure(self, exc: Exception, what: str) -> Failure | None:
        """What ``exc``, raised by boto3 while doing ``what``, means (None: not the store's failure)."""
        if isinstance(exc, Boto3Error) and isinstance(exc.__context__, ClientError | BotoCoreError):
            exc = exc.__context__  # an upload's part failed: the part's own error says why
        status: int | None = None
        retry_after: float | None = None
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            metadata = exc.response.get("ResponseMetadata", {})
            status = metadata.get("HTTPStatusCode")
            code = str(error.get("Code") or status)
            message = str(error.get("Message") or code)
            if code == "403":
                # A HEAD request's refusal has no body to name the reason; 403 is S3's AccessDenied.
                code = "AccessDenied"
            retry_after = parse_retry_after((metadata.get("HTTPHeaders") or {}).get("retry-after"))
        elif isinstance(exc, NoCredentialsError):
            code, message = "NoCredentials", "no access key given and none found in the environment"
        elif isinstance(exc, ReadTimeoutError):
            code, message = "ReadTimeout", str(exc)
        elif isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            code, message = "EndpointUnreachable", str(exc)
        elif isinstance(exc, BotoConnectionError | HTTPClientError):
            code, message = "ConnectionFailed", str(exc)
        elif type(exc).__name__ in _BODY_ERRORS or isinstance(exc, _ShortBody):
            code, message = "IncompleteRead", str(exc)
        elif isinstance(exc, _STORE_ERRORS):
            code, message = type(exc).__name__, str(exc)
        else:
            return None
        return Failure(code, scrub(f"{what} {self.url}: {message}", self._secrets), status, retry_after)

    # --- ObjectStore ---------------------------------------------------------------------------------

    def check(self) -> None:
        # ListObjectsV2 rather than HeadBucket: a HEAD response has no body, so HeadBucket reports only
        # "403"/"404", not the reason (InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket, ...).
        listed = self._key("")
        self._run(
            "cannot list", lambda: self._client.list_objects_v2(Bucket=self.bucket, Prefix=listed, MaxKeys=1)
        )
        probe = self._key(f".davit-probe/{uuid.uuid4().hex}")
        self._run(
            "cannot write to", lambda: self._client.put_object(Bucket=self.bucket, Key=probe, Body=b"davit")
        )
        self._run("cannot write to", lambda: self._client.delete_object(Bucket=self.bucket, Key=probe))

    def put(self, key: str, data: bytes) -> None:
        def attempt() -> None:
            if len(data) < MULTIPART_THRESHOLD:
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
            else:
                self._client.upload_fileobj(
                    io.BytesIO(data), self.bucket, self._key(key), Config=self._transfer
                )

        self._run(f"cannot write {key!r} to", attempt)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        def attempt() -> bytes:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise ObjectNotFound(key) from exc
                raise
            with response["Body"] as body:
                length = int(response.get("ContentLength") or 0)
                if max_size is not None and length > max_size:
                    raise ObjectTooLarge(key, length, max_size)  # nothing of it read
                # Bounded even if the length said otherwise: at most one byte more than allowed.
                data: bytes = body.read() if max_size is None else body.read(max_size + 1)
            if max_size is not None and len(data) > max_size:
                raise ObjectTooLarge(key, len(data), max_size)
            if response.get("ContentLength") is not None and len(data) < length:
                # A body cut short (a reset, a proxy) is read again, never taken for the object.
                raise _ShortBody(f"the body ended after {len(data)} of {length} bytes")
            return data

        # The read of the body is inside the attempt: a body cut short is retried like a failed request.
        return self._run(f"cannot read {key!r} from", attempt)

    def exists(self, key: str) -> bool:
        def attempt() -> bool:
            try:
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return False
                raise
            return True

        return self._run(f"cannot look up {key!r} in", attempt)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._key(""))
        token: str | None = None
        while True:
            # Page by page, each page's request retried on its own: a fault half-way through a long
            # listing repeats one page, not the listing.
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": self._key(prefix),
                "MaxKeys": _LIST_PAGE,
            }
            if token:
                kwargs["ContinuationToken"] = token
            page: dict[str, Any] = self._run(
                "cannot list", functools.partial(self._client.list_objects_v2, **kwargs)
            )
            for item in page.get("Contents", ()):
                yield ObjectInfo(key=item["Key"][strip:], size=int(item["Size"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, key: str) -> None:
        self._run(
            f"cannot delete {key!r} from",
            lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)),
        )

    def delete_prefix(self, prefix: str) -> int:
        if not self._batch_delete:
            return super().delete_prefix(prefix)
        count = 0
        batch: list[dict[str, str]] = []
        for info in self.list(prefix):
            batch.append({"Key": self._key(info.key)})
            if len(batch) == _DELETE_BATCH:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, batch: Sequence[dict[str, str]]) -> int:
        response = self._run(
            "cannot delete from",
            lambda: self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [*batch], "Quiet": True}
            ),
        )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            message = f"cannot delete {len(errors)} objects from {self.url}: {first.get('Message')}"
            raise StorageError(str(first.get("Code")), scrub(message, self._secrets))
        return len(batch)

    def close(self) -> None:
        self._client.close()


def endpoint_url(endpoint: str | None, disable_ssl: bool) -> str | None:
    """The URL an ``endpoint`` setting (a URL or a bare host) stands for."""
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint.rstrip("/")
    return f"{'http' if disable_ssl else 'https'}://{endpoint.rstrip('/')}"
