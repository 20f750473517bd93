"""The storage interface every backend implements, and its errors.

Keys are relative to the location (its bucket or container and ``prefix``), use ``/`` as separator and
never start with one. Backends are thread-safe: one instance is shared by a worker's threads.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from davit import errors

_REDACTED = "[redacted]"
#: Deletes in flight at once in ``delete_prefix``.
DELETE_CONCURRENCY = 16


class StorageError(errors.Transient):
    """A store refused or failed a request. ``code`` is the store's own reason, as users know it from
    the store's documentation (``InvalidAccessKeyId``, ``AccessDenied``, ``AuthenticationFailed``,
    ``NoSuchBucket``, ``ContainerNotFound``, …); the message never contains credentials."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StoreRefused(StorageError, errors.Refused):
    """The store refused the credentials or the rights they carry (401/403: ``InvalidAccessKeyId``,
    ``SignatureDoesNotMatch``, ``AccessDenied``, ``AuthenticationFailed``, ...). The same key gets the same
    answer, so the operation fails at once; still a StorageError for the callers that catch those."""

    retryable = False

    def __init__(self, code: str, message: str, *, store: str = "") -> None:
        super().__init__(code, message)
        self.store = store
        self.reason = f"{store} {code}: {message}".strip()


class StoreUnavailable(StorageError, errors.Permanent):
    """The store kept failing (throttling, 5xx, resets, timeouts) for the whole of the retry policy's
    total time (``davit.storage.retry``). Not retried again by the workers: the time was spent already,
    and the operation fails with the store's last reason."""

    retryable = False

    def __init__(
        self, code: str, message: str, *, store: str = "", attempts: int = 1, seconds: float = 0.0
    ) -> None:
        super().__init__(code, message)
        self.store = store
        self.attempts = attempts
        self.seconds = seconds
        self.reason = (
            f"{store} {code}: {message} (still failing after {attempts} attempts in {seconds:.0f}s)".strip()
        )


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every given secret replaced: a last guard for messages built from what a store or
    library said, which Davit does not control."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


class ObjectTooLarge(StorageError):
    """An object is longer than its reader allows: a location's contents are untrusted, and nothing
    reads an object of unbounded size into memory."""

    def __init__(self, key: str, size: int, max_size: int) -> None:
        super().__init__(
            "ObjectTooLarge", f"{key!r} is {size} bytes or more, more than the {max_size} allowed"
        )
        self.key = key
        self.size = size
        self.max_size = max_size


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__("NotFound", f"no object {key!r}")
        self.key = key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(abc.ABC):
    """One location's objects."""

    #: For messages: ``s3://bucket/prefix``, ``azure://account/container/prefix``, ``/dir``.
    url: str

    @abc.abstractmethod
    def check(self) -> None:
        """Verify that the credentials work and the bucket/container/directory exists and can be
        written; raise StorageError with the store's reason otherwise."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically: a reader sees the old object or the whole new one."""

    @abc.abstractmethod
    def get(self, key: str, max_size: int | None = None) -> bytes:
        """The object's bytes; ObjectNotFound if there is none, ObjectTooLarge (having read at most
        ``max_size`` + 1 bytes of it) if it is longer than ``max_size``."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    def close(self) -> None:  # noqa: B027 - most stores hold connections, a directory does not
        """Release the store's connections; it is not used afterwards."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many."""
        keys = [info.key for info in self.list(prefix)]
        # Stores without a bulk delete take one request per object: overlap them (stores are thread-safe).
        with ThreadPoolExecutor(DELETE_CONCURRENCY) as pool:
            for _ in pool.map(self.delete, keys):
                pass
        return len(keys)
