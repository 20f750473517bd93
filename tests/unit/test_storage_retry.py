"""Store retries (davit.storage.retry): the backoff, Retry-After, the total bound, which failures are
retried, refused or passed on; the S3 store's reading of botocore's errors; and the S3 store through the
fault proxy in front of an in-process S3 emulator, in every fault mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from davit import errors
from davit.operations.workers import Fail, decide
from davit.storage.base import ObjectNotFound, StorageError, StoreRefused, StoreUnavailable
from davit.storage.retry import (
    Failure,
    Retrier,
    RetryPolicy,
    Verdict,
    backoff,
    classify,
    next_delay,
    parse_retry_after,
)
from davit.storage.s3 import S3Store
from devstack.faults import Fault, FaultProxy, Mode

POLICY = RetryPolicy(total_seconds=60, base_delay_seconds=0.5, max_delay_seconds=8)


# --- the pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_backoff_doubles_with_jitter_and_is_capped(rand: float) -> None:
    delays = [backoff(attempt, POLICY, lambda: rand) for attempt in range(8)]
    ceilings = [min(8.0, 0.5 * 2**a) for a in range(8)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        # Equal jitter: never less than half the step, never more than the step.
        assert ceiling / 2 <= delay <= ceiling
        assert delay == pytest.approx(ceiling / 2 + rand * ceiling / 2)
    assert max(delays) <= POLICY.max_delay_seconds
    assert backoff(10_000, POLICY, lambda: 1.0) == POLICY.max_delay_seconds  # no overflow


def test_jitter_spreads_clients_that_failed_together() -> None:
    import random

    rng = random.Random(3)  # noqa: S311 - test data
    delays = {round(backoff(4, POLICY, rng.random), 3) for _ in range(50)}
    assert len(delays) > 40


def test_retry_after_is_a_minimum_jittered_upwards() -> None:
    assert next_delay(0, 5.0, 0, POLICY, lambda: 0.0) == 5.0
    assert next_delay(0, 5.0, 0, POLICY, lambda: 1.0) == pytest.approx(5.5)  # at most a tenth more
    assert next_delay(0, 30.0, 0, POLICY, lambda: 1.0) == pytest.approx(31.0)  # at most a second more
    # A short Retry-After never makes the wait shorter than the backoff's.
    assert next_delay(5, 0.1, 0, POLICY, lambda: 0.0) == pytest.approx(4.0)


def test_no_wait_past_the_total_time() -> None:
    assert next_delay(0, None, 59.0, POLICY, lambda: 0.0) == pytest.approx(0.25)
    assert next_delay(0, None, 59.9, POLICY, lambda: 0.0) is None
    # A Retry-After beyond the end is not waited for: give up now.
    assert next_delay(0, 30.0, 40.0, POLICY, lambda: 0.0) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), (" 1.5 ", 1.5), ("0", 0.0), ("-4", 0.0), ("soon", None), ("", None), (None, None),
     ("inf", None), ("nan", None)],
)  # fmt: skip
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0


@pytest.mark.parametrize(
    ("code", "status", "verdict"),
    [
        ("SlowDown", 503, Verdict.RETRY),
        ("ServerBusy", 503, Verdict.RETRY),
        ("InternalError", 500, Verdict.RETRY),
        ("502", 502, Verdict.RETRY),
        ("ServiceUnavailable", None, Verdict.RETRY),
        ("RequestTimeout", 400, Verdict.RETRY),
        ("TooManyRequests", 429, Verdict.RETRY),
        ("EndpointUnreachable", None, Verdict.RETRY),
        ("ReadTimeout", None, Verdict.RETRY),
        ("ConnectionFailed", None, Verdict.RETRY),
        ("IncompleteRead", None, Verdict.RETRY),
        ("InvalidAccessKeyId", 403, Verdict.REFUSED),
        ("SignatureDoesNotMatch", 403, Verdict.REFUSED),
        ("AccessDenied", 403, Verdict.REFUSED),
        ("AuthenticationFailed", 403, Verdict.REFUSED),
        ("AuthorizationPermissionMismatch", 403, Verdict.REFUSED),
        ("NoCredentials", None, Verdict.REFUSED),
        ("401", 401, Verdict.REFUSED),
        ("NoSuchBucket", 404, Verdict.FAIL),
        ("ContainerNotFound", 404, Verdict.FAIL),
        ("InvalidArgument", 400, Verdict.FAIL),
    ],
)
def test_classification(code: str, status: int | None, verdict: Verdict) -> None:
    assert classify(code, status) is verdict


# --- the loop --------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Fails with ``failures`` in turn, then returns "done"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


class StoreSaid(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def said(code: str, status: int | None = None, retry_after: float | None = None) -> StoreSaid:
    return StoreSaid(Failure(code, f"cannot write 'k' to s3://b: {code}", status, retry_after))


def failure_of(exc: Exception) -> Failure | None:
    return exc.failure if isinstance(exc, StoreSaid) else None


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def retrier(fake_time: FakeTime, total: float = 60.0) -> Retrier:
    policy = RetryPolicy(total_seconds=total, base_delay_seconds=0.5, max_delay_seconds=8)
    return Retrier(policy, "S3", clock=fake_time.clock, sleep=fake_time.sleep, rand=lambda: 0.0)


def test_transient_failures_are_retried_until_the_store_answers(fake_time: FakeTime) -> None:
    op = Flaky(said("InternalError", 500), said("SlowDown", 503), said("ReadTimeout"))
    assert retrier(fake_time).call(op, failure_of) == "done"
    assert op.calls == 4
    assert fake_time.sleeps == [0.25, 0.5, 1.0]


def test_retry_after_is_honoured(fake_time: FakeTime) -> None:
    op = Flaky(said("SlowDown", 503, retry_after=7))
    assert retrier(fake_time).call(op, failure_of) == "done"
    assert fake_time.sleeps == [7.0]


def test_refused_credentials_fail_at_once_and_for_good(fake_time: FakeTime) -> None:
    op = Flaky(said("InvalidAccessKeyId", 403), said("InvalidAccessKeyId", 403))
    with pytest.raises(StoreRefused) as refused:
        retrier(fake_time).call(op, failure_of)
    assert op.calls == 1 and fake_time.sleeps == []
    exc = refused.value
    assert isinstance(exc, StorageError) and isinstance(exc, errors.Permanent) and not exc.retryable
    assert exc.reason == "S3 InvalidAccessKeyId: cannot write 'k' to s3://b: InvalidAccessKeyId"
    # The workers fail the operation at once, with the store's reason.
    decision = decide(exc, retries=0)
    assert isinstance(decision, Fail) and not decision.after_retries
    assert decision.reason == exc.reason


def test_a_store_failing_past_the_total_time_fails_with_its_reason(fake_time: FakeTime) -> None:
    op = Flaky(*[said("SlowDown", 503, retry_after=2) for _ in range(1000)])
    with pytest.raises(StoreUnavailable) as gave_up:
        retrier(fake_time, total=20).call(op, failure_of)
    assert fake_time.now <= 20
    assert sum(fake_time.sleeps) == fake_time.now
    exc = gave_up.value
    assert exc.code == "SlowDown" and exc.attempts == op.calls
    assert exc.reason.startswith("S3 SlowDown: cannot write 'k' to s3://b: SlowDown (still failing after")
    assert "Traceback" not in exc.reason
    # Not retried again by the workers: the time was spent here.
    assert not exc.retryable
    assert isinstance(decide(exc, retries=0), Fail)


def test_other_store_failures_are_passed_on_as_before(fake_time: FakeTime) -> None:
    with pytest.raises(StorageError) as failed:
        retrier(fake_time).call(Flaky(said("NoSuchBucket", 404)), failure_of)
    assert type(failed.value) is StorageError and failed.value.retryable
    assert fake_time.sleeps == []


def test_davit_errors_and_bugs_are_not_retried(fake_time: FakeTime) -> None:
    with pytest.raises(ObjectNotFound):
        retrier(fake_time).call(Flaky(ObjectNotFound("k")), failure_of)
    with pytest.raises(KeyError):
        retrier(fake_time).call(Flaky(KeyError("bug")), failure_of)
    assert fake_time.sleeps == []


# --- the S3 store reads botocore's errors ------------------------------------------------------------


def s3_store(endpoint: str = "http://127.0.0.1:9", **policy: float) -> S3Store:
    return S3Store(
        "bucket", "pre", endpoint=endpoint, access_key_id="AKIDEXAMPLE", secret_access_key="s3cr3t-k3y",
        retry=RetryPolicy(**policy),
    )  # fmt: skip


def client_error(
    code: str, status: int, headers: dict[str, str] | None = None, message: str = ""
) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message or f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "PutObject")


def test_s3_failures_name_code_status_and_retry_after() -> None:
    store = s3_store()
    failure = store._failure(client_error("SlowDown", 503, {"retry-after": "2"}), "cannot write 'k' to")
    assert failure == Failure("SlowDown", "cannot write 'k' to s3://bucket/pre: SlowDown happened", 503, 2.0)
    head = store._failure(client_error("403", 403), "cannot look up 'k' in")
    assert head is not None and head.code == "AccessDenied"
    timeout = store._failure(ReadTimeoutError(endpoint_url="http://x"), "cannot read 'k' from")
    assert timeout is not None and timeout.code == "ReadTimeout"
    unreachable = store._failure(EndpointConnectionError(endpoint_url="http://x"), "cannot list")
    assert unreachable is not None and unreachable.code == "EndpointUnreachable"
    assert store._failure(KeyError("bug"), "cannot list") is None


def test_s3_failure_messages_never_carry_credentials() -> None:
    store = s3_store()
    failure = store._failure(
        client_error("SignatureDoesNotMatch", 403, message="expected s3cr3t-k3y for AKIDEXAMPLE"),
        "cannot list",
    )
    assert failure is not None
    assert "s3cr3t-k3y" not in failure.message and "AKIDEXAMPLE" not in failure.message


def test_s3_clients_have_timeouts_and_make_one_attempt_per_call() -> None:
    store = s3_store(connect_timeout_seconds=3, read_timeout_seconds=7)
    config = store._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 7)
    assert config.retries["total_max_attempts"] == 1


# --- the S3 store through the fault proxy ------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from devstack.net import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ).create_bucket(Bucket="bucket")
    yield endpoint
    server.stop()


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, "s3") as running:
        yield running


def fast_store(proxy: FaultProxy, total: float = 20.0, read_timeout: float = 5.0) -> S3Store:
    return s3_store(
        proxy.url, total_seconds=total, base_delay_seconds=0.05, max_delay_seconds=0.2,
        connect_timeout_seconds=2, read_timeout_seconds=read_timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    "fault",
    [
        Fault(Mode.ERROR, requests=3),
        Fault(Mode.ERROR, status=502, requests=3),
        Fault(Mode.THROTTLE, requests=2, retry_after=0.3),
        Fault(Mode.RESET, requests=3),
        Fault(Mode.TRUNCATE, requests=3),
    ],
    ids=lambda f: f"{f.mode.value}-{f.status or ''}",
)
def test_s3_store_rides_out_faults(proxy: FaultProxy, fault: Fault) -> None:
    store = fast_store(proxy)
    data = bytes(range(256)) * 400
    store.put("obj", data)
    proxy.set(fault)
    started = time.monotonic()
    assert store.get("obj") == data  # every fault mode hits a read
    store.put("obj2", data[:1000])
    assert store.get("obj2") == data[:1000]
    assert [info.key for info in store.list()] == ["obj", "obj2"]
    assert proxy.stats_snapshot().faulted == {fault.mode.value: fault.requests}
    if fault.mode is Mode.THROTTLE:
        assert time.monotonic() - started >= 0.6  # two Retry-After waits of 0.3 s


def test_s3_store_ends_a_stalled_request_by_its_read_timeout(proxy: FaultProxy) -> None:
    store = fast_store(proxy, read_timeout=0.5)
    store.put("obj", b"data")
    proxy.set(Fault(Mode.STALL, requests=1))
    started = time.monotonic()
    assert store.get("obj") == b"data"
    assert 0.5 <= time.monotonic() - started < 5
    from tests.helpers import wait_for

    wait_for("the stalled connection to be given up", lambda: proxy.stats_snapshot().stalls_abandoned == 1, 5)


def test_s3_store_gives_up_after_its_total_time_with_the_store_reason(proxy: FaultProxy) -> None:
    store = fast_store(proxy, total=1.5)
    proxy.set(Fault(Mode.THROTTLE, retry_after=0.2))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as gave_up:
        store.put("never", b"x")
    assert time.monotonic() - started < 3
    assert gave_up.value.reason.startswith("S3 SlowDown: cannot write 'never' to s3://bucket/pre: ")
    assert "s3cr3t-k3y" not in gave_up.value.reason
    proxy.clear()
    assert not store.exists("never")


def test_s3_store_reads_a_bounded_object_again_when_its_body_is_cut(proxy: FaultProxy) -> None:
    store = fast_store(proxy)
    data = bytes(range(256)) * 64
    store.put("bounded", data)
    proxy.set(Fault(Mode.TRUNCATE, requests=2))
    assert store.get("bounded", max_size=len(data)) == data
    assert proxy.stats_snapshot().faulted == {"truncate": 2}


def test_s3_store_retries_a_write_whose_answer_was_lost_and_gives_up_with_the_reason(
    proxy: FaultProxy,
) -> None:
    store = fast_store(proxy, total=1.0)
    proxy.set(Fault(Mode.DROP, methods=("PUT",), requests=2))
    store.put("lost", b"stored")
    assert store.get("lost") == b"stored"
    proxy.set(Fault(Mode.DROP, methods=("PUT",)))
    with pytest.raises(StoreUnavailable) as gave_up:
        store.put("lost-for-good", b"stored anyway")
    assert gave_up.value.code == "ConnectionFailed", gave_up.value.reason
    proxy.clear()
    assert store.get("lost-for-good") == b"stored anyway"  # the store took it: only its answer was lost
