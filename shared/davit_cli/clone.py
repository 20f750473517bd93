"""``davit clone create|get|describe|logs|delete``: ApplicationClones.

Clones act across namespaces, so they live in the admin namespace (``kube-system`` unless the services
are configured otherwise, ``$DAVIT_ADMIN_NAMESPACE``): that is the default namespace of every command
here, instead of the kubeconfig's.
"""

from __future__ import annotations

from typing import Any

import click

from davit.api.objects import RawObject, describe_ref
from davit.constants import Kind
from davit_cli import output
from davit_cli.commands import add_operation_commands, create_operation
from davit_cli.context import CliContext, admin_namespace, pass_cli
from davit_cli.errors import CliError
from davit_cli.logs import redis_lines
from davit_cli.options import create_options, parse_selector

KIND = Kind.APPLICATION_CLONE


@click.group()
@pass_cli
def clone(cli: CliContext) -> None:
    """ApplicationClones: copy a namespace's resources and volumes into another namespace. They live in
    the admin namespace, the default -n here."""
    cli.group_namespace = admin_namespace()


def build_spec(
    source: str,
    destination: str,
    replace_policy: str | None = None,
    selector: str | None = None,
    pre_exec_rule: str | None = None,
    post_exec_rule: str | None = None,
) -> dict[str, Any]:
    """An ApplicationClone's spec from the flags."""
    spec: dict[str, Any] = {"sourceNamespace": source, "destinationNamespace": destination}
    optional = {
        "replacePolicy": replace_policy,
        "selectors": parse_selector(selector),
        "preExecRule": pre_exec_rule,
        "postExecRule": post_exec_rule,
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


@clone.command("create")
@click.argument("name")
@click.option("--from", "source", required=True, metavar="NS", help="Namespace to clone.")
@click.option("--to", "destination", required=True, metavar="NS", help="Namespace to clone into.")
@click.option(
    "--replace-policy",
    type=click.Choice(["Delete", "Retain", "Fail"]),
    help="Objects that exist in the destination: replace (Delete), keep (Retain), or stop (Fail).",
)
@click.option("--selector", metavar="K=V,...", help="Only resources with these labels.")
@click.option("--pre-exec-rule", metavar="RULE", help="Rule to run before the source is copied.")
@click.option("--post-exec-rule", metavar="RULE", help="Rule to run after the source is copied.")
@create_options("clone")
def create(
    cli: CliContext,
    /,
    name: str,
    source: str,
    destination: str,
    wait: bool,
    timeout: str | None,
    **flags: Any,
) -> None:
    """Create the ApplicationClone NAME, copying the namespace --from into the namespace --to. The
    clone goes in the admin namespace unless -n names another.

    With --wait, exits 0 when the clone succeeded (fully or partially) and 1 when it failed, with the
    reason on stderr.
    """
    create_operation(cli, KIND, name, build_spec(source, destination, **flags), wait, timeout)


def clone_log_lines(cli: CliContext, obj: RawObject) -> list[str]:
    """The clone's log as the services keep it in Redis; without Redis (or once it is gone from there),
    its Events."""
    meta = obj["metadata"]
    redis_url = cli.resolved_redis_url()
    if redis_url:
        lines = redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
    lines = output.event_log_lines(cli.objects().events(obj))
    if not lines and not redis_url:
        raise CliError(
            f"{describe_ref(KIND, meta['namespace'], meta['name'])} has no Events yet; while it runs "
            "its log is in the services' Redis: pass --redis-url or set $REDIS_URL"
        )
    return lines


add_operation_commands(
    clone,
    KIND,
    "clone",
    clone_log_lines,
    describe_help="spec, status, resources restored/retained/replaced/failed per kind, volumes, "
    "conditions and Events",
    logs_help="from the services' Redis while it runs, else its Events",
    delete_help="what it copied stays",
)
