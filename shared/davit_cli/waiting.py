"""``--wait``: polling an object until its operation is Final, or until it is gone."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from davit.api.objects import RawObject, describe_ref
from davit.constants import Kind
from davit_cli import output
from davit_cli.context import CliContext
from davit_cli.errors import CliError
from davit_cli.objects import now

#: How often ``--wait`` re-reads the object.
POLL_SECONDS = 0.5


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
