"""``davit schedule create|get|describe|suspend|resume|delete``: ApplicationBackupSchedules, backups made
when their SchedulePolicy says and kept as long as it says."""

from __future__ import annotations

from typing import Any

import click

from davit.api.types import ApplicationBackupScheduleSpec
from davit.constants import Kind
from davit_cli import backup, output
from davit_cli.commands import add_delete_command, add_get_command
from davit_cli.context import CliContext, pass_cli
from davit_cli.objects import create_object, echo_changed, echo_created, now
from davit_cli.options import check_model, connection_options, output_option

KIND = Kind.APPLICATION_BACKUP_SCHEDULE

#: The flag to name when the API model refuses a field of the schedule or of its backups' spec.
_FIELD_FLAGS: dict[str, str] = {
    "schedulePolicyName": "--policy",
    "reclaimPolicy": "--reclaim-policy",
    "backupLocation": "--location",
    "namespaces": "--namespaces",
    "selectors": "--selector",
    "namespaceSelector": "--namespace-selector",
    "excludeNamespaces": "--exclude-namespaces",
    "resourceTypes": "--resource-types",
    "excludeResourceTypes": "--exclude-resource-types",
    "volumeMode": "--volume-mode",
    "preExecRule": "--pre-exec-rule",
    "postExecRule": "--post-exec-rule",
    "ttl": "--ttl",
}


@click.group()
def schedule() -> None:
    """ApplicationBackupSchedules: backups made when a SchedulePolicy says, kept as it says."""


def build_spec(
    namespace: str,
    policy: str,
    location: str,
    reclaim_policy: str | None = None,
    suspend: bool = False,
    **flags: Any,
) -> dict[str, Any]:
    """An ApplicationBackupSchedule's spec from the flags: its backups' spec is what ``backup create``
    makes of the same flags. ``reclaim_policy`` is the schedule's own: the watcher sets it on every
    backup the schedule makes."""
    spec: dict[str, Any] = {
        "schedulePolicyName": policy,
        "suspend": suspend,
        "template": {"spec": backup.build_spec(namespace, location, **flags)},
    }
    if reclaim_policy:
        spec["reclaimPolicy"] = reclaim_policy
    check_model(ApplicationBackupScheduleSpec, spec, _FIELD_FLAGS)
    return spec


def _warn_if_policy_missing(cli: CliContext, policy: str) -> None:
    """A courtesy: the policy may be created later, and the user may not be allowed to read policies."""
    from davit.kube.client import ApiException

    try:
        missing = cli.objects().get(Kind.SCHEDULE_POLICY, "", policy) is None
    except ApiException:
        return
    if missing:
        click.echo(
            f"Warning: SchedulePolicy {policy} does not exist (yet): nothing fires until it does", err=True
        )


@schedule.command("create")
@click.argument("name")
@click.option("--policy", required=True, metavar="POLICY", help="SchedulePolicy saying when to back up.")
@backup.spec_options
@click.option(
    "--reclaim-policy",
    type=click.Choice(["Delete", "Retain"]),
    help="Whether the stored data of the schedule's backups goes with them (Delete) or stays (Retain).",
)
@click.option(
    "--suspend", is_flag=True, default=False, help="Create it suspended: nothing fires until resumed."
)
@connection_options
@output_option
@pass_cli
def create(cli: CliContext, /, name: str, policy: str, location_name: str, **flags: Any) -> None:
    """Create the ApplicationBackupSchedule NAME: a backup as --location and the other flags describe
    (as for 'backup create') each time the SchedulePolicy --policy fires."""
    namespace = cli.resolved_namespace()
    spec = build_spec(namespace, policy, location_name, **flags)
    _warn_if_policy_missing(cli, policy)
    echo_created(cli, create_object(cli, KIND, namespace, name, {"spec": spec}))


add_get_command(schedule, KIND, output.schedule_table, "backup schedules")


@schedule.command("describe")
@click.argument("name")
@connection_options
@pass_cli
def describe(cli: CliContext, name: str) -> None:
    """Show the ApplicationBackupSchedule NAME: spec, last success, each policy type with the backups
    kept, its last success and its next trigger, conditions and Events."""
    objects = cli.objects()
    obj = objects.require(KIND, cli.resolved_namespace(), name)
    policy_name = (obj.get("spec") or {}).get("schedulePolicyName")
    policy = objects.get(Kind.SCHEDULE_POLICY, "", policy_name) if policy_name else None
    click.echo(output.describe_schedule(obj, policy, objects.events(obj), now()))


def _add_suspend_command(verb: str, suspend: bool, done: str, help_text: str) -> None:
    """``suspend`` and ``resume``: set ``spec.suspend``, leave the rest as it is."""

    @schedule.command(verb, help=help_text)
    @click.argument("name")
    @connection_options
    @output_option
    @pass_cli
    def command(cli: CliContext, name: str) -> None:
        patched = cli.objects().patch(KIND, cli.resolved_namespace(), name, {"spec": {"suspend": suspend}})
        echo_changed(cli, patched, done)


_add_suspend_command(
    "suspend",
    True,
    "suspended",
    "Suspend the ApplicationBackupSchedule NAME: it starts no backups until resumed.",
)
_add_suspend_command(
    "resume",
    False,
    "resumed",
    "Resume the ApplicationBackupSchedule NAME: it starts backups again as its SchedulePolicy says.",
)


add_delete_command(schedule, KIND, "schedule", "the backups it made stay")
