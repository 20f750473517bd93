"""How a store's failed request is tried again: which failures are worth another try, how long to wait
(jittered exponential backoff that honours the store's Retry-After), and for how long in all.

One loop, :class:`Retrier`, serves every store; the client libraries make one attempt per call
(``docs/storage.md``, "Retries and timeouts", says why theirs are not used). Everything here but the
loop's sleeping is pure and unit-tested.

A failure is, by its store's code and HTTP status:

* retried (``RETRY``): throttling (S3 ``SlowDown``, Azure ``ServerBusy``, 429, 503), the store's own
  errors (500, 502, 504, ``InternalError``), timeouts, resets and cut-off bodies: for at most
  ``RetryPolicy.total_seconds``, then ``StoreUnavailable`` with the last reason (not retried again by the
  workers: the time was spent here);
* refused (``REFUSED``): credentials or rights refused (401, 403, ``InvalidAccessKeyId``,
  ``SignatureDoesNotMatch``, ``AuthenticationFailed``, ...): ``StoreRefused`` at once, which fails the
  operation at once, since the same key gets the same answer;
* anything else (``FAIL``): a ``StorageError`` at once, as before (``NoSuchBucket``, a missing object,
  ...), which the workers' own retries may still try again.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import structlog

from davit.errors import DavitError
from davit.storage.base import StorageError, StoreRefused, StoreUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: The watcher's location checks retry for this long at most: a check answers "is the location usable
#: now?", so it reports a store that does not answer within seconds rather than waiting as long as an
#: operation would (an operation's own first check uses the full policy: it fails the operation).
CHECK_RETRY_SECONDS = 10.0


class Verdict(enum.Enum):
    RETRY = "retry"
    REFUSED = "refused"
    FAIL = "fail"


#: Credentials or rights refused: the same request with the same key gets the same answer.
REFUSED_CODES = frozenset(
    {
        # S3 (and S3-compatible stores, Google's XML API)
        "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
        "TokenRefreshRequired", "AccountProblem", "AllAccessDisabled", "RequestTimeTooSkewed",
        "NoCredentials",
        # Azure Blob Storage
        "AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
        "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch",
        "InsufficientAccountPermissions", "InvalidAuthenticationInfo", "AccountIsDisabled",
    }
)  # fmt: skip
#: Worth another try, whatever the status says.
RETRY_CODES = frozenset(
    {
        # throttling
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
        "RequestThrottled", "ServerBusy", "OperationTimedOut", "ServiceUnavailable",
        # the store's own trouble
        "InternalError", "InternalServerError", "RequestTimeout", "RequestTimeoutException",
        "BadDigest", "IncompleteBody", "XAmzContentSHA256Mismatch",
        # on the way (named by the stores' modules from the client libraries' exceptions)
        "EndpointUnreachable", "ConnectionFailed", "ReadTimeout", "IncompleteRead",
    }
)  # fmt: skip
#: HTTP statuses worth another try: timeout, throttling, the server's own trouble.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REFUSED_STATUSES = frozenset({401, 403})


def classify(code: str, status: int | None) -> Verdict:
    """Pure: what to do about a failure the store named ``code`` (its HTTP ``status`` if it answered)."""
    if code in REFUSED_CODES or status in REFUSED_STATUSES:
        return Verdict.REFUSED
    if code in RETRY_CODES or status in RETRY_STATUSES:
        return Verdict.RETRY
    return Verdict.FAIL


@dataclass(frozen=True)
class RetryPolicy:
    """How long one store operation may take, tries included (``davit.settings``: ``store_*``)."""

    #: Retries stop once this much time has passed since the first attempt (a request then in flight
    #: is still bounded by its timeouts): long enough to ride out a store's throttling or a restart of
    #: its front end, short enough that a dead store fails the operation within a couple of minutes.
    total_seconds: float = 90.0
    #: The first wait; each retry doubles it, up to ``max_delay_seconds``.
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 10.0
    #: Every request's connect and read (between two bytes) timeouts: a hung connection ends.
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0


def backoff(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Pure (given ``rand``): the wait before retry number ``attempt`` (0 for the first): "equal jitter",
    half of the exponential step plus a random part of the other half, so that the threads and workers
    that failed together do not come back together, while none comes back at once."""
    step: float = policy.base_delay_seconds * 2.0 ** min(attempt, 30)
    ceiling = min(policy.max_delay_seconds, step)
    return ceiling / 2 + rand() * ceiling / 2


def next_delay(
    attempt: int,
    retry_after: float | None,
    elapsed: float,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Pure (given ``rand``): how long to wait before retry ``attempt``, ``elapsed`` seconds after the
    first attempt; None when the wait would pass the policy's total time (give up now rather than wait
    for nothing). A store's ``retry_after`` is a minimum, jittered upwards by up to a tenth (at most a
    second) so that the clients it throttled together do not return together."""
    delay = backoff(attempt, policy, rand)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, retry_after + rand() * min(1.0, retry_after / 10))
    if elapsed + delay > policy.total_seconds:
        return None
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Pure: a Retry-After header (seconds, or an HTTP date) as seconds from ``now``; None if absent or
    unreadable (a store's header is untrusted: a garbled one is ignored, never an error)."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class Failure:
    """A failed request as its store named it (built by each store from its library's exception)."""

    code: str
    #: What was done, where, and what the store said; already free of credentials.
    message: str
    status: int | None = None
    retry_after: float | None = None


class Retrier:
    """Runs a store operation, trying it again by :func:`classify` and :func:`next_delay`."""

    def __init__(
        self,
        policy: RetryPolicy,
        store: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        #: The store's kind in reasons: "S3", "Azure", "GCS".
        self.store = store
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    def call(self, operation: Callable[[], T], failure_of: Callable[[Exception], Failure | None]) -> T:
        """``operation()``'s result. ``failure_of`` names what a raised exception means; None: not a
        failure of the store's (a bug, an ObjectTooLarge), raised as it is. Davit's own errors raised
        inside ``operation`` (ObjectNotFound) are never retried here."""
        policy = self.policy
        started = self._clock()
        attempt = 0
        while True:
            try:
                return operation()
            except DavitError:
                raise
            except Exception as exc:
                failure = failure_of(exc)
                if failure is None:
                    raise
                verdict = classify(failure.code, failure.status)
                if verdict is Verdict.REFUSED:
                    raise StoreRefused(failure.code, failure.message, store=self.store) from exc
                if verdict is Verdict.FAIL:
                    raise StorageError(failure.code, failure.message) from exc
                elapsed = self._clock() - started
                delay = next_delay(attempt, failure.retry_after, elapsed, policy, self._rand)
                if delay is None:
                    raise StoreUnavailable(
                        failure.code, failure.message, store=self.store, attempts=attempt + 1, seconds=elapsed
                    ) from exc
                log.info(
                    "store.retry", code=failure.code, status=failure.status, attempt=attempt + 1,
                    wait=round(delay, 2), retry_after=failure.retry_after,
                )  # fmt: skip
                self._sleep(delay)
                attempt += 1
