"""JSON logging: secrets never reach a line; every line carries the service and the bound operation."""

from __future__ import annotations

import copy
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from davit import logs

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
REDACTED = "[redacted]"


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """configure() rewires structlog and the root logger; put both back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield capsys
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    err = capsys.readouterr().err
    parsed = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def one_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    parsed = lines(capsys)
    assert len(parsed) == 1, parsed
    return parsed[0]


# --- redact -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "secretAccessKey",
        "accessKeyID",
        "storageAccountKey",
        "encryptionKey",
        "password",
        "token",
        "secret_access_key",
        "access_key_id",
        "storage-account-key",
        "PASSWORD",
        "Token",
        "secret",
        "authorization",
        "connectionString",
        "connection_string",
        "access_key",
        "secret_key",
    ],
)
def test_secret_keys_are_redacted(key: str) -> None:
    assert logs.is_secret_key(key)
    assert logs.redact({key: SECRET, "name": "kept"}) == {key: REDACTED, "name": "kept"}


@pytest.mark.parametrize(
    "key",
    [
        "name",
        "namespace",
        "region",
        "endpoint",
        "bucket",
        "path",
        "tokens_used",
        "passwordless",
        "keyID",
        "uid",
    ],
)
def test_other_keys_are_kept(key: str) -> None:
    assert not logs.is_secret_key(key)
    assert logs.redact({key: "value"}) == {key: "value"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("plain", "plain", id="scalar"),
        pytest.param(None, None, id="none"),
        pytest.param(
            {"location": {"s3Config": {"accessKeyID": SECRET, "secretAccessKey": SECRET, "region": "eu"}}},
            {
                "location": {
                    "s3Config": {"accessKeyID": REDACTED, "secretAccessKey": REDACTED, "region": "eu"}
                }
            },
            id="nested-dicts",
        ),
        pytest.param(
            {"items": [{"name": "a", "password": SECRET}, {"name": "b", "token": SECRET}]},
            {"items": [{"name": "a", "password": REDACTED}, {"name": "b", "token": REDACTED}]},
            id="dicts-in-list",
        ),
        pytest.param(
            [[{"deep": [{"encryptionKey": SECRET}]}]],
            [[{"deep": [{"encryptionKey": REDACTED}]}]],
            id="lists-of-lists",
        ),
        pytest.param(
            ({"storageAccountKey": SECRET}, "x"),
            [{"storageAccountKey": REDACTED}, "x"],
            id="tuple-becomes-list",
        ),
        pytest.param(
            {"token": {"nested": "whole subtree"}}, {"token": REDACTED}, id="secret-key-with-structured-value"
        ),
        pytest.param({"password": None}, {"password": REDACTED}, id="secret-key-with-none"),
        pytest.param({"note": SECRET}, {"note": SECRET}, id="values-are-not-inspected"),
    ],
)
def test_redact_at_any_depth(value: Any, expected: Any) -> None:
    before = copy.deepcopy(value)
    assert logs.redact(value) == expected
    assert value == before  # a copy: the caller's object is untouched


# --- configure --------------------------------------------------------------------------------------


def test_configured_line_is_json_with_service_and_no_secret(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    structlog.get_logger("t").info(
        "location.checked",
        name="primary",
        secretAccessKey=SECRET,
        config={"items": [{"password": SECRET}]},
    )

    err_line = one_line(configured)
    assert err_line["service"] == "svc"
    assert err_line["event"] == "location.checked"
    assert err_line["level"] == "info"
    assert err_line["name"] == "primary"
    assert err_line["secretAccessKey"] == REDACTED
    assert err_line["config"] == {"items": [{"password": REDACTED}]}
    assert "timestamp" in err_line
    assert err_line["timestamp"].endswith("Z")


def test_secret_value_is_nowhere_in_the_output(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    structlog.get_logger().warning("x", token=SECRET, headers={"Authorization": f"Bearer {SECRET}"})
    out = configured.readouterr()
    assert SECRET not in out.err
    assert SECRET not in out.out
    assert REDACTED in out.err


def test_bound_secret_is_redacted(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    with logs.operation_context(password=SECRET):
        structlog.get_logger().info("bound")
    line = one_line(configured)
    assert line["password"] == REDACTED


def test_event_from_another_thread_carries_service(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")

    def work() -> None:
        structlog.get_logger().info("in.thread", storageAccountKey=SECRET)

    with logs.operation_context(uid="main-thread-uid"):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    line = one_line(configured)
    assert line["event"] == "in.thread"
    assert line["service"] == "svc"
    assert line["storageAccountKey"] == REDACTED
    # Threads start with an empty context: that is why "service" is a processor, not a bound variable.
    assert "uid" not in line


def test_level_filters(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc", level="warning")
    log = structlog.get_logger()
    log.debug("debug.hidden")
    log.info("info.hidden")
    log.warning("warning.shown")
    log.error("error.shown")
    assert [line["event"] for line in lines(configured)] == ["warning.shown", "error.shown"]


def test_exception_is_rendered(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("reconcile.failed")
    line = one_line(configured)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]


def test_standard_library_logging_goes_through_the_same_renderer(
    configured: pytest.CaptureFixture[str],
) -> None:
    logs.configure("svc")
    logging.getLogger("urllib3.connectionpool").warning("retrying %s", "connection")
    logging.getLogger("urllib3.connectionpool").info("below the root level: dropped")

    line = one_line(configured)
    assert line["service"] == "svc"
    assert line["event"] == "retrying connection"
    assert line["level"] == "warning"
    assert line["logger"] == "urllib3.connectionpool"


def test_reconfigure_replaces_the_service_and_clears_context(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("first")
    structlog.contextvars.bind_contextvars(uid="stale")
    logs.configure("second")
    structlog.get_logger().info("e")
    line = one_line(configured)
    assert line["service"] == "second"
    assert "uid" not in line
    assert len(logging.getLogger().handlers) == 1


# --- operation_context ------------------------------------------------------------------------------

CONTEXT = {
    "kind": "ApplicationBackup",
    "namespace": "app",
    "name": "nightly",
    "uid": "0b7e5c1a-1111-4222-8333-444455556666",
    "stage": "Volumes",
    "task_id": "0b7e5c1a-1111-4222-8333-444455556666:Volumes:pvc/a",
}


@pytest.mark.parametrize("field", list(CONTEXT))
def test_operation_context_fields_appear(configured: pytest.CaptureFixture[str], field: str) -> None:
    logs.configure("svc")
    with logs.operation_context(**CONTEXT):
        structlog.get_logger().info("inside")
    line = one_line(configured)
    assert line[field] == CONTEXT[field]
    assert line["service"] == "svc"


def test_operation_context_is_unbound_on_exit(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    log = structlog.get_logger()
    with logs.operation_context(**CONTEXT):
        log.info("inside")
    log.info("outside")

    inside, outside = lines(configured)
    assert set(CONTEXT) <= set(inside)
    assert not set(CONTEXT) & set(outside)


def test_operation_context_is_unbound_after_an_exception(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    with pytest.raises(ValueError, match="inside"), logs.operation_context(uid="u"):
        raise ValueError("inside")
    structlog.get_logger().info("after")
    assert "uid" not in one_line(configured)


def test_operation_context_nests_and_skips_none(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("svc")
    log = structlog.get_logger()
    with logs.operation_context(kind="ApplicationRestore", stage="Initial"):
        with logs.operation_context(stage="Volumes", task_id=None, name=None):
            log.info("inner")
        log.info("outer")

    inner, outer = lines(configured)
    assert inner["kind"] == outer["kind"] == "ApplicationRestore"
    assert inner["stage"] == "Volumes"
    assert outer["stage"] == "Initial"
    assert "task_id" not in inner
    assert "name" not in inner


def test_threads_binding_a_new_context_key_at_once_all_reset_it() -> None:
    """The first tasks of a fresh worker bind the operation keys in several threads at once: each thread's
    context is restored, none fails on a ContextVar another thread made."""
    errors: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the race shows within a few rounds without the lock
    try:
        _race(errors)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def _race(errors: list[BaseException]) -> None:
    import threading

    from davit import logs

    for round_ in range(100):
        key = f"fresh_key_{round_}"
        barrier = threading.Barrier(8)

        def task(value: int, key: str = key, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with logs.operation_context(**{key: value}):
                    pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=task, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
