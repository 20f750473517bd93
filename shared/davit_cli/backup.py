"""``davit backup create|get|describe|logs|delete``: ApplicationBackups."""

from __future__ import annotations

from typing import Any

import click

from davit.api.objects import RawObject
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit_cli import output
from davit_cli.commands import add_operation_commands, create_operation
from davit_cli.context import CliContext
from davit_cli.errors import CliError
from davit_cli.logs import location_log
from davit_cli.options import F, create_options, parse_duration, parse_selector, split_list
from davit_cli.runtime import open_repository

KIND = Kind.APPLICATION_BACKUP


@click.group()
def backup() -> None:
    """ApplicationBackups: back up namespaces' resources and volumes."""


def build_spec(
    namespace: str,
    location: str,
    namespaces: str | None = None,
    selector: str | None = None,
    namespace_selector: str | None = None,
    resource_types: str | None = None,
    exclude_resource_types: str | None = None,
    reclaim_policy: str | None = None,
    volume_mode: str | None = None,
    pre_exec_rule: str | None = None,
    post_exec_rule: str | None = None,
    ttl: str | None = None,
    snapshot_move_data: bool = False,
) -> dict[str, Any]:
    """An ApplicationBackup's spec from the flags. Without --namespaces (and --namespace-selector) the
    backup covers its own namespace, which is also all a backup outside the admin namespace may cover."""
    if ttl is not None:
        parse_duration(ttl, "--ttl")
    spec: dict[str, Any] = {"backupLocation": location}
    listed = split_list(namespaces)
    if listed:
        spec["namespaces"] = listed
    elif not namespace_selector:
        spec["namespaces"] = [namespace]
    optional = {
        "selectors": parse_selector(selector),
        "namespaceSelector": namespace_selector,
        "resourceTypes": split_list(resource_types),
        "excludeResourceTypes": split_list(exclude_resource_types),
        "reclaimPolicy": reclaim_policy,
        "volumeMode": volume_mode,
        "snapshotMoveData": snapshot_move_data,
        "preExecRule": pre_exec_rule,
        "postExecRule": post_exec_rule,
        "ttl": ttl,
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


def spec_options(f: F) -> F:
    """The flags ``build_spec`` takes but ``--reclaim-policy`` (a schedule sets it on itself):
    ``--location`` (as ``location_name``) and what to back up and how."""
    for decorator in reversed(
        [
            click.option(
                "--location", "location_name", required=True, metavar="NAME", help="BackupLocation to use."
            ),
            click.option("--namespaces", metavar="NS,...", help="Namespaces to back up (default: -n's)."),
            click.option("--selector", metavar="K=V,...", help="Only resources with these labels."),
            click.option(
                "--namespace-selector", metavar="SELECTOR", help="Namespaces by label (admin namespace)."
            ),
            click.option(
                "--resource-types", metavar="TYPE,...", help="Only these kinds, e.g. ConfigMap,Deployment."
            ),
            click.option("--exclude-resource-types", metavar="TYPE,...", help="Leave these kinds out."),
            click.option("--volume-mode", type=click.Choice(["auto", "filesystem", "snapshot", "skip"])),
            click.option(
                "--snapshot-move-data",
                is_flag=True,
                help="Move snapshotted volumes' files into the location (the data mover).",
            ),
            click.option("--pre-exec-rule", metavar="RULE", help="Rule to run before the backup."),
            click.option("--post-exec-rule", metavar="RULE", help="Rule to run after the backup."),
            click.option(
                "--ttl", metavar="DURATION", help="Delete the backup this long after it finished, e.g. 72h."
            ),
        ]
    ):
        f = decorator(f)
    return f


@backup.command("create")
@click.argument("name")
@spec_options
@click.option(
    "--reclaim-policy", type=click.Choice(["Delete", "Retain"]), help="Remove the data with the CR?"
)
@create_options("backup")
def create(
    cli: CliContext, /, name: str, location_name: str, wait: bool, timeout: str | None, **flags: Any
) -> None:
    """Create the ApplicationBackup NAME.

    With --wait, exits 0 when the backup succeeded (fully or partially) and 1 when it failed, with the
    reason on stderr.
    """
    spec = build_spec(cli.resolved_namespace(), location_name, **flags)
    create_operation(cli, KIND, name, spec, wait, timeout)


def _stored_log_key(namespace: str, name: str, uid: str) -> str:
    return BackupRef(namespace, name, uid).log


def stored_contents(cli: CliContext, obj: RawObject) -> str:
    """``describe --details``: what the backup stored, from its manifest in its location: every resource
    by kind, and every volume with its mode and size."""
    meta, status = obj["metadata"], obj.get("status") or {}
    if status.get("stage") != "Final":
        raise CliError(f"backup {meta['namespace']}/{meta['name']} is still running: its contents are "
                       "listed once it is Final")  # fmt: skip
    repository = open_repository(cli, meta["namespace"], (obj.get("spec") or {}).get("backupLocation", ""))
    try:
        manifest = repository.read_manifest(BackupRef(meta["namespace"], meta["name"], meta["uid"]))
    except Exception as exc:
        raise CliError(
            f"cannot read the manifest of backup {meta['namespace']}/{meta['name']}: {exc}"
        ) from exc
    return output.stored_contents(manifest, cli.output)


add_operation_commands(
    backup,
    KIND,
    "backup",
    location_log(_stored_log_key),
    details=stored_contents,
    details_help="Also list every resource and volume the backup stored (read from its location).",
    describe_help="spec, status, volumes, conditions and Events",
    logs_help="from the location once the backup is Final, from the services' Redis while it runs",
    delete_help="its reclaimPolicy says whether the stored backup goes too",
)
