"""Service settings: defaults, DAVIT_* variables (with KUBECONFIG/REDIS_URL fallbacks), then flags."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from davit.settings import Settings, parse_address, parse_list, redis_url_with_password

DEFAULTS: dict[str, Any] = {
    "kubeconfig": "",
    "redis_url": "redis://127.0.0.1:6379/0",
    "redis_password": "",
    "admin_namespace": "kube-system",
    "resync_seconds": 60.0,
    "stall_seconds": 300.0,
    "requeue_grace_seconds": 5.0,
    "location_check_seconds": 300.0,
    "lease_name": "davit-watcher",
    "lease_namespace": "kube-system",
    "lease_duration_seconds": 15.0,
    "lease_renew_deadline_seconds": 10.0,
    "lease_retry_seconds": 2.0,
    "metrics_address": "127.0.0.1:9797",
    "log_level": "INFO",
    "worker_concurrency": 4,
    "api_qps": 50.0,
    "api_burst": 100,
    "restore_api_qps": 0.0,
    "restore_api_burst": 0,
    "export_page_size": 500,
    "volume_shard_bytes": 1 << 30,
    "volume_shard_entries": 100_000,
    "restore_helper_image": "",
    "pod_name": "",
    "pod_namespace": "",
    "heartbeat_file": "/tmp/davit-heartbeat",
    "clone_location": "",
    "gc_interval_seconds": 86400.0,
    "gc_grace_seconds": 21600.0,
    "schedule_tick_seconds": 10.0,
    "dev_clock_file": "",
    "node_name": "",
    "snapshot_timeout_seconds": 600.0,
    "snapshot_copy_grace_seconds": 600.0,
    "mover_grace_seconds": 600.0,
    "kubelet_root": "/var/lib/kubelet",
    "local_location_roots": "",
    "tenant_endpoint_allowlist": "",
    "store_retry_seconds": 90.0,
    "store_connect_timeout_seconds": 10.0,
    "store_read_timeout_seconds": 60.0,
}
FLOAT_FIELDS = [name for name, value in DEFAULTS.items() if isinstance(value, float)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """os.environ without anything Settings reads, so the runner's environment cannot leak in."""
    for name in list(os.environ):
        if name.startswith("DAVIT_") or name in ("KUBECONFIG", "REDIS_URL"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(("name", "value"), list(DEFAULTS.items()), ids=list(DEFAULTS))
def test_default(name: str, value: Any) -> None:
    assert getattr(Settings.from_env({}), name) == value
    assert getattr(Settings(), name) == value


def test_every_field_has_a_known_default() -> None:
    assert set(DEFAULTS) | {"identity"} == {f for f in Settings.__dataclass_fields__}


def test_default_identity_is_host_and_pid() -> None:
    assert Settings.from_env({}).identity == f"{socket.gethostname()}-{os.getpid()}"


def test_lease_renew_deadline_is_shorter_than_duration() -> None:
    settings = Settings()
    assert (
        settings.lease_retry_seconds < settings.lease_renew_deadline_seconds < settings.lease_duration_seconds
    )


@pytest.mark.parametrize(
    ("env", "name", "value"),
    [
        pytest.param({"DAVIT_RESYNC_SECONDS": "30"}, "resync_seconds", 30.0, id="float-from-int-text"),
        pytest.param({"DAVIT_STALL_SECONDS": "12.5"}, "stall_seconds", 12.5, id="float-with-fraction"),
        pytest.param({"DAVIT_STALL_SECONDS": " 7 "}, "stall_seconds", 7.0, id="float-with-spaces"),
        pytest.param({"DAVIT_STALL_SECONDS": "1e3"}, "stall_seconds", 1000.0, id="float-exponent"),
        pytest.param({"DAVIT_REQUEUE_GRACE_SECONDS": "0"}, "requeue_grace_seconds", 0.0, id="grace-zero"),
        pytest.param(
            {"DAVIT_LEASE_DURATION_SECONDS": "20"}, "lease_duration_seconds", 20.0, id="lease-duration"
        ),
        pytest.param({"DAVIT_ADMIN_NAMESPACE": "davit-admin"}, "admin_namespace", "davit-admin", id="admin"),
        pytest.param({"DAVIT_LEASE_NAME": "other"}, "lease_name", "other", id="lease-name"),
        pytest.param({"DAVIT_IDENTITY": "pod-0"}, "identity", "pod-0", id="identity"),
        pytest.param({"DAVIT_LOG_LEVEL": "DEBUG"}, "log_level", "DEBUG", id="log-level"),
        pytest.param(
            {"DAVIT_METRICS_ADDRESS": "0.0.0.0:9797"}, "metrics_address", "0.0.0.0:9797", id="metrics"
        ),
        pytest.param(
            {"DAVIT_REDIS_URL": "redis://r:1/2"}, "redis_url", "redis://r:1/2", id="davit-redis-url"
        ),
        pytest.param(
            {"REDIS_URL": "redis://fallback:6379/1"}, "redis_url", "redis://fallback:6379/1", id="redis-url"
        ),
        pytest.param({"KUBECONFIG": "/k/config"}, "kubeconfig", "/k/config", id="kubeconfig-fallback"),
        pytest.param({"DAVIT_KUBECONFIG": "/d/config"}, "kubeconfig", "/d/config", id="davit-kubeconfig"),
        pytest.param(
            {"DAVIT_KUBECONFIG": "/d/config", "KUBECONFIG": "/k/config"},
            "kubeconfig",
            "/d/config",
            id="davit-kubeconfig-wins",
        ),
        pytest.param(
            {"DAVIT_REDIS_URL": "redis://davit:1/0", "REDIS_URL": "redis://plain:2/0"},
            "redis_url",
            "redis://davit:1/0",
            id="davit-redis-url-wins",
        ),
        pytest.param({"DAVIT_STALL_SECONDS": ""}, "stall_seconds", 300.0, id="empty-means-default"),
        pytest.param({"davit_stall_seconds": "1"}, "stall_seconds", 300.0, id="names-are-upper-case"),
        pytest.param({"DAVIT_STALL": "1"}, "stall_seconds", 300.0, id="unknown-variable-ignored"),
        pytest.param({"RESYNC_SECONDS": "1"}, "resync_seconds", 60.0, id="no-fallback-for-others"),
    ],
)
def test_env_overrides(env: dict[str, str], name: str, value: Any) -> None:
    settings = Settings.from_env(env)
    assert getattr(settings, name) == value
    if name in FLOAT_FIELDS:
        assert isinstance(getattr(settings, name), float)
    others = {k: v for k, v in DEFAULTS.items() if k != name}
    assert {k: getattr(settings, k) for k in others} == others  # nothing else moved


@pytest.mark.parametrize(
    ("env", "name", "value"),
    [
        pytest.param(
            {"DAVIT_REDIS_URL": "", "REDIS_URL": "redis://plain:2/0"}, "redis_url", "redis://plain:2/0"
        ),
        pytest.param({"DAVIT_KUBECONFIG": "", "KUBECONFIG": "/k/config"}, "kubeconfig", "/k/config"),
    ],
    ids=["redis-url", "kubeconfig"],
)
def test_empty_davit_variable_falls_back(env: dict[str, str], name: str, value: str) -> None:
    assert getattr(Settings.from_env(env), name) == value


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("raw", ["soon", "5s", "1,5"])
def test_non_number_float_names_the_variable(name: str, raw: str) -> None:
    variable = f"DAVIT_{name.upper()}"
    with pytest.raises(ValueError, match=variable) as info:
        Settings.from_env({variable: raw})
    assert repr(raw) in str(info.value)
    assert "must be a number" in str(info.value)


def test_from_env_reads_os_environ_by_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DAVIT_RESYNC_SECONDS", "11")
    clean_env.setenv("REDIS_URL", "redis://env:6379/3")
    settings = Settings.from_env()
    assert settings.resync_seconds == 11.0
    assert settings.redis_url == "redis://env:6379/3"


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        pytest.param({}, [], {}, id="nothing"),
        pytest.param({"DAVIT_RESYNC_SECONDS": "30"}, [], {"resync_seconds": 30.0}, id="env-only"),
        pytest.param({}, ["--resync-seconds", "5"], {"resync_seconds": 5.0}, id="flag-only"),
        pytest.param(
            {"DAVIT_RESYNC_SECONDS": "30"},
            ["--resync-seconds", "5"],
            {"resync_seconds": 5.0},
            id="flag-beats-env",
        ),
        pytest.param(
            {"DAVIT_ADMIN_NAMESPACE": "from-env", "DAVIT_STALL_SECONDS": "99"},
            ["--admin-namespace=from-flag"],
            {"admin_namespace": "from-flag", "stall_seconds": 99.0},
            id="flag-and-env-mix",
        ),
        pytest.param(
            {"REDIS_URL": "redis://env:1/0"},
            ["--redis-url", "redis://flag:2/0"],
            {"redis_url": "redis://flag:2/0"},
            id="flag-beats-fallback",
        ),
        pytest.param(
            {"KUBECONFIG": "/k"}, ["--kubeconfig", "/flag"], {"kubeconfig": "/flag"}, id="kubeconfig-flag"
        ),
        pytest.param(
            {},
            ["--lease-duration-seconds", "20", "--lease-renew-deadline-seconds", "12.5", "--identity", "me"],
            {"lease_duration_seconds": 20.0, "lease_renew_deadline_seconds": 12.5, "identity": "me"},
            id="several-flags",
        ),
        pytest.param(
            {}, ["--requeue-grace-seconds", "0"], {"requeue_grace_seconds": 0.0}, id="zero-is-not-unset"
        ),
    ],
)
def test_flags_override_env(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], argv: list[str], expected: dict[str, Any]
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)

    settings = Settings.from_args(argv)

    for name, value in {**DEFAULTS, **expected}.items():
        assert getattr(settings, name) == value, name
        assert type(getattr(settings, name)) is type(value), name


@pytest.mark.parametrize("flag", ["--stall-seconds", "--resync-seconds", "--lease-retry-seconds"])
def test_non_number_flag_is_a_usage_error(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    with pytest.raises(SystemExit) as info:
        Settings.from_args([flag, "later"])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_unknown_flag_is_a_usage_error(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        Settings.from_args(["--no-such-setting", "1"])


def test_bad_env_float_fails_from_args_too(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DAVIT_STALL_SECONDS", "forever")
    with pytest.raises(ValueError, match="DAVIT_STALL_SECONDS"):
        Settings.from_args([])


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        pytest.param({"stall_seconds": 1.0}, {"stall_seconds": 1.0}, id="value"),
        pytest.param({"stall_seconds": None}, {}, id="none-ignored"),
        pytest.param({"log_level": "DEBUG", "resync_seconds": None}, {"log_level": "DEBUG"}, id="mixed"),
    ],
)
def test_with_overrides(overrides: dict[str, Any], changed: dict[str, Any]) -> None:
    base = Settings.from_env({})
    updated = base.with_overrides(**overrides)
    assert {k: getattr(updated, k) for k in DEFAULTS} == {**DEFAULTS, **changed}
    assert base.stall_seconds == 300.0  # frozen: the original is untouched


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("127.0.0.1:9797", ("127.0.0.1", 9797), id="loopback"),
        pytest.param("0.0.0.0:80", ("0.0.0.0", 80), id="every-interface"),  # noqa: S104
        pytest.param(":9797", ("0.0.0.0", 9797), id="empty-host-is-every-interface"),  # noqa: S104
        pytest.param("metrics.local:1", ("metrics.local", 1), id="hostname"),
        pytest.param("[::1]:9797", ("::1", 9797), id="ipv6"),
        pytest.param(" 127.0.0.1:65535 ", ("127.0.0.1", 65535), id="spaces-and-highest-port"),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9797", "127.0.0.1", "127.0.0.1:", "host:http", "host:0", "host:65536"])
def test_parse_address_refuses_what_is_not_host_and_port(address: str) -> None:
    with pytest.raises(ValueError, match="host:port") as info:
        parse_address(address)
    assert repr(address) in str(info.value)


# --- Redis' password --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "password", "expected"),
    [
        pytest.param("redis://r:6379/0", "", "redis://r:6379/0", id="none-to-add"),
        pytest.param("redis://r:6379/0", "s3cret", "redis://:s3cret@r:6379/0", id="added"),
        pytest.param("redis://u@r:6379/0", "pw", "redis://u:pw@r:6379/0", id="with-a-user-name"),
        pytest.param("redis://:old@r:6379/0", "new", "redis://:old@r:6379/0", id="the-urls-own-wins"),
        pytest.param("redis://r:6379/0", "a@b:c/d%", "redis://:a%40b%3Ac%2Fd%25@r:6379/0", id="escaped"),
        pytest.param("rediss://[::1]:6380/2", "pw", "rediss://:pw@[::1]:6380/2", id="tls-and-ipv6"),
    ],
)
def test_redis_url_with_password(url: str, password: str, expected: str) -> None:
    assert redis_url_with_password(url, password) == expected


def test_the_password_joins_the_url_the_services_connect_with() -> None:
    # What deploy/ gives every container: the URL in plain configuration, the password from a Secret.
    settings = Settings.from_env(
        {"DAVIT_REDIS_URL": "redis://davit-redis.davit-system:6379/0", "DAVIT_REDIS_PASSWORD": "pw"}
    )
    assert settings.redis_url == "redis://:pw@davit-redis.davit-system:6379/0"
    # A --redis-url flag still gets the password.
    flagged = settings.with_overrides(redis_url="redis://other:1/0")
    assert flagged.redis_url == "redis://:pw@other:1/0"
    # The REDIS_URL fallback too.
    assert Settings.from_env({"REDIS_URL": "redis://r:1/0", "DAVIT_REDIS_PASSWORD": "pw"}).redis_url == (
        "redis://:pw@r:1/0"
    )


def test_the_password_the_url_decodes_to_is_the_one_given() -> None:
    import redis

    password = "p@ss:w/rd%?#"
    settings = Settings(redis_url="redis://127.0.0.1:6379/0", redis_password=password)
    kwargs = redis.ConnectionPool.from_url(settings.redis_url).connection_kwargs
    assert kwargs["password"] == password
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 0)


def test_the_password_stays_out_of_the_settings_repr() -> None:
    settings = Settings(redis_url="redis://:inurl@r:1/0", redis_password="given")
    assert "inurl" not in repr(settings) and "given" not in repr(settings)
    assert "admin_namespace=" in repr(settings)  # the rest is still shown


def test_tenant_location_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DAVIT_LOCAL_LOCATION_ROOTS": "/srv/davit/{namespace}, /mnt/shared",
            "DAVIT_TENANT_ENDPOINT_ALLOWLIST": "minio.storage.svc:9000,*.amazonaws.com",
        }
    )
    assert parse_list(settings.local_location_roots) == ("/srv/davit/{namespace}", "/mnt/shared")
    assert parse_list(settings.tenant_endpoint_allowlist) == ("minio.storage.svc:9000", "*.amazonaws.com")


@pytest.mark.parametrize(
    ("value", "items"),
    [("", ()), (" , ,", ()), ("a", ("a",)), (" a , b ,", ("a", "b"))],
)
def test_parse_list(value: str, items: tuple[str, ...]) -> None:
    assert parse_list(value) == items
