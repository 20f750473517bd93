"""``davit policy create|get|describe|delete``: SchedulePolicies, when schedules fire and how many of
their backups they keep.

SchedulePolicies are cluster-scoped: ``-n`` and ``-A`` mean nothing to them. ``create`` takes one flag
per policy type (``--interval 30``, ``--daily 10:14PM``, ``--weekly Sunday@10:14PM``, ``--monthly
15@10:14PM``, ``--cron "*/15 * * * *"``) and retention flags that apply to every type given, or to the
types they name: ``--retain 7`` keeps 7 of each, ``--retain daily=7,weekly=4`` names them, and
``--retain 7,weekly=4`` keeps 4 weekly and 7 of the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args

import click

from davit.api.types import KITCHEN_TIME, CronPolicy, PolicySpec, Weekday
from davit.backup import schedules
from davit.constants import Kind
from davit_cli import output
from davit_cli.commands import add_delete_command, add_describe_command, add_get_command
from davit_cli.context import CliContext, pass_cli
from davit_cli.objects import create_object, echo_created
from davit_cli.options import check_model, connection_options, output_option, parse_duration, split_list

KIND = Kind.SCHEDULE_POLICY
WEEKDAYS: tuple[str, ...] = get_args(Weekday)
T = TypeVar("T")

#: The flag to name when the API model refuses a field of the policy.
_FIELD_FLAGS: dict[str, str] = {
    "timeZone": "--time-zone",
    **{policy_type: f"--{policy_type}" for policy_type in schedules.POLICY_TYPES},
    "retain": "--retain",
    "expireAfter": "--expire-after",
    "minRetain": "--min-retain",
}


@click.group()
def policy() -> None:
    """SchedulePolicies: when schedules fire and how many backups they keep (cluster-scoped)."""


# --- parsing flags -------------------------------------------------------------------------------


def parse_time_of_day(value: str, flag: str) -> str:
    """``10:14pm`` → ``10:14PM``: the 12-hour clock the API takes; anything else is a usage error."""
    time = value.strip().upper()
    if not re.fullmatch(KITCHEN_TIME, time):
        raise click.BadParameter(f"{value!r} is not a time of day such as 10:14PM", param_hint=flag)
    return time


def _split_at(value: str, flag: str, shape: str) -> tuple[str, str]:
    when, sep, time = value.partition("@")
    if not sep or not when.strip():
        raise click.BadParameter(f"{value!r} is not {shape}", param_hint=flag)
    return when.strip(), parse_time_of_day(time, flag)


def parse_weekly(value: str) -> dict[str, Any]:
    """``Sunday@10:14PM`` (or ``sun@10:14pm``) → ``{"day": "Sunday", "time": "10:14PM"}``."""
    day, time = _split_at(value, "--weekly", "DAY@TIME such as Sunday@10:14PM")
    known = {d.lower(): d for d in WEEKDAYS}
    if day.lower() not in known:
        raise click.BadParameter(f"{day!r} is not a day of the week such as Sunday", param_hint="--weekly")
    return {"day": known[day.lower()], "time": time}


def parse_monthly(value: str) -> dict[str, Any]:
    """``15@10:14PM`` → ``{"date": 15, "time": "10:14PM"}``; a date past a month's end fires on its last
    day."""
    date, time = _split_at(value, "--monthly", "DATE@TIME such as 15@10:14PM")
    if not date.isdigit() or not 1 <= int(date) <= 31:
        raise click.BadParameter(f"{date!r} is not a day of the month (1 to 31)", param_hint="--monthly")
    return {"date": int(date), "time": time}


def parse_cron(value: str) -> dict[str, Any]:
    """``*/15  * * * *`` → ``{"schedule": "*/15 * * * *"}``, if the watcher can evaluate it."""
    expression = " ".join(value.split())
    try:
        # Checked before the model is, for the evaluator's words rather than a pattern's.
        schedules.validate("cron", CronPolicy.model_construct(schedule=expression), None)
    except schedules.ScheduleError as exc:
        raise click.BadParameter(str(exc), param_hint="--cron") from exc
    return {"schedule": expression}


def parse_count(value: str, flag: str) -> int:
    if not value.isdigit():
        raise click.BadParameter(f"{value!r} is not a whole number", param_hint=flag)
    return int(value)


def per_type(value: str | None, flag: str, given: list[str], parse: Callable[[str, str], T]) -> dict[str, T]:
    """A retention flag's value for each policy type in ``given``: ``V`` for all of them,
    ``type=V,...`` for the types named, or both (``V,type=V2``: V2 for that type, V for the rest). Naming
    a type not given is a usage error: the value would silently apply to nothing."""
    if value is None:
        return {}
    named: dict[str, T] = {}
    default: T | None = None
    for item in split_list(value) or []:
        if "=" not in item:
            if default is not None:
                raise click.BadParameter(f"{value!r} has more than one value for all types", param_hint=flag)
            default = parse(item, flag)
            continue
        policy_type, _, text = (part.strip() for part in item.partition("="))
        if policy_type not in schedules.POLICY_TYPES:
            known = ", ".join(schedules.POLICY_TYPES)
            raise click.BadParameter(f"{policy_type!r} is not a policy type ({known})", param_hint=flag)
        if policy_type not in given:
            raise click.BadParameter(f"{policy_type!r} names no policy: add --{policy_type}", param_hint=flag)
        named[policy_type] = parse(text, flag)
    values = {policy_type: default for policy_type in given} if default is not None else {}
    values.update(named)
    return values


def _duration(value: str, flag: str) -> str:
    parse_duration(value, flag)
    return value


def check_time_zone(value: str) -> str:
    """An IANA time zone name, as the watcher resolves it."""
    try:
        schedules.zone(value)
    except schedules.ScheduleError as exc:
        raise click.BadParameter(str(exc), param_hint="--time-zone") from exc
    return value


def build_policy(
    interval: int | None = None,
    daily: str | None = None,
    weekly: str | None = None,
    monthly: str | None = None,
    cron: str | None = None,
    retain: str | None = None,
    expire_after: str | None = None,
    min_retain: str | None = None,
    time_zone: str | None = None,
) -> dict[str, Any]:
    """A SchedulePolicy's ``policy:`` from the flags, checked as the API server would check it. Every
    problem is a usage error naming its flag."""
    entries: dict[str, dict[str, Any]] = {}
    if interval is not None:
        entries["interval"] = {"intervalMinutes": interval}
    if daily is not None:
        entries["daily"] = {"time": parse_time_of_day(daily, "--daily")}
    if weekly is not None:
        entries["weekly"] = parse_weekly(weekly)
    if monthly is not None:
        entries["monthly"] = parse_monthly(monthly)
    if cron is not None:
        entries["cron"] = parse_cron(cron)
    if not entries:
        raise click.UsageError("give at least one of --interval, --daily, --weekly, --monthly, --cron")
    given = list(entries)
    retention: Mapping[str, dict[str, Any]] = {
        "retain": per_type(retain, "--retain", given, parse_count),
        "expireAfter": per_type(expire_after, "--expire-after", given, _duration),
        "minRetain": per_type(min_retain, "--min-retain", given, parse_count),
    }
    for field, values in retention.items():
        for policy_type, value in values.items():
            entries[policy_type][field] = value
    spec: dict[str, Any] = {}
    if time_zone is not None:
        spec["timeZone"] = check_time_zone(time_zone)
    spec.update(entries)
    checked = check_model(PolicySpec, spec, _FIELD_FLAGS)
    # What the model cannot see: a cron expression that does not parse or matches no date ever.
    for policy_type, entry in schedules.entries(checked).items():
        try:
            schedules.validate(policy_type, entry, checked.time_zone)
        except schedules.ScheduleError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{policy_type}") from exc
    return spec


# --- commands ------------------------------------------------------------------------------------


@policy.command("create")
@click.argument("name")
@click.option("--interval", type=int, metavar="MINUTES", help="Every this many minutes.")
@click.option("--daily", metavar="TIME", help="Every day at TIME, e.g. 10:14PM.")
@click.option("--weekly", metavar="DAY@TIME", help="Every week, e.g. Sunday@10:14PM.")
@click.option("--monthly", metavar="DATE@TIME", help="Every month, e.g. 15@10:14PM (31: its last day).")
@click.option("--cron", metavar="EXPR", help='A cron expression, e.g. "*/15 * * * *".')
@click.option(
    "--retain", metavar="N|TYPE=N,...", help="Successful backups to keep: of every type, or per type."
)
@click.option(
    "--expire-after", metavar="DURATION|TYPE=DURATION,...", help="Remove backups older than this, e.g. 168h."
)
@click.option("--min-retain", metavar="N|TYPE=N,...", help="With --expire-after: never keep fewer than this.")
@click.option("--time-zone", metavar="ZONE", help="IANA time zone of the times (default UTC).")
@connection_options
@output_option
@pass_cli
def create(cli: CliContext, /, name: str, **flags: Any) -> None:
    """Create the SchedulePolicy NAME with at least one of --interval, --daily, --weekly, --monthly and
    --cron.

    --retain, --expire-after and --min-retain take one value for every type given (--retain 7), values
    per type (--retain daily=7,weekly=4), or both (--retain 7,weekly=4: 4 weekly, 7 of the others).
    """
    spec = build_policy(**flags)
    echo_created(cli, create_object(cli, KIND, "", name, {"policy": spec}))


add_get_command(policy, KIND, output.policy_table, "schedule policies")
add_describe_command(
    policy, KIND, output.describe_policy, "its time zone, every entry with its retention and next trigger"
)
add_delete_command(policy, KIND, "policy", "schedules that name it fire nothing until it exists again")
