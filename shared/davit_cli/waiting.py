"""``--wait``: following an operation until it is Final (a watch on that one object, not polling), with
its bytes done, throughput and time left; or until an object is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import click

from davit import errors
from davit.api.objects import RawObject, describe_ref
from davit.constants import Kind
from davit_cli import output
from davit_cli.context import CliContext
from davit_cli.errors import CliError
from davit_cli.objects import now
from davit_cli.progress import Progress

#: A watch request lasts at most this long before it is renewed from the last version seen.
WATCH_SECONDS = 60


def progress_columns(progress: Progress) -> tuple[str, str, str]:
    """BYTES, THROUGHPUT and ETA as ``--wait`` shows them ("-" while unknown)."""
    done = (
        f"{output.size(progress.done) or '0 B'} / {output.size(progress.total) or '-'}"
        if progress.total
        else "-"
    )
    rate = progress.rate()
    throughput = f"{output.size(int(rate)) or '0 B'}/s" if rate is not None else "-"
    eta = progress.eta()
    return done, throughput, output.human_duration(eta) if eta is not None else "-"


def _progress_table(obj: RawObject, progress: Progress) -> Any:
    from rich.table import Table

    status = obj.get("status") or {}
    meta = obj["metadata"]
    table = Table(title=f"{obj.get('kind')} {meta['namespace']}/{meta['name']}", title_justify="left")
    for column in ("STAGE", "STATUS", "RESOURCES", "VOLUMES", "BYTES", "THROUGHPUT", "ETA", "ELAPSED"):
        table.add_column(column)
    table.add_row(
        str(status.get("stage") or "-"),
        str(status.get("status") or "-"),
        str(status.get("resourceCount") if status.get("resourceCount") is not None else "-"),
        output.volumes(obj) or "-",
        *progress_columns(progress),
        output.elapsed(obj, now()) or "-",
    )
    if status.get("reason") and status.get("stage") != "Final":
        table.caption = str(status["reason"])
        table.caption_justify = "left"
    return table


def follow(
    cli: CliContext, kind: Kind, namespace: str, name: str, timeout: float | None
) -> Iterator[RawObject]:
    """The operation as it is now, then at every change the API server reports (a watch on the one
    object, renewed from the last version seen, and started over from a fresh read when that version is
    too old), until ``timeout``."""
    objects = cli.objects()
    ref = describe_ref(kind, namespace, name)
    deadline = None if timeout is None else time.monotonic() + timeout

    def read() -> RawObject:
        obj = objects.get(kind, namespace, name)
        if obj is None:
            raise CliError(f"{ref} was deleted while waiting for it")
        return obj

    obj = read()
    yield obj
    while True:
        left = WATCH_SECONDS if deadline is None else int(deadline - time.monotonic())
        if left <= 0:
            raise CliError(
                f"timed out after {output.human_duration(timeout or 0)} waiting for {ref} to finish"
            )
        version = str(obj["metadata"].get("resourceVersion") or "")
        try:
            for event, changed in objects.watch_one(kind, namespace, name, version, min(left, WATCH_SECONDS)):
                if event == "DELETED":
                    raise CliError(f"{ref} was deleted while waiting for it")
                obj = changed
                yield obj
        except errors.Transient:
            obj = read()  # the version fell out of the server's window: read it afresh
            yield obj


def wait_final(cli: CliContext, kind: Kind, namespace: str, name: str, timeout: float | None) -> RawObject:
    """Follow the operation until its stage is Final, showing its progress on stderr (a live table on a
    terminal, a line per change elsewhere); return the final object."""
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    progress = Progress()
    updates = follow(cli, kind, namespace, name, timeout)
    if console.is_terminal:
        obj = next(updates)
        progress.add(time.monotonic(), obj)
        with Live(_progress_table(obj, progress), console=console, refresh_per_second=4) as live:
            while (obj.get("status") or {}).get("stage") != "Final":
                obj = next(updates)
                progress.add(time.monotonic(), obj)
                live.update(_progress_table(obj, progress))
        return obj
    last: tuple[Any, ...] | None = None
    for obj in updates:
        progress.add(time.monotonic(), obj)
        status = obj.get("status") or {}
        seen = (status.get("stage"), status.get("status"), status.get("resourceCount"), progress.done)
        if seen != last:
            line = output.progress_line(obj, now())
            if progress.total:
                done, throughput, eta = progress_columns(progress)
                line += f"  bytes {done}  throughput {throughput}  eta {eta}"
            click.echo(line, err=True)
            last = seen
        if status.get("stage") == "Final":
            return obj
    raise AssertionError("unreachable")  # pragma: no cover


def wait_gone(cli: CliContext, kind: Kind, namespace: str, name: str, timeout: float | None) -> None:
    """Return once the object is gone (its DELETED event, or it cannot be read any more)."""
    objects = cli.objects()
    ref = describe_ref(kind, namespace, name)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        obj = objects.get(kind, namespace, name)
        if obj is None:
            return
        left = WATCH_SECONDS if deadline is None else int(deadline - time.monotonic())
        if left <= 0:
            raise CliError(f"timed out after {output.human_duration(timeout or 0)} waiting for {ref} to go")
        version = str(obj["metadata"].get("resourceVersion") or "")
        try:
            for event, _changed in objects.watch_one(
                kind, namespace, name, version, min(left, WATCH_SECONDS)
            ):
                if event == "DELETED":
                    return
        except errors.Transient:
            continue
