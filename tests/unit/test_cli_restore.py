"""``davit restore`` and ``davit clone`` without a cluster: mapping flags, the specs the flags make, the
per-kind counts in describe, a clone's Events as its log, and bad flags that stop before anything is
created."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import click
import pytest
from click.testing import CliRunner

from davit.api.types import DNS1123_LABEL, DNS1123_SUBDOMAIN, ApplicationCloneSpec, ApplicationRestoreSpec
from davit_cli import clone, output, restore
from davit_cli.main import cli
from davit_cli.options import parse_mapping

NOW = datetime.datetime(2019, 9, 11, 22, 15, 30, tzinfo=datetime.UTC)


def operation(kind: str, spec: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": "back",
            "namespace": "shop",
            "uid": "9d1c7e2a-1111-2222-3333-444455556666",
            "creationTimestamp": "2019-09-11T22:10:04Z",
        },
        "spec": spec,
        "status": status,
    }


RESTORE_SPEC = {"backupLocation": "loc", "backupName": "nightly", "namespaceMapping": {"shop": "shop2"}}
FINISHED: dict[str, Any] = {
    "stage": "Final",
    "status": "PartialSuccess",
    "reason": "1 ConfigMap failed: admission webhook denied it",
    "resourceCount": 9,
    "volumesProgress": "1/1",
    "triggerTimestamp": "2019-09-11T22:10:05Z",
    "finishTimestamp": "2019-09-11T22:11:41Z",
    "resourcesByKind": {
        "Deployment": {"restored": 1, "retained": 0, "replaced": 1, "failed": 0},
        "ConfigMap": {"restored": 3, "retained": 2, "replaced": 0, "failed": 1},
        "Secret": {"retained": 1},
    },
}


# --- mapping flags -------------------------------------------------------------------------------


def test_mappings_parse_to_dicts() -> None:
    assert parse_mapping("a:b, c : d", "--namespace-mapping", DNS1123_LABEL) == {"a": "b", "c": "d"}
    assert parse_mapping("fast.io:slow.io", "--storage-class-mapping", DNS1123_SUBDOMAIN) == {
        "fast.io": "slow.io"
    }
    assert parse_mapping("a:b,a:b", "--node-mapping", DNS1123_SUBDOMAIN) == {"a": "b"}, "a repeat agrees"
    assert parse_mapping(None, "--node-mapping", DNS1123_SUBDOMAIN) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("shop", "'shop' is not old:new"),
        ("shop=web", "'shop=web' is not old:new"),
        (":web", "':web' is not old:new"),
        ("shop:", "'shop:': '' is not a valid name"),
        ("shop:web:x", "'web:x' is not a valid name"),
        ("Shop:web", "'Shop' is not a valid name"),
        ("a.b:c", "'a.b' is not a valid name"),  # a namespace is a label: no dots
        ("a:b,a:c", "'a' is mapped twice (a:b, a:c)"),
        (" , ", "has no old:new pairs"),
    ],
)
def test_bad_mappings_are_usage_errors_naming_the_flag(value: str, says: str) -> None:
    with pytest.raises(click.BadParameter) as bad:
        parse_mapping(value, "--namespace-mapping", DNS1123_LABEL)
    message = bad.value.format_message()
    assert "--namespace-mapping" in message
    assert says in message


# --- specs from flags ----------------------------------------------------------------------------


def test_restore_spec_from_flags() -> None:
    assert restore.build_spec("nightly", "loc") == {"backupName": "nightly", "backupLocation": "loc"}
    spec = restore.build_spec(
        "nightly", "loc", namespace_mapping="shop:shop2,web:web2", replace_policy="Delete",
        resource_types="ConfigMap, Deployment", storage_class_mapping="fast:slow", node_mapping="n1:n2",
        dry_run=True,
    )  # fmt: skip
    assert spec == {
        "backupName": "nightly", "backupLocation": "loc",
        "namespaceMapping": {"shop": "shop2", "web": "web2"}, "replacePolicy": "Delete",
        "resourceTypes": ["ConfigMap", "Deployment"],
        "storageClassMapping": {"fast": "slow"}, "nodeMapping": {"n1": "n2"}, "dryRun": True,
    }  # fmt: skip
    # What the CRD's schema is generated from accepts it as it is.
    assert ApplicationRestoreSpec.model_validate(spec).model_dump(by_alias=True, exclude_none=True) == spec


def test_restore_options_from_flags() -> None:
    spec = restore.build_spec(
        "nightly", "loc", replace_policy="Update", backup_namespace="shop",
        resource_modifier_configmap="patches", preserve_node_ports=True,
    )  # fmt: skip
    assert spec == {
        "backupName": "nightly", "backupLocation": "loc", "replacePolicy": "Update",
        "backupNamespace": "shop", "resourceModifier": {"kind": "ConfigMap", "name": "patches"},
        "preserveNodePorts": True,
    }  # fmt: skip
    assert ApplicationRestoreSpec.model_validate(spec).model_dump(by_alias=True, exclude_none=True) == spec


def test_clone_spec_from_flags() -> None:
    assert clone.build_spec("shop", "shop-copy") == {
        "sourceNamespace": "shop",
        "destinationNamespace": "shop-copy",
    }
    spec = clone.build_spec(
        "shop", "shop-copy", replace_policy="Fail", selector="app=web,tier=db", pre_exec_rule="freeze",
        post_exec_rule="thaw",
    )  # fmt: skip
    assert spec == {
        "sourceNamespace": "shop", "destinationNamespace": "shop-copy", "replacePolicy": "Fail",
        "selectors": {"app": "web", "tier": "db"}, "preExecRule": "freeze", "postExecRule": "thaw",
    }  # fmt: skip
    assert ApplicationCloneSpec.model_validate(spec).model_dump(by_alias=True, exclude_none=True) == spec


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--namespace-mapping", "shop"], "--namespace-mapping"),
        (["--storage-class-mapping", "fast:"], "--storage-class-mapping"),
        (["--node-mapping", "a:b,a:c"], "--node-mapping"),
        (["--replace-policy", "Fail"], "--replace-policy"),  # restores have no Fail
        (["--wait", "--timeout", "soon"], "--timeout"),
    ],
)
def test_bad_restore_flags_exit_2_with_one_line_before_reaching_the_cluster(
    args: list[str], flag: str
) -> None:
    # A kubeconfig that points nowhere: reaching the cluster would be exit 1, not 2.
    result = CliRunner().invoke(
        cli,
        ["restore", "create", "r", "--from-backup", "b", "--location", "l", *args],
        env={"KUBECONFIG": "/nonexistent/kubeconfig"},
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert flag in line and "davit restore create --help" in line


def test_bad_clone_flags_exit_2() -> None:
    result = CliRunner().invoke(
        cli, ["clone", "create", "c", "--from", "a", "--to", "b", "--selector", "app"],
        env={"KUBECONFIG": "/nonexistent/kubeconfig"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--selector" in result.stderr
    missing = CliRunner().invoke(cli, ["clone", "create", "c", "--from", "a"], env={"KUBECONFIG": None})
    assert missing.exit_code == 2
    assert "--to" in missing.stderr


# --- rendering -----------------------------------------------------------------------------------


def test_kind_counts_table_sorted_by_kind_with_a_total() -> None:
    lines = output.kind_counts_table(FINISHED["resourcesByKind"])
    table = [re.split(r" {3,}", line.strip()) for line in lines]
    assert table == [
        list(output.KIND_COUNT_COLUMNS),
        ["ConfigMap", "3", "2", "0", "0", "1"],
        ["Deployment", "1", "0", "1", "0", "0"],
        ["Secret", "0", "1", "0", "0", "0"],
        ["TOTAL", "4", "3", "1", "0", "1"],
    ]
    single = output.kind_counts_table({"ConfigMap": {"restored": 2}})
    assert [line.split() for line in single] == [
        list(output.KIND_COUNT_COLUMNS),
        ["ConfigMap", "2", "0", "0", "0", "0"],
    ]


def test_describe_restore_shows_stage_status_reason_counts_volumes_elapsed() -> None:
    volume = {"namespace": "shop2", "persistentVolumeClaim": "data", "volume": "pv-9", "mode": "filesystem",
              "status": "Successful", "totalSize": 2048, "bytesDone": 2048}  # fmt: skip
    obj = operation("ApplicationRestore", RESTORE_SPEC, **FINISHED, volumes=[volume])
    events = [{"type": "Warning", "reason": "PartialSuccess", "message": "1 ConfigMap failed",
               "lastTimestamp": "2019-09-11T22:11:41Z", "source": {"component": "davit-worker"}}]  # fmt: skip
    text = output.describe_operation(obj, events, NOW)
    lines = text.splitlines()
    spec = lines[lines.index("Spec:") + 1 :]
    assert spec[0].split() == ["Backup", "Name:", "nightly"], "what is restored comes first"
    assert spec[1].split() == ["Backup", "Location:", "loc"]
    assert re.search(r"Namespace Mapping:\s+shop:shop2$", text, re.MULTILINE), "names as written, not titled"
    status = lines[lines.index("Status:") + 1 :]
    assert status[0].split() == ["Stage:", "Final"]
    assert status[1].split() == ["Status:", "PartialSuccess"]
    assert status[2].split()[:2] == ["Reason:", "1"] and status[2].endswith("admission webhook denied it")
    assert re.search(r"Volumes:\s+1/1", text)
    assert re.search(r"Elapsed:\s+1m36s", text)
    counts = lines[lines.index("Resources By Kind:") + 1 :]
    assert counts[0].split() == list(output.KIND_COUNT_COLUMNS)
    assert counts[1].split() == ["ConfigMap", "3", "2", "0", "0", "1"]
    assert counts[4].split() == ["TOTAL", "4", "3", "1", "0", "1"]
    assert "Resource Count:" in text and "Resources By Kind:" not in "\n".join(status[:8])
    assert "pv-9" in text and "2.0 KiB" in text
    assert lines[-1].split()[:2] == ["Warning", "PartialSuccess"]


def test_describe_shows_counts_only_for_restores_and_clones() -> None:
    clone_spec = {"sourceNamespace": "a", "destinationNamespace": "b", "selectors": {"app": "web"}}
    pending = output.describe_operation(operation("ApplicationClone", clone_spec), [], NOW)
    assert "Resources By Kind:\n  <none>" in pending
    spec = pending.splitlines()[pending.splitlines().index("Spec:") + 1 :]
    assert spec[0].split() == ["Source", "Namespace:", "a"]
    assert re.search(r"Selectors:\s+app=web$", pending, re.MULTILINE)
    backup = output.describe_operation(operation("ApplicationBackup", {"backupLocation": "loc"}), [], NOW)
    assert "Resources By Kind" not in backup


def test_restore_rows_use_the_printer_columns() -> None:
    obj = operation("ApplicationRestore", RESTORE_SPEC, **FINISHED)
    (row,) = [re.split(r" {3,}", line) for line in output.operation_table([obj], NOW).splitlines()[1:]]
    assert row == ["back", "Final", "PartialSuccess", "1/1", "9", "11 Sep 19 22:10 UTC", "1m36s"]


def test_events_as_log_lines_oldest_first() -> None:
    events: list[dict[str, Any]] = [
        {"type": "Warning", "reason": "Failed", "message": "namespace b\nexists", "count": 2,
         "lastTimestamp": "2019-09-11T22:12:00Z", "source": {"component": "davit-worker"},
         "metadata": {"resourceVersion": "20"}},
        {"type": "Normal", "reason": "Accepted", "message": "queued", "lastTimestamp": "2019-09-11T22:12:00Z",
         "reportingComponent": "davit-watcher", "metadata": {"resourceVersion": "7"}},
    ]  # fmt: skip
    lines = [json.loads(line) for line in output.event_log_lines(events)]
    assert lines == [
        {"time": "2019-09-11T22:12:00Z", "type": "Normal", "event": "Accepted", "source": "davit-watcher",
         "message": "queued"},
        {"time": "2019-09-11T22:12:00Z", "type": "Warning", "event": "Failed", "source": "davit-worker",
         "message": "namespace b exists", "count": 2},
    ]  # fmt: skip
    assert output.event_log_lines([]) == []
