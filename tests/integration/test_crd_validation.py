"""The CRDs in a real kube-apiserver: Stork's examples are accepted, bad specs are refused by field."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from davit.api import types
from tests.conftest import StackEnv
from tests.helpers import without_nulls

pytestmark = pytest.mark.integration

SEEDS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "seeds"
SEED_FILES = sorted(p.name for p in SEEDS_DIR.glob("*.yaml"))
OPERATION_HEADER = ["NAME", "STAGE", "STATUS", "VOLUMES", "RESOURCES", "CREATED", "ELAPSED"]

Apply = Callable[[str], None]


def load(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def read_back(stack: StackEnv, doc: dict[str, Any]) -> dict[str, Any]:
    """The stored object ``doc`` describes."""
    group = doc["apiVersion"].rpartition("/")[0]
    resource = f"{doc['kind'].lower()}.{group}" if group else doc["kind"].lower()
    where = ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
    result = stack.kubectl("get", resource, doc["metadata"]["name"], *where, "-o", "json")
    stored: dict[str, Any] = json.loads(result.stdout)
    return stored


@pytest.fixture(scope="module")
def seed_namespaces(stack: StackEnv) -> None:
    """The namespaces the seeds name, created if missing and left in place (the stack is throwaway)."""
    needed = {load((SEEDS_DIR / f).read_text())["metadata"].get("namespace") for f in SEED_FILES} - {None}
    for name in sorted(needed):
        created = stack.kubectl("create", "namespace", name, check=False)
        assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr


@pytest.fixture
def applied(stack: StackEnv) -> Iterator[Apply]:
    """``kubectl apply``; everything applied through it is deleted after the test."""
    texts: list[str] = []

    def apply(text: str) -> None:
        texts.append(text)
        stack.kubectl("apply", "-f", "-", stdin=text)

    yield apply
    for text in texts:
        stack.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=text, check=False)


# --- Stork's examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEED_FILES)
def test_seed_is_accepted_and_read_back_intact(
    stack: StackEnv, seed_namespaces: None, applied: Apply, seed: str
) -> None:
    # Only the SchedulePolicy's name changes (see the test below); the rest is applied as written.
    text = (SEEDS_DIR / seed).read_text().replace("name: backupSchedule", "name: backupschedule")
    doc = load(text)
    applied(text)
    stored = read_back(stack, doc)

    for key, value in (doc["metadata"].get("annotations") or {}).items():
        assert stored["metadata"]["annotations"][key] == value
    fields = [k for k in doc if k not in ("apiVersion", "kind", "metadata")]
    assert fields, "a seed with nothing to check"
    for key in fields:
        if doc["kind"] == "Secret" and key == "stringData":
            decoded = {k: base64.b64decode(v).decode() for k, v in stored["data"].items()}
            assert decoded == doc[key]
        else:
            # A null may be kept (nullable) or pruned (enums); both mean unset, so compare without them.
            assert without_nulls(stored[key]) == without_nulls(doc[key]), key


def test_seed_application_backup_keeps_reclaim_policy_and_accepts_empty_fields(
    stack: StackEnv, seed_namespaces: None, applied: Apply
) -> None:
    text = (SEEDS_DIR / "applicationbackup.yaml").read_text()
    empty = ("selectors", "preExecRule", "postExecRule")
    spec = load(text)["spec"]
    assert all(key in spec and spec[key] is None for key in empty)
    applied(text)
    stored = read_back(stack, load(text))["spec"]
    assert stored["reclaimPolicy"] == "Delete"
    assert stored["namespaces"] == ["mysql-app"]
    assert all(stored.get(key) is None for key in empty)


def test_seed_schedule_policy_name_must_be_lowercase(stack: StackEnv, applied: Apply) -> None:
    # Object names are lowercase RFC 1123 subdomains; the API server checks that before any CRD schema.
    text = (SEEDS_DIR / "schedulepolicy.yaml").read_text()
    assert load(text)["metadata"]["name"] == "backupSchedule"
    refused = stack.kubectl("apply", "-f", "-", stdin=text, check=False)
    assert refused.returncode != 0
    assert 'metadata.name: Invalid value: "backupSchedule"' in refused.stderr
    assert "lowercase RFC 1123" in refused.stderr

    lowered = text.replace("name: backupSchedule", "name: backupschedule")
    applied(lowered)
    policy = read_back(stack, load(lowered))["policy"]
    assert policy["daily"] == {"time": "10:14PM", "retain": 5}
    assert policy["weekly"] == {"day": "Thursday", "time": "10:13PM", "retain": 5}
    assert policy["monthly"] == {"date": 14, "time": "8:05PM", "retain": 5}
    assert policy["interval"] == {"intervalMinutes": 60, "retain": 5}


# --- bad specs ----------------------------------------------------------------------------------------

#: One valid object per kind; each bad case changes one field of one of these.
BASES: dict[str, dict[str, Any]] = {
    "backup": {
        "kind": "ApplicationBackup",
        "spec": {
            "backupLocation": "mysql",
            "namespaces": ["mysql-app"],
            "reclaimPolicy": "Delete",
            "volumeMode": "auto",
            "ttl": "720h",
            "includeResources": [{"kind": "Deployment", "name": "mysql"}],
        },
    },
    "location": {
        "kind": "BackupLocation",
        "location": {
            "type": "s3",
            "path": "bucket-name",
            "secretConfig": "s3secret",
            "s3Config": {"region": "us-east-1", "disableSSL": False},
        },
    },
    "policy": {
        "kind": "SchedulePolicy",
        "policy": {
            "interval": {"intervalMinutes": 60, "retain": 5},
            "daily": {"time": "10:14PM", "retain": 5, "minRetain": 2, "expireAfter": "30d"},
            "weekly": {"day": "Thursday", "time": "10:13PM"},
            "monthly": {"date": 14, "time": "8:05PM"},
            "cron": {"schedule": "*/15 * * * *"},
        },
    },
    "restore": {
        "kind": "ApplicationRestore",
        "spec": {
            "backupName": "backup",
            "backupLocation": "mysql",
            "namespaceMapping": {"mysql": "mysql"},
            "replacePolicy": "Delete",
        },
    },
    "clone": {
        "kind": "ApplicationClone",
        # Fail is a clone-only replace policy: accepted here, refused on a restore below.
        "spec": {
            "sourceNamespace": "mysql-app",
            "destinationNamespace": "clone-mysql",
            "replacePolicy": "Fail",
        },
    },
    "schedule": {
        "kind": "ApplicationBackupSchedule",
        "spec": {
            "schedulePolicyName": "testpolicy",
            "suspend": False,
            "template": {"spec": {"backupLocation": "mysql"}},
        },
    },
    "rule": {
        "kind": "Rule",
        "rules": [{"podSelector": {"app": "mysql"}, "actions": [{"type": "command", "value": "sync"}]}],
    },
}

#: The spec model of each base's top-level field.
MODELS: dict[str, tuple[str, Any]] = {
    "backup": ("spec", types.ApplicationBackupSpec),
    "location": ("location", types.LocationSpec),
    "policy": ("policy", types.PolicySpec),
    "restore": ("spec", types.ApplicationRestoreSpec),
    "clone": ("spec", types.ApplicationCloneSpec),
    "schedule": ("spec", types.ApplicationBackupScheduleSpec),
    "rule": ("rules", list[types.RuleItem]),
}

MISSING = object()


def bad(base: str, path: str, value: Any, error: str) -> Any:
    shown = "missing" if value is MISSING else json.dumps(value)
    return pytest.param(base, path, value, error, id=f"{base}:{path}={shown}")


#: (base, field to change (list indices as numbers), its new value or MISSING, what the API server says).
BAD_SPECS = [
    # wrong enum value
    bad("backup", "spec.reclaimPolicy", "Keep", 'Unsupported value: "Keep"'),
    bad("backup", "spec.volumeMode", "fast", 'Unsupported value: "fast"'),
    bad("location", "location.type", "nfs", 'Unsupported value: "nfs"'),
    bad("policy", "policy.weekly.day", "Someday", 'Unsupported value: "Someday"'),
    bad("restore", "spec.replacePolicy", "Fail", 'Unsupported value: "Fail"'),
    bad("clone", "spec.replacePolicy", "Overwrite", 'Unsupported value: "Overwrite"'),
    bad("rule", "rules.0.actions.0.type", "shell", 'Unsupported value: "shell"'),
    # missing required field
    bad("backup", "spec.backupLocation", MISSING, "Required value"),
    bad("backup", "spec.includeResources.0.name", MISSING, "Required value"),
    bad("location", "location.path", MISSING, "Required value"),
    bad("schedule", "spec.template.spec.backupLocation", MISSING, "Required value"),
    # wrong type
    bad("backup", "spec.namespaces", "mysql-app", "in body must be of type array"),
    bad("location", "location.s3Config.disableSSL", "false", "in body must be of type boolean"),
    bad("policy", "policy.interval.intervalMinutes", "60", "in body must be of type integer"),
    bad("restore", "spec.namespaceMapping", ["mysql"], "in body must be of type object"),
    bad("schedule", "spec.suspend", "yes", "in body must be of type boolean"),
    # out of range
    bad("policy", "policy.monthly.date", 32, "should be less than or equal to 31"),
    bad("policy", "policy.interval.retain", 0, "should be greater than or equal to 1"),
    bad("policy", "policy.interval.intervalMinutes", 0, "should be greater than or equal to 1"),
    bad("policy", "policy.daily.minRetain", -1, "should be greater than or equal to 0"),
    bad("rule", "rules.0.actions", [], "should have at least 1 items"),
    bad("location", "location.repackBelowPercent", 101, "should be less than or equal to 100"),
    bad("location", "location.repackBelowPercent", -1, "should be greater than or equal to 0"),
    # every number a user writes is bounded, and so is the length of every duration
    bad("policy", "policy.interval.intervalMinutes", 527041, "should be less than or equal to 527040"),
    bad("policy", "policy.interval.intervalMinutes", 10**15, "should be less than or equal to 527040"),
    bad("policy", "policy.interval.retain", 10001, "should be less than or equal to 10000"),
    bad("policy", "policy.daily.minRetain", 10001, "should be less than or equal to 10000"),
    bad("backup", "spec.ttl", "1" * 32 + "h", "should be at most 32 chars long"),
    bad("policy", "policy.daily.expireAfter", "9" * 40 + "w", "should be at most 32 chars long"),
    bad("schedule", "spec.template.spec.ttl", "1" * 32 + "h", "should be at most 32 chars long"),
    bad("policy", "policy.cron.schedule", "0 0 * * " + "1," * 130 + "1", "should be at most 256 chars long"),
    bad("policy", "policy.timeZone", "Europe/" + "x" * 60, "should be at most 64 chars long"),
    # malformed time, duration or cron expression
    bad("policy", "policy.daily.time", "22:14", "in body should match"),
    bad("policy", "policy.weekly.time", "13:00PM", "in body should match"),
    bad("backup", "spec.ttl", "3 days", "in body should match"),
    bad("policy", "policy.daily.expireAfter", "a month", "in body should match"),
    bad("policy", "policy.cron.schedule", "every 5 minutes", "in body should match"),
    # not a Kubernetes name
    bad("location", "location.secretConfig", "S3Secret", "in body should match"),
    bad("clone", "spec.sourceNamespace", "Mysql_App", "in body should match"),
    # neither a namespace name nor a glob pattern of them (brace expansion, negation)
    bad("backup", "spec.namespaces.0", "team-{a,b}", "in body should match"),
    bad("backup", "spec.excludeNamespaces", ["!kube-system"], "in body should match"),
]


def field_path(keys: tuple[str | int, ...]) -> str:
    """A field as kube-apiserver 1.20 names it in errors: dotted, without list indices."""
    return ".".join(str(k) for k in keys if not isinstance(k, int))


def parse_path(path: str) -> tuple[str | int, ...]:
    return tuple(int(part) if part.isdigit() else part for part in path.split("."))


def manifest(base: str, namespace: str) -> dict[str, Any]:
    doc = {"apiVersion": "davit.dev/v1alpha1", **copy.deepcopy(BASES[base])}
    doc["metadata"] = {"name": f"bad-{base}"}
    if doc["kind"] != "SchedulePolicy":  # cluster-scoped
        doc["metadata"]["namespace"] = namespace
    return doc


def edited(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """``doc`` with the field at ``path`` set to ``value``, or removed for MISSING."""
    doc = copy.deepcopy(doc)
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def model_errors(base: str, doc: dict[str, Any]) -> list[str]:
    """The model's verdict on ``doc``: paths of its errors, written as the API server writes them."""
    field, model = MODELS[base]
    try:
        # Strict JSON mode types values as the API server does: no "60" for 60, no "false" for false.
        TypeAdapter(model).validate_json(json.dumps(doc[field]), strict=True)
    except ValidationError as exc:
        return [field_path((field, *e["loc"])) for e in exc.errors()]
    return []


def server_apply(stack: StackEnv, doc: dict[str, Any], *options: str) -> Any:
    # Server-side dry run validates exactly as a real apply but stores nothing, so a spec accepted by
    # mistake leaves no object behind (SchedulePolicies are cluster-scoped and outlive the namespace).
    return stack.kubectl(
        "apply", "--dry-run=server", *options, "-f", "-", stdin=yaml.safe_dump(doc), check=False
    )


@pytest.mark.parametrize("base", sorted(BASES))
def test_base_specs_are_valid(stack: StackEnv, namespace: str, base: str) -> None:
    doc = manifest(base, namespace)
    result = server_apply(stack, doc)
    assert result.returncode == 0, result.stderr
    assert model_errors(base, doc) == []


def test_empty_enum_fields_are_accepted(stack: StackEnv, namespace: str) -> None:
    # Empty like the seed's selectors:, but on enums. kube-apiserver 1.20 refuses a null for a nullable
    # enum, so crds.py leaves enums non-nullable and the server prunes the null instead.
    for base, spec in (
        ("backup", {"reclaimPolicy": None, "volumeMode": None}),
        ("restore", {"replacePolicy": None}),
        ("clone", {"replacePolicy": None}),
    ):
        doc = manifest(base, namespace)
        doc["spec"].update(spec)
        result = server_apply(stack, doc)
        assert result.returncode == 0, result.stderr
        assert model_errors(base, doc) == []


@pytest.mark.parametrize(("base", "path", "value", "error"), BAD_SPECS)
def test_bad_spec_is_refused_naming_the_field(
    stack: StackEnv, namespace: str, base: str, path: str, value: Any, error: str
) -> None:
    keys = parse_path(path)
    doc = edited(manifest(base, namespace), keys, value)
    field = field_path(keys)
    # --validate=false: kubectl's own schema check would refuse some first, in its own words.
    result = server_apply(stack, doc, "--validate=false")
    assert result.returncode != 0
    assert f"is invalid: {field}: " in result.stderr, result.stderr  # the one error, on this field
    assert error in result.stderr, result.stderr
    assert model_errors(base, doc) == [field], "davit.api.types disagrees with the CRD"


# --- printer columns ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "plural"),
    [("backup", "applicationbackups"), ("restore", "applicationrestores"), ("clone", "applicationclones")],
)
def test_operation_printer_columns(stack: StackEnv, namespace: str, base: str, plural: str) -> None:
    doc = manifest(base, namespace)
    # status is a subresource: the main endpoint drops it, so the columns start out empty.
    doc["status"] = {"stage": "Final", "status": "Successful"}
    stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    header, row = stack.kubectl("get", plural, "-n", namespace).stdout.splitlines()
    assert header.split() == OPERATION_HEADER
    assert row.split()[0] == doc["metadata"]["name"]
    assert len(row.split()) == 2  # NAME and CREATED

    stored = json.loads(
        stack.kubectl("get", plural, doc["metadata"]["name"], "-n", namespace, "-o", "json").stdout
    )
    stored["status"] = {
        "stage": "Volumes",
        "status": "Pending",
        "volumesProgress": "0/2",
        "resourceCount": 3,
        "elapsed": "19s",
    }
    status_uri = f"/apis/davit.dev/v1alpha1/namespaces/{namespace}/{plural}/{doc['metadata']['name']}/status"
    stack.kubectl("replace", "--raw", status_uri, "-f", "-", stdin=json.dumps(stored))
    header, row = stack.kubectl("get", plural, "-n", namespace).stdout.splitlines()
    cells = row.split()
    assert cells[:5] == [doc["metadata"]["name"], "Volumes", "Pending", "0/2", "3"]
    assert cells[-1] == "19s"
