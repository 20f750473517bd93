"""S3 and S3-compatible stores (MinIO, Ceph, the moto emulator, and Google Cloud Storage's XML API) on
boto3."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from davit.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, ObjectTooLarge, StorageError, scrub

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
    ) -> None:
        """``endpoint`` is a URL (``http://host:port``) or a bare host; a bare host gets ``http://`` when
        ``disable_ssl`` is set, ``https://`` otherwise. ``disable_ssl`` never turns certificate
        verification off for an ``https://`` endpoint: only ``verify_tls=False`` does. Without keys
        boto3's default chain applies (IRSA, instance profiles, the environment). ``batch_delete=False``
        for stores without DeleteObjects (Google's XML API)."""
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint_url(endpoint, disable_ssl)
        self.url = f"{scheme}://{bucket}/{self.prefix}".rstrip("/")
        self._secrets = tuple(s for s in (secret_access_key, access_key_id) if s)
        self._batch_delete = batch_delete
        aws = self.endpoint is None or (urlsplit(self.endpoint).hostname or "").endswith(".amazonaws.com")
        checksums = "when_supported" if aws else "when_required"
        config = Config(
            max_pool_connections=MAX_POOL_CONNECTIONS,
            retries={"mode": "standard"},
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
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            max_concurrency=MAX_TRANSFER_CONCURRENCY,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, what: str) -> NoReturn:
        raise self._error(exc, what) from exc

    def _error(self, exc: Exception, what: str) -> StorageError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            message = str(error.get("Message") or code)
            if code == "403":
                # A HEAD request's refusal has no body to name the reason; 403 is S3's AccessDenied.
                code = "AccessDenied"
        elif isinstance(exc, NoCredentialsError):
            code, message = "NoCredentials", "no access key given and none found in the environment"
        elif isinstance(exc, BotoConnectionError | HTTPClientError):
            code, message = "EndpointUnreachable", str(exc)
        else:
            code, message = type(exc).__name__, str(exc)
        return StorageError(code, scrub(f"{what} {self.url}: {message}", self._secrets))

    # --- ObjectStore ---------------------------------------------------------------------------------

    def check(self) -> None:
        # ListObjectsV2 rather than HeadBucket: a HEAD response has no body, so HeadBucket reports only
        # "403"/"404", not the reason (InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket, ...).
        try:
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
        except _STORE_ERRORS as exc:
            self._fail(exc, "cannot list")
        probe = f".davit-probe/{uuid.uuid4().hex}"
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(probe), Body=b"davit")
            self._client.delete_object(Bucket=self.bucket, Key=self._key(probe))
        except _STORE_ERRORS as exc:
            self._fail(exc, "cannot write to")

    def put(self, key: str, data: bytes) -> None:
        try:
            if len(data) < MULTIPART_THRESHOLD:
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
            else:
                self._client.upload_fileobj(
                    io.BytesIO(data), self.bucket, self._key(key), Config=self._transfer
                )
        except _STORE_ERRORS as exc:
            self._fail(exc, f"cannot write {key!r} to")

    def get(self, key: str, max_size: int | None = None) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with response["Body"] as body:
                length = int(response.get("ContentLength") or 0)
                if max_size is not None and length > max_size:
                    raise ObjectTooLarge(key, length, max_size)  # nothing of it read
                # Bounded even if the length said otherwise: at most one byte more than allowed.
                data: bytes = body.read() if max_size is None else body.read(max_size + 1)
            if max_size is not None and len(data) > max_size:
                raise ObjectTooLarge(key, len(data), max_size)
            return data
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from exc
            self._fail(exc, f"cannot read {key!r} from")
        except _STORE_ERRORS as exc:
            self._fail(exc, f"cannot read {key!r} from")

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            self._fail(exc, f"cannot look up {key!r} in")
        except _STORE_ERRORS as exc:
            self._fail(exc, f"cannot look up {key!r} in")
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._key(""))
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(key=item["Key"][strip:], size=int(item["Size"]))
        except _STORE_ERRORS as exc:
            self._fail(exc, "cannot list")

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _STORE_ERRORS as exc:
            self._fail(exc, f"cannot delete {key!r} from")

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
        try:
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [*batch], "Quiet": True}
            )
        except _STORE_ERRORS as exc:
            self._fail(exc, "cannot delete from")
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
