"""``davit``: the command line for backups, restores, clones, locations and schedules (SPEC §7).

Global options (``--kubeconfig``, ``--context``, ``-n``, ``-o``, ``-A``, ``--redis-url``) are accepted
before the noun and after the verb alike; the one closest to the verb wins. Every failure ends in one
line on stderr and a non-zero exit: 2 for a bad flag (click's usage errors), 1 for anything else (an
object not found, the API server refusing, a store unreachable). ``DAVIT_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from davit_cli import backup, backups, clone, location, policy, repo, restore, schedule, version
from davit_cli.errors import CliError, api_error_message
from davit_cli.options import all_namespaces_option, connection_options, output_option, redis_option


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def translate(exc: Exception) -> click.ClickException:
    """A one-line CLI error for an exception from the libraries underneath."""
    from davit.kube.client import ApiException, ConfigException
    from davit.kube.operations import NotFound

    if isinstance(exc, NotFound):  # names the object as the user did (``applicationbackup shop/x``)
        return CliError(str(exc))
    if isinstance(exc, ApiException):
        return CliError(api_error_message(exc))
    if isinstance(exc, ConfigException):
        return CliError(f"kubeconfig: {_one_line(exc)}")
    from davit.format.repository import FormatError
    from davit.format.sealing import CorruptObject
    from davit.repo.errors import RepoError
    from davit.storage.base import StorageError

    if isinstance(exc, StorageError):
        return CliError(f"store: {exc.code}: {_one_line(Exception(exc.message))}")
    if isinstance(exc, FormatError | CorruptObject | RepoError):
        return CliError(f"location: {_one_line(exc)}")
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("urllib3") or isinstance(exc, ConnectionError | OSError):
        return CliError(f"cannot reach the cluster or store: {name}: {_one_line(exc)}")
    if module.startswith("redis"):
        return CliError(f"Redis: {name}: {_one_line(exc)}")
    return CliError(f"{name}: {_one_line(exc)}")


def one_line_usage_error(exc: click.UsageError) -> click.UsageError:
    """The same usage error (exit code 2) without click's usage block: one line naming the problem and
    where help is."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: click shows its help
        return exc
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return click.UsageError(_one_line(Exception(exc.format_message())) + hint)


class DavitGroup(click.Group):
    """Turns any exception under it into a one-line message (no traceback unless DAVIT_DEBUG=1)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise one_line_usage_error(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line_usage_error(exc) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # Whoever read the output stopped (``| head``): nothing to report, nor to flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
        except Exception as exc:
            if os.environ.get("DAVIT_DEBUG") == "1":
                raise
            raise translate(exc) from exc


@click.group(name="davit", cls=DavitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
@output_option
@all_namespaces_option
@redis_option
def cli() -> None:
    """Davit: backup, restore and clone Kubernetes applications, on demand or on schedules."""


cli.add_command(location.location)
cli.add_command(backup.backup)
cli.add_command(backups.backups)
cli.add_command(restore.restore)
cli.add_command(clone.clone)
cli.add_command(repo.repo)
cli.add_command(policy.policy)
cli.add_command(schedule.schedule)
cli.add_command(version.version)


if __name__ == "__main__":  # pragma: no cover
    cli()
