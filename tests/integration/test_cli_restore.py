"""``davit restore`` and ``davit clone`` against the real API server, without the restore service: the
specs the flags make, usage errors that create nothing, tables and describe from a status written the
way the workers write it, ``--wait`` ending with the operation's result, and logs from Redis, the
location and Events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from davit.constants import API_GROUP, API_VERSION, DEFAULT_ADMIN_NAMESPACE, PLURALS, Kind
from davit.format.layout import restore_log
from davit.kube import clients
from davit.operations.scratch import OperationState
from davit_cli.context import CliContext
from davit_cli.output import KIND_COUNT_COLUMNS, OPERATION_COLUMNS
from davit_cli.runtime import open_repository
from tests.conftest import StackEnv
from tests.integration.test_cli import CREATED, davit, ok, one_line, table

pytestmark = pytest.mark.integration

ENCRYPTION_KEY = "correct-horse-battery-staple-RESTORE"
COUNTS = {
    "ConfigMap": {"restored": 3, "retained": 1, "replaced": 0, "failed": 1},
    "Deployment": {"restored": 0, "retained": 0, "replaced": 2, "failed": 0},
}
#: What the restore service writes when it finishes with some resources refused.
PARTIAL = {
    "stage": "Final",
    "status": "PartialSuccess",
    "reason": "ConfigMap shop/cm-2: admission webhook denied it",
    "resourceCount": 7,
    "volumesProgress": "0/0",
    "triggerTimestamp": "2024-03-01T10:00:00Z",
    "finishTimestamp": "2024-03-01T10:00:42Z",
    "resourcesByKind": COUNTS,
}


def write_status(stack: StackEnv, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> None:
    """What a worker does (kubectl 1.20 cannot patch the status subresource)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(clients.api_client(stack.kubeconfig))
    custom.patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURALS[kind], name, {"status": status}
    )


def stored(stack: StackEnv, resource: str, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        stack.kubectl("-n", namespace, "get", resource, name, "-o", "json").stdout
    )
    return obj


def names(stack: StackEnv, resource: str, namespace: str) -> str:
    return stack.kubectl("-n", namespace, "get", resource, "-o", "name").stdout.strip()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --- restore create ------------------------------------------------------------------------------


def test_restore_create_puts_each_flag_in_the_spec(stack: StackEnv, namespace: str) -> None:
    printed = ok(stack, "-n", namespace, "restore", "create", "plain", "--from-backup", "nightly",
                 "--location", "loc")  # fmt: skip
    assert printed.strip() == f"applicationrestore {namespace}/plain created"
    assert stored(stack, "applicationrestore", namespace, "plain")["spec"] == {
        "backupName": "nightly",
        "backupLocation": "loc",
    }

    as_json = ok(stack, "-n", namespace, "restore", "create", "every", "--from-backup", "nightly",
                 "--location", "loc", "--namespace-mapping", "shop:shop2, web:web2",
                 "--replace-policy", "Delete", "--resource-types", "ConfigMap,Deployment",
                 "--storage-class-mapping", "fast:slow.io",
                 "--node-mapping", "node-1:node-2", "--dry-run", "-o", "json")  # fmt: skip
    expected = {
        "backupName": "nightly",
        "backupLocation": "loc",
        "namespaceMapping": {"shop": "shop2", "web": "web2"},
        "replacePolicy": "Delete",
        "resourceTypes": ["ConfigMap", "Deployment"],
        "storageClassMapping": {"fast": "slow.io"},
        "nodeMapping": {"node-1": "node-2"},
        "dryRun": True,
    }
    assert json.loads(as_json)["spec"] == expected, "-o json prints the object as created"
    assert stored(stack, "applicationrestore", namespace, "every")["spec"] == expected

    ok(stack, "-n", namespace, "restore", "create", "keep", "--from-backup", "nightly", "--location", "loc",
       "--replace-policy", "Retain")  # fmt: skip
    assert stored(stack, "applicationrestore", namespace, "keep")["spec"]["replacePolicy"] == "Retain"

    ok(stack, "-n", namespace, "restore", "create", "options", "--from-backup", "nightly",
       "--location", "loc", "--replace-policy", "Update", "--backup-namespace", "shop",
       "--resource-modifier-configmap", "mods", "--preserve-node-ports")  # fmt: skip
    assert stored(stack, "applicationrestore", namespace, "options")["spec"] == {
        "backupName": "nightly",
        "backupLocation": "loc",
        "replacePolicy": "Update",
        "backupNamespace": "shop",
        "resourceModifier": {"kind": "ConfigMap", "name": "mods"},
        "preserveNodePorts": True,
    }


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--namespace-mapping", "shop", "'shop' is not old:new"),
        ("--namespace-mapping", "shop:Web", "'Web' is not a valid name"),
        ("--storage-class-mapping", "fast:", "'' is not a valid name"),
        ("--node-mapping", "n1:n2,n1:n3", "'n1' is mapped twice"),
    ],
)
def test_a_bad_mapping_exits_2_and_creates_nothing(
    stack: StackEnv, namespace: str, flag: str, value: str, says: str
) -> None:
    result = davit(stack, "-n", namespace, "restore", "create", "r", "--from-backup", "nightly",
                   "--location", "loc", flag, value, "--wait")  # fmt: skip
    assert result.exit_code == 2, result.output
    line = one_line(result)
    assert flag in line and says in line, line
    assert result.stdout == ""
    assert names(stack, "applicationrestore", namespace) == ""


# --- get, describe -------------------------------------------------------------------------------


def test_get_and_describe_show_the_status_and_the_counts_per_kind(stack: StackEnv, namespace: str) -> None:
    ok(stack, "-n", namespace, "restore", "create", "back", "--from-backup", "nightly", "--location", "loc",
       "--namespace-mapping", "shop:shop2")  # fmt: skip
    ok(stack, "-n", namespace, "restore", "create", "queued", "--from-backup", "nightly", "--location", "loc")
    write_status(stack, Kind.APPLICATION_RESTORE, namespace, "back", PARTIAL)

    header, rows = table(ok(stack, "-n", namespace, "restore", "get"))
    assert header == list(OPERATION_COLUMNS)
    back, queued = rows
    assert back[:5] == ["back", "Final", "PartialSuccess", "0/0", "7"]
    assert CREATED.match(back[5]) and back[6] == "42s", back
    assert queued[0] == "queued" and CREATED.match(queued[1]), "no status yet: empty cells"

    header, rows = table(ok(stack, "restore", "get", "-A"))
    assert header == ["NAMESPACE", *OPERATION_COLUMNS]
    assert [namespace, "back", "Final", "PartialSuccess"] in [r[:4] for r in rows]

    as_json = json.loads(ok(stack, "-n", namespace, "restore", "get", "back", "-o", "json"))
    assert as_json["status"]["resourcesByKind"] == COUNTS, "the CRD keeps every count"

    described = ok(stack, "-n", namespace, "restore", "describe", "back")
    lines = described.splitlines()
    for label, value in (("Stage:", "Final"), ("Status:", "PartialSuccess"), ("Resource Count:", "7"),
                         ("Volumes:", "0/0"), ("Elapsed:", "42s")):  # fmt: skip
        assert any(line.split() == [*label.split(), value] for line in lines), (
            f"{label} {value}:\n{described}"
        )
    assert "Reason:            ConfigMap shop/cm-2: admission webhook denied it" in described
    assert any(line.split() == ["Namespace", "Mapping:", "shop:shop2"] for line in lines), described
    counts = lines[lines.index("Resources By Kind:") + 1 :][:4]
    assert [line.split() for line in counts] == [
        list(KIND_COUNT_COLUMNS),
        ["ConfigMap", "3", "1", "0", "0", "1"],
        ["Deployment", "0", "0", "2", "0", "0"],
        ["TOTAL", "3", "1", "2", "0", "1"],
    ]
    assert "Events:" in described

    missing = davit(stack, "-n", namespace, "restore", "describe", "nope")
    assert missing.exit_code == 1
    assert f"applicationrestore {namespace}/nope not found" in one_line(missing)

    assert ok(stack, "-n", namespace, "restore", "delete", "queued", "--wait").strip() == (
        f"applicationrestore {namespace}/queued deleted"
    )
    assert names(stack, "applicationrestore", namespace) == "applicationrestore.davit.dev/back"


# --- --wait --------------------------------------------------------------------------------------


def start_waiting(stack: StackEnv, namespace: str, name: str) -> subprocess.Popen[str]:
    """``davit restore create NAME --wait`` as a user runs it, in the background."""
    script = Path(sys.executable).parent / "davit"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DAVIT_REDIS_URL")}
    return subprocess.Popen(
        [str(script), "--kubeconfig", stack.kubeconfig, "-n", namespace, "restore", "create", name,
         "--from-backup", "nightly", "--location", "loc", "--wait", "--timeout", "2m"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.fixture
def waiting(stack: StackEnv, namespace: str) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(name: str) -> subprocess.Popen[str]:
        process = start_waiting(stack, namespace, name)
        started.append(process)

        def created() -> bool:
            found = stack.kubectl("-n", namespace, "get", "applicationrestore", name, check=False)
            return found.returncode == 0

        wait_for(f"restore {name} to be created", lambda: process.poll() is not None or created())
        assert process.poll() is None, process.communicate()
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_wait_ends_with_the_restores_result(
    stack: StackEnv, namespace: str, waiting: Callable[[str], subprocess.Popen[str]]
) -> None:
    failing, partial = waiting("failing"), waiting("partial")
    write_status(stack, Kind.APPLICATION_RESTORE, namespace, "failing",
                 {"stage": "Applications", "status": "InProgress", "resourceCount": 4})  # fmt: skip
    write_status(stack, Kind.APPLICATION_RESTORE, namespace, "failing",
                 {"stage": "Final", "status": "Failed",
                  "reason": "backup nightly not found in location loc"})  # fmt: skip
    write_status(stack, Kind.APPLICATION_RESTORE, namespace, "partial", PARTIAL)

    out, err = failing.communicate(timeout=60)
    assert failing.returncode == 1, (out, err)
    assert err.strip().splitlines()[-1] == (
        f"Error: applicationrestore {namespace}/failing failed: backup nightly not found in location loc"
    )
    assert "stage Final  status Failed" in err, "the progress goes to stderr"
    header, rows = table(out)
    assert header == list(OPERATION_COLUMNS) and rows[0][:3] == ["failing", "Final", "Failed"]

    # As for backups: a partial success exits 0, with its reason as a warning.
    out, err = partial.communicate(timeout=60)
    assert partial.returncode == 0, (out, err)
    assert f"Warning: applicationrestore {namespace}/partial partially succeeded: {PARTIAL['reason']}" in err
    assert table(out)[1][0][:3] == ["partial", "Final", "PartialSuccess"]


def test_wait_gives_up_after_the_timeout(stack: StackEnv, namespace: str) -> None:
    result = davit(stack, "-n", namespace, "restore", "create", "stuck", "--from-backup", "nightly",
                   "--location", "loc", "--wait", "--timeout", "2s")  # fmt: skip
    assert result.exit_code == 1
    assert f"timed out after 2s waiting for applicationrestore {namespace}/stuck to finish" in result.stderr
    assert names(stack, "applicationrestore", namespace) == "applicationrestore.davit.dev/stuck"


# --- logs ----------------------------------------------------------------------------------------


def test_restore_logs_from_redis_while_running_then_from_the_location(
    stack: StackEnv, namespace: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    ok(stack, "-n", namespace, "location", "create", "loc", "--type", "local", "--path", str(store),
       "--encryption-key", ENCRYPTION_KEY)  # fmt: skip
    ok(stack, "-n", namespace, "restore", "create", "back", "--from-backup", "nightly", "--location", "loc")
    uid = stored(stack, "applicationrestore", namespace, "back")["metadata"]["uid"]

    without = davit(stack, "-n", namespace, "restore", "logs", "back")
    assert without.exit_code == 1
    assert "still running" in one_line(without) and "--redis-url" in without.stderr

    state = OperationState(redis.Redis.from_url(stack.redis_url), uid)
    try:
        state.log("restore.started", backupName="nightly")
        state.log("restore.progress", resources=3, secretAccessKey="leaked-if-printed")
        running = ok(stack, "-n", namespace, "restore", "logs", "back", "--redis-url", stack.redis_url)
    finally:
        state.clear()
    lines = [json.loads(line) for line in running.splitlines()]
    assert [line["event"] for line in lines] == ["restore.started", "restore.progress"]
    assert lines[1]["secretAccessKey"] == "[redacted]" and "leaked-if-printed" not in running

    # Finished: the service has sealed its log into the backup's location (encrypted here) and cleared Redis.
    failed = {"stage": "Final", "status": "Failed", "reason": "no such backup"}
    write_status(stack, Kind.APPLICATION_RESTORE, namespace, "back", failed)
    repository = open_repository(CliContext(kubeconfig=stack.kubeconfig), namespace, "loc")
    log = [json.dumps({"event": "restore.started"}), json.dumps({"event": "restore.failed", "reason": "x"})]
    repository.put(restore_log(namespace, "back", uid), ("\n".join(log) + "\n").encode())
    sealed = [f.read_bytes() for f in store.rglob("log.jsonl.bin")]
    assert len(sealed) == 1 and b"restore.failed" not in sealed[0], "kept encrypted in the location"
    finished = ok(stack, "-n", namespace, "restore", "logs", "back")
    assert [json.loads(line)["event"] for line in finished.splitlines()] == [
        "restore.started",
        "restore.failed",
    ]

    # A restore whose log never reached the location says so.
    ok(stack, "-n", namespace, "restore", "create", "quiet", "--from-backup", "nightly", "--location", "loc")
    write_status(stack, Kind.APPLICATION_RESTORE, namespace, "quiet", {"stage": "Final", "status": "Failed"})
    silent = davit(stack, "-n", namespace, "restore", "logs", "quiet")
    assert silent.exit_code == 1
    assert "ended Failed without a log in its location loc" in one_line(silent)


# --- clones --------------------------------------------------------------------------------------


@pytest.fixture
def clone_name(stack: StackEnv, namespace: str) -> Iterator[str]:
    """A clone name unique to the test; clones live in the shared admin namespace, so remove it after."""
    name = f"clone-{namespace}"
    yield name
    stack.kubectl("-n", DEFAULT_ADMIN_NAMESPACE, "delete", "applicationclone", name, "--ignore-not-found",
                  "--wait=false", check=False)  # fmt: skip


def test_clones_live_in_the_admin_namespace(stack: StackEnv, namespace: str, clone_name: str) -> None:
    admin = DEFAULT_ADMIN_NAMESPACE
    printed = ok(stack, "clone", "create", clone_name, "--from", namespace, "--to", f"{namespace}-copy",
                 "--replace-policy", "Fail", "--selector", "app=web,tier=db", "--pre-exec-rule", "freeze",
                 "--post-exec-rule", "thaw", DAVIT_ADMIN_NAMESPACE=None)  # fmt: skip
    assert printed.strip() == f"applicationclone {admin}/{clone_name} created"
    assert stored(stack, "applicationclone", admin, clone_name)["spec"] == {
        "sourceNamespace": namespace,
        "destinationNamespace": f"{namespace}-copy",
        "replacePolicy": "Fail",
        "selectors": {"app": "web", "tier": "db"},
        "preExecRule": "freeze",
        "postExecRule": "thaw",
    }
    # -n still wins (the watcher, not the CLI, refuses clones outside the admin namespace).
    ok(stack, "-n", namespace, "clone", "create", "elsewhere", "--from", namespace, "--to", "x")
    assert names(stack, "applicationclone", namespace) == "applicationclone.davit.dev/elsewhere"

    write_status(
        stack, Kind.APPLICATION_CLONE, admin, clone_name, {**PARTIAL, "reason": "1 ConfigMap failed"}
    )
    header, rows = table(ok(stack, "clone", "get", clone_name))
    assert header == list(OPERATION_COLUMNS)
    assert rows[0][:5] == [clone_name, "Final", "PartialSuccess", "0/0", "7"]
    assert clone_name in [r[0] for r in table(ok(stack, "clone", "get"))[1]]
    described = ok(stack, "clone", "describe", clone_name)
    assert f"Namespace:    {admin}" in described
    assert any(line.split() == ["Selectors:", "app=web,", "tier=db"] for line in described.splitlines())
    total = ["TOTAL", "3", "1", "2", "0", "1"]  # restored, retained, replaced, updated, failed
    assert any(line.split() == total for line in described.splitlines()), described

    # Logs: from Redis while the services have them, else the clone's Events.
    obj = stored(stack, "applicationclone", admin, clone_name)
    no_log = davit(stack, "clone", "logs", clone_name)
    assert no_log.exit_code == 1
    assert "--redis-url" in one_line(no_log)
    state = OperationState(redis.Redis.from_url(stack.redis_url), obj["metadata"]["uid"])
    try:
        state.log("clone.started", sourceNamespace=namespace)
        from_redis = ok(stack, "clone", "logs", clone_name, REDIS_URL=stack.redis_url)
    finally:
        state.clear()
    assert [json.loads(line)["event"] for line in from_redis.splitlines()] == ["clone.started"]
    from kubernetes import client

    client.CoreV1Api(clients.api_client(stack.kubeconfig)).create_namespaced_event(admin, {
        "metadata": {"generateName": f"{clone_name}."},
        "involvedObject": {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationClone", "name": clone_name,
                           "namespace": admin, "uid": obj["metadata"]["uid"]},
        "type": "Warning", "reason": "PartialSuccess", "message": "1 ConfigMap failed",
        "lastTimestamp": "2024-03-01T10:00:42Z", "source": {"component": "davit-worker"},
    })  # fmt: skip
    from_events = ok(stack, "clone", "logs", clone_name, REDIS_URL=stack.redis_url)
    (event,) = [json.loads(line) for line in from_events.splitlines()]
    assert event == {"time": "2024-03-01T10:00:42Z", "type": "Warning", "event": "PartialSuccess",
                     "source": "davit-worker", "message": "1 ConfigMap failed"}  # fmt: skip

    assert ok(stack, "clone", "delete", clone_name, "--wait").strip() == (
        f"applicationclone {admin}/{clone_name} deleted"
    )
    assert clone_name not in names(stack, "applicationclone", admin)
