"""``davit repo check``: is every chunk every backup's volumes reference in the location, and intact?"""

from __future__ import annotations

from typing import Any

import click

from davit.cli import output
from davit.cli.common import CliContext, connection_options, open_repository, output_option, pass_cli


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
