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
    backup_namespace: str | None = None,
    resource_modifier_configmap: str | None = None,
    preserve_node_ports: bool = False,
    post_exec_rule: str | None = None,
    hook_timeout: str | None = None,
    in_place_volumes: bool = False,
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
        "backupNamespace": backup_namespace,
        "resourceModifier": _config_map(resource_modifier_configmap),
        "preserveNodePorts": preserve_node_ports,
        "postExecRule": post_exec_rule,
        "hookTimeout": hook_timeout,
        "inPlaceVolumes": in_place_volumes,
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


def _config_map(name: str | None) -> dict[str, str] | None:
    return {"kind": "ConfigMap", "name": name} if name else None


@restore.command("create")
@click.argument("name")
@click.option("--from-backup", "backup_name", required=True, metavar="BACKUP", help="Backup to restore.")
@click.option("--location", "location_name", required=True, metavar="NAME", help="BackupLocation it is in.")
@click.option("--namespace-mapping", metavar="SRC:DST,...", help="Restore namespace SRC into DST.")
@click.option(
    "--replace-policy",
    type=click.Choice(["Retain", "Delete", "Update"]),
    help="Objects that exist already: keep them (Retain, the default), delete and create them again "
    "(Delete), or patch them to the backup's version in place (Update).",
)
@click.option("--resource-types", metavar="TYPE,...", help="Only these kinds, e.g. ConfigMap,Deployment.")
@click.option("--storage-class-mapping", metavar="OLD:NEW,...", help="Give volumes another StorageClass.")
@click.option("--node-mapping", metavar="OLD:NEW,...", help="Node-bound volumes of node OLD go to NEW.")
@click.option("--dry-run", is_flag=True, default=False, help="Report what would be restored; change nothing.")
@click.option(
    "--backup-namespace",
    metavar="NS",
    help="Namespace of the backup (default: the restore's); another only from the admin namespace.",
)
@click.option(
    "--resource-modifier-configmap",
    metavar="NAME",
    help="ConfigMap (in the restore's namespace) of JSON patches to apply to the objects before creating.",
)
@click.option(
    "--preserve-node-ports", is_flag=True, default=False, help="Keep Services' node ports as backed up."
)
@click.option(
    "--post-exec-rule",
    metavar="RULE",
    help="Rule (in the restore's namespace) to run in the restored pods once they run.",
)
@click.option(
    "--hook-timeout", metavar="DURATION", help="How long the restore's hooks wait for its pods (default 5m)."
)
@click.option(
    "--in-place-volumes",
    is_flag=True,
    default=False,
    help="Write the volumes' data into the existing claims, their workloads stopped meanwhile; no object "
    "is created or changed.",
)
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
    describe_help="spec, status, resources restored/retained/replaced/updated/failed per kind, volumes, "
    "conditions and Events",
    logs_help="from the backup's location once the restore is Final, from the services' Redis while it runs",
    delete_help="what it restored stays",
)
