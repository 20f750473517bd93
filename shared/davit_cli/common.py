"""What every ``davit`` command shares: the global options, the cluster connection, reading and writing
Davit's objects, the ``--wait`` loop, and errors that end in one line on stderr."""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from davit import constants, timeutil
from davit.api.objects import CLUSTER_SCOPED, RawObject, describe_ref
from davit.api.types import DNS1123_LABEL, DNS1123_SUBDOMAIN, DURATION
from davit.constants import Kind
from davit_cli import output

if TYPE_CHECKING:
    from davit.kube.operations import Operations

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Who the API server records as having written the fields the CLI sets.
FIELD_MANAGER = "davit-cli"
#: How often ``--wait`` re-reads the object.
POLL_SECONDS = 0.5


class CliError(click.ClickException):
    """A failure to report as one line on stderr, exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# --- global options ------------------------------------------------------------------------------


@dataclass
class CliContext:
    """The global options, set by whichever level gave them (a command's own flag wins)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    output: str = "table"
    #: Out of repr: the URL may hold Redis' password.
    redis_url: str | None = field(default=None, repr=False)
    #: The namespace when neither ``-n`` nor the kubeconfig names one, if a command group has its own
    #: (clones live in the admin namespace).
    group_namespace: str | None = None
    _api: Any = field(default=None, repr=False)

    def kubeconfig_path(self) -> str | None:
        return self.kubeconfig or os.environ.get("KUBECONFIG") or None

    def api(self) -> Any:
        if self._api is None:
            from davit.kube import clients

            self._api = clients.api_client(self.kubeconfig_path(), self.context)
        return self._api

    def resolved_namespace(self) -> str:
        return (
            self.namespace or self.group_namespace or default_namespace(self.kubeconfig_path(), self.context)
        )

    def namespace_for(self, kind: Kind) -> str:
        """Where objects of ``kind`` are read and written: nowhere ("") for a cluster-scoped kind."""
        return "" if kind in CLUSTER_SCOPED else self.resolved_namespace()

    def resolved_redis_url(self) -> str | None:
        url = self.redis_url or os.environ.get("REDIS_URL") or os.environ.get("DAVIT_REDIS_URL")
        if not url:
            return None
        # As for the services: $DAVIT_REDIS_PASSWORD joins a URL that holds no password.
        from davit.settings import redis_url_with_password

        return redis_url_with_password(url, os.environ.get("DAVIT_REDIS_PASSWORD", ""))

    def objects(self) -> Operations:
        """Davit's objects, written as ``davit-cli``; a missing one required raises NotFound (one line)."""
        from davit.kube.operations import Operations

        return Operations(self.api(), field_manager=FIELD_MANAGER)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


def default_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's current (or named) context; in a pod, the pod's; else default."""
    if kubeconfig:
        from davit.kube.client import list_kube_config_contexts

        try:
            contexts, active = list_kube_config_contexts(config_file=kubeconfig)
        except Exception as exc:
            raise CliError(f"cannot read kubeconfig {kubeconfig}: {exc}") from exc
        chosen = active if context is None else next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise CliError(f"context {context!r} not found in kubeconfig {kubeconfig}")
        return str((chosen.get("context") or {}).get("namespace") or "default")
    if _IN_CLUSTER_NAMESPACE.exists():
        return _IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    return "default"


def admin_namespace() -> str:
    """The namespace whose operations may act across namespaces, as the services are configured
    (``$DAVIT_ADMIN_NAMESPACE``, else Stork's ``kube-system``)."""
    from davit.settings import Settings

    return os.environ.get("DAVIT_ADMIN_NAMESPACE") or Settings().admin_namespace


def _store(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(CliContext), attr, value)

    return callback


def connection_options(f: F) -> F:
    """``--kubeconfig``, ``--context``, ``-n``: accepted by the group and by every command."""
    for decorator in reversed(
        [
            click.option(
                "--kubeconfig", metavar="FILE", expose_value=False, callback=_store("kubeconfig"),
                help="Kubeconfig file (default: $KUBECONFIG).",
            ),
            click.option(
                "--context", metavar="NAME", expose_value=False, callback=_store("context"),
                help="Kubeconfig context (default: the current one).",
            ),
            click.option(
                "-n", "--namespace", metavar="NS", expose_value=False, callback=_store("namespace"),
                help="Namespace (default: the context's namespace, else default).",
            ),
        ]
    ):  # fmt: skip
        f = decorator(f)
    return f


def output_option(f: F) -> F:
    return click.option(
        "-o", "--output", type=click.Choice(output.OUTPUT_FORMATS), expose_value=False,
        callback=_store("output"), help="Output format (default: table).",
    )(f)  # fmt: skip


def all_namespaces_option(f: F) -> F:
    return click.option(
        "-A", "--all-namespaces", is_flag=True, default=False, expose_value=False,
        callback=_store("all_namespaces"), help="List across all namespaces.",
    )(f)  # fmt: skip


def redis_option(f: F) -> F:
    return click.option(
        "--redis-url", metavar="URL", expose_value=False, callback=_store("redis_url"),
        help="Redis of the Davit services, for in-flight operations (default: $REDIS_URL; a password in "
        "$DAVIT_REDIS_PASSWORD joins a URL that has none).",
    )(f)  # fmt: skip


# --- parsing flags -------------------------------------------------------------------------------


def split_list(value: str | None) -> list[str] | None:
    """``a,b , c`` → ``["a", "b", "c"]``; None when not given."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _pairs(value: str, flag: str, separator: str, shape: str) -> Iterator[tuple[str, str, str]]:
    """Each ``key<separator>value`` of a comma-separated flag, stripped, with the pair as written; a pair
    without the separator or without a key is a usage error naming the flag."""
    for pair in split_list(value) or []:
        key, sep, val = pair.partition(separator)
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not {shape}", param_hint=flag)
        yield pair, key.strip(), val.strip()


def parse_selector(value: str | None, flag: str = "--selector") -> dict[str, str] | None:
    """``k=v,k2=v2`` → a dict; a malformed pair is a usage error naming the flag."""
    if value is None:
        return None
    return {key: val for _pair, key, val in _pairs(value, flag, "=", "key=value")}


def parse_mapping(value: str | None, flag: str, name_pattern: str) -> dict[str, str] | None:
    """``old:new,old2:new2`` → a dict; None when not given. Both sides must be names matching
    ``name_pattern`` and each old name may be mapped once: anything else is a usage error naming the
    flag, so that a typo never creates an operation that would put things in the wrong place."""
    if value is None:
        return None
    result: dict[str, str] = {}
    for pair, old, new in _pairs(value, flag, ":", "old:new"):
        for name in (old, new):
            if not re.fullmatch(name_pattern, name):
                raise click.BadParameter(
                    f"{pair!r}: {name!r} is not a valid name (lowercase letters, digits, '-')",
                    param_hint=flag,
                )
        if result.get(old, new) != new:
            raise click.BadParameter(
                f"{old!r} is mapped twice ({old}:{result[old]}, {pair})", param_hint=flag
            )
        result[old] = new
    if not result:
        raise click.BadParameter(f"{value!r} has no old:new pairs", param_hint=flag)
    return result


_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str, flag: str) -> float:
    """``72h``, ``30d``, ``1h30m`` → seconds; anything else is a usage error naming the flag."""
    if not re.fullmatch(DURATION, value):
        raise click.BadParameter(f"{value!r} is not a duration such as 72h, 30d or 1h30m", param_hint=flag)
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


#: The API's patterns in words, for errors.
_PATTERN_WORDS = {
    DNS1123_SUBDOMAIN: "a valid name (lowercase letters, digits, '-', '.')",
    DNS1123_LABEL: "a valid name (lowercase letters, digits, '-')",
    DURATION: "a duration such as 72h, 30d or 1h30m",
}


def check_model(model: type[M], value: RawObject, flags: Mapping[str, str]) -> M:
    """``value`` validated against the API model the CRD is generated from, so that what the API server
    would refuse is a usage error (exit 2) before anything is created. The error names the flag of the
    innermost field on its path that ``flags`` maps (field name → flag)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = [str(part) for part in first["loc"]]
        flag = next((flags[part] for part in reversed(path) if part in flags), None)
        pattern = (first.get("ctx") or {}).get("pattern")
        message = (
            f"{first['input']!r} is not {_PATTERN_WORDS[pattern]}"
            if pattern in _PATTERN_WORDS
            else first["msg"]
        )
        raise click.BadParameter(f"{'.'.join(path)}: {message}", param_hint=flag) from exc


# --- the API server ------------------------------------------------------------------------------


def api_error_message(exc: Any) -> str:
    """The API server's own message (``applicationbackups.davit.dev "x" already exists``)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or f"API server answered {exc.status} {exc.reason}")


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


# --- emitting ------------------------------------------------------------------------------------


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


def get_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """What every ``<noun> get`` takes: an optional NAME, the connection options, ``-o`` and ``-A``;
    the command gets the CliContext first."""
    with_options = connection_options(output_option(all_namespaces_option(pass_cli(f))))
    return click.argument("name", required=False)(with_options)


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
    if name:
        objs = [objects.require(kind, namespace, name)]
    else:
        objs = objects.list_all(kind, None if cli.all_namespaces or cluster_scoped else namespace)
    where = "any namespace" if cli.all_namespaces else f"namespace {namespace}"
    empty = f"No {plural} found." if cluster_scoped else f"No {plural} found in {where}."
    emit_objects(cli, objs, table, bool(name), empty)


def describe_and_echo(
    cli: CliContext,
    kind: Kind,
    name: str,
    render: Callable[[RawObject, list[RawObject], datetime.datetime], str],
) -> None:
    """``<noun> describe NAME``: the object and its Events, as ``render`` writes them."""
    objects = cli.objects()
    obj = objects.require(kind, cli.namespace_for(kind), name)
    click.echo(render(obj, objects.events(obj), now()))


# --- waiting -------------------------------------------------------------------------------------


def _progress_table(obj: RawObject) -> Any:
    from rich.table import Table

    status = obj.get("status") or {}
    meta = obj["metadata"]
    table = Table(title=f"{obj.get('kind')} {meta['namespace']}/{meta['name']}", title_justify="left")
    for column in ("STAGE", "STATUS", "RESOURCES", "VOLUMES", "SIZE", "ELAPSED"):
        table.add_column(column)
    table.add_row(
        str(status.get("stage") or "-"),
        str(status.get("status") or "-"),
        str(status.get("resourceCount") if status.get("resourceCount") is not None else "-"),
        output.volumes(obj) or "-",
        output.size(status.get("totalSize")) or "-",
        output.elapsed(obj, now()) or "-",
    )
    if status.get("reason") and status.get("stage") != "Final":
        table.caption = str(status["reason"])
        table.caption_justify = "left"
    return table


def _polls(fetch: Callable[[], RawObject], timeout: float | None, what: str) -> Iterator[RawObject]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        yield fetch()
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"timed out after {output.human_duration(timeout or 0)} waiting for {what}")
        time.sleep(POLL_SECONDS)


def wait_final(cli: CliContext, kind: Kind, namespace: str, name: str, timeout: float | None) -> RawObject:
    """Poll the operation until its stage is Final, showing its progress on stderr (a live table on a
    terminal, a line per change elsewhere); return the final object."""
    from rich.console import Console
    from rich.live import Live

    objects = cli.objects()
    ref = describe_ref(kind, namespace, name)

    def fetch() -> RawObject:
        obj = objects.get(kind, namespace, name)
        if obj is None:
            raise CliError(f"{ref} was deleted while waiting for it")
        return obj

    console = Console(stderr=True)
    polls = _polls(fetch, timeout, f"{ref} to finish")
    if console.is_terminal:
        obj = next(polls)
        with Live(_progress_table(obj), console=console, refresh_per_second=4) as live:
            while (obj.get("status") or {}).get("stage") != "Final":
                obj = next(polls)
                live.update(_progress_table(obj))
        return obj
    last: tuple[Any, ...] | None = None
    for obj in polls:
        status = obj.get("status") or {}
        seen = (status.get("stage"), status.get("status"), status.get("resourceCount"))
        if seen != last:
            click.echo(output.progress_line(obj, now()), err=True)
            last = seen
        if status.get("stage") == "Final":
            return obj
    raise AssertionError("unreachable")  # pragma: no cover


def wait_gone(cli: CliContext, kind: Kind, namespace: str, name: str, timeout: float | None) -> None:
    objects = cli.objects()
    ref = describe_ref(kind, namespace, name)
    sentinel: RawObject = {}
    for obj in _polls(lambda: objects.get(kind, namespace, name) or sentinel, timeout, f"{ref} to go"):
        if obj is sentinel:
            return


# --- backup locations ----------------------------------------------------------------------------


def open_repository(cli: CliContext, namespace: str, location_name: str) -> Any:
    """The repository of the BackupLocation ``location_name`` as an operation in ``namespace`` sees it
    (its own namespace first, then the admin namespace's shared locations), its Secret resolved."""
    from davit.kube.operations import Operations
    from davit.operations import queueing
    from davit.operations.runtime import LocationUnavailable, Runtime
    from davit.settings import Settings

    settings = Settings(
        kubeconfig=cli.kubeconfig_path() or "",
        redis_url=cli.resolved_redis_url() or Settings().redis_url,
        admin_namespace=admin_namespace(),
        # The CLI reads a local location with its own user's permissions on its own machine, so any
        # directory is one that user may read anyway: the roots keep the cluster's services in, not it.
        local_location_roots="/",
    )
    api = cli.api()
    runtime = Runtime(
        settings=settings,
        api=api,
        redis=None,
        celery=queueing.create_app(settings.redis_url, "davit-cli"),
        ops=Operations(api),
    )
    try:
        return runtime.repository(namespace, location_name)
    except LocationUnavailable as exc:
        raise CliError(exc.reason) from exc


# --- operations: what backups, restores and clones share ------------------------------------------

TIMEOUT_HELP = "With --wait: give up after this long, e.g. 30m (default: wait as long as it takes)."


def wait_options(wait_help: str) -> Callable[[F], F]:
    """``--wait`` (described by ``wait_help``) and ``--timeout DURATION``."""

    def decorate(f: F) -> F:
        f = click.option("--timeout", metavar="DURATION", help=TIMEOUT_HELP)(f)
        return click.option("--wait", is_flag=True, default=False, help=wait_help)(f)

    return decorate


def create_options(noun: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """What every operation's ``create`` takes besides its own flags: ``--wait``, ``--timeout``, the
    connection options and ``-o``; the command gets the CliContext first."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        with_options = connection_options(output_option(pass_cli(f)))
        return wait_options(f"Show progress until the {noun} has finished.")(with_options)

    return decorate


def timeout_seconds(timeout: str | None) -> float | None:
    return parse_duration(timeout, "--timeout") if timeout else None


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


def redis_lines(redis_url: str, uid: str) -> list[str]:
    """The log lines the services keep in Redis for the operation ``uid`` while it runs."""
    from davit.operations.scratch import operation_log_lines

    return operation_log_lines(redis_url, uid)


#: Where in its location an operation keeps its log: ``(namespace, name, uid)`` → key.
LogKey = Callable[[str, str, str], str]


def location_log(log_key: LogKey) -> Callable[[CliContext, RawObject], list[str]]:
    """``logs`` of an operation that keeps its log in its ``spec.backupLocation`` at ``log_key``."""
    return lambda cli, obj: operation_log(cli, obj, log_key)


def operation_log(cli: CliContext, obj: RawObject, log_key: LogKey) -> list[str]:
    """The log of an operation that keeps it in its ``spec.backupLocation`` (at ``log_key``) once it is
    Final, and in Redis while it runs (or when it ended before its log reached the location)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = obj.get("status") or {}
    kind = Kind(obj["kind"])
    ref_text = describe_ref(kind, meta["namespace"], meta["name"])
    redis_url = cli.resolved_redis_url()
    if status.get("stage") != "Final":
        if not redis_url:
            raise CliError(
                f"{ref_text} is still running (stage {status.get('stage') or 'not yet accepted'}); "
                "its log is in the services' Redis until it finishes: pass --redis-url or set $REDIS_URL"
            )
        lines = redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
        # It may have finished (and moved its log to the location) since we read it.
        latest = cli.objects().get(kind, meta["namespace"], meta["name"])
        if latest is None or (latest.get("status") or {}).get("stage") != "Final":
            return []
        obj, status = latest, latest.get("status") or {}
    from davit.storage.base import ObjectNotFound

    location_error = None
    try:
        repository = open_repository(cli, meta["namespace"], spec.get("backupLocation", ""))
        key = log_key(meta["namespace"], meta["name"], meta["uid"])
        lines = repository.get(key).decode().splitlines()
    except ObjectNotFound:
        lines = []
    except CliError as exc:
        location_error, lines = exc.message, []
    if lines:
        return list(lines)
    if redis_url:
        lines = redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
    hint = "" if redis_url else " (pass --redis-url to look in the services' Redis)"
    if location_error:
        raise CliError(f"cannot read the log of {ref_text}: {location_error}{hint}")
    raise CliError(
        f"{ref_text} ended {status.get('status')} without a log in its location "
        f"{spec.get('backupLocation')}{hint}"
    )


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


def add_describe_command(
    group: click.Group,
    kind: Kind,
    render: Callable[[RawObject, list[RawObject], datetime.datetime], str],
    describe_help: str,
) -> None:
    """``describe NAME`` for ``kind``: the object and its Events as ``render`` writes them."""

    @group.command("describe", help=f"Show the {kind.value} NAME: {describe_help}.")
    @click.argument("name")
    @connection_options
    @pass_cli
    def describe(cli: CliContext, name: str) -> None:
        describe_and_echo(cli, kind, name, render)


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
) -> None:
    """Add ``get``, ``describe``, ``logs`` and ``delete`` for ``kind`` to ``group``: the same for
    backups, restores and clones but for where the log is and what deleting one leaves behind."""
    add_get_command(group, kind, output.operation_table, f"{noun}s")
    add_describe_command(group, kind, output.describe_operation, describe_help)

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
