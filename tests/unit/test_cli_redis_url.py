"""The CLI finds the services' Redis as the services do: --redis-url, else $REDIS_URL, else
$DAVIT_REDIS_URL, with $DAVIT_REDIS_PASSWORD joining a URL that holds no password; and never shows it."""

from __future__ import annotations

import pytest

from davit_cli.context import CliContext


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("REDIS_URL", "DAVIT_REDIS_URL", "DAVIT_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        pytest.param(None, {}, None, id="none"),
        pytest.param(None, {"DAVIT_REDIS_PASSWORD": "pw"}, None, id="a-password-alone-names-no-redis"),
        pytest.param("redis://f:1/0", {"REDIS_URL": "redis://e:2/0"}, "redis://f:1/0", id="flag-wins"),
        pytest.param(None, {"REDIS_URL": "redis://:in@e:2/0"}, "redis://:in@e:2/0", id="stack-env-url"),
        pytest.param(
            None,
            {"DAVIT_REDIS_URL": "redis://d:3/0", "DAVIT_REDIS_PASSWORD": "p@ss"},
            "redis://:p%40ss@d:3/0",
            id="deployment-style",
        ),
        pytest.param(
            "redis://:own@f:1/0", {"DAVIT_REDIS_PASSWORD": "other"}, "redis://:own@f:1/0", id="urls-own-wins"
        ),
    ],
)
def test_resolved_redis_url(
    clean_env: pytest.MonkeyPatch, flag: str | None, env: dict[str, str], expected: str | None
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert CliContext(redis_url=flag).resolved_redis_url() == expected


def test_the_url_stays_out_of_the_contexts_repr() -> None:
    assert "hunter2" not in repr(CliContext(redis_url="redis://:hunter2@r:1/0"))
