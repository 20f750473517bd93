"""The stores the stack runs: its own Redis, the S3 emulator (moto, with IAM authentication on) and
Azurite (Azure Blob)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.net import free_port, port_open, wait_until
from devstack.procs import ProcessTable

#: Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_VERSION = "3.37.0"

#: Requests moto serves before it starts enforcing IAM: the harness' create_user, put_user_policy and
#: create_access_key. Every request after them must be signed with a key moto knows.
_MOTO_BOOTSTRAP_REQUESTS = 3


def azurite_dir() -> Path:
    cache = Path(os.environ.get("DAVIT_CACHE", Path.home() / ".cache" / "davit"))
    return cache / "azurite"


def azurite_binary() -> Path:
    path = azurite_dir() / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run scripts/install-deps.sh (make deps)")
    return path


@dataclass
class StoresConfig:
    redis_port: int
    s3_port: int
    azure_port: int
    s3_bucket: str = "davit-dev"
    azure_container: str = "davit-dev"
    s3_access_key: str = ""
    s3_secret_key: str = ""

    @classmethod
    def new(cls) -> StoresConfig:
        return cls(redis_port=free_port(), s3_port=free_port(), azure_port=free_port())

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def azure_connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.azure_port}/{AZURITE_ACCOUNT};"
        )


def new_redis_password() -> str:
    """A password for one stack's Redis: 192 random bits, hex, so it needs no escaping in a URL."""
    return secrets.token_hex(24)


def redis_url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, from the first byte on (no window in which
    the file exists with the umask's mode)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def start_redis(procs: ProcessTable, name: str, port: int, workdir: Path, password: str) -> None:
    """redis-server on loopback, requiring ``password`` (AUTH) from every client. The password goes into
    a configuration file of mode 0600 rather than onto the command line, where any local user could read
    it in the process list. Persistent as in a cluster (deploy/watcher.yaml): an append-only file in
    ``workdir``, fsynced every second, so a Redis stopped and started again (``Stack.restart_redis``)
    keeps the running operations' scratch state; started again the same way, it reloads it."""
    server = shutil.which("redis-server")
    if server is None:
        raise FileNotFoundError("redis-server is missing: install Debian's redis-server (make deps)")
    if not password:
        raise ValueError("the stack's Redis needs a password")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "redis.conf"
    write_private(config, f"requirepass {password}\n")
    procs.start(
        name,
        [
            server, str(config), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(workdir),
            "--daemonize", "no", "--protected-mode", "yes",
        ],
    )  # fmt: skip
    wait_until("redis", lambda: port_open(port), 20, lambda: procs.log_tail(name))


def start_s3(procs: ProcessTable, config: StoresConfig) -> None:
    """moto's server with authentication on; creates a user with full S3 rights, its key and the bucket."""
    import boto3

    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_MOTO_BOOTSTRAP_REQUESTS)}
    moto = Path(sys.executable).parent / "moto_server"
    procs.start("s3", [str(moto), "-H", "127.0.0.1", "-p", str(config.s3_port)], env=env)
    wait_until("s3 emulator", lambda: port_open(config.s3_port), 30, lambda: procs.log_tail("s3"))

    bootstrap = {
        "endpoint_url": config.s3_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "bootstrap",
        "aws_secret_access_key": "bootstrap",
    }
    iam = boto3.client("iam", **bootstrap)
    iam.create_user(UserName="davit")
    iam.put_user_policy(
        UserName="davit",
        PolicyName="davit-s3",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="davit")["AccessKey"]
    config.s3_access_key = key["AccessKeyId"]
    config.s3_secret_key = key["SecretAccessKey"]
    s3 = boto3.client(
        "s3",
        endpoint_url=config.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=config.s3_access_key,
        aws_secret_access_key=config.s3_secret_key,
    )
    s3.create_bucket(Bucket=config.s3_bucket)


def start_azurite(procs: ProcessTable, config: StoresConfig, workdir: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    workdir.mkdir(parents=True, exist_ok=True)
    procs.start(
        "azurite",
        [
            str(azurite_binary()), "--blobHost", "127.0.0.1", "--blobPort", str(config.azure_port),
            "--location", str(workdir), "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ],
    )  # fmt: skip
    wait_until("azurite", lambda: port_open(config.azure_port), 30, lambda: procs.log_tail("azurite"))
    service = BlobServiceClient.from_connection_string(config.azure_connection_string)
    container = service.get_container_client(config.azure_container)
    if not container.exists():
        container.create_container()
