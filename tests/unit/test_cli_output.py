"""The CLI's rendering (pure): table columns and order, storkctl's CREATED format, elapsed times, JSON and
YAML that read back, and credentials that never reach any output."""

from __future__ import annotations

import copy
import datetime
import json
import re
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from davit_cli import output
from davit_cli.backup import build_spec
from davit_cli.location import build_location
from davit_cli.main import cli
from davit_cli.options import parse_duration, parse_selector, split_list

NOW = datetime.datetime(2019, 9, 11, 22, 15, 30, tzinfo=datetime.UTC)
SECRETS = ("wJalrXUtnFEMI-K7MDENG-SECRETKEY", "AKIAEXAMPLEKEYID", "azure-ACCOUNT-key==", "passphrase-ENC")


def backup(name: str = "nightly", namespace: str = "shop", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackup",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0b6c1d9e-1111-2222-3333-444455556666",
            "creationTimestamp": "2019-09-11T22:10:04Z",
        },
        "spec": {"backupLocation": "loc", "namespaces": [namespace], "reclaimPolicy": "Retain"},
        "status": status,
    }


FINISHED: dict[str, Any] = {
    "stage": "Final",
    "status": "Successful",
    "resourceCount": 42,
    "volumesProgress": "1/1",
    "triggerTimestamp": "2019-09-11T22:10:05Z",
    "finishTimestamp": "2019-09-11T22:11:41Z",
    "elapsed": "1m35s",
}


def location(**extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "BackupLocation",
        "metadata": {"name": "s3", "namespace": "shop", "creationTimestamp": "2019-09-11T20:15:30Z"},
        "location": {
            "type": "s3",
            "path": "bucket",
            "encryptionKey": SECRETS[3],
            "s3Config": {
                "region": "eu-west-1",
                "endpoint": "https://s3.example",
                "accessKeyID": SECRETS[1],
                "secretAccessKey": SECRETS[0],
            },
            "azureConfig": {"storageAccountName": "acct", "storageAccountKey": SECRETS[2]},
            **extra,
        },
        "status": {"phase": "Available"},
    }


def rows(text: str) -> list[list[str]]:
    return [re.split(r" {3,}", line) for line in text.splitlines()]


# --- values --------------------------------------------------------------------------------------


def test_created_is_storkctls_format() -> None:
    assert output.created("2019-09-11T22:10:04Z") == "11 Sep 19 22:10 UTC"
    assert output.created("2019-09-12T00:10:04+02:00") == "11 Sep 19 22:10 UTC"
    assert output.created("2021-01-02T03:04:05Z") == "02 Jan 21 03:04 UTC"
    assert output.created(None) == ""
    assert output.created("not a time") == ""


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (FINISHED, "1m36s"),  # finished: finishTimestamp - triggerTimestamp
        ({"stage": "Final", "status": "Failed", "elapsed": "3s"}, "3s"),  # no finish time: as last written
        ({"stage": "Applications", "triggerTimestamp": "2019-09-11T22:10:30Z"}, "5m0s"),  # running: to now
        ({}, "5m26s"),  # not accepted yet: since creation
    ],
)
def test_elapsed(status: dict[str, Any], expected: str) -> None:
    assert output.elapsed(backup(**status), NOW) == expected


def test_elapsed_without_any_timestamp_falls_back_to_the_status() -> None:
    obj = backup(stage="Volumes", elapsed="12s")
    del obj["metadata"]["creationTimestamp"]
    assert output.elapsed(obj, NOW) == "12s"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (7200, "120m"), (3 * 3600 + 60, "3h1m"),
     (20 * 3600, "20h"), (50 * 3600, "2d2h"), (30 * 86400, "30d"), (800 * 86400, "2y70d"),
     (3650 * 86400, "10y")],
)  # fmt: skip
def test_age_like_kubectl(seconds: int, expected: str) -> None:
    assert output.human_duration(seconds) == expected


def test_volumes_and_sizes() -> None:
    assert output.volumes(backup(volumesProgress="2/3")) == "2/3"
    counted = backup(volumes=[{"status": "Successful"}, {"status": "InProgress"}])
    assert output.volumes(counted) == "1/2"
    assert output.volumes(backup()) == ""
    assert output.size(512) == "512 B"
    assert output.size(1536) == "1.5 KiB"
    assert output.size(3 * 1024**3) == "3.0 GiB"
    assert output.size(None) == ""


# --- tables --------------------------------------------------------------------------------------


def test_backup_table_columns_and_order() -> None:
    objs = [backup(**FINISHED), backup("hourly", stage="Initial", status="Pending")]
    text = output.operation_table(objs, NOW)
    header, first, second = text.splitlines()
    assert header.split() == list(output.BACKUP_COLUMNS)
    assert re.split(r" {3,}", first) == [
        "nightly", "Final", "Successful", "1/1", "42", "11 Sep 19 22:10 UTC", "1m36s"
    ]  # fmt: skip
    # Empty cells keep their column: every value starts where its header does.
    assert second.index("Pending") == header.index("STATUS")
    assert second.index("11 Sep") == header.index("CREATED")
    assert second.endswith("5m26s") and not second.endswith(" ")


def test_all_namespaces_adds_namespace_first() -> None:
    text = output.operation_table([backup(**FINISHED), backup(namespace="web", **FINISHED)], NOW, True)
    table = rows(text)
    assert table[0] == ["NAMESPACE", *output.BACKUP_COLUMNS]
    assert [r[:2] for r in table[1:]] == [["shop", "nightly"], ["web", "nightly"]]


def test_location_table_shows_no_credentials() -> None:
    text = output.location_table([location()], NOW)
    assert rows(text) == [list(output.LOCATION_COLUMNS), ["s3", "s3", "bucket", "Available", "120m"]]
    for secret in SECRETS:
        assert secret not in text


def test_remote_table_from_manifests() -> None:
    manifest = {
        "formatVersion": 1,
        "backup": {"metadata": {"name": "nightly", "namespace": "shop", "uid": "u-1"}},
        "summary": {"resourceCount": 7, "storedSize": 2048, "finishedAt": "2019-09-11T22:11:41Z",
                    "encrypted": True},
    }  # fmt: skip
    entry = output.remote_backup_entry(manifest)
    assert entry == {
        "namespace": "shop", "name": "nightly", "uid": "u-1", "finishedAt": "2019-09-11T22:11:41Z",
        "resourceCount": 7, "storedSize": 2048, "encrypted": True,
    }  # fmt: skip
    assert rows(output.remote_table([entry])) == [
        list(output.REMOTE_COLUMNS),
        ["shop", "nightly", "u-1", "11 Sep 19 22:11 UTC", "7", "2.0 KiB", "true"],
    ]


# --- json / yaml ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_round_trip(fmt: str) -> None:
    objs = [backup(**FINISHED), backup("hourly")]
    objs[0]["metadata"]["managedFields"] = [{"manager": "davit-cli"}]
    text = output.render_data(output.as_list(objs), fmt)
    parsed = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    expected = copy.deepcopy(objs)
    del expected[0]["metadata"]["managedFields"]  # hidden, as kubectl does
    assert parsed == {"apiVersion": "v1", "kind": "List", "items": expected}
    single = output.render_data(objs[1], fmt)
    assert (json.loads(single) if fmt == "json" else yaml.safe_load(single)) == objs[1]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_location_output_is_redacted(fmt: str) -> None:
    obj = location()
    obj["metadata"]["annotations"] = {output.LAST_APPLIED: json.dumps(location())}
    original = copy.deepcopy(obj)
    for text in (output.render_data(obj, fmt), output.render_data(output.as_list([obj]), fmt)):
        for secret in SECRETS:
            assert secret not in text
        parsed = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        item = parsed["items"][0] if "items" in parsed else parsed
        assert item["location"]["s3Config"]["secretAccessKey"] == "[redacted]"
        assert item["location"]["azureConfig"]["storageAccountKey"] == "[redacted]"
        assert item["location"]["encryptionKey"] == "[redacted]"
        assert item["location"]["s3Config"]["endpoint"] == "https://s3.example"
        applied = json.loads(item["metadata"]["annotations"][output.LAST_APPLIED])
        assert applied["location"]["s3Config"]["secretAccessKey"] == "[redacted]"
    assert obj == original, "rendering does not change the object"


def test_describe_location_masks_credentials() -> None:
    obj = location()
    obj["metadata"]["annotations"] = {output.LAST_APPLIED: json.dumps(location()), "team": "payments"}
    events = [
        {"type": "Warning", "reason": "Unavailable", "message": "AccessDenied: no",
         "lastTimestamp": "2019-09-11T22:14:30Z", "source": {"component": "davit-watcher"}}
    ]  # fmt: skip
    text = output.describe_location(obj, events, NOW)
    for secret in SECRETS:
        assert secret not in text
    assert re.search(r"Secret Access Key:\s+\(set\)", text)
    assert re.search(r"Storage Account Key:\s+\(set\)", text)
    assert re.search(r"Encryption Key:\s+\(set\)", text)
    assert re.search(r"Endpoint:\s+https://s3.example", text)
    assert "team=payments" in text and output.LAST_APPLIED not in text
    assert text.splitlines()[-1].split() == [
        "Warning",
        "Unavailable",
        "60s",
        "davit-watcher",
        "AccessDenied:",
        "no",
    ]
    location_lines = text[text.index("Location:") :].splitlines()
    assert location_lines[1].split() == ["Type:", "s3"] and location_lines[2].split() == ["Path:", "bucket"]


def test_unset_credentials_are_not_shown_as_set() -> None:
    masked = output.mask_credentials(
        {"s3Config": {"secretAccessKey": "", "region": "x"}, "encryptionKey": None}
    )
    assert masked == {"s3Config": {"secretAccessKey": "", "region": "x"}, "encryptionKey": None}


def test_describe_backup_has_spec_status_volumes_conditions_events() -> None:
    obj = backup(
        **FINISHED,
        totalSize=4096,
        volumes=[{"namespace": "shop", "persistentVolumeClaim": "data", "volume": "pv-1", "driver": "csi",
                  "mode": "filesystem", "status": "Successful", "totalSize": 1024, "bytesDone": 1024}],
        conditions=[{"type": "Queued", "status": "True", "reason": "Sent", "message": "davit.snapshot",
                     "lastTransitionTime": "2019-09-11T22:10:05Z"}],
    )  # fmt: skip
    text = output.describe_operation(obj, [], NOW)
    for expected in ("Name:         nightly", "Namespace:    shop", "Spec:", "Backup Location:",
                     "Reclaim Policy:", "Status:", "Stage:", "Final", "Resource Count:", "42", "Total Size:",
                     "4.0 KiB", "Volumes:", "data", "pv-1", "filesystem", "Conditions:", "Queued", "Sent",
                     "Events:  <none>", "Elapsed:", "1m36s"):  # fmt: skip
        assert expected in text, f"{expected!r} not in:\n{text}"
    spec = text[text.index("Spec:") :].splitlines()
    assert spec[1].split() == ["Backup", "Location:", "loc"]


def test_progress_line() -> None:
    line = output.progress_line(backup(stage="Applications", status="InProgress", resourceCount=120,
                                       triggerTimestamp="2019-09-11T22:15:00Z"), NOW)  # fmt: skip
    assert line == (
        "ApplicationBackup shop/nightly  stage Applications  status InProgress  resources 120  volumes -  "
        "elapsed 30s"
    )


def test_log_lines_are_json_and_redacted() -> None:
    line = json.dumps({"event": "backup.started", "time": 1.5, "s3Config": {"secretAccessKey": SECRETS[0]}})
    rendered = output.log_line(line)
    assert rendered is not None and SECRETS[0] not in rendered
    assert json.loads(rendered) == {"event": "backup.started", "time": 1.5,
                                    "s3Config": {"secretAccessKey": "[redacted]"}}  # fmt: skip
    assert output.log_line("   ") is None
    assert json.loads(output.log_line("plain text") or "") == {"message": "plain text"}


# --- flags ---------------------------------------------------------------------------------------


def test_flag_parsing() -> None:
    assert split_list(" a, b ,,c ") == ["a", "b", "c"]
    assert split_list(None) is None
    assert parse_selector("app=web, tier = db") == {"app": "web", "tier": "db"}
    with pytest.raises(click.BadParameter) as bad_selector:
        parse_selector("app")
    assert "--selector" in bad_selector.value.format_message()
    assert parse_duration("1h30m", "--ttl") == 5400
    assert parse_duration("2d", "--ttl") == 172800
    with pytest.raises(click.BadParameter) as bad_ttl:
        parse_duration("3 days", "--ttl")
    assert "--ttl" in bad_ttl.value.format_message()


def test_backup_spec_from_flags() -> None:
    assert build_spec("shop", "loc") == {"backupLocation": "loc", "namespaces": ["shop"]}
    assert build_spec(
        "kube-system", "loc", namespaces="a,b", selector="app=web", resource_types="ConfigMap,Secret",
        exclude_resource_types="Event", reclaim_policy="Delete", ttl="72h",
    ) == {
        "backupLocation": "loc", "namespaces": ["a", "b"], "selectors": {"app": "web"},
        "resourceTypes": ["ConfigMap", "Secret"], "excludeResourceTypes": ["Event"],
        "reclaimPolicy": "Delete", "ttl": "72h",
    }  # fmt: skip
    assert "namespaces" not in build_spec("kube-system", "loc", namespace_selector="env=prod")


def test_location_from_flags() -> None:
    assert build_location(
        "s3", "bucket", "p", None, None, False, None, region="r", endpoint="http://e", access_key_id="id",
        secret_access_key="key", disable_ssl=True,
    ) == {
        "type": "s3", "path": "bucket", "prefix": "p",
        "s3Config": {"region": "r", "endpoint": "http://e", "accessKeyID": "id", "secretAccessKey": "key",
                     "disableSSL": True},
    }  # fmt: skip
    assert build_location("google", "b", secret_config="creds", project_id="p") == {
        "type": "google", "path": "b", "secretConfig": "creds", "googleConfig": {"projectID": "p"},
    }  # fmt: skip
    with pytest.raises(click.UsageError, match="--region applies to --type s3, not azure"):
        build_location("azure", "c", region="x")
    with pytest.raises(click.UsageError, match="accessKeyID and secretAccessKey"):
        build_location("s3", "bucket", access_key_id="id")


def test_only_its_own_flag_skips_tls_verification() -> None:
    assert build_location("s3", "b", endpoint="https://e", insecure_skip_tls_verify=True)["s3Config"] == {
        "endpoint": "https://e", "insecureSkipTLSVerify": True,
    }  # fmt: skip
    assert (
        "insecureSkipTLSVerify"
        not in build_location("s3", "b", endpoint="https://e", disable_ssl=True)["s3Config"]
    )
    azure = build_location("azure", "c", secret_config="creds", insecure_skip_tls_verify=True)
    assert azure["azureConfig"]["insecureSkipTLSVerify"] is True
    with pytest.raises(click.UsageError, match="--insecure-skip-tls-verify applies to --type s3 or azure"):
        build_location("google", "g", insecure_skip_tls_verify=True)


def test_bad_flags_exit_2_with_one_line() -> None:
    result = CliRunner().invoke(
        cli,
        ["backup", "create", "b", "--location", "l", "--reclaim-policy", "Never"],
        env={"KUBECONFIG": None},
    )
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Invalid value for '--reclaim-policy'")
    assert "davit backup create --help" in line


def test_events_oldest_first_ties_in_creation_order() -> None:
    def event(reason: str, when: str, version: str, count: int = 1) -> dict[str, Any]:
        return {"type": "Normal", "reason": reason, "message": f"{reason}\nsecond line", "count": count,
                "firstTimestamp": "2019-09-11T22:05:30Z", "lastTimestamp": when,
                "metadata": {"resourceVersion": version},
                "source": {"component": "davit-worker"}}  # fmt: skip

    lines = output.event_table(
        [event("Completed", "2019-09-11T22:14:30Z", "30"), event("Accepted", "2019-09-11T22:14:30Z", "9"),
         event("Stalled", "2019-09-11T22:10:30Z", "50", count=3)],
        NOW,
    )  # fmt: skip
    assert lines[0] == "Events:"
    assert lines[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[2].split() == ["----", "------", "---", "----", "-------"]
    assert [line.split()[1] for line in lines[3:]] == ["Stalled", "Accepted", "Completed"]
    assert "5m (x3 over 10m)" in lines[3]
    assert lines[3].endswith("Stalled second line"), "a message stays on its line"
    assert output.event_table([], NOW) == ["Events:  <none>"]
