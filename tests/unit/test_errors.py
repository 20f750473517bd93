"""One error tree: which failures the workers retry, which fail the operation at once, and with what."""

from __future__ import annotations

import json
import socket

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from redis import exceptions as redis_errors

from davit import errors
from davit.backup.exec_rules import ExecError, RuleError
from davit.backup.schedules import ScheduleError
from davit.format.repository import FormatError
from davit.format.sealing import CorruptObject, NotEncrypted
from davit.kube.operations import SpecChanged
from davit.kube.watching import Gone
from davit.operations.messages import MessageDecodeError
from davit.operations.runtime import LocationUnavailable, LocationUnusable
from davit.operations.workers import MAX_RETRIES, Fail, Retry, decide, describe, is_retryable
from davit.repo.errors import MissingChunk, RepoError
from davit.restore.init_container import UsageError, WaitTimedOut
from davit.storage.base import ObjectNotFound, StorageError, StoreRefused, StoreUnavailable
from davit.tenancy import SPEC_CHANGED, UnsafeName
from davit.volumes.node_dirs import RefusedDirectory


def api_error(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason={403: "Forbidden", 404: "Not Found"}.get(status, "Whatever"))
    exc.body = json.dumps({"message": message}) if message else None
    return exc


# --- the tree ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (StorageError("SlowDown", "try later"), True),
        (ObjectNotFound("backups/x"), True),
        (LocationUnavailable("location loc is not Available"), True),
        (Gone("too old"), True),
        (WaitTimedOut("markers missing"), True),
        (ExecError("pod a/b: connection reset"), True),
        (StoreRefused("InvalidAccessKeyId", "cannot list s3://b", store="S3"), False),
        (StoreUnavailable("SlowDown", "cannot write 'k' to s3://b", store="S3", attempts=9), False),
        (LocationUnusable("BackupLocation a/loc is unavailable: S3 AccessDenied: no"), False),
        (CorruptObject("bad tag"), False),
        (NotEncrypted("plain"), False),
        (FormatError("formatVersion 9"), False),
        (MissingChunk("abc"), False),
        (RefusedDirectory("no such claim"), False),
        (UnsafeName("name '..'"), False),
        (MessageDecodeError("no kind", b""), False),
        (ScheduleError("bad cron"), False),
        (UsageError("no uid"), False),
        (RuleError("no such pod"), False),
        (SpecChanged("SpecChanged: generation 2", {"metadata": {}}), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_davit_errors_say_whether_they_are_retryable(exc: errors.DavitError, retryable: bool) -> None:
    assert isinstance(exc, errors.DavitError)
    assert exc.retryable is retryable
    assert isinstance(exc, errors.Transient if retryable else errors.Permanent)
    assert is_retryable(exc) is retryable


def test_errors_caught_as_builtins_still_are() -> None:
    # Callers catch these as ValueError (schedules, names, messages): they stay ValueErrors.
    for exc in (UnsafeName("x"), ScheduleError("x"), MessageDecodeError("x", b"")):
        assert isinstance(exc, ValueError) and isinstance(exc, errors.DavitError)
    assert issubclass(NotEncrypted, CorruptObject) and issubclass(MissingChunk, RepoError)


def test_the_reason_is_the_message_unless_the_error_names_one() -> None:
    assert CorruptObject("object x: bad tag").reason == "object x: bad tag"
    assert MessageDecodeError("no kind", b"").reason == "no kind"
    assert str(MessageDecodeError("no kind", b"")) == "cannot decode message: no kind"
    assert RefusedDirectory("mismatch", what="data").reason == "mismatch"
    assert SpecChanged("it changed", {}).event_reason == SPEC_CHANGED
    assert CorruptObject("x").event_reason is None


# --- errors from outside Davit -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (api_error(500), True),
        (api_error(503), True),
        (api_error(429), True),
        (api_error(409), True),
        (api_error(408), True),
        (ApiException(status=0, reason="client"), True),
        (api_error(400), False),
        (api_error(403), False),
        (api_error(404), False),
        (api_error(422), False),
        (ConnectionRefusedError("refused"), True),
        (TimeoutError("timed out"), True),
        (socket.gaierror("no such host"), True),
        (urllib3.exceptions.ProtocolError("connection aborted"), True),
        (urllib3.exceptions.MaxRetryError(None, "/", "too many"), True),  # type: ignore[arg-type]
        (redis_errors.ConnectionError("reset"), True),
        (redis_errors.TimeoutError("slow"), True),
        (redis_errors.WatchError("changed"), True),
        (KeyError("status"), False),
        (IndexError("list index out of range"), False),
        (TypeError("unsupported operand"), False),
        (AttributeError("'NoneType' object has no attribute 'get'"), False),
        (AssertionError(), False),
        (ZeroDivisionError(), False),
        # Nobody classified these yet: tried again, as every failure was before.
        (ValueError("odd"), True),
        (RuntimeError("odd"), True),
        (OSError(5, "Input/output error"), True),
    ],
    ids=lambda v: (
        f"{type(v).__name__}-{getattr(v, 'status', '')}" if isinstance(v, BaseException) else str(v)
    ),
)
def test_outside_errors_are_classified(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_api_refusals_are_described_without_headers() -> None:
    exc = api_error(403, 'pods "db-0" is forbidden')
    assert describe(exc) == 'the API server answered 403 Forbidden: pods "db-0" is forbidden'
    assert describe(api_error(404)) == "the API server answered 404 Not Found"
    assert describe(KeyError("status")) == "KeyError: 'status'"


# --- the decision ------------------------------------------------------------------------------


def test_retryable_errors_back_off_then_fail_after_retries() -> None:
    exc = StorageError("SlowDown", "try later")
    assert [decide(exc, n) for n in range(MAX_RETRIES)] == [
        Retry(2),
        Retry(4),
        Retry(8),
        Retry(16),
        Retry(32),
    ]
    failed = decide(exc, MAX_RETRIES)
    assert failed == Fail("SlowDown: try later", after_retries=True)
    assert failed.status_reason("Volumes") == "Volumes failed after retries: SlowDown: try later"


def test_a_store_that_refused_or_gave_up_fails_at_once_with_its_reason() -> None:
    refused = decide(
        StoreRefused("SignatureDoesNotMatch", "cannot list s3://b/p: bad signature", store="S3"), 0
    )
    assert refused == Fail("S3 SignatureDoesNotMatch: cannot list s3://b/p: bad signature")
    gave_up = StoreUnavailable(
        "ServerBusy", "cannot read 'k' from azure://a/c", store="Azure", attempts=7, seconds=89.6
    )
    failed = decide(gave_up, 0)
    assert isinstance(failed, Fail) and not failed.after_retries
    assert failed.status_reason("Volumes") == (
        "Volumes failed: Azure ServerBusy: cannot read 'k' from azure://a/c "
        "(still failing after 7 attempts in 90s)"
    )
    # Still StorageErrors, for the callers that catch those.
    assert isinstance(refused, Fail) and isinstance(gave_up, StorageError)


def test_non_retryable_errors_fail_at_once() -> None:
    failed = decide(CorruptObject("pack p1: bad tag"), 0)
    assert failed == Fail("pack p1: bad tag")
    assert failed.status_reason("Applications") == "Applications failed: pack p1: bad tag"


def test_spec_changed_fails_at_once_with_its_own_event_reason() -> None:
    failed = decide(SpecChanged("SpecChanged: the spec changed", {}), 0)
    assert isinstance(failed, Fail) and failed.event_reason == SPEC_CHANGED
    assert failed.status_reason("Volumes") == "SpecChanged: the spec changed"


def test_bugs_fail_at_once_naming_the_error() -> None:
    failed = decide(KeyError("volumes"), 0)
    assert isinstance(failed, Fail) and failed.unexpected and not failed.after_retries
    assert failed.status_reason("Volumes") == "Volumes failed: KeyError: 'volumes'"
    assert decide(api_error(422, "spec.x: Invalid value"), 2) == Fail(
        "the API server answered 422 Whatever: spec.x: Invalid value", unexpected=True
    )


def test_a_new_davit_error_needs_no_change_to_the_workers() -> None:
    class Throttled(errors.Transient):
        pass

    class Disallowed(errors.Refused):
        event_reason = "Disallowed"

    assert decide(Throttled("later"), 0) == Retry(2)
    failed = decide(Disallowed("not here"), 0)
    assert isinstance(failed, Fail) and failed.event_reason == "Disallowed"
