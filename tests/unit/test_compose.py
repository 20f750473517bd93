"""docker-compose.yml and the Dockerfile agree with the code: there is no Docker engine to try them on.

Every compose service runs something that exists, every Davit service is in compose, the Dockerfile copies
files that exist, and the environment given to Davit services names real settings.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shlex
import tomllib
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from davit.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SERVICES_PACKAGE_DIR = REPO_ROOT / "services" / "davit_services"

#: Variables a Davit service may be given that are not Davit settings (none yet; e.g. a cloud SDK's own).
OTHER_ENV: frozenset[str] = frozenset()


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def builds_our_dockerfile(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    return (REPO_ROOT / context / dockerfile).resolve() == DOCKERFILE


def davit_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if builds_our_dockerfile(svc)}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "a service built from our Dockerfile must set its command (the image has none)"
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def module_run_by(command: list[str]) -> str:
    """The module a command runs: ``python -m <module>``, or a console script's entry-point module."""
    if len(command) >= 3 and command[0] in ("python", "python3") and command[1] == "-m":
        return command[2]
    scripts: dict[str, str] = pyproject()["project"].get("scripts", {})
    if command[0] in scripts:
        return scripts[command[0]].split(":", 1)[0].removesuffix(".__main__")
    raise AssertionError(f"{command}: neither `python -m <module>` nor a [project.scripts] console script")


def runnable(module: str) -> bool:
    """``python -m module`` works: the module is importable and, for a package, has a ``__main__``."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is None:  # a plain module runs as it is
        return True
    return importlib.util.find_spec(f"{module}.__main__") is not None


def service_modules_in_tree() -> list[str]:
    """Every ``davit_services.*`` package with a ``__main__.py``: each is a service that must run."""
    return sorted(
        ".".join(("davit_services", *main.parent.relative_to(SERVICES_PACKAGE_DIR).parts))
        for main in SERVICES_PACKAGE_DIR.rglob("__main__.py")
        if main.parent != SERVICES_PACKAGE_DIR
    )


def environment_names(service: dict[str, Any]) -> list[str]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return sorted(env)
    return sorted(str(item).split("=", 1)[0] for item in env)


def mount_targets(service: dict[str, Any]) -> list[str]:
    """Where a service's volumes are mounted. Short syntax is ``source:target[:mode]``, and the source
    may itself hold a colon (``${KUBECONFIG:-~/.kube/config}``), so it is read from the right."""
    targets = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            targets.append(volume["target"])
            continue
        parts = str(volume).split(":")
        targets.append(parts[-2] if parts[-1] in ("ro", "rw", "z", "Z") else parts[-1])
    return targets


def settings_env_names() -> set[str]:
    return {f"DAVIT_{f.name.upper()}" for f in fields(Settings)}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def copy_sources() -> list[list[str]]:
    """The source paths of each build-context COPY (ADD is not used; COPY --from reads another stage)."""
    sources: list[list[str]] = []
    for keyword, arguments in dockerfile_instructions():
        assert keyword != "ADD", "use COPY: ADD also fetches URLs and unpacks archives"
        if keyword != "COPY":
            continue
        parts = shlex.split(arguments)
        if any(p.startswith("--from") for p in parts):
            continue
        paths = [p for p in parts if not p.startswith("--")]
        assert len(paths) >= 2, f"COPY {arguments}: needs sources and a destination"
        sources.append(paths[:-1])
    return sources


# --- compose services -------------------------------------------------------------------------------


def test_compose_has_services() -> None:
    assert services(), "docker-compose.yml lists no services"
    assert davit_services(), "no service is built from the Dockerfile"


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_an_image_or_a_build(name: str) -> None:
    service = services()[name]
    assert service.get("image") or service.get("build"), f"{name}: neither image nor build"


@pytest.mark.parametrize("name", sorted(davit_services()))
def test_davit_service_runs_a_module_that_exists(name: str) -> None:
    module = module_run_by(command_of(davit_services()[name]))
    assert runnable(module), f"{name}: `python -m {module}` would fail, no such module or no __main__"


def test_every_service_in_the_tree_is_in_compose() -> None:
    in_tree = service_modules_in_tree()
    assert "davit_services.watcher" in in_tree  # the scan itself works
    in_compose = {module_run_by(command_of(svc)) for svc in davit_services().values()}
    missing = sorted(set(in_tree) - in_compose)
    assert not missing, f"services with a __main__ that docker-compose.yml does not run: {missing}"


@pytest.mark.parametrize("name", sorted(davit_services()))
def test_davit_service_environment_names_settings(name: str) -> None:
    unknown = sorted(set(environment_names(davit_services()[name])) - settings_env_names() - OTHER_ENV)
    assert not unknown, f"{name}: {unknown} are not DAVIT_<field> of davit.settings.Settings"


@pytest.mark.parametrize("name", sorted(davit_services()))
def test_davit_service_reaches_redis_and_the_cluster(name: str) -> None:
    service = davit_services()[name]
    env = dict(service["environment"])
    kubeconfig = env["DAVIT_KUBECONFIG"]
    assert kubeconfig in mount_targets(service), f"{name}: DAVIT_KUBECONFIG={kubeconfig} is not mounted"
    redis_host = env["DAVIT_REDIS_URL"].split("//", 1)[1].split(":", 1)[0]
    assert redis_host in services(), f"{name}: Redis host {redis_host} is not a compose service"
    depends_on = service.get("depends_on") or []
    assert redis_host in depends_on, f"{name}: does not depend on {redis_host}"


def redis_password_variable() -> str:
    """The interpolation Redis takes its password from: a required variable (``${NAME:?message}``)."""
    command = [str(part) for part in services()["redis"]["command"]]
    assert "--requirepass" in command, "Redis must require a password"
    value = command[command.index("--requirepass") + 1]
    match = re.fullmatch(r"\$\{([A-Z_]+):\?[^}]+\}", value)
    assert match, f"--requirepass {value}: not a required variable (compose must refuse to run without it)"
    return value


def test_redis_requires_a_password_the_operator_chooses() -> None:
    password = redis_password_variable()
    assert "DAVIT_REDIS_PASSWORD" in password
    redis = services()["redis"]
    # The health check's redis-cli authenticates with the same password.
    assert dict(redis["environment"])["REDISCLI_AUTH"] == password
    # Reached only from inside the project's network: nothing published on the host.
    assert not redis.get("ports") and redis.get("network_mode") is None


def test_redis_keeps_its_data_in_a_named_volume() -> None:
    """The append-only file (fsync every second) goes into a named volume, which outlives the container:
    the scratch state of running operations survives a restart of Redis."""
    redis = services()["redis"]
    command = [str(part) for part in redis["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    directory = command[command.index("--dir") + 1]
    sources = [str(v).rsplit(":", 1)[0] for v in redis["volumes"] if str(v).endswith(":" + directory)]
    assert sources and sources[0] in compose()["volumes"], f"{directory} is not on a named volume"


@pytest.mark.parametrize("name", sorted(davit_services()))
def test_davit_service_has_the_redis_password(name: str) -> None:
    env = dict(davit_services()[name]["environment"])
    assert env["DAVIT_REDIS_PASSWORD"] == redis_password_variable()
    # The URL itself holds no password: that is the variable's alone.
    assert "@" not in env["DAVIT_REDIS_URL"], f"{name}: DAVIT_REDIS_URL must not carry credentials"
    settings = Settings.from_env({"DAVIT_REDIS_URL": env["DAVIT_REDIS_URL"], "DAVIT_REDIS_PASSWORD": "pw"})
    assert settings.redis_url.startswith("redis://:pw@"), settings.redis_url


# --- Dockerfile -------------------------------------------------------------------------------------


def test_dockerfile_copy_sources_exist() -> None:
    problems: list[str] = []
    for sources in copy_sources():
        # A literal source must exist; a wildcard may match nothing (how an optional file is copied),
        # but a COPY must copy something: Docker refuses one whose sources are all missing.
        literal = [s for s in sources if not any(c in s for c in "*?[")]
        problems += [s for s in literal if not (REPO_ROOT / s).exists()]
        if not any(list(REPO_ROOT.glob(s.rstrip("/"))) for s in sources):
            problems.append(f"COPY {' '.join(sources)} copies nothing")
    assert not problems, f"the Dockerfile copies what the repository does not have: {problems}"


def test_dockerfile_copies_what_the_package_build_reads() -> None:
    copied = [source.rstrip("/") for sources in copy_sources() for source in sources]

    def is_copied(path: str) -> bool:
        return any(fnmatch.fnmatch(path, c) or path.startswith(f"{c}/") for c in copied)

    project = pyproject()
    needed = ["pyproject.toml", *project["tool"]["setuptools"]["packages"]["find"]["where"]]
    readme = project["project"].get("readme")
    if isinstance(readme, str):
        needed.append(readme)
    missing = [path for path in needed if not is_copied(path)]
    assert not missing, f"`pip install .` in the image needs {missing}, which the Dockerfile does not copy"


def test_dockerfile_runs_as_non_root_without_a_default_service() -> None:
    instructions = dockerfile_instructions()
    # A pinned base: a patch release on a named Debian release.
    assert instructions[0] == ("FROM", "python:3.11.7-slim-bookworm")
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "no USER: the services would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", "[]") in instructions
    assert not [arguments for keyword, arguments in instructions if keyword == "CMD"]
    env = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    installs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "[dev]" not in installs, "the image must not install the dev extras"


def test_the_image_carries_its_version() -> None:
    instructions = dockerfile_instructions()
    labels = " ".join(arguments for keyword, arguments in instructions if keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    version = pyproject()["project"]["version"]
    assert ("ARG", f"VERSION={version}") in instructions


def test_the_build_context_leaves_out_local_state() -> None:
    """The local stacks' kubeconfigs and keys (.dev*/), the virtualenv and caches never reach an image."""
    lines = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "everything is left out unless let in"
    let_in = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert let_in == {"pyproject.toml", "README.md", "shared", "services"}
    for sources in copy_sources():
        for source in sources:
            assert source.rstrip("/").rstrip("*") in let_in or source == "README.md*", source
