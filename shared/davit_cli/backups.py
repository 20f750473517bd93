"""``davit backups list-remote``: the backups stored in a location, whether or not a CR exists for them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from davit_cli import output
from davit_cli.context import CliContext, pass_cli
from davit_cli.extract import location_options, open_location
from davit_cli.options import connection_options, output_option
from davit_cli.runtime import open_repository

#: Manifests read at once: a location with thousands of backups is listed in seconds, not minutes.
READ_CONCURRENCY = 16


@click.group()
def backups() -> None:
    """Backups as stored in a location."""


@backups.command("list-remote")
@location_options
@click.option("--source-namespace", metavar="NS", help="Only backups made in this namespace.")
@connection_options
@output_option
@pass_cli
def list_remote(
    cli: CliContext, location_name: str | None, location_file: str | None, source_namespace: str | None
) -> None:
    """List the complete backups (those whose manifest was written) in the BackupLocation given by
    --location (or, without a cluster, --location-file), from their manifests: namespace, name, uid,
    finish time, resources, stored size, encryption."""
    from davit.format.layout import BackupRef

    if location_file is not None:
        repository = open_location(cli, location_name, location_file)
        location_name = location_name or location_file
    elif location_name is None:
        raise click.UsageError("give --location NAME (from the cluster) or --location-file FILE")
    else:
        repository = open_repository(cli, cli.resolved_namespace(), location_name)
    refs: list[BackupRef] = list(repository.list_backups(source_namespace))

    def read(ref: BackupRef) -> dict[str, Any]:
        entry: dict[str, Any]
        try:
            entry = output.remote_backup_entry(repository.read_manifest(ref))
        except Exception as exc:  # one unreadable manifest must not hide the others
            click.echo(f"Warning: {ref.manifest}: {type(exc).__name__}: {exc}", err=True)
            entry = {"error": f"{type(exc).__name__}: {exc}"}
        # The manifest's path names the backup; it is what ``backup logs`` and restores look up.
        return {**entry, "namespace": ref.namespace, "name": ref.name, "uid": ref.uid}

    with ThreadPoolExecutor(max_workers=READ_CONCURRENCY) as pool:
        entries = list(pool.map(read, refs))
    entries.sort(key=lambda e: (e.get("namespace") or "", e.get("name") or "", e.get("finishedAt") or ""))
    if cli.output == "table":
        if not entries:
            click.echo(f"No backups found in location {location_name}.", err=True)
            return
        click.echo(output.remote_table(entries))
        return
    click.echo(output.render_data({"location": location_name, "backups": entries}, cli.output))
