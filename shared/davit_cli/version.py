"""``davit version``: this CLI's version, and what the cluster it talks to runs."""

from __future__ import annotations

import platform
from typing import Any

import click

import davit
from davit.constants import API_GROUP, API_VERSION
from davit_cli import output
from davit_cli.context import CliContext, pass_cli
from davit_cli.options import connection_options, output_option


def server_info(cli: CliContext) -> dict[str, Any]:
    """The API server's Kubernetes version and whether it serves Davit's API; what went wrong, if it
    could not be asked (the CLI's version is worth printing without a cluster)."""
    from davit.kube.discovery import server_version

    try:
        kubernetes, served = server_version(cli.api(), API_GROUP, API_VERSION)
    except Exception as exc:  # no kubeconfig, unreachable, refused: said, never a traceback
        return {"reachable": False, "error": str(exc).splitlines()[0][:200]}
    return {
        "reachable": True,
        "kubernetes": kubernetes,
        "davitAPI": f"{API_GROUP}/{API_VERSION}" if served else "",
    }


@click.command("version", help="Print the CLI's version and the cluster's Kubernetes version.")
@connection_options
@output_option
@pass_cli
def version(cli: CliContext) -> None:
    info = {
        "client": {"version": davit.__version__, "python": platform.python_version()},
        "server": server_info(cli),
    }
    if cli.output != "table":
        click.echo(output.render_data(info, cli.output))
        return
    click.echo(f"Client: davit {davit.__version__} (Python {info['client']['python']})")
    server = info["server"]
    if not server["reachable"]:
        click.echo(f"Server: not reachable: {server['error']}")
    elif server["davitAPI"]:
        click.echo(f"Server: Kubernetes {server['kubernetes']}, Davit API {server['davitAPI']} installed")
    else:
        click.echo(f"Server: Kubernetes {server['kubernetes']}, Davit's CRDs not installed")
