"""Object store faults on the real stack: the location's store (the S3 emulator, Azurite) sits behind the
fault proxy (``devstack.faults``), which fails, throttles, resets, truncates and stalls its requests
while a backup or a restore runs.

* Faults for a few seconds at a time (shorter than the services' bounded retry time): the backup and
  the restore complete after the store recovers, and the restored volume is identical, file by file.
* A store failing for longer than the bounded time: the backup fails with the store's reason (no
  traceback, no credentials) and leaves no manifest in the bucket.
* Refused credentials fail the backup at once, with the store's reason.

The services run with a short bounded time and short timeouts (``service_env``) so that the file stays
quick; the production defaults are in ``davit.settings``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.faults import Fault, FaultProxy, Mode
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, location_manifest
from tests.integration.test_backup_volumes import assert_same_tree
from tests.integration.test_restore import ADMIN, deploy_app, status_of, volume_of, wait_done, wait_ready

#: Each test starts the services, deploys an application and waits out its faults: slow on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

#: The services' bounded retry time and request timeouts. The faults a round trip rides out may all meet
#: one operation's retries (the location check, when nothing else is asking the store): about ten failed
#: attempts, whose backoff grows to some 8 s each, so one minute is not enough; a failing store outlasts
#: GIVE_UP_SECONDS.
RIDE_OUT_SECONDS = 150
GIVE_UP_SECONDS = 15
READ_TIMEOUT_SECONDS = 5


def service_env(retry_seconds: int) -> dict[str, str]:
    return {
        # A worker retrying a store shows no progress: the stall time stays above the retry time, as
        # docs/storage.md asks, so the watcher does not take it for a dead worker.
        "DAVIT_STALL_SECONDS": str(retry_seconds * 2),
        "DAVIT_STORE_RETRY_SECONDS": str(retry_seconds),
        "DAVIT_STORE_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_SECONDS),
        "DAVIT_STORE_CONNECT_TIMEOUT_SECONDS": "3",
    }


#: One fault window: several retries long, well inside RIDE_OUT_SECONDS.
WINDOW = 6.0


def azurite_parts(stack: StackEnv) -> dict[str, str]:
    return dict(p.split("=", 1) for p in stack.env["AZURE_STORAGE_CONNECTION_STRING"].strip(";").split(";"))


def upstream_of(stack: StackEnv, kind: str) -> str:
    if kind == "s3":
        return stack.env["S3_ENDPOINT"]
    endpoint = azurite_parts(stack)["BlobEndpoint"].rstrip("/")
    return endpoint.rsplit("/", 1)[0]  # Azurite's account is the endpoint's path


class FaultyLocation:
    """A BackupLocation in the admin namespace whose store is reached through a fault proxy."""

    def __init__(self, stack: StackEnv, kind: str, tmp_path: Path, **extra: Any) -> None:
        self.stack = stack
        self.kind = kind
        self.proxy = FaultProxy(upstream_of(stack, kind), "s3" if kind == "s3" else "azure").start()
        self.name = f"faulty-{kind}-{uuid.uuid4().hex[:6]}"
        manifest = location_manifest(stack, kind, ADMIN, tmp_path, **extra)
        manifest["metadata"]["name"] = self.name
        location = manifest["location"]
        if kind == "s3":
            location["s3Config"]["endpoint"] = self.proxy.url
        else:
            account = azurite_parts(stack)["AccountName"]
            location["azureConfig"]["endpoint"] = f"{self.proxy.url}/{account}"
        self.prefix: str = location["prefix"]
        self.location = location
        apply(stack, manifest)

    def wait_available(self) -> None:
        wait_for(
            f"location {self.name} to be Available",
            lambda: status_of(self.stack, "backuplocation", self.name).get("phase") == "Available",
            timeout=300,  # the services may still be starting on a busy machine
        )

    def keys(self) -> list[str]:
        """Every key under the location's prefix, listed from the store itself (not through the proxy)."""
        env = self.stack.env
        if self.kind == "s3":
            s3 = boto3.client(
                "s3", endpoint_url=env["S3_ENDPOINT"], region_name=env["S3_REGION"],
                aws_access_key_id=env["S3_ACCESS_KEY"], aws_secret_access_key=env["S3_SECRET_KEY"],
            )  # fmt: skip
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=env["S3_BUCKET"], Prefix=self.prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", ())]
        from azure.storage.blob import ContainerClient

        container = ContainerClient.from_connection_string(
            env["AZURE_STORAGE_CONNECTION_STRING"], env["AZURE_CONTAINER"]
        )
        return [blob.name for blob in container.list_blobs(name_starts_with=self.prefix)]

    def close(self) -> None:
        self.proxy.close()


@pytest.fixture
def faulty(stack: StackEnv, tmp_path: Path) -> Iterator[Callable[..., FaultyLocation]]:
    made: list[FaultyLocation] = []

    def make(kind: str, **extra: Any) -> FaultyLocation:
        location = FaultyLocation(stack, kind, tmp_path / f"loc-{len(made)}", **extra)
        made.append(location)
        return location

    yield make
    for location in made:
        for kind in ("applicationrestores", "applicationbackups"):
            items = json.loads(stack.kubectl("-n", ADMIN, "get", kind, "-o", "json").stdout)["items"]
            for item in items:
                if (item.get("spec") or {}).get("backupLocation") == location.name:
                    stack.kubectl(
                        "-n", ADMIN, "delete", kind, item["metadata"]["name"], "--wait=false", check=False
                    )
        stack.kubectl("-n", ADMIN, "delete", "backuplocation", location.name, "--wait=false", check=False)
        location.close()


def create_backup(stack: StackEnv, location: str, namespace: str, name: str) -> None:
    # Retain: deleting the backup after the test needs no store (the proxy is gone by then).
    body = {"backupLocation": location, "namespaces": [namespace], "reclaimPolicy": "Retain"}
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": name, "namespace": ADMIN}, "spec": body})  # fmt: skip


def create_restore(stack: StackEnv, location: str, name: str, backup: str, mapping: dict[str, str]) -> None:
    body = {"backupName": backup, "backupLocation": location, "namespaceMapping": mapping}
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": name, "namespace": ADMIN}, "spec": body})  # fmt: skip


def task_retries(services: Services, event: str = "task.retry") -> list[str]:
    """The services' log lines of tasks retried (``davit.operations.workers``), or of ``event``."""
    lines = []
    for path in sorted(services.log_dir.glob("*.log")):
        lines += [line for line in path.read_text(errors="replace").splitlines() if event in line]
    return lines


def seconds_given_up_after(reason: str) -> float:
    """The time a StoreUnavailable reason says the store was retried for."""
    match = re.search(r"still failing after \d+ attempts in (\d+)s", reason)
    assert match, reason
    return float(match.group(1))


def assert_clean_reason(reason: str, stack: StackEnv) -> None:
    """A status reason is a sentence from the store, never a traceback or a credential."""
    assert "Traceback" not in reason and 'File "' not in reason, reason
    for secret in (
        stack.env["S3_SECRET_KEY"],
        stack.env["S3_ACCESS_KEY"],
        azurite_parts(stack)["AccountKey"],
    ):
        assert secret not in reason, reason


def round_trip(
    stack: StackEnv,
    services: Services,
    location: FaultyLocation,
    namespace: str,
    backup_faults: list[Fault],
    restore_faults: list[Fault],
) -> None:
    """Back ``namespace`` up under ``backup_faults``, restore it into another namespace under
    ``restore_faults``, and compare the volume file by file. Every fault must have hit requests."""
    volume = deploy_app(stack, namespace)
    location.wait_available()
    name = f"faults-{uuid.uuid4().hex[:6]}"
    proxy = location.proxy

    proxy.reset_stats()
    started = time.monotonic()
    # The first window starts with the backup's first request (the services may be slow to start).
    proxy.run(*backup_faults, on_first_request=True)
    create_backup(stack, location.name, namespace, name)
    status = wait_done(stack, services, "applicationbackup", name, timeout=400)
    assert status["status"] == "Successful", status
    assert status["volumesProgress"] == "1/1", status
    faulted = proxy.stats_snapshot().faulted
    assert set(faulted) == {f.mode.value for f in backup_faults}, faulted
    assert time.monotonic() - started >= sum(f.seconds or 0 for f in backup_faults), "done during the faults"

    target = f"{namespace}-back"
    try:
        proxy.reset_stats()
        proxy.run(*restore_faults, on_first_request=True)
        create_restore(stack, location.name, f"{name}-r", name, {namespace: target})
        status = wait_done(stack, services, "applicationrestore", f"{name}-r", timeout=400)
        assert status["status"] == "Successful", (status.get("reason"), status.get("volumes"))
        faulted = proxy.stats_snapshot().faulted
        assert set(faulted) == {f.mode.value for f in restore_faults}, faulted
        wait_ready(stack, target)
        assert_same_tree(volume, volume_of(stack, target, "data-db-0"))
    finally:
        stack.kubectl("delete", "namespace", target, "--wait=false", check=False)


@pytest.mark.long  # minutes of faults: in `make chaos`, beside the store chaos cases
def test_s3_backup_and_restore_ride_out_errors_throttling_resets_stalls_and_truncation(
    stack: StackEnv,
    namespace: str,
    stack_services: Callable[..., Services],
    faulty: Callable[..., FaultyLocation],
) -> None:
    services = stack_services(**service_env(RIDE_OUT_SECONDS))
    location = faulty("s3")
    round_trip(
        stack, services, location, namespace,
        # A time window first (the operation's first request meets it), then faults that last until
        # they hit a number of requests, so that none of them can pass unnoticed between two retries.
        backup_faults=[
            Fault(Mode.ERROR, seconds=WINDOW),
            Fault(Mode.THROTTLE, requests=3, retry_after=2),
            Fault(Mode.ERROR, status=502, requests=2),
        ],
        restore_faults=[
            Fault(Mode.RESET, seconds=WINDOW),
            # Hung requests, each ended by the services' read timeout and tried again.
            Fault(Mode.STALL, requests=2),
            Fault(Mode.TRUNCATE, requests=3),
        ],
    )  # fmt: skip
    assert location.proxy.stats_snapshot().stalls_abandoned >= 1


@pytest.mark.long  # minutes of faults: in `make chaos`, beside the store chaos cases
def test_azure_backup_and_restore_ride_out_server_busy_errors_and_truncation(
    stack: StackEnv,
    namespace: str,
    stack_services: Callable[..., Services],
    faulty: Callable[..., FaultyLocation],
) -> None:
    services = stack_services(**service_env(RIDE_OUT_SECONDS))
    location = faulty("azure")
    round_trip(
        stack, services, location, namespace,
        backup_faults=[Fault(Mode.THROTTLE, seconds=WINDOW, retry_after=1), Fault(Mode.RESET, requests=3)],
        restore_faults=[Fault(Mode.ERROR, seconds=WINDOW / 2), Fault(Mode.TRUNCATE, requests=3)],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        # The whole store down from the start: the backup's location check gives up.
        (Fault(Mode.ERROR), "S3 InternalError"),
        # Only the manifest's write throttled, for good: everything else was stored, yet no manifest.
        (Fault(Mode.THROTTLE, retry_after=1, methods=("PUT",), path_contains="/manifest"), "S3 SlowDown"),
        # The manifest's write reaches the store every time, but its answer is lost: the store holds a
        # manifest the backup could never confirm, which is withdrawn as the backup fails.
        (Fault(Mode.DROP, methods=("PUT",), path_contains="/manifest"), "S3 ConnectionFailed"),
    ],
    ids=["store-down", "manifest-throttled", "manifest-answer-lost"],
)
def test_a_store_failing_past_the_bounded_time_fails_the_backup_with_its_reason_and_no_manifest(
    stack: StackEnv,
    namespace: str,
    stack_services: Callable[..., Services],
    faulty: Callable[..., FaultyLocation],
    fault: Fault,
    code: str,
) -> None:
    services = stack_services(**service_env(GIVE_UP_SECONDS))
    deploy_app(stack, namespace)
    location = faulty("s3")
    location.wait_available()
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    location.proxy.set(fault)
    create_backup(stack, location.name, namespace, name)
    status = wait_done(stack, services, "applicationbackup", name, timeout=400)
    location.proxy.clear()

    assert status["status"] == "Failed", status
    reason = status["reason"]
    assert code in reason and "still failing after" in reason, reason
    assert f"s3://{stack.env['S3_BUCKET']}/{location.prefix}" in reason, reason
    assert_clean_reason(reason, stack)
    assert "after retries" not in reason, reason
    # Retried for the bounded time (less at most one backoff step, which would have ended past it), and
    # not again by the workers on top of it.
    assert GIVE_UP_SECONDS / 2 <= seconds_given_up_after(reason) <= GIVE_UP_SECONDS, reason
    assert not task_retries(services), task_retries(services)
    keys = location.keys()
    assert not [k for k in keys if k.endswith("/manifest")], keys
    if fault.path_contains:
        # The rest of the backup was written: only the manifest is missing.
        assert any(f"/backups/{ADMIN}/{name}/" in k for k in keys), keys


def test_refused_credentials_fail_the_backup_at_once_with_the_store_reason(
    stack: StackEnv, namespace: str, stack_services: Callable[..., Services], tmp_path: Path
) -> None:
    services = stack_services(**service_env(GIVE_UP_SECONDS))
    name = f"refused-{uuid.uuid4().hex[:6]}"
    location = location_manifest(stack, "s3", ADMIN, tmp_path)
    location["metadata"]["name"] = f"wrong-key-{uuid.uuid4().hex[:6]}"
    location["location"]["s3Config"]["secretAccessKey"] = "not-the-secret-key"
    apply(stack, location)
    try:
        create_backup(stack, location["metadata"]["name"], namespace, name)
        status = wait_done(stack, services, "applicationbackup", name, timeout=300)
        assert status["status"] == "Failed", status
        reason = status["reason"]
        assert "S3 SignatureDoesNotMatch" in reason and "after retries" not in reason, status
        assert "not-the-secret-key" not in reason
        assert_clean_reason(reason, stack)
        # Failed at once: neither the store client nor the workers tried again (which took a minute).
        assert not task_retries(services), task_retries(services)
        assert not task_retries(services, "store.retry"), task_retries(services, "store.retry")
        assert "still failing after" not in reason, reason
    finally:
        stack.kubectl("-n", ADMIN, "delete", "applicationbackup", name, "--wait=false", check=False)
        stack.kubectl("-n", ADMIN, "delete", "backuplocation", location["metadata"]["name"], "--wait=false",
                      check=False)  # fmt: skip
