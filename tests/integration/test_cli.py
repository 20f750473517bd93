"""The ``davit`` CLI against the real stack: locations, a backup from ``create --wait`` to ``delete``,
reading a location, logs, and errors that end in one line and the right exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from davit_cli.main import cli
from davit_cli.output import BACKUP_COLUMNS, LOCATION_COLUMNS
from tests.conftest import StackEnv
from tests.integration.conftest import Services

pytestmark = pytest.mark.integration

ENCRYPTION_KEY = "correct-horse-battery-staple-CLI"
CREATED = re.compile(r"^\d{2} [A-Z][a-z]{2} \d{2} \d{2}:\d{2} UTC$")


def davit(stack: StackEnv, *args: str, **env: str | None) -> Result:
    """Run the CLI in-process; an exception escaping it (a traceback for the user) fails the test."""
    result = CliRunner().invoke(
        cli,
        ["--kubeconfig", stack.kubeconfig, *args],
        env={"REDIS_URL": None, "DAVIT_REDIS_URL": None, "KUBECONFIG": None, **env},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"davit {' '.join(args)} raised {result.exception!r}: {result.output}"
    )
    return result


def ok(stack: StackEnv, *args: str, **env: str | None) -> str:
    result = davit(stack, *args, **env)
    assert result.exit_code == 0, f"davit {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.stdout


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table as the CLI prints it (columns at least three spaces apart)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split()
    rows = [re.split(r" {3,}", line.strip()) for line in lines[1:]]
    return header, rows


def create_configmaps(stack: StackEnv, namespace: str, count: int = 3) -> None:
    items = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": namespace},
         "data": {"i": str(i)}}
        for i in range(count)
    ]  # fmt: skip
    stack.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def create_local_location(stack: StackEnv, namespace: str, tmp_path: Path, name: str = "loc") -> Path:
    store = tmp_path / f"store-{name}"
    store.mkdir()
    ok(stack, "-n", namespace, "location", "create", name, "--type", "local", "--path", str(store))
    return store


def s3_flags(stack: StackEnv, namespace: str, secret_key: str | None = None) -> list[str]:
    env = stack.env
    return [
        "--type", "s3", "--path", env["S3_BUCKET"], "--prefix", f"cli-{namespace}",
        "--endpoint", env["S3_ENDPOINT"], "--disable-ssl", "--region", env["S3_REGION"],
        "--access-key-id", env["S3_ACCESS_KEY"], "--secret-access-key", secret_key or env["S3_SECRET_KEY"],
    ]  # fmt: skip


# --- locations -----------------------------------------------------------------------------------


def test_locations_are_created_listed_and_described_without_their_credentials(
    stack: StackEnv, namespace: str, tmp_path: Path
) -> None:
    secret_key = stack.env["S3_SECRET_KEY"]
    store = tmp_path / "store"
    store.mkdir()
    printed = [
        ok(stack, "-n", namespace, "location", "create", "local", "--type", "local", "--path", str(store),
           "--encryption-key", ENCRYPTION_KEY),
        ok(stack, "-n", namespace, "location", "create", "s3", *s3_flags(stack, namespace)),
    ]  # fmt: skip
    assert printed[1].strip() == f"backuplocation {namespace}/s3 created"

    # What the cluster holds is what the flags said (credentials included: they are the location's).
    stored = json.loads(stack.kubectl("-n", namespace, "get", "backuplocation", "s3", "-o", "json").stdout)
    assert stored["location"]["s3Config"] == {
        "region": stack.env["S3_REGION"],
        "endpoint": stack.env["S3_ENDPOINT"],
        "disableSSL": True,
        "accessKeyID": stack.env["S3_ACCESS_KEY"],
        "secretAccessKey": secret_key,
    }
    assert stored["location"]["prefix"] == f"cli-{namespace}"

    listing = ok(stack, "-n", namespace, "location", "get")
    header, rows = table(listing)
    assert header == list(LOCATION_COLUMNS)
    assert [r[:3] for r in rows] == [["local", "local", str(store)], ["s3", "s3", stack.env["S3_BUCKET"]]]
    printed.append(listing)

    everywhere = ok(stack, "location", "get", "-A")
    header, rows = table(everywhere)
    assert header == ["NAMESPACE", *LOCATION_COLUMNS]
    assert [namespace, "s3", "s3", stack.env["S3_BUCKET"]] in [r[:4] for r in rows]
    printed.append(everywhere)

    described = ok(stack, "-n", namespace, "location", "describe", "s3")
    assert re.search(r"Secret Access Key:\s+\(set\)", described), described
    assert re.search(r"Access Key ID:\s+\(set\)", described), described
    assert stack.env["S3_ENDPOINT"] in described
    assert "Events:" in described
    printed.append(described)
    described_local = ok(stack, "-n", namespace, "location", "describe", "local")
    assert re.search(r"Encryption Key:\s+\(set\)", described_local), described_local
    printed.append(described_local)

    as_json = ok(stack, "-n", namespace, "location", "get", "s3", "-o", "json")
    assert json.loads(as_json)["location"]["s3Config"]["secretAccessKey"] == "[redacted]"
    as_yaml = ok(stack, "-n", namespace, "location", "get", "-o", "yaml")
    items = yaml.safe_load(as_yaml)["items"]
    assert {i["metadata"]["name"] for i in items} == {"local", "s3"}
    assert next(i for i in items if i["metadata"]["name"] == "local")["location"]["encryptionKey"] == (
        "[redacted]"
    )
    printed += [as_json, as_yaml]

    # Applied with kubectl, the whole object (credentials too) sits in an annotation: hidden there too.
    manifest = {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "BackupLocation",
        "metadata": {"name": "applied", "namespace": namespace},
        "location": {"type": "s3", "path": "b", "s3Config": {"secretAccessKey": secret_key}},
    }
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    printed += [
        ok(stack, "-n", namespace, "location", "get", "applied", "-o", "json"),
        ok(stack, "-n", namespace, "location", "get", "applied", "-o", "yaml"),
        ok(stack, "-n", namespace, "location", "describe", "applied"),
    ]
    # Credentials in a Secret: a missing one is a warning (it may come later), not an error.
    from_secret = davit(stack, "-n", namespace, "location", "create", "vault", "--type", "azure",
                        "--path", "c", "--secret-config", "azure-creds")  # fmt: skip
    assert from_secret.exit_code == 0, from_secret.output
    assert f"Secret {namespace}/azure-creds does not exist" in from_secret.stderr
    assert re.search(
        r"Secret Config:\s+azure-creds", ok(stack, "-n", namespace, "location", "describe", "vault")
    )

    for text in printed:
        assert secret_key not in text
        assert ENCRYPTION_KEY not in text
        assert stack.env["S3_ACCESS_KEY"] not in text


def test_location_flags_for_another_type_are_usage_errors(stack: StackEnv, namespace: str) -> None:
    result = davit(stack, "-n", namespace, "location", "create", "x", "--type", "s3", "--path", "b",
                   "--storage-account-name", "acct")  # fmt: skip
    assert result.exit_code == 2
    assert "--storage-account-name applies to --type azure" in result.stderr
    result = davit(stack, "-n", namespace, "location", "create", "x", "--type", "local", "--path", "rel")
    assert result.exit_code == 2
    assert "absolute" in result.stderr
    result = davit(stack, "-n", namespace, "location", "create", "x", "--type", "azure", "--path", "c")
    assert result.exit_code == 2
    assert "storageAccountName" in result.stderr
    assert stack.kubectl("-n", namespace, "get", "backuplocation", "-o", "name").stdout.strip() == ""


# --- a backup, start to end ----------------------------------------------------------------------


def test_backup_create_wait_get_logs_list_remote_describe_delete(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    create_configmaps(stack, namespace)
    create_local_location(stack, namespace, tmp_path)

    result = davit(stack, "-n", namespace, "backup", "create", "nightly", "--location", "loc",
                   "--exclude-namespaces", "other-*",
                   "--reclaim-policy", "Retain", "--wait", "--timeout", "2m")  # fmt: skip
    if result.exit_code != 0:
        print(services.logs())
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    assert header == list(BACKUP_COLUMNS)
    assert rows[0][:3] == ["nightly", "Final", "Successful"]
    assert "stage Final" in result.stderr, "the progress goes to stderr"

    obj = json.loads(ok(stack, "-n", namespace, "backup", "get", "nightly", "-o", "json"))
    assert obj["kind"] == "ApplicationBackup"
    assert obj["spec"]["excludeNamespaces"] == ["other-*"], obj["spec"]  # a pattern the CRD accepts
    status = obj["status"]
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    count = status["resourceCount"]
    assert count >= 4, "three ConfigMaps and the Namespace at least"

    header, rows = table(ok(stack, "-n", namespace, "backup", "get"))
    assert header == list(BACKUP_COLUMNS)
    (row,) = rows
    name, stage, state, _volumes, resources, created, elapsed = row
    assert (name, stage, state, resources) == ("nightly", "Final", "Successful", str(count))
    assert CREATED.match(created), created
    assert re.fullmatch(r"(\d+h)?(\d+m)?\d+s", elapsed), elapsed

    listed = json.loads(ok(stack, "backup", "get", "-A", "-o", "json"))
    assert listed["kind"] == "List"
    assert any(i["metadata"]["namespace"] == namespace for i in listed["items"])
    header, rows = table(ok(stack, "backup", "get", "-A"))
    assert header == ["NAMESPACE", *BACKUP_COLUMNS]
    assert [namespace, "nightly", "Final", "Successful"] in [r[:4] for r in rows]

    remote_text = ok(stack, "-n", namespace, "backups", "list-remote", "--location", "loc")
    header, rows = table(remote_text)
    assert header == ["NAMESPACE", "NAME", "UID", "FINISHED", "RESOURCES", "STORED", "ENCRYPTED"]
    assert [namespace, "nightly", obj["metadata"]["uid"]] == rows[0][:3]
    assert rows[0][4] == str(count)
    remote = json.loads(
        ok(stack, "-n", namespace, "backups", "list-remote", "--location", "loc", "-o", "json")
    )
    (entry,) = remote["backups"]
    assert entry["uid"] == obj["metadata"]["uid"]
    assert entry["resourceCount"] == count
    assert entry["storedSize"] > 0
    assert entry["encrypted"] is False

    log = ok(stack, "-n", namespace, "backup", "logs", "nightly")
    events = [json.loads(line) for line in log.splitlines()]
    assert events[0]["event"] == "backup.started"
    assert "backup.completed" in {e["event"] for e in events}

    described = ok(stack, "-n", namespace, "backup", "describe", "nightly")
    for expected in ("Spec:", "Backup Location:", "Status:", "Stage:", "Final", "Volumes:", "Conditions:",
                     "Events:", "Completed"):  # fmt: skip
        assert expected in described, f"{expected!r} not in:\n{described}"
    assert "Stored resources" not in described
    detailed = ok(stack, "-n", namespace, "backup", "describe", "nightly", "--details")
    assert f"Stored resources: {count}" in detailed, detailed
    assert "  ConfigMap.v1 (" in detailed
    for i in range(3):
        assert f"    {namespace}/cm-{i}" in detailed, detailed

    # Label selectors, as kubectl's.
    stack.kubectl("-n", namespace, "label", "applicationbackup", "nightly", "tier=gold")
    _header, rows = table(ok(stack, "-n", namespace, "backup", "get", "-l", "tier=gold"))
    assert [r[0] for r in rows] == ["nightly"]
    none = davit(stack, "-n", namespace, "backup", "get", "-l", "tier=silver")
    assert none.exit_code == 0 and none.stdout == ""
    assert none.stderr.strip() == f"No backups matching tier=silver found in namespace {namespace}."
    both = davit(stack, "-n", namespace, "backup", "get", "nightly", "-l", "tier=gold")
    assert both.exit_code == 1 and "not both" in both.stderr

    assert ok(stack, "-n", namespace, "backup", "delete", "nightly", "--wait").strip() == (
        f"applicationbackup {namespace}/nightly deleted"
    )
    gone = davit(stack, "-n", namespace, "backup", "get", "nightly")
    assert gone.exit_code == 1
    assert f"applicationbackup {namespace}/nightly not found" in gone.stderr
    # The CR is gone; the backup is still in the location (reclaimPolicy Retain), and list-remote sees it.
    header, rows = table(ok(stack, "-n", namespace, "backups", "list-remote", "--location", "loc"))
    assert [r[1] for r in rows] == ["nightly"]


def test_a_failed_backup_exits_1_with_its_reason_and_keeps_its_log_in_redis(
    stack: StackEnv, namespace: str, services: Services
) -> None:
    wrong = "not-the-secret-0123456789abcdefghijklmn"
    ok(stack, "-n", namespace, "location", "create", "loc", *s3_flags(stack, namespace, wrong))
    result = davit(stack, "-n", namespace, "backup", "create", "refused", "--location", "loc", "--wait",
                   "--timeout", "2m")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"applicationbackup {namespace}/refused failed" in result.stderr
    assert "SignatureDoesNotMatch" in result.stderr
    assert wrong not in result.output

    # It failed before its log reached the location: the log is in the services' Redis.
    missing = davit(stack, "-n", namespace, "backup", "logs", "refused")
    assert missing.exit_code == 1
    assert "--redis-url" in missing.stderr
    log = ok(stack, "-n", namespace, "backup", "logs", "refused", "--redis-url", stack.redis_url)
    names = [json.loads(line)["event"] for line in log.splitlines()]
    assert "backup.failed" in names
    assert wrong not in log


def test_logs_of_a_backup_in_flight_come_from_redis(stack: StackEnv, namespace: str, tmp_path: Path) -> None:
    import redis

    from davit.operations.scratch import OperationState

    create_local_location(stack, namespace, tmp_path)
    ok(stack, "-n", namespace, "backup", "create", "running", "--location", "loc")  # no services: not run
    uid = json.loads(ok(stack, "-n", namespace, "backup", "get", "running", "-o", "json"))["metadata"]["uid"]

    without = davit(stack, "-n", namespace, "backup", "logs", "running")
    assert without.exit_code == 1
    assert "still running" in without.stderr and "--redis-url" in without.stderr

    state = OperationState(redis.Redis.from_url(stack.redis_url), uid)
    try:
        state.log("backup.started", backupLocation="loc")
        state.log("backup.progress", resources=3, secretAccessKey="leaked-if-printed")
        out = ok(stack, "-n", namespace, "backup", "logs", "running", REDIS_URL=stack.redis_url)
    finally:
        state.clear()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["event"] for line in lines] == ["backup.started", "backup.progress"]
    assert lines[1]["secretAccessKey"] == "[redacted]"
    assert "leaked-if-printed" not in out


# --- errors --------------------------------------------------------------------------------------


def one_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_errors_are_one_line_on_stderr_with_exit_codes(
    stack: StackEnv, namespace: str, tmp_path: Path
) -> None:
    missing = davit(stack, "-n", namespace, "backup", "describe", "no-such-backup")
    assert missing.exit_code == 1
    assert f"applicationbackup {namespace}/no-such-backup not found" in one_line(missing)
    assert missing.stdout == ""

    for args in (("location", "describe", "nowhere"), ("location", "get", "nowhere")):
        result = davit(stack, "-n", namespace, *args)
        assert result.exit_code == 1
        assert f"backuplocation {namespace}/nowhere not found" in one_line(result)

    bad_policy = davit(stack, "-n", namespace, "backup", "create", "b", "--location", "loc",
                       "--reclaim-policy", "Sometimes")  # fmt: skip
    assert bad_policy.exit_code == 2
    assert "--reclaim-policy" in one_line(bad_policy)
    for flag, value in (("--selector", "app"), ("--ttl", "3 days")):
        result = davit(stack, "-n", namespace, "backup", "create", "b", "--location", "loc", flag, value)
        assert result.exit_code == 2
        assert flag in one_line(result)
    assert davit(stack, "-n", namespace, "backup", "get", "-o", "xml").exit_code == 2
    assert stack.kubectl("-n", namespace, "get", "applicationbackup", "-o", "name").stdout.strip() == ""

    remote = davit(stack, "-n", namespace, "backups", "list-remote", "--location", "nowhere")
    assert remote.exit_code == 1
    assert f"BackupLocation {namespace}/nowhere not found" in one_line(remote)

    create_local_location(stack, namespace, tmp_path)
    again = davit(stack, "-n", namespace, "location", "create", "loc", "--type", "local", "--path", "/tmp")
    assert again.exit_code == 1
    assert "already exists" in one_line(again)

    # The API server's own validation (a name it refuses) comes back as one line too.
    invalid = davit(stack, "-n", namespace, "backup", "create", "Not_A_Name", "--location", "loc")
    assert invalid.exit_code == 1
    assert "Not_A_Name" in one_line(invalid)

    # An unreachable API server: one line, exit 1.
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
                "current-context": "x",
            }
        )
    )
    unreachable = CliRunner().invoke(cli, ["--kubeconfig", str(dead), "backup", "get"])
    assert unreachable.exit_code == 1
    assert "cannot reach" in one_line(unreachable)


def test_the_console_script_exits_1_without_a_traceback(stack: StackEnv, namespace: str) -> None:
    script = Path(sys.executable).parent / "davit"
    assert script.exists(), "pip install -e . creates the davit console script"
    result = subprocess.run(
        [str(script), "--kubeconfig", stack.kubeconfig, "-n", namespace, "backup", "describe", "gone"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: applicationbackup {namespace}/gone not found"
    assert result.stdout == ""


def test_namespace_defaults_to_the_contexts(stack: StackEnv, namespace: str, tmp_path: Path) -> None:
    config: dict[str, Any] = yaml.safe_load(Path(stack.kubeconfig).read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    store = tmp_path / "store"
    store.mkdir()
    result = CliRunner().invoke(
        cli, ["location", "create", "here", "--type", "local", "--path", str(store)],
        env={"KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"backuplocation {namespace}/here created" in result.stdout


def test_the_kubeconfig_in_the_home_directory_is_found_as_kubectl_finds_it(
    stack: StackEnv, namespace: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(Path(stack.kubeconfig).read_text())
    result = CliRunner().invoke(
        cli, ["-n", namespace, "backup", "get"], env={"KUBECONFIG": None, "HOME": str(home)}
    )
    assert result.exit_code == 0, result.output
    assert f"No backups found in namespace {namespace}." in result.stderr
    nowhere = CliRunner().invoke(
        cli, ["backup", "get"], env={"KUBECONFIG": None, "HOME": str(tmp_path / "empty")}
    )
    assert nowhere.exit_code == 1 and "~/.kube/config" in nowhere.stderr


def test_version_names_the_cli_and_the_cluster(stack: StackEnv) -> None:
    import davit

    text = ok(stack, "version")
    assert f"Client: davit {davit.__version__}" in text
    assert "Server: Kubernetes v1.20" in text and "Davit API davit.dev/v1alpha1 installed" in text
    info = json.loads(ok(stack, "version", "-o", "json"))
    assert info["client"]["version"] == davit.__version__
    assert info["server"]["reachable"] is True
    unreachable = CliRunner().invoke(cli, ["version"], env={"KUBECONFIG": "/nonexistent/kubeconfig"})
    assert unreachable.exit_code == 0, "the CLI's version is worth printing without a cluster"
    assert "Server: not reachable" in unreachable.stdout
