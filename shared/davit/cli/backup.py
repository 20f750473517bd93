"""``davit backup create|get|describe|logs|delete``: ApplicationBackups."""

from __future__ import annotations

from typing import Any

import click

from davit import constants
from davit.cli import output
from davit.cli.common import (
    CliContext,
    CliError,
    all_namespaces_option,
    connection_options,
    describe_ref,
    emit_objects,
    get_and_emit,
    now,
    open_repository,
    output_option,
    parse_duration,
    parse_selector,
    pass_cli,
    redis_option,
    split_list,
    wait_final,
    wait_gone,
)
from davit.constants import Kind

KIND = Kind.APPLICATION_BACKUP
RawObject = dict[str, Any]

_TIMEOUT_HELP = "With --wait: give up after this long, e.g. 30m (default: wait as long as it takes)."


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
        "preExecRule": pre_exec_rule,
        "postExecRule": post_exec_rule,
        "ttl": ttl,
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


def _finish(cli: CliContext, obj: RawObject) -> None:
    """Print the finished backup; exit 1 with its reason when it failed."""
    _emit_one(cli, obj)
    meta, status = obj["metadata"], obj.get("status") or {}
    ref = describe_ref(KIND, meta["namespace"], meta["name"])
    if status.get("status") == "Failed":
        raise CliError(f"{ref} failed: {status.get('reason') or 'no reason given'}")
    if status.get("status") == "PartialSuccess":
        click.echo(f"Warning: {ref} partially succeeded: {status.get('reason') or ''}".rstrip(), err=True)


def _emit_one(cli: CliContext, obj: RawObject) -> None:
    emit_objects(cli, [obj], output.backup_table, True, "")


@backup.command("create")
@click.argument("name")
@click.option("--location", "location_name", required=True, metavar="NAME", help="BackupLocation to use.")
@click.option("--namespaces", metavar="NS,...", help="Namespaces to back up (default: -n's).")
@click.option("--selector", metavar="K=V,...", help="Only resources with these labels.")
@click.option("--namespace-selector", metavar="SELECTOR", help="Namespaces by label (admin namespace).")
@click.option("--resource-types", metavar="TYPE,...", help="Only these kinds, e.g. ConfigMap,Deployment.")
@click.option("--exclude-resource-types", metavar="TYPE,...", help="Leave these kinds out.")
@click.option(
    "--reclaim-policy", type=click.Choice(["Delete", "Retain"]), help="Remove the data with the CR?"
)
@click.option("--volume-mode", type=click.Choice(["auto", "filesystem", "snapshot", "skip"]))
@click.option("--pre-exec-rule", metavar="RULE", help="Rule to run before the backup.")
@click.option("--post-exec-rule", metavar="RULE", help="Rule to run after the backup.")
@click.option("--ttl", metavar="DURATION", help="Delete the backup this long after it finished, e.g. 72h.")
@click.option("--wait", is_flag=True, default=False, help="Show progress until the backup has finished.")
@click.option("--timeout", metavar="DURATION", help=_TIMEOUT_HELP)
@connection_options
@output_option
@pass_cli
def create(
    cli: CliContext, /, name: str, location_name: str, wait: bool, timeout: str | None, **flags: Any
) -> None:
    """Create the ApplicationBackup NAME.

    With --wait, exits 0 when the backup succeeded (fully or partially) and 1 when it failed, with the
    reason on stderr.
    """
    limit = parse_duration(timeout, "--timeout") if timeout else None
    namespace = cli.resolved_namespace()
    body = {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": KIND.value,
        "metadata": {"name": name, "namespace": namespace},
        "spec": build_spec(namespace, location_name, **flags),
    }
    created = cli.objects().create(KIND, namespace, body)
    if not wait:
        if cli.output == "table":
            click.echo(f"applicationbackup {namespace}/{name} created")
        else:
            click.echo(output.render_data(created, cli.output))
        return
    _finish(cli, wait_final(cli, KIND, namespace, name, limit))


@backup.command("get")
@click.argument("name", required=False)
@connection_options
@output_option
@all_namespaces_option
@pass_cli
def get(cli: CliContext, name: str | None) -> None:
    """List ApplicationBackups, or show the one called NAME."""
    get_and_emit(cli, KIND, name, output.backup_table, "backups")


@backup.command("describe")
@click.argument("name")
@connection_options
@pass_cli
def describe(cli: CliContext, name: str) -> None:
    """Show the ApplicationBackup NAME: spec, status, volumes, conditions and Events."""
    objects = cli.objects()
    obj = objects.require(KIND, cli.resolved_namespace(), name)
    click.echo(output.describe_backup(obj, objects.events(obj), now()))


def _redis_lines(redis_url: str, uid: str) -> list[str]:
    import redis

    from davit.opstate import OperationState

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        return OperationState(client, uid).log_lines()
    finally:
        client.close()


def operation_log(cli: CliContext, obj: RawObject) -> list[str]:
    """The backup's log: from its location once it is Final, from Redis while it runs (or when it
    ended before its log reached the location)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = obj.get("status") or {}
    ref_text = describe_ref(KIND, meta["namespace"], meta["name"])
    redis_url = cli.resolved_redis_url()
    if status.get("stage") != "Final":
        if not redis_url:
            raise CliError(
                f"{ref_text} is still running (stage {status.get('stage') or 'not yet accepted'}); "
                "its log is in the services' Redis until it finishes: pass --redis-url or set $REDIS_URL"
            )
        lines = _redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
        # It may have finished (and moved its log to the location) since we read it.
        latest = cli.objects().get(KIND, meta["namespace"], meta["name"])
        if latest is None or (latest.get("status") or {}).get("stage") != "Final":
            return []
        obj, status = latest, latest.get("status") or {}
    from davit.format.layout import BackupRef

    location_error = None
    try:
        repository = open_repository(cli, meta["namespace"], spec.get("backupLocation", ""))
        lines = repository.read_log(BackupRef(meta["namespace"], meta["name"], meta["uid"]))
    except CliError as exc:
        location_error, lines = exc.message, []
    if lines:
        return list(lines)
    if redis_url:
        lines = _redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
    hint = "" if redis_url else " (pass --redis-url to look in the services' Redis)"
    if location_error:
        raise CliError(f"cannot read the log of {ref_text}: {location_error}{hint}")
    raise CliError(
        f"{ref_text} ended {status.get('status')} without a log in its location "
        f"{spec.get('backupLocation')}{hint}"
    )


@backup.command("logs")
@click.argument("name")
@connection_options
@redis_option
@pass_cli
def logs(cli: CliContext, name: str) -> None:
    """Print the log of the ApplicationBackup NAME, one JSON object per line."""
    obj = cli.objects().require(KIND, cli.resolved_namespace(), name)
    for line in operation_log(cli, obj):
        rendered = output.log_line(line)
        if rendered is not None:
            click.echo(rendered)


@backup.command("delete")
@click.argument("name")
@click.option("--wait", is_flag=True, default=False, help="Return once the backup is gone.")
@click.option("--timeout", metavar="DURATION", help=_TIMEOUT_HELP)
@connection_options
@pass_cli
def delete(cli: CliContext, name: str, wait: bool, timeout: str | None) -> None:
    """Delete the ApplicationBackup NAME (its reclaimPolicy says whether the stored backup goes too)."""
    limit = parse_duration(timeout, "--timeout") if timeout else None
    namespace = cli.resolved_namespace()
    cli.objects().delete(KIND, namespace, name)
    if wait:
        wait_gone(cli, KIND, namespace, name, limit)
    click.echo(f"applicationbackup {namespace}/{name} deleted")
