"""``davit backup create|get|describe|logs|delete|download``: ApplicationBackups."""

from __future__ import annotations

from typing import Any

import click

from davit.api.objects import RawObject
from davit.backup import selection
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit_cli import output
from davit_cli.commands import add_operation_commands, create_operation
from davit_cli.context import CliContext, pass_cli
from davit_cli.errors import CliError
from davit_cli.extract import location_options, open_backup, open_location, write_resource_files
from davit_cli.logs import location_log
from davit_cli.options import (
    F,
    connection_options,
    create_options,
    output_option,
    parse_duration,
    parse_selector,
    split_list,
)
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
    exclude_namespaces: str | None = None,
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
    for flag, entries in (("--namespaces", listed), ("--exclude-namespaces", split_list(exclude_namespaces))):
        for entry in entries or []:
            problem = selection.namespace_pattern_problem(entry)
            if problem:
                raise click.BadParameter(problem, param_hint=flag)
    if listed:
        spec["namespaces"] = listed
    elif not namespace_selector:
        spec["namespaces"] = [namespace]
    optional = {
        "selectors": parse_selector(selector),
        "namespaceSelector": namespace_selector,
        "excludeNamespaces": split_list(exclude_namespaces),
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
            click.option(
                "--namespaces",
                metavar="NS,...",
                help="Namespaces to back up (default: -n's); glob patterns such as '*' or 'team-*' from "
                "the admin namespace.",
            ),
            click.option(
                "--exclude-namespaces",
                metavar="NS,...",
                help="Namespaces (or glob patterns) left out of --namespaces and --namespace-selector.",
            ),
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


@backup.command("download")
@click.argument("name")
@click.option("--target", required=True, metavar="DIR", help="Directory to write into (created if missing).")
@location_options
@connection_options
@output_option
@pass_cli
def download(
    cli: CliContext, name: str, target: str, location_name: str | None, location_file: str | None
) -> None:
    """Write the Kubernetes objects of a backup as YAML files, one per object, read from its location:
    DIR/<namespace>/<Kind>[.<group>]/<name>.yaml, cluster-scoped objects under DIR/_cluster/. Objects are
    written as the backup stored them (status and uid included).

    Without --location or --location-file, NAME is the ApplicationBackup in -n's namespace and its
    location is read from the cluster. With either, NAME names the backup in that location as 'repo ls
    --backup' does (NAME, NAMESPACE/NAME, NAMESPACE/NAME/UID or a UID): --location-file needs no cluster.
    Names from the location that would lead outside DIR stop the download before anything is written."""
    from davit.format.layout import ref_from_path
    from davit.format.resource_files import UnsafeResource, plan_files

    if location_name is None and location_file is None:
        namespace = cli.resolved_namespace()
        obj = cli.objects().require(KIND, namespace, name)
        meta, status = obj["metadata"], obj.get("status") or {}
        if status.get("stage") != "Final" or status.get("status") not in ("Successful", "PartialSuccess"):
            raise CliError(f"backup {namespace}/{name} has not finished successfully: nothing to download")
        ref = ref_from_path(str(status.get("backupPath") or "")) or BackupRef(
            namespace, meta["name"], meta["uid"]
        )
        repository = open_location(cli, (obj.get("spec") or {}).get("backupLocation", ""), None)
        manifest = repository.read_manifest(ref)
    else:
        repository = open_location(cli, location_name, location_file)
        ref, manifest = open_backup(repository, name, cli.namespace)
    objects: list[RawObject] = []
    for part in manifest.get("parts") or []:
        objects.extend(repository.read_part(str(part.get("key"))))
    try:
        files = plan_files(objects)
    except UnsafeResource as exc:
        raise CliError(f"refusing to download backup {ref.namespace}/{ref.name}: {exc}") from exc
    write_resource_files(target, files, lambda o: output.to_yaml(o) + "\n")
    backup_id = f"{ref.namespace}/{ref.name}/{ref.uid}"
    if cli.output != "table":
        result = {"backup": backup_id, "target": target, "files": [f.path for f in files]}
        click.echo(output.to_yaml(result) if cli.output == "yaml" else output.to_json(result))
        return
    click.echo(f"{len(files)} objects of backup {backup_id} written to {target}")
