"""Redis requires a password: the stack's Redis refuses a client without it (NOAUTH) — a tenant's pod,
or any local process, that reaches Redis' port can neither read the operations' scratch state nor queue
work for the services — while the services, which have it, run a backup to Successful. The password
appears in no log: not the services' (Celery prints its broker URL in its banner, masked), not the
stack's, not ``devstack status``."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from davit.constants import Queue
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, wait_final

pytestmark = pytest.mark.integration


def redis_address(stack: StackEnv) -> tuple[str, int, str]:
    """(host, port, password) of the stack's Redis, from the URL the stack's env gives."""
    url = urlsplit(stack.redis_url)
    assert url.hostname and url.port and url.password, f"REDIS_URL carries no password: {url.scheme}://…"
    return url.hostname, url.port, url.password


def raw_command(host: str, port: int, command: bytes) -> bytes:
    """One inline command on a fresh connection and the server's first reply line, as a client that
    knows nothing of Davit (or of redis-py) sees it."""
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(command + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def test_redis_refuses_clients_without_the_password(stack: StackEnv) -> None:
    host, port, password = redis_address(stack)
    authorised = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    assert authorised.ping() is True

    # The server's own words to a client that did not authenticate.
    assert raw_command(host, port, b"PING").startswith(b"-NOAUTH"), "Redis answers without AUTH"
    assert raw_command(host, port, b"KEYS *").startswith(b"-NOAUTH")

    anonymous = redis.Redis(host=host, port=port, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    # The attack: queue crafted work for the backup service and read the operations' scratch state.
    queue = Queue.SNAPSHOT.value
    before = authorised.llen(queue)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.lpush(queue, b'{"crafted": true}')
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.keys("davit:*")
    assert authorised.llen(queue) == before, "a message was queued without the password"

    wrong = redis.Redis(host=host, port=port, password=f"not-{password}", socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError) as refused:
        wrong.ping()
    assert password not in str(refused.value)


def test_the_password_is_kept_where_only_its_owner_reads_it(stack: StackEnv) -> None:
    _, _, password = redis_address(stack)
    state = stack.state_dir
    private = [state / "env", state / "redis-password", *sorted(state.glob("cluster-*/redis.conf"))]
    assert len(private) >= 3
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: {oct(path.stat().st_mode)}"
        assert password in path.read_text(), path
    # Not on redis-server's command line, which every local user can read in /proc.
    record = json.loads((state / "pids" / "a-redis.pid").read_text())
    cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().decode()
    assert "redis-server" in cmdline and password not in cmdline
    # Nor in anything the stack logs or `devstack status` prints.
    for log in sorted((state / "logs").glob("*.log")):
        assert password not in log.read_text(errors="replace"), f"{log} holds the Redis password"
    status = subprocess.run(
        [sys.executable, "-m", "devstack", "--dir", str(state), "status"],
        capture_output=True, text=True, check=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert "a-redis" in status.stdout and password not in status.stdout + status.stderr


def test_services_work_with_the_password_and_never_log_it(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    _, _, password = redis_address(stack)
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    stack.kubectl(
        "-n", namespace, "create", "configmap", "settings", f"--from-literal=run={uuid.uuid4().hex}"
    )
    apply(stack, backup_manifest(namespace, "through-redis"))

    status = wait_final(stack, namespace, "through-redis", services)
    assert status["status"] == "Successful", status
    assert status["resourceCount"] > 0

    logs = {path.name: path.read_text(errors="replace") for path in sorted(services.log_dir.glob("*.log"))}
    assert {"watcher.log", "backup.log", "resources.log"} <= set(logs), sorted(logs)
    leaked = sorted(name for name, text in logs.items() if password in text)
    assert not leaked, f"the Redis password is in {leaked}"
    assert password not in services.logs()
    # Celery prints its broker URL in each worker's banner: with the password masked.
    banners = [line for text in logs.values() for line in text.splitlines() if "transport:" in line]
    assert banners, "no Celery banner in the workers' logs"
    assert all(":**@127.0.0.1" in line for line in banners), banners
    # The services get it in their environment, never as an argument a process listing would show.
    for proc in services.procs.values():
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert password not in argv


def test_a_refused_connection_is_logged_without_the_password(stack: StackEnv, tmp_path: Path) -> None:
    # A worker given a wrong password (say, a rotated Secret not yet rolled out) keeps retrying; what it
    # logs about the refusal names the server, never the password it tried.
    host, port, _ = redis_address(stack)
    tried = f"wrong-{uuid.uuid4().hex}"
    worker = Services(stack, tmp_path / "logs")
    worker.log_dir.mkdir()
    worker.start("backup", DAVIT_REDIS_URL=f"redis://:{tried}@{host}:{port}/0")
    try:
        log = worker.log_dir / "backup.log"
        refusal = wait_for(
            "the worker to log the refused connection",
            lambda: [
                line for line in log.read_text(errors="replace").splitlines() if "Cannot connect" in line
            ],
            timeout=60,
        )
    finally:
        worker.stop_all()
    assert any(f"redis://:**@{host}:{port}" in line for line in refusal), refusal
    text = log.read_text(errors="replace")
    assert tried not in text, "the tried password is in the worker's log"
    assert any(word in text.lower() for word in ("invalid", "wrongpass", "authentication")), refusal
