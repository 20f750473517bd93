"""Errors that end a ``davit`` command in one line on stderr."""

from __future__ import annotations

import json
from typing import Any

import click


class CliError(click.ClickException):
    """A failure to report as one line on stderr, exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def api_error_message(exc: Any) -> str:
    """The API server's own message (``applicationbackups.davit.dev "x" already exists``)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or f"API server answered {exc.status} {exc.reason}")
