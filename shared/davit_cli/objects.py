"""Creating Davit's objects from the command line and printing them (``get``, ``describe``, created)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import click

from davit import constants, timeutil
from davit.api.objects import CLUSTER_SCOPED, RawObject, describe_ref
from davit.constants import Kind
from davit_cli import output
from davit_cli.context import CliContext
from davit_cli.errors import CliError

#: How help texts name several objects of a kind whose plural is not the kind plus "s".
_KIND_PLURALS: dict[Kind, str] = {Kind.SCHEDULE_POLICY: "SchedulePolicies"}


def kind_plural(kind: Kind) -> str:
    return _KIND_PLURALS.get(kind, f"{kind.value}s")


def create_object(cli: CliContext, kind: Kind, namespace: str, name: str, content: RawObject) -> RawObject:
    """Create the object ``name`` of ``kind`` whose top-level fields (``spec``, ``location``, ``policy``)
    are ``content``; return it as the API server stored it."""
    metadata = {"name": name} if kind in CLUSTER_SCOPED else {"name": name, "namespace": namespace}
    body = {"apiVersion": constants.API_GROUP_VERSION, "kind": kind.value, "metadata": metadata, **content}
    return cli.objects().create(kind, namespace, body)


def echo_changed(cli: CliContext, obj: RawObject, verb: str) -> None:
    """``<kind> <namespace>/<name> <verb>`` for a table, the stored object for JSON and YAML."""
    if cli.output == "table":
        meta = obj["metadata"]
        click.echo(f"{describe_ref(Kind(obj['kind']), meta.get('namespace', ''), meta['name'])} {verb}")
    else:
        click.echo(output.render_data(obj, cli.output))


def echo_created(cli: CliContext, created: RawObject) -> None:
    echo_changed(cli, created, "created")


def now() -> datetime.datetime:
    return timeutil.utcnow()


def emit_objects(
    cli: CliContext,
    objs: list[RawObject],
    table: Callable[[list[RawObject], datetime.datetime, bool], str],
    single: bool,
    empty: str,
) -> None:
    """Print ``objs`` in the chosen format: one object as itself, several as a ``List``."""
    if cli.output == "table":
        if not objs:
            click.echo(empty, err=True)
            return
        click.echo(table(objs, now(), cli.all_namespaces))
        return
    value: Any = objs[0] if single else output.as_list(objs)
    click.echo(output.render_data(value, cli.output))


def get_and_emit(
    cli: CliContext,
    kind: Kind,
    name: str | None,
    table: Callable[[list[RawObject], datetime.datetime, bool], str],
    plural: str,
) -> None:
    """``<noun> get [NAME]``: the object NAME, or every object of ``kind`` in scope, printed."""
    objects = cli.objects()
    cluster_scoped = kind in CLUSTER_SCOPED
    namespace = cli.namespace_for(kind)
    if name and cli.selector:
        raise CliError("give a NAME or a selector (-l), not both")
    if name:
        objs = [objects.require(kind, namespace, name)]
    else:
        scope = None if cli.all_namespaces or cluster_scoped else namespace
        objs = objects.list_all(kind, scope, label_selector=cli.selector)
    where = "any namespace" if cli.all_namespaces else f"namespace {namespace}"
    matching = f" matching {cli.selector}" if cli.selector else ""
    empty = f"No {plural}{matching} found." if cluster_scoped else f"No {plural}{matching} found in {where}."
    emit_objects(cli, objs, table, bool(name), empty)


def describe_and_echo(
    cli: CliContext,
    kind: Kind,
    name: str,
    render: Callable[[RawObject, list[RawObject], datetime.datetime], str],
) -> RawObject:
    """``<noun> describe NAME``: the object and its Events, as ``render`` writes them; the object."""
    objects = cli.objects()
    obj = objects.require(kind, cli.namespace_for(kind), name)
    click.echo(render(obj, objects.events(obj), now()))
    return obj
