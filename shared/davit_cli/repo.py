"""``davit repo check``: is every chunk every backup's volumes reference in the location, and intact?
``davit repo gc``: remove what no backup references any more, and say what that freed.
``davit repo ls|restore|dump``: a backup's volumes and files, read straight from the location (with or
without the cluster: ``davit_cli.extract``)."""

from __future__ import annotations

import datetime
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from davit.repo.errors import RepoError
from davit_cli import output
from davit_cli.context import CliContext, admin_namespace, pass_cli
from davit_cli.errors import CliError
from davit_cli.extract import (
    location_options,
    open_backup,
    open_location,
    pick_volumes,
    shown,
    stored_volumes,
    volume_directory,
)
from davit_cli.options import connection_options, output_option, parse_duration

if TYPE_CHECKING:
    from davit.format.layout import BackupRef
    from davit.format.repository import BackupRepository
    from davit.repo import Entry, PathSelection
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
@click.option(
    "--repack-below",
    "repack_below_percent",
    type=click.IntRange(0, 100),
    metavar="PERCENT",
    help="Rewrite packs of which less than PERCENT is in use, so that the rest of their space comes back "
    "(default: the location's repackBelowPercent, else 50; 0 never rewrites).",
)
@connection_options
@output_option
@pass_cli
def gc_command(
    cli: CliContext, location_name: str, dry_run: bool, grace: str | None, repack_below_percent: int | None
) -> None:
    """Collect the location's garbage: data no backup (in any namespace) and no claim's latest tree
    references is marked, and deleted by a later collection once marked for the grace period; packs
    mostly unused have what is in use rewritten first. The retention service does this daily; this runs
    it now and reports what it freed."""
    from davit.kube.operations import Operations
    from davit.repo import GcError, collect
    from davit.repo.gc import DEFAULT_GRACE_SECONDS, repack_below_of
    from davit.validation import resolve_location

    grace_seconds = parse_duration(grace, "--grace") if grace is not None else float(DEFAULT_GRACE_SECONDS)
    namespace = cli.resolved_namespace()
    repository = open_repository(cli, namespace, location_name)
    if repack_below_percent is not None:
        repack_below = repack_below_percent / 100
    else:
        location = resolve_location(Operations(cli.api()), namespace, location_name, admin_namespace())
        repack_below = repack_below_of(location or {})
    try:
        report = collect(
            repository.store,
            repository.sealer,
            grace_seconds=grace_seconds,
            dry_run=dry_run,
            repack_below=repack_below,
        )
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
    repack = report.repack
    if repack.packs:
        if dry_run:
            click.echo(f"would repack {repack.packs} pack(s) ({output.size(repack.packs_bytes)}) less than "
                       f"{repack.below:.0%} in use, rewriting {output.size(repack.live_bytes)}")  # fmt: skip
        else:
            click.echo(f"repacked {repack.packs} pack(s) ({output.size(repack.packs_bytes)}) less than "
                       f"{repack.below:.0%} in use into {repack.written}, "
                       f"rewriting {output.size(repack.written_bytes)}")  # fmt: skip
    verb = "would free" if dry_run else "freed"
    summary = f"{verb} {output.size(report.freed_bytes)} in {report.deleted} object(s)"
    if report.waiting:
        period = output.human_duration(grace_seconds)
        summary += f"; {report.waiting} unused object(s) wait for the grace period ({period})"
    click.echo(summary)


# --- reading backups out of the repository ------------------------------------------------------------


def _backup_options(f: Any) -> Any:
    """What ``repo ls|restore|dump`` share: where the backup is, which backup, which volume."""
    f = click.option(
        "--volume", metavar="CLAIM", help="One volume: its claim, or NAMESPACE/CLAIM when ambiguous."
    )(f)
    f = click.option(
        "--backup", "backup_name", required=True, metavar="BACKUP",
        help="NAME (-n: of that namespace), NAMESPACE/NAME, NAMESPACE/NAME/UID, or a UID; as "
        "'davit backups list-remote' shows them.",
    )(f)  # fmt: skip
    return location_options(f)


def _open(
    cli: CliContext, location_name: str | None, location_file: str | None, backup_name: str
) -> tuple[BackupRepository, BackupRef, dict[str, Any]]:
    """(repository, backup ref, manifest)."""
    repository = open_location(cli, location_name, location_file)
    ref, manifest = open_backup(repository, backup_name, cli.namespace)
    return repository, ref, manifest


def mtime_text(ns: int) -> str:
    """``2026-12-04T15:34:41.123456789Z`` (UTC, to the nanosecond); a time no calendar holds (a crafted
    tree's) as its number."""
    seconds, fraction = divmod(ns, 10**9)
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ns)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def _entry_dict(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": shown(entry.path) or ".",
        "type": entry.kind,
        "mode": f"{entry.mode:04o}",
        "size": entry.size,
        "mtime": mtime_text(entry.mtime_ns),
        "mtimeNs": entry.mtime_ns,
        "uid": entry.uid,
        "gid": entry.gid,
    }
    if entry.target is not None:
        out["target"] = shown(entry.target)
    return out


_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def _entry_line(entry: Entry) -> str:
    mode = stat.filemode(_TYPE_BITS[entry.kind] | (entry.mode & 0o7777))
    mtime = mtime_text(entry.mtime_ns)[:19].replace("T", " ")
    line = f"{mode}  {entry.uid:>6} {entry.gid:>6}  {entry.size:>14}  {mtime}  {shown(entry.path) or '.'}"
    return line + (f" -> {shown(entry.target)}" if entry.target is not None else "")


@repo.command("ls")
@_backup_options
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@connection_options
@output_option
@pass_cli
def ls_command(
    cli: CliContext,
    location_name: str | None,
    location_file: str | None,
    backup_name: str,
    volume: str | None,
    paths: tuple[str, ...],
) -> None:
    """List a backup's volumes, or with --volume (or PATHs, in a backup of one volume) the files of a
    volume: type and mode, owner, size, modification time, path, and where symlinks point. PATHs limit
    the listing to those paths and what lies below them."""
    from davit.repo import PathSelection, UnsafePath, iter_entries, load_tree

    try:
        selection = PathSelection(paths)
    except UnsafePath as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    repository, ref, manifest = _open(cli, location_name, location_file, backup_name)
    volumes = stored_volumes(manifest)
    backup_id = f"{ref.namespace}/{ref.name}/{ref.uid}"
    if volume is None and not paths:
        rows: list[dict[str, Any]] = []
        for v in volumes:
            tree = load_tree(repository.store, repository.sealer, v.tree) if v.tree else None
            rows.append({"namespace": v.namespace, "claim": v.claim, "mode": v.mode, "status": v.status,
                         "entries": tree.entries if tree else None, "size": tree.size if tree else None,
                         "tree": v.tree})  # fmt: skip
        if cli.output != "table":
            click.echo(_render({"backup": backup_id, "volumes": rows}, cli.output))
            return
        if not rows:
            click.echo(f"backup {backup_id} has no volumes", err=True)
            return
        click.echo(output.format_table(
            ["NAMESPACE", "CLAIM", "MODE", "STATUS", "ENTRIES", "SIZE"],
            [[shown(r["namespace"]), shown(r["claim"]), shown(r["mode"]) or "-", shown(r["status"]) or "-",
              "-" if r["entries"] is None else str(r["entries"]),
              "-" if r["size"] is None else output.size(r["size"])] for r in rows],
        ))  # fmt: skip
        return
    (chosen,) = pick_volumes(volumes, volume, need_one=True)
    tree = load_tree(repository.store, repository.sealer, chosen.tree_id)
    listed: list[dict[str, Any]] = []
    for entry in iter_entries(repository.store, repository.sealer, tree):
        if not selection.covers(entry.path):
            continue
        if cli.output == "table":
            click.echo(_entry_line(entry))
        else:
            listed.append(_entry_dict(entry))
    if cli.output != "table":
        click.echo(_render({"backup": backup_id, "volume": chosen.key, "entries": listed}, cli.output))
    _fail_on_unmatched(selection, chosen.key)


def _render(value: Any, fmt: str) -> str:
    return output.to_yaml(value) if fmt == "yaml" else output.to_json(value)


def _fail_on_unmatched(selection: PathSelection, volume: str) -> None:
    missing = selection.unmatched()
    if missing:
        names = ", ".join(repr(shown(p)) for p in missing)
        raise CliError(f"volume {volume} has no {names}")


@repo.command("restore")
@_backup_options
@click.option("--target", required=True, metavar="DIR", help="Directory to write into (created if missing).")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@connection_options
@output_option
@pass_cli
def restore_command(
    cli: CliContext,
    location_name: str | None,
    location_file: str | None,
    backup_name: str,
    volume: str | None,
    target: str,
    paths: tuple[str, ...],
) -> None:
    """Write a backup's volumes (or the one --volume names, or only the PATHs in it) into
    TARGET/<namespace>/<claim>/, with their types, modes, mtimes, owners (as root; your own otherwise)
    and symlinks (never followed), verifying every chunk as it is read. Entries already at a restored
    name are replaced. Setuid and setgid bits are not restored. Nothing is ever written outside TARGET:
    names from the location that would lead out of it stop the restore. A file that cannot be read
    back stops it too, naming the file; no partly written file is left."""
    from davit.repo import PathSelection, RepoReader, UnsafePath, load_tree, restore_tree

    try:
        selection = PathSelection(paths)
    except UnsafePath as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    repository, ref, manifest = _open(cli, location_name, location_file, backup_name)
    all_volumes = stored_volumes(manifest)
    chosen = pick_volumes(all_volumes, volume, need_one=bool(paths))
    skipped = [v for v in all_volumes if v.tree is None and volume is None]
    if not chosen:
        raise CliError(f"backup {ref.namespace}/{ref.name}/{ref.uid} holds no volume data to restore")
    # Every name is checked before anything is written.
    directories = {v.key: volume_directory(v) for v in chosen}
    reader = RepoReader(repository.store, repository.sealer)
    results = []
    for v in chosen:
        directory = Path(target, *directories[v.key])
        tree = load_tree(repository.store, repository.sealer, v.tree_id)
        try:
            stats = restore_tree(tree, directory, reader, select=selection.restores)
        except RepoError as exc:
            raise CliError(f"restoring volume {v.key} into {directory} failed: {shown(str(exc))}") from exc
        except OSError as exc:  # the local filesystem's (the store's errors are StorageErrors)
            where = shown(os.fsdecode(exc.filename)) if exc.filename else str(directory)
            raise CliError(f"restoring volume {v.key}: cannot write {where}: {exc.strerror or exc}") from exc
        results.append({
            "volume": v.key, "directory": str(directory), "files": stats.files, "dirs": stats.dirs,
            "symlinks": stats.symlinks, "bytes": stats.bytes_written,
        })  # fmt: skip
        _fail_on_unmatched(selection, v.key)
    for v in skipped:
        click.echo(f"Warning: volume {shown(v.key)} has no files in the backup (mode {shown(v.mode) or '-'}, "
                   f"{shown(v.status) or 'no status'}): not restored", err=True)  # fmt: skip
    backup_id = f"{ref.namespace}/{ref.name}/{ref.uid}"
    if cli.output != "table":
        click.echo(_render({"backup": backup_id, "volumes": results}, cli.output))
        return
    click.echo(output.format_table(
        ["VOLUME", "DIRECTORY", "FILES", "DIRS", "SYMLINKS", "BYTES"],
        [[r["volume"], r["directory"], r["files"], r["dirs"], r["symlinks"], r["bytes"]] for r in results],
    ))  # fmt: skip


@repo.command("dump")
@_backup_options
@click.argument("path", metavar="PATH")
@connection_options
@pass_cli
def dump_command(
    cli: CliContext,
    location_name: str | None,
    location_file: str | None,
    backup_name: str,
    volume: str | None,
    path: str,
) -> None:
    """Write the bytes of the file PATH of a volume to stdout, every chunk verified as it is read. A
    chunk that fails stops the output there and exits 1 naming the file: check the exit status (in a
    pipeline, set -o pipefail)."""
    from davit.repo import RepoReader, UnsafePath, file_data, iter_entries, load_tree
    from davit.repo.selection import normalize
    from davit.repo.tree_format import tree_order

    try:
        wanted = normalize(path)
    except UnsafePath as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    repository, _ref, manifest = _open(cli, location_name, location_file, backup_name)
    (chosen,) = pick_volumes(stored_volumes(manifest), volume, need_one=True)
    tree = load_tree(repository.store, repository.sealer, chosen.tree_id)
    key = tree_order(wanted)
    found = None
    for entry in iter_entries(repository.store, repository.sealer, tree):
        if entry.path == wanted:
            found = entry
            break
        if tree_order(entry.path) > key:  # entries come in tree order: it is not there
            break
    if found is None:
        raise CliError(f"volume {chosen.key} has no {shown(wanted)!r}")
    if found.kind == "symlink":
        raise CliError(f"{shown(wanted)!r} is a symlink to {shown(found.target or b'')!r}; dump its target")
    if found.kind != "file":
        raise CliError(f"{shown(wanted)!r} is a directory (davit repo ls lists it)")
    out = sys.stdout.buffer
    try:
        for piece in file_data(RepoReader(repository.store, repository.sealer), found):
            out.write(piece)
        out.flush()
    except RepoError as exc:
        raise CliError(shown(str(exc))) from exc
