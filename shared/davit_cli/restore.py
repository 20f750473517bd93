"""``davit restore create|get|describe|logs|delete``: ApplicationRestores."""

from __future__ import annotations

from typing import Any

import click

from davit.api.types import DNS1123_LABEL, DNS1123_SUBDOMAIN
from davit.constants import Kind
from davit.format.layout import restore_log
from davit_cli.commands import add_operation_commands, create_operation
from davit_cli.context import CliContext
from davit_cli.logs import location_log
from davit_cli.options import create_options, parse_mapping, split_list

KIND = Kind.APPLICATION_RESTORE


@click.group()
def restore() -> None:
    """ApplicationRestores: bring a backup's resources and volumes back."""


def build_spec(
    backup_name: str,
    location: str,
    namespace_mapping: str | None = None,
    replace_policy: str | None = None,
    resource_types: str | None = None,
    storage_class_mapping: str | None = None,
    node_mapping: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """An ApplicationRestore's spec from the flags; a malformed mapping is a usage error naming its flag.
    Namespaces are DNS-1123 labels, storage classes and nodes DNS-1123 subdomains."""
    spec: dict[str, Any] = {"backupName": backup_name, "backupLocation": location}
    optional = {
        "namespaceMapping": parse_mapping(namespace_mapping, "--namespace-mapping", DNS1123_LABEL),
        "replacePolicy": replace_policy,
        "resourceTypes": split_list(resource_types),
        "storageClassMapping": parse_mapping(
            storage_class_mapping, "--storage-class-mapping", DNS1123_SUBDOMAIN
        ),
        "nodeMapping": parse_mapping(node_mapping, "--node-mapping", DNS1123_SUBDOMAIN),
        "dryRun": dry_run,
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


@restore.command("create")
@click.argument("name")
@click.option("--from-backup", "backup_name", required=True, metavar="BACKUP", help="Backup to restore.")
@click.option("--location", "location_name", required=True, metavar="NAME", help="BackupLocation it is in.")
@click.option("--namespace-mapping", metavar="SRC:DST,...", help="Restore namespace SRC into DST.")
@click.option(
    "--replace-policy",
    type=click.Choice(["Retain", "Delete"]),
    help="Objects that exist already: keep them (Retain, the default) or replace them (Delete).",
)
@click.option("--resource-types", metavar="TYPE,...", help="Only these kinds, e.g. ConfigMap,Deployment.")
@click.option("--storage-class-mapping", metavar="OLD:NEW,...", help="Give volumes another StorageClass.")
@click.option("--node-mapping", metavar="OLD:NEW,...", help="Node-bound volumes of node OLD go to NEW.")
@click.option("--dry-run", is_flag=True, default=False, help="Report what would be restored; change nothing.")
@create_options("restore")
def create(
    cli: CliContext,
    /,
    name: str,
    backup_name: str,
    location_name: str,
    wait: bool,
    timeout: str | None,
    **flags: Any,
) -> None:
    """Create the ApplicationRestore NAME of the backup given by --from-backup.

    With --wait, exits 0 when the restore succeeded (fully or partially) and 1 when it failed, with the
    reason on stderr.
    """
    create_operation(cli, KIND, name, build_spec(backup_name, location_name, **flags), wait, timeout)


add_operation_commands(
    restore,
    KIND,
    "restore",
    location_log(restore_log),
    describe_help="spec, status, resources restored/retained/replaced/failed per kind, volumes, "
    "conditions and Events",
    logs_help="from the backup's location once the restore is Final, from the services' Redis while it runs",
    delete_help="what it restored stays",
)
