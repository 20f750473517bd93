"""The watcher against the real stack: CRs in, exactly one message per stage out, leader election,
recovery of lost messages, validation failures reported where users look."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from davit.api.types import Stage, Status
from davit.constants import Kind, Queue
from davit.kube import clients
from davit.kube.watching import Gone, ListWatch
from tests.conftest import StackEnv
from tests.helpers import queued_messages, wait_for

pytestmark = pytest.mark.integration

ADMIN_NAMESPACE = "kube-system"


class WatcherProcess:
    """A watcher run as its own process, as in production, so it can be killed for real."""

    def __init__(self, stack: StackEnv, identity: str, lease: str, log_dir: Path) -> None:
        self.identity = identity
        self.log_path = log_dir / f"{identity}.log"
        env = {
            **os.environ,
            "DAVIT_KUBECONFIG": stack.kubeconfig,
            "DAVIT_REDIS_URL": stack.redis_url,
            "DAVIT_IDENTITY": identity,
            "DAVIT_LEASE_NAME": lease,
            # Short timings keep the tests quick; the production defaults are in davit.settings.
            "DAVIT_RESYNC_SECONDS": "2",
            "DAVIT_REQUEUE_GRACE_SECONDS": "1",
            "DAVIT_LEASE_DURATION_SECONDS": "4",
            "DAVIT_LEASE_RENEW_DEADLINE_SECONDS": "3",
            "DAVIT_LEASE_RETRY_SECONDS": "0.5",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "davit_services.watcher"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def acted_on(self, name: str) -> bool:
        return any(
            e.get("name") == name and e["event"] in ("message.sent", "status.written")
            for e in self.log_events()
        )

    def kill(self) -> None:
        """SIGKILL: no chance to release the Lease or finish anything, like a node dying."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis(stack: StackEnv) -> Iterator[redis_lib.Redis[bytes]]:
    client = redis_lib.Redis.from_url(stack.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def start_watcher(stack: StackEnv, tmp_path: Path) -> Iterator[Callable[[str], WatcherProcess]]:
    lease = f"davit-watcher-{uuid.uuid4().hex[:8]}"
    started: list[WatcherProcess] = []

    def start(identity: str) -> WatcherProcess:
        watcher = WatcherProcess(stack, identity, lease, tmp_path)
        started.append(watcher)
        return watcher

    start.lease = lease  # type: ignore[attr-defined]
    yield start
    for watcher in started:
        watcher.stop()
    stack.kubectl("-n", ADMIN_NAMESPACE, "delete", "lease", lease, "--ignore-not-found")


def apply(stack: StackEnv, manifest: dict[str, Any]) -> None:
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def get(stack: StackEnv, kind: str, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
    )
    return result


def location(namespace: str, name: str = "loc") -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "BackupLocation",
        "metadata": {"name": name, "namespace": namespace},
        "location": {"type": "local", "path": "/var/lib/davit/backups"},
    }


def backup(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backupLocation": "loc", "namespaces": [namespace], **spec},
    }


def status_of(stack: StackEnv, kind: str, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get(stack, kind, namespace, name).get("status") or {}
    return status


def wait_stage(stack: StackEnv, kind: str, namespace: str, name: str, stage: Stage) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = status_of(stack, kind, namespace, name)
        return status if status.get("stage") == stage else None

    return wait_for(f"{kind} {namespace}/{name} to reach stage {stage}", reached)


def events_for(stack: StackEnv, namespace: str, name: str) -> list[dict[str, Any]]:
    out = stack.kubectl(
        "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def wait_event(stack: StackEnv, namespace: str, name: str, reason: str) -> dict[str, Any]:
    return wait_for(
        f"a {reason} Event on {namespace}/{name}",
        lambda: next((e for e in events_for(stack, namespace, name) if e["reason"] == reason), None),
    )


def test_new_backup_becomes_exactly_one_message(
    stack: StackEnv, namespace: str, redis, start_watcher
) -> None:
    start_watcher("w1")
    apply(stack, location(namespace))
    apply(stack, backup(namespace, "nightly"))

    status = wait_stage(stack, "applicationbackup", namespace, "nightly", Stage.INITIAL)
    assert status["status"] == Status.PENDING
    assert status["triggerTimestamp"]
    event = wait_event(stack, namespace, "nightly", "Accepted")
    assert event["type"] == "Normal" and "davit.snapshot" in event["message"]

    uid = get(stack, "applicationbackup", namespace, "nightly")["metadata"]["uid"]
    messages = wait_for(
        "the message on davit.snapshot", lambda: queued_messages(redis, Queue.SNAPSHOT, namespace)
    )
    assert len(messages) == 1
    task_id, message = messages[0]
    assert task_id == f"{uid}:Initial:" == message.key
    assert (message.kind, message.namespace, message.name, message.uid, message.stage) == (
        Kind.APPLICATION_BACKUP,
        namespace,
        "nightly",
        uid,
        "Initial",
    )
    for other in (Queue.EXPORT, Queue.RESTORE, Queue.RETENTION):
        assert queued_messages(redis, other, namespace) == [], f"unexpected message on {other}"


def test_replayed_and_duplicate_events_send_no_second_message(
    stack: StackEnv, namespace: str, redis, start_watcher
) -> None:
    watcher = start_watcher("w1")
    apply(stack, location(namespace))
    apply(stack, backup(namespace, "first"))
    wait_stage(stack, "applicationbackup", namespace, "first", Stage.INITIAL)

    # MODIFIED events for an accepted backup: each one is a replay of "this backup exists".
    for i in range(3):
        stack.kubectl("-n", namespace, "annotate", "applicationbackup", "first", f"test/touch-{i}=x")
    # Events of one watch arrive in order: once a later backup is accepted, the touches were handled.
    apply(stack, backup(namespace, "sentinel-1"))
    wait_stage(stack, "applicationbackup", namespace, "sentinel-1", Stage.INITIAL)

    # A restarted watcher lists everything again: ADDED events for objects it has already handled.
    watcher.stop()
    start_watcher("w2")
    apply(stack, backup(namespace, "sentinel-2"))
    wait_stage(stack, "applicationbackup", namespace, "sentinel-2", Stage.INITIAL)
    wait_for("three messages", lambda: len(queued_messages(redis, Queue.SNAPSHOT, namespace)) >= 3)

    names = sorted(m.name for _, m in queued_messages(redis, Queue.SNAPSHOT, namespace))
    assert names == ["first", "sentinel-1", "sentinel-2"]
    accepted = [e for e in events_for(stack, namespace, "first") if e["reason"] == "Accepted"]
    assert len(accepted) == 1


def test_restarted_watcher_requeues_a_lost_message(
    stack: StackEnv, namespace: str, redis, start_watcher
) -> None:
    watcher = start_watcher("w1")
    apply(stack, location(namespace))
    apply(stack, backup(namespace, "lost"))
    wait_for("the first message", lambda: len(queued_messages(redis, Queue.SNAPSHOT, namespace)) == 1)
    watcher.kill()

    redis.delete(Queue.SNAPSHOT.value)  # the message is lost with the queue
    assert redis.llen(Queue.SNAPSHOT.value) == 0

    start_watcher("w2")
    messages = wait_for(
        "the message to be queued again", lambda: queued_messages(redis, Queue.SNAPSHOT, namespace)
    )
    uid = get(stack, "applicationbackup", namespace, "lost")["metadata"]["uid"]
    assert [task_id for task_id, _ in messages] == [f"{uid}:Initial:"]
    event = wait_event(stack, namespace, "lost", "Requeued")
    assert "lost" in event["message"]


def test_only_the_leader_acts_and_a_standby_takes_over(
    stack: StackEnv, namespace: str, redis, start_watcher
) -> None:
    lease = start_watcher.lease

    def holder() -> str:
        result = stack.kubectl("-n", ADMIN_NAMESPACE, "get", "lease", lease, "-o", "json", check=False)
        if result.returncode != 0:
            return ""
        return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "")

    leader = start_watcher("leader")
    wait_for("the first watcher to lead", lambda: holder() == "leader")
    standby = start_watcher("standby")
    wait_for(
        "the standby to start", lambda: any(e["event"] == "watcher.started" for e in standby.log_events())
    )

    apply(stack, location(namespace))
    apply(stack, backup(namespace, "one"))
    wait_stage(stack, "applicationbackup", namespace, "one", Stage.INITIAL)
    assert leader.acted_on("one")
    assert not standby.acted_on("one")
    assert holder() == "leader"

    leader.kill()
    wait_for("the standby to take the lease", lambda: holder() == "standby", timeout=30)
    apply(stack, backup(namespace, "two"))
    wait_stage(stack, "applicationbackup", namespace, "two", Stage.INITIAL)
    assert standby.acted_on("two")
    names = sorted(m.name for _, m in queued_messages(redis, Queue.SNAPSHOT, namespace))
    assert names == ["one", "two"]


INVALID_CASES = [
    pytest.param("backup", {"backupLocation": "missing"}, "spec.backupLocation", id="missing-location"),
    pytest.param("backup", {"preExecRule": "no-such-rule"}, "spec.preExecRule", id="missing-pre-rule"),
    pytest.param("backup", {"postExecRule": "no-such-rule"}, "spec.postExecRule", id="missing-post-rule"),
    pytest.param("backup", {"namespaces": ["kube-public"]}, "spec.namespaces", id="tenant-other-namespace"),
    pytest.param(
        "backup", {"namespaceSelector": "env=prod"}, "spec.namespaceSelector", id="tenant-ns-selector"
    ),
    pytest.param("restore", {"backupName": "never-made"}, "spec.backupName", id="restore-missing-backup"),
    pytest.param(
        "restore-mapped",
        {"namespaceMapping": {"SRC": "kube-public"}},
        "spec.namespaceMapping",
        id="tenant-restore",
    ),
    pytest.param("clone", {}, "metadata.namespace", id="clone-outside-admin"),
]


@pytest.mark.parametrize(("what", "spec", "field"), INVALID_CASES)
def test_invalid_operations_fail_with_reason_and_event(
    stack: StackEnv, namespace: str, redis, start_watcher, what: str, spec: dict[str, Any], field: str
) -> None:
    start_watcher("w1")
    apply(stack, location(namespace))
    if what == "backup":
        kind, manifest = "applicationbackup", backup(namespace, "bad", **spec)
    elif what.startswith("restore"):
        if what == "restore-mapped":
            apply(stack, backup(namespace, "good"))
            wait_stage(stack, "applicationbackup", namespace, "good", Stage.INITIAL)
            spec = {"backupName": "good", "namespaceMapping": {namespace: spec["namespaceMapping"]["SRC"]}}
        kind = "applicationrestore"
        manifest = {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "ApplicationRestore",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"backupLocation": "loc", **spec},
        }
    else:
        kind = "applicationclone"
        manifest = {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "ApplicationClone",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"sourceNamespace": namespace, "destinationNamespace": f"{namespace}-copy"},
        }
    apply(stack, manifest)

    status = wait_stage(stack, kind, namespace, "bad", Stage.FINAL)
    assert status["status"] == Status.FAILED
    assert field in status["reason"]
    event = wait_event(stack, namespace, "bad", "ValidationFailed")
    assert event["type"] == "Warning" and field in event["message"]
    queued = [
        m.name
        for _, m in queued_messages(redis, Queue.SNAPSHOT, namespace)
        + queued_messages(redis, Queue.RESTORE, namespace)
    ]
    assert "bad" not in queued


def test_clone_in_admin_namespace_goes_to_restore_queue(stack: StackEnv, redis, start_watcher) -> None:
    start_watcher("w1")
    name = f"clone-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationClone",
        "metadata": {"name": name, "namespace": ADMIN_NAMESPACE},
        "spec": {"sourceNamespace": "default", "destinationNamespace": "default-copy"},
    }
    apply(stack, manifest)
    try:
        wait_stage(stack, "applicationclone", ADMIN_NAMESPACE, name, Stage.INITIAL)
        messages = wait_for(
            "the clone's message", lambda: queued_messages(redis, Queue.RESTORE, ADMIN_NAMESPACE)
        )
        assert [(m.kind, m.name) for _, m in messages] == [(Kind.APPLICATION_CLONE, name)]
    finally:
        stack.kubectl("-n", ADMIN_NAMESPACE, "delete", "applicationclone", name, "--ignore-not-found")


def test_restore_waits_for_its_backup_then_is_queued(
    stack: StackEnv, namespace: str, redis, start_watcher
) -> None:
    start_watcher("w1")
    apply(stack, location(namespace))
    apply(stack, backup(namespace, "src"))
    wait_stage(stack, "applicationbackup", namespace, "src", Stage.INITIAL)
    apply(
        stack,
        {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "ApplicationRestore",
            "metadata": {"name": "back", "namespace": namespace},
            "spec": {"backupName": "src", "backupLocation": "loc"},
        },
    )

    def waiting() -> dict[str, Any] | None:
        status = status_of(stack, "applicationrestore", namespace, "back")
        return status if "waiting" in (status.get("reason") or "") else None

    status = wait_for("the restore to wait for its backup", waiting)
    assert status["status"] == Status.PENDING
    assert queued_messages(redis, Queue.RESTORE, namespace) == []

    # Play the part of the backup pipeline finishing: the next resync queues the restore.
    stack.kubectl(
        "-n", namespace, "patch", "applicationbackup", "src", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"stage": "Final", "status": "Successful"}}),
        check=False,
    )  # fmt: skip
    if status_of(stack, "applicationbackup", namespace, "src").get("stage") != "Final":
        # kubectl 1.20 has no --subresource: write the status through the API instead.
        from kubernetes import client

        api = clients.api_client(stack.kubeconfig)
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "davit.dev", "v1alpha1", namespace, "applicationbackups", "src",
            {"status": {"stage": "Final", "status": "Successful"}},
        )  # fmt: skip
    messages = wait_for("the restore's message", lambda: queued_messages(redis, Queue.RESTORE, namespace))
    assert [(m.kind, m.name) for _, m in messages] == [(Kind.APPLICATION_RESTORE, "back")]


def test_list_watch_relists_when_the_resource_version_is_gone(stack: StackEnv, namespace: str) -> None:
    """A watch from a version the API server no longer has (410 Gone) must lead to a fresh list."""
    import time

    from kubernetes import client

    custom = client.CustomObjectsApi(clients.api_client(stack.kubeconfig))
    for i in range(3):
        action = {"type": "command", "value": "true"}
        rule = {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "Rule",
            "metadata": {"name": f"r{i}"},
            "rules": [{"podSelector": {"app": "x"}, "actions": [action]}],
        }
        custom.create_namespaced_custom_object("davit.dev", "v1alpha1", namespace, "rules", rule)
    # The API server's cache for a custom resource starts when its CRD is established, long after
    # version 1, so a watch from version 1 is always answered with 410 Gone.
    stale_version = "1"
    lists: list[int] = []
    stop = threading.Event()

    watch = ListWatch(
        "rules",
        lambda **kw: custom.list_namespaced_custom_object("davit.dev", "v1alpha1", namespace, "rules", **kw),
        lambda items: lists.append(len(items)),
        lambda kind, obj: None,
    )
    with pytest.raises(Gone):
        watch.watch_from(stale_version, until=time.monotonic() + 20, stop=stop)

    # run() whose first list hands out the stale version: the watch fails with Gone and it lists again.
    real_list = watch.list_once
    handed_out_stale = threading.Event()

    def stale_then_real() -> str:
        if not handed_out_stale.is_set():
            handed_out_stale.set()
            return stale_version
        version = real_list()
        stop.set()
        return version

    watch.list_once = stale_then_real  # type: ignore[method-assign]
    runner = threading.Thread(target=watch.run, args=(stop,), daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert lists == [3], lists
