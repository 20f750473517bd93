"""The flags ``davit`` commands share, and parsing the values of flags (lists, selectors, mappings,
durations, specs checked against the API's models)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from davit.api.objects import RawObject
from davit.api.types import DNS1123_LABEL, DNS1123_SUBDOMAIN, DURATION
from davit_cli import output
from davit_cli.context import CliContext, pass_cli

F = TypeVar("F", bound=Callable[..., Any])


M = TypeVar("M", bound=BaseModel)


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
                help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
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


def selector_option(f: F) -> F:
    return click.option(
        "-l", "--selector", metavar="SELECTOR", expose_value=False, callback=_store("selector"),
        help="Only objects whose labels match, as kubectl's: e.g. davit.dev/schedule=nightly,tier!=dev.",
    )(f)  # fmt: skip


def get_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """What every ``<noun> get`` takes: an optional NAME, the connection options, ``-o``, ``-A`` and
    ``-l``; the command gets the CliContext first."""
    with_options = connection_options(output_option(all_namespaces_option(selector_option(pass_cli(f)))))
    return click.argument("name", required=False)(with_options)


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
