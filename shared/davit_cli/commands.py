"""The commands backups, restores and clones share: create, get, describe, logs, delete."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import click

from davit.api.objects import RawObject, describe_ref
from davit.constants import Kind
from davit_cli import output
from davit_cli.context import CliContext, pass_cli
from davit_cli.errors import CliError
from davit_cli.objects import (
    create_object,
    describe_and_echo,
    echo_created,
    emit_objects,
    get_and_emit,
    kind_plural,
)
from davit_cli.options import connection_options, get_options, redis_option, timeout_seconds, wait_options
from davit_cli.waiting import wait_final, wait_gone


def finish_operation(cli: CliContext, kind: Kind, obj: RawObject) -> None:
    """Print the finished operation; exit 1 with its reason when it failed. A partial success is a
    warning on stderr and exit 0: what succeeded is there to use, and describe names what did not."""
    emit_objects(cli, [obj], output.operation_table, True, "")
    meta, status = obj["metadata"], obj.get("status") or {}
    ref = describe_ref(kind, meta["namespace"], meta["name"])
    if status.get("status") == "Failed":
        raise CliError(f"{ref} failed: {status.get('reason') or 'no reason given'}")
    if status.get("status") == "PartialSuccess":
        click.echo(f"Warning: {ref} partially succeeded: {status.get('reason') or ''}".rstrip(), err=True)


def create_operation(
    cli: CliContext, kind: Kind, name: str, spec: RawObject, wait: bool, timeout: str | None
) -> None:
    """``<noun> create NAME``: create the operation; with ``wait``, follow it to Final and finish as
    ``finish_operation`` does. Every flag is checked before anything is created."""
    limit = timeout_seconds(timeout)
    namespace = cli.resolved_namespace()
    created = create_object(cli, kind, namespace, name, {"spec": spec})
    if not wait:
        echo_created(cli, created)
        return
    finish_operation(cli, kind, wait_final(cli, kind, namespace, name, limit))


def add_get_command(
    group: click.Group,
    kind: Kind,
    table: Callable[[list[RawObject], datetime.datetime, bool], str],
    plural: str,
) -> None:
    """``get [NAME]`` for ``kind``, printing tables with ``table``; ``plural`` names the objects when
    there are none."""

    @group.command("get", help=f"List {kind_plural(kind)}, or show the one called NAME.")
    @get_options
    def get(cli: CliContext, name: str | None) -> None:
        get_and_emit(cli, kind, name, table, plural)


#: What ``describe --details`` adds: more text about the object, read from wherever it is kept.
Details = Callable[[CliContext, RawObject], str]


def add_describe_command(
    group: click.Group,
    kind: Kind,
    render: Callable[[RawObject, list[RawObject], datetime.datetime], str],
    describe_help: str,
    details: Details | None = None,
    details_help: str = "",
) -> None:
    """``describe NAME`` for ``kind``: the object and its Events as ``render`` writes them; with
    ``details``, a ``--details`` flag that adds what it returns."""

    def describe(cli: CliContext, name: str, details_wanted: bool = False) -> None:
        obj = describe_and_echo(cli, kind, name, render)
        if details is not None and details_wanted:
            click.echo(details(cli, obj))

    command = connection_options(pass_cli(describe))
    if details is not None:
        command = click.option("--details", "details_wanted", is_flag=True, help=details_help)(command)
    group.command("describe", help=f"Show the {kind.value} NAME: {describe_help}.")(
        click.argument("name")(command)
    )


def add_delete_command(group: click.Group, kind: Kind, noun: str, delete_help: str) -> None:
    """``delete NAME [--wait]`` for ``kind``; ``delete_help`` says what deleting one leaves behind."""

    @group.command("delete", help=f"Delete the {kind.value} NAME ({delete_help}).")
    @click.argument("name")
    @wait_options(f"Return once the {noun} is gone.")
    @connection_options
    @pass_cli
    def delete(cli: CliContext, name: str, wait: bool, timeout: str | None) -> None:
        limit = timeout_seconds(timeout)
        namespace = cli.namespace_for(kind)
        cli.objects().delete(kind, namespace, name)
        if wait:
            wait_gone(cli, kind, namespace, name, limit)
        click.echo(f"{describe_ref(kind, namespace, name)} deleted")


def add_operation_commands(
    group: click.Group,
    kind: Kind,
    noun: str,
    log_lines: Callable[[CliContext, RawObject], list[str]],
    *,
    describe_help: str,
    logs_help: str,
    delete_help: str,
    details: Details | None = None,
    details_help: str = "",
) -> None:
    """Add ``get``, ``describe``, ``logs`` and ``delete`` for ``kind`` to ``group``: the same for
    backups, restores and clones but for where the log is and what deleting one leaves behind."""
    add_get_command(group, kind, output.operation_table, f"{noun}s")
    add_describe_command(group, kind, output.describe_operation, describe_help, details, details_help)

    @group.command(
        "logs", help=f"Print the log of the {kind.value} NAME, one JSON line per event; {logs_help}."
    )
    @click.argument("name")
    @connection_options
    @redis_option
    @pass_cli
    def logs(cli: CliContext, name: str) -> None:
        obj = cli.objects().require(kind, cli.resolved_namespace(), name)
        for line in log_lines(cli, obj):
            rendered = output.log_line(line)
            if rendered is not None:
                click.echo(rendered)

    add_delete_command(group, kind, noun, delete_help)
