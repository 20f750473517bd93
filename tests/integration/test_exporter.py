"""The exporter against the real stack: status written to the API server and lists in Redis show up on
/metrics; what ended is counted once and never falls when its custom resource is deleted, and a second
exporter started later reports the same numbers."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from kubernetes import client

from davit import timeutil
from davit.constants import API_GROUP, API_VERSION, PLURALS, SCHEDULE_LABEL, Kind, Queue
from davit.kube import clients
from devstack.net import free_port
from tests.conftest import StackEnv
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

Labels = tuple[tuple[str, str], ...]
#: {sample name: {sorted label pairs: value}}
Scrape = dict[str, dict[Labels, float]]


class ExporterProcess:
    """An exporter run as its own process, as in production."""

    def __init__(self, stack: StackEnv, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.log_path = log_dir / f"exporter-{self.port}.log"
        env = {
            **os.environ,
            "DAVIT_KUBECONFIG": stack.kubeconfig,
            "DAVIT_REDIS_URL": stack.redis_url,
            "DAVIT_METRICS_ADDRESS": f"127.0.0.1:{self.port}",
            "DAVIT_RESYNC_SECONDS": "2",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "davit_services.exporter"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Ready once the CR-derived families appear: every kind has been listed.
        wait_for(f"the exporter on {self.url}", lambda: "davit_operations_in_flight" in self.scrape())

    def text(self) -> str:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"exporter exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
            )
        with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310 - our own http URL
            text: str = response.read().decode()
            return text

    def scrape(self) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        found: Scrape = {}
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


def value(scrape: Scrape, metric: str, /, **pairs: str) -> float | None:
    return scrape.get(metric, {}).get(labels(**pairs))


def scrape_until(exporter: ExporterProcess, what: str, check: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until ``check`` holds for what /metrics says; return that scrape."""

    def attempt() -> Scrape | None:
        scrape = exporter.scrape()
        return scrape if check(scrape) else None

    return wait_for(what, attempt)


@pytest.fixture(scope="module")
def start_exporter(
    stack: StackEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], ExporterProcess]]:
    log_dir = tmp_path_factory.mktemp("exporter")
    started: list[ExporterProcess] = []

    def start() -> ExporterProcess:
        exporter = ExporterProcess(stack, log_dir)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture(scope="module")
def exporter(start_exporter: Callable[[], ExporterProcess]) -> ExporterProcess:
    return start_exporter()


@pytest.fixture(scope="module")
def custom(stack: StackEnv) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(clients.api_client(stack.kubeconfig))


@pytest.fixture
def redis(stack: StackEnv) -> Iterator[redis_lib.Redis[bytes]]:
    redis_client = redis_lib.Redis.from_url(stack.redis_url)
    yield redis_client
    redis_client.close()


def apply(stack: StackEnv, manifest: dict[str, Any]) -> None:
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def write_status(
    custom: client.CustomObjectsApi, kind: Kind, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """What a worker does (kubectl 1.20 cannot patch the status subresource)."""
    custom.patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURALS[kind], name, {"status": status}
    )


def backup(namespace: str, name: str, schedule: str) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackup",
        "metadata": {"name": name, "namespace": namespace, "labels": {SCHEDULE_LABEL: schedule}},
        "spec": {"backupLocation": "loc", "namespaces": [namespace]},
    }


def location(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "BackupLocation",
        "metadata": {"name": name, "namespace": namespace},
        "location": {"type": "local", "path": "/var/lib/davit/backups"},
    }


def test_a_backup_in_flight_then_completed(
    stack: StackEnv,
    namespace: str,
    exporter: ExporterProcess,
    start_exporter: Callable[[], ExporterProcess],
    custom: client.CustomObjectsApi,
) -> None:
    apply(stack, backup(namespace, "b1", schedule="hourly"))
    now = timeutil.utcnow()
    trigger = timeutil.format_time(now - datetime.timedelta(seconds=5))
    write_status(
        custom, Kind.APPLICATION_BACKUP, namespace, "b1",
        {
            "stage": "Applications", "status": "InProgress", "triggerTimestamp": trigger,
            "volumes": [
                {"persistentVolumeClaim": "data-0", "status": "Successful"},
                {"persistentVolumeClaim": "data-1", "status": "InProgress"},
            ],
        },
    )  # fmt: skip
    ours = {"kind": "ApplicationBackup", "namespace": namespace, "name": "b1"}
    in_flight = {"kind": "ApplicationBackup", "stage": "Applications", "status": "InProgress"}

    def elapsed(scrape: Scrape) -> float | None:
        return value(scrape, "davit_operation_elapsed_seconds", **ours, stage="Applications")

    scrape = scrape_until(
        exporter,
        "the running backup on /metrics",
        lambda s: (value(s, "davit_operations_in_flight", **in_flight) or 0) >= 1 and (elapsed(s) or 0) > 0,
    )
    assert (elapsed(scrape) or 0) >= 5
    assert value(scrape, "davit_operation_volumes_done", **ours) == 1
    assert value(scrape, "davit_operation_volumes_in_scope", **ours) == 2

    finish = timeutil.format_time(now)
    write_status(
        custom, Kind.APPLICATION_BACKUP, namespace, "b1",
        {"stage": "Final", "status": "Successful", "finishTimestamp": finish, "totalSize": 1000,
         "storedSize": 250},
    )  # fmt: skip
    completed = {
        "kind": "ApplicationBackup",
        "namespace": namespace,
        "schedule": "hourly",
        "result": "Successful",
    }

    scrape = scrape_until(
        exporter,
        "the completed backup on /metrics",
        lambda s: elapsed(s) is None and value(s, "davit_operations_completed_total", **completed) == 1,
    )
    assert not [
        k for k in scrape.get("davit_operation_volumes_in_scope", {}) if ("namespace", namespace) in k
    ]
    duration = labels(kind="ApplicationBackup", result="Successful")
    assert scrape["davit_operation_duration_seconds_count"][duration] >= 1
    five_seconds = labels(kind="ApplicationBackup", le="5", result="Successful")
    assert scrape["davit_operation_duration_seconds_bucket"][five_seconds] >= 1  # it took 5 s
    finish_seconds = timeutil.parse_time(finish).timestamp()  # type: ignore[union-attr]
    last = value(
        scrape, "davit_last_successful_backup_timestamp_seconds", namespace=namespace, schedule="hourly"
    )
    assert last == finish_seconds
    assert value(scrape, "davit_backup_bytes_read_total", namespace=namespace) == 1000
    assert value(scrape, "davit_backup_bytes_stored_total", namespace=namespace) == 250
    assert value(scrape, "davit_backup_dedup_ratio", namespace=namespace) == 4.0

    present = dict(completed)
    assert value(scrape, "davit_operations_present", **present) == 1

    # Deleting the backup lowers the gauge of what exists, and no counter: a scrape, a deletion, a scrape.
    custom.delete_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, PLURALS[Kind.APPLICATION_BACKUP], "b1"
    )
    after = scrape_until(
        exporter,
        "the deletion on /metrics",
        lambda s: value(s, "davit_operations_present", **present) is None,
    )
    fell = [
        (name, pairs) for name, series in scrape.items() for pairs, before in series.items()
        if name.endswith(("_total", "_count", "_sum", "_bucket"))
        and (after.get(name, {}).get(pairs) or 0) < before
    ]  # fmt: skip
    assert fell == []
    assert value(after, "davit_operations_completed_total", **completed) == 1

    # Recorded in Redis, not seen in events: a fresh exporter says the same.
    second = start_exporter().scrape()
    for name, pairs in (
        ("davit_operations_completed_total", completed),
        ("davit_last_successful_backup_timestamp_seconds", {"namespace": namespace, "schedule": "hourly"}),
        ("davit_backup_bytes_read_total", {"namespace": namespace}),
    ):
        assert value(second, name, **pairs) == value(scrape, name, **pairs), name


def test_queue_lengths_are_read_at_scrape_time(
    exporter: ExporterProcess, redis: redis_lib.Redis[bytes]
) -> None:
    node_queue = f"davit.node.test-{uuid.uuid4().hex[:8]}"
    try:
        redis.rpush(Queue.EXPORT.value, b"dummy-1", b"dummy-2", b"dummy-3")
        redis.rpush(node_queue, b"dummy")
        scrape = scrape_until(
            exporter,
            "davit.export at 3 and the node queue at 1",
            lambda s: (
                value(s, "davit_queue_length", queue="davit.export") == 3
                and value(s, "davit_queue_length", queue=node_queue) == 1
            ),
        )
        for queue in Queue:  # the fixed queues are always reported
            assert value(scrape, "davit_queue_length", queue=queue.value) is not None, queue
    finally:
        redis.delete(Queue.EXPORT.value, node_queue)
    scrape_until(
        exporter,
        "davit.export back at 0 and the node queue gone",
        lambda s: (
            value(s, "davit_queue_length", queue="davit.export") == 0
            and value(s, "davit_queue_length", queue=node_queue) is None
        ),
    )


def test_location_availability(
    stack: StackEnv, namespace: str, exporter: ExporterProcess, custom: client.CustomObjectsApi
) -> None:
    apply(stack, location(namespace, "down"))
    apply(stack, location(namespace, "unchecked"))
    write_status(
        custom, Kind.BACKUP_LOCATION, namespace, "down", {"phase": "Unavailable", "message": "refused"}
    )
    down = {"namespace": namespace, "name": "down", "type": "local"}
    scrape = scrape_until(
        exporter,
        "the unavailable location on /metrics",
        lambda s: value(s, "davit_location_available", **down) == 0,
    )
    assert (
        value(scrape, "davit_location_available", namespace=namespace, name="unchecked", type="local") is None
    )

    write_status(custom, Kind.BACKUP_LOCATION, namespace, "down", {"phase": "Available", "message": "ok"})
    scrape_until(
        exporter,
        "the location available again",
        lambda s: value(s, "davit_location_available", **down) == 1,
    )
