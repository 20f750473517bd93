"""``davit repo check``: is every chunk every backup's volumes reference in the location, and intact?
``davit repo gc``: remove what no backup references any more, and say what that freed."""

from __future__ import annotations

from typing import Any

import click

from davit_cli import output
from davit_cli.context import CliContext, pass_cli
from davit_cli.errors import CliError
from davit_cli.options import connection_options, output_option, parse_duration
from davit_cli.runtime import open_repository


def _file(trees: dict[str, str], tree_path: str) -> str:
    """``<claim>:<path>`` for the check's ``<tree id>:<path>``."""
    tree, _, path = tree_path.partition(":")
    return f"{trees.get(tree, tree[:12])}:{path}"


@click.group()
def repo() -> None:
    """The deduplicating volume-data repository of a location."""


@repo.command("check")
@click.option("--location", "location_name", required=True, metavar="NAME", help="BackupLocation to check.")
@click.option(
    "--read-data", is_flag=True, help="Also read every chunk and verify its content against its id."
)
@connection_options
@output_option
@pass_cli
def check_command(cli: CliContext, location_name: str, read_data: bool) -> None:
    """Verify that every chunk referenced by the volumes of every backup in the location exists (and,
    with --read-data, is intact). Lists the backups and files affected by anything missing or corrupt;
    exits 1 then."""
    from davit.format.layout import BackupRef
    from davit.repo import check

    repository = open_repository(cli, cli.resolved_namespace(), location_name)
    results: list[dict[str, Any]] = []
    healthy = True
    refs: list[BackupRef] = list(repository.list_backups())
    for ref in refs:
        manifest = repository.read_manifest(ref)
        trees = {
            v["tree"]: v.get("persistentVolumeClaim", "")
            for v in manifest.get("volumes") or []
            if v.get("tree")
        }
        report = check(repository.store, repository.sealer, list(trees), read_data=read_data)
        problems = [
            {
                "problem": kind,
                "chunk": p.chunk,
                "reason": p.reason,
                "files": [_file(trees, x) for x in p.paths],
            }
            for kind, found in (("missing", report.missing), ("corrupt", report.corrupt))
            for p in found
        ]
        problems += [{"problem": "error", "reason": error} for error in report.errors]
        healthy = healthy and report.ok
        results.append({
            "namespace": ref.namespace, "name": ref.name, "uid": ref.uid, "volumes": len(trees),
            "chunks": report.chunks, "bytesRead": report.bytes_read, "ok": report.ok, "problems": problems,
        })  # fmt: skip
    if cli.output == "table":
        click.echo(output.format_table(
            ["NAMESPACE", "NAME", "VOLUMES", "CHUNKS", "RESULT"],
            [[r["namespace"], r["name"], str(r["volumes"]), str(r["chunks"]),
              "ok" if r["ok"] else f"{len(r['problems'])} problem(s)"] for r in results],
        ))  # fmt: skip
        for r in results:
            for p in r["problems"]:
                files = ", ".join(p.get("files", [])[:10]) or "-"
                where = f"{r['namespace']}/{r['name']}"
                click.echo(
                    f"{where}: {p['problem']} {p.get('chunk', '')} {p['reason']}; files: {files}", err=True
                )
        what = "read and verified" if read_data else "present"
        click.echo(
            f"{len(results)} backup(s) checked: " + ("every chunk " + what if healthy else "PROBLEMS FOUND")
        )
    else:
        click.echo(
            output.render_data({"location": location_name, "ok": healthy, "backups": results}, cli.output)
        )
    if not healthy:
        raise SystemExit(1)


#: The report's kinds of objects, as the table names them.
_KIND_NAMES = {"packs": "packs", "trees": "tree roots", "treeParts": "tree parts"}


@repo.command("gc")
@click.option("--location", "location_name", required=True, metavar="NAME", help="BackupLocation to collect.")
@click.option("--dry-run", is_flag=True, help="Change nothing; report what a collection would do.")
@click.option(
    "--grace",
    metavar="DURATION",
    help="How long unused data stays marked before it is deleted (default 6h). Shorter than the longest "
    "backup is unsafe while backups run; 0s frees everything unused at once.",
)
@connection_options
@output_option
@pass_cli
def gc_command(cli: CliContext, location_name: str, dry_run: bool, grace: str | None) -> None:
    """Collect the location's garbage: data no backup (in any namespace) and no claim's latest tree
    references is marked, and deleted by a later collection once marked for the grace period. The
    retention service does this daily; this runs it now and reports what it freed."""
    from davit.repo import GcError, collect
    from davit.repo.gc import DEFAULT_GRACE_SECONDS

    grace_seconds = parse_duration(grace, "--grace") if grace is not None else float(DEFAULT_GRACE_SECONDS)
    repository = open_repository(cli, cli.resolved_namespace(), location_name)
    try:
        report = collect(repository.store, repository.sealer, grace_seconds=grace_seconds, dry_run=dry_run)
    except GcError as exc:
        raise CliError(f"garbage collection stopped, nothing depending on it was deleted: {exc}") from exc
    result = report.to_dict()
    if cli.output != "table":
        click.echo(output.render_data({"location": location_name, **result}, cli.output))
        return
    rows = []
    for key, name in _KIND_NAMES.items():
        kind = result[key]
        kept = f"{kind['keptByGrace']} ({output.size(kind['keptByGraceBytes'])})"
        rows.append(
            [name, kind["live"], kind["deleted"], output.size(kind["freedBytes"]), kind["marked"], kept]
        )
    deleted_header = "WOULD DELETE" if dry_run else "DELETED"
    click.echo(
        output.format_table(["KIND", "IN USE", deleted_header, "FREED", "MARKED", "KEPT BY GRACE"], rows)
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    verb = "would free" if dry_run else "freed"
    summary = f"{verb} {output.size(report.freed_bytes)} in {report.deleted} object(s)"
    if report.waiting:
        period = output.human_duration(grace_seconds)
        summary += f"; {report.waiting} unused object(s) wait for the grace period ({period})"
    click.echo(summary)
