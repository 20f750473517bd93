"""A tenant's BackupLocation is untrusted input: a tenant who may only create Davit resources in its own
namespace tries to make Davit's workers and root node agents read and write directories outside the
administrator's roots, and to make them connect to addresses of the tenant's choosing. Each attack is made
through the API as that tenant (a ServiceAccount bound to a namespace Role), and what must not be touched
is listed before and after, not taken from Davit's status."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.tenants import ADMIN_NAMESPACE, TenantUser, events_of, wait_final

pytestmark = pytest.mark.integration


class Tenant(TenantUser):
    """The tenant of these tests: its locations and backups, made as its ServiceAccount."""

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = self.find(kind, name)
        assert found is not None, f"{kind} {self.namespace}/{name} not found"
        return found

    def location(self, name: str, **spec: Any) -> None:
        self.apply(
            {
                "apiVersion": "davit.dev/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": name, "namespace": self.namespace},
                "location": spec,
            }
        )

    def backup(self, name: str, location: str) -> None:
        self.apply(
            {
                "apiVersion": "davit.dev/v1alpha1",
                "kind": "ApplicationBackup",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "backupLocation": location,
                    "namespaces": [self.namespace],
                    "reclaimPolicy": "Retain",
                },
            }
        )


@pytest.fixture
def tenant(stack: StackEnv, namespace: str) -> Tenant:
    return Tenant(stack, namespace)


def location_status(stack: StackEnv, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        out = stack.kubectl("-n", namespace, "get", "backuplocation", name, "-o", "json").stdout
        status: dict[str, Any] = json.loads(out).get("status") or {}
        return status if status.get("phase") == phase else None

    return wait_for(f"BackupLocation {namespace}/{name} to be {phase}", reached, timeout=60)


def wait_warning(stack: StackEnv, namespace: str, name: str, reason: str, text: str) -> dict[str, Any]:
    return wait_for(
        f"a Warning {reason} Event on {namespace}/{name} saying {text!r}",
        lambda: next(
            (
                e
                for e in events_of(stack, namespace, name)
                if e["type"] == "Warning" and e["reason"] == reason and text in e["message"]
            ),
            None,
        ),
    )


def backup_final(stack: StackEnv, namespace: str, name: str, services: Services) -> dict[str, Any]:
    return wait_final(stack, services, "applicationbackup", namespace, name)


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``directory`` (and the directory itself) with its size and mtime: a file written
    and removed again (a probe) still changes its directory's mtime."""
    listing = {".": (0, directory.stat().st_mtime_ns)}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root, name)
            info = path.lstat()
            listing[str(path.relative_to(directory))] = (info.st_size, info.st_mtime_ns)
    return listing


def top_level(directory: Path) -> tuple[int, set[str]]:
    """The directory's mtime and names, for a directory too big to walk (``/etc``)."""
    return directory.stat().st_mtime_ns, set(os.listdir(directory))


# --- local directories ------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path, namespace: str) -> tuple[str, Path, Path]:
    """(the roots setting, the tenant's own root, a directory standing for another tenant's data)."""
    base = tmp_path / "tenant-roots"
    own = base / namespace
    other = base / "other-tenant"
    (own / "store").mkdir(parents=True)
    (other / "backups").mkdir(parents=True)
    (other / "backups" / "their-data.json").write_text('{"secret": "of another tenant"}')
    return f"{base}/{{namespace}}", own, other


def test_tenant_local_locations_outside_the_roots_are_refused_and_nothing_is_written(
    stack: StackEnv,
    stack_services: Callable[..., Services],
    tenant: Tenant,
    roots: tuple[str, Path, Path],
) -> None:
    setting, own, other = roots
    (own / "escape").symlink_to(other)
    services = stack_services(DAVIT_LOCAL_LOCATION_ROOTS=setting)
    other_before, etc_before = tree(other), top_level(Path("/etc"))

    attacks = {
        "other-tenant": (str(other), "LocalPathNotAllowed"),
        "etc": ("/etc", "LocalPathNotAllowed"),
        "dot-dot": (f"{own}/../other-tenant", "'..' is not allowed"),
        "symlink": (str(own / "escape"), f"which leads to {os.path.realpath(other)}"),
    }
    for name, (path, _) in attacks.items():
        tenant.location(name, type="local", path=path)
        tenant.backup(f"via-{name}", name)
    # The same tenant's directory under its root works: the guard tells one from the other.
    tenant.location("own", type="local", path=str(own / "store"))
    tenant.backup("via-own", "own")

    for name, (_, reason) in attacks.items():
        status = location_status(stack, tenant.namespace, name, "Unavailable")
        assert reason in status["message"], status
        wait_warning(stack, tenant.namespace, name, "Unavailable", reason)
        final = backup_final(stack, tenant.namespace, f"via-{name}", services)
        assert final["status"] == "Failed", final
        assert reason in final["reason"], final
        wait_warning(stack, tenant.namespace, f"via-{name}", "Failed", reason)
        # The tenant sees the reason on its own objects, with its own permissions.
        assert reason in tenant.get("applicationbackup", f"via-{name}")["status"]["reason"]

    assert location_status(stack, tenant.namespace, "own", "Available")
    assert backup_final(stack, tenant.namespace, "via-own", services)["status"] == "Successful"
    assert any((own / "store" / "backups").rglob("*")), "the allowed location holds the backup"

    # Nothing was written, not even a probe, where the tenant pointed.
    assert tree(other) == other_before
    assert top_level(Path("/etc")) == etc_before


def test_a_location_changed_to_leave_its_root_is_refused_at_its_next_use(
    stack: StackEnv,
    stack_services: Callable[..., Services],
    tenant: Tenant,
    roots: tuple[str, Path, Path],
) -> None:
    setting, own, other = roots
    services = stack_services(DAVIT_LOCAL_LOCATION_ROOTS=setting)
    tenant.location("loc", type="local", path=str(own / "store"))
    location_status(stack, tenant.namespace, "loc", "Available")
    tenant.backup("first", "loc")
    assert backup_final(stack, tenant.namespace, "first", services)["status"] == "Successful"
    other_before = tree(other)

    # Accepted and used once; now pointed at another tenant's data, and used at once, before the
    # watcher's next check: the worker checks again when it opens the store.
    tenant.location("loc", type="local", path=str(other))
    tenant.backup("second", "loc")
    final = backup_final(stack, tenant.namespace, "second", services)
    assert final["status"] == "Failed", final
    assert "LocalPathNotAllowed" in final["reason"], final
    status = location_status(stack, tenant.namespace, "loc", "Unavailable")
    assert "LocalPathNotAllowed" in status["message"]
    wait_warning(stack, tenant.namespace, "loc", "Unavailable", "LocalPathNotAllowed")
    assert tree(other) == other_before


# --- endpoints --------------------------------------------------------------------------------------


class Listener:
    """A TCP listener on a free loopback port that counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


def _host_port(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def test_a_tenant_endpoint_off_the_allowlist_is_never_contacted(
    stack: StackEnv, stack_services: Callable[..., Services], tenant: Tenant, listener: Listener
) -> None:
    env = stack.env
    allowed = _host_port(env["S3_ENDPOINT"])
    services = stack_services(DAVIT_TENANT_ENDPOINT_ALLOWLIST=allowed)
    target = f"http://127.0.0.1:{listener.port}"
    keys = {"accessKeyID": env["S3_ACCESS_KEY"], "secretAccessKey": env["S3_SECRET_KEY"]}

    tenant.location(
        "s3-inside", type="s3", path=env["S3_BUCKET"], prefix="ssrf",
        s3Config={"region": env["S3_REGION"], "endpoint": target, **keys},
    )  # fmt: skip
    tenant.location(
        "azure-inside", type="azure", path="ssrf",
        azureConfig={"storageAccountName": "devstoreaccount1", "storageAccountKey": "a2V5",
                     "endpoint": f"{target}/devstoreaccount1"},
    )  # fmt: skip
    # A cloud's default endpoint is not on this administrator's list either.
    tenant.location("aws", type="s3", path="bucket", s3Config={"region": "us-east-1", **keys})
    # The allowed endpoint works for the same tenant.
    tenant.location(
        "allowed", type="s3", path=env["S3_BUCKET"], prefix=f"allowed-{tenant.namespace}",
        s3Config={"region": env["S3_REGION"], "endpoint": env["S3_ENDPOINT"], "disableSSL": True, **keys},
    )  # fmt: skip
    for name in ("s3-inside", "azure-inside", "aws"):
        tenant.backup(f"via-{name}", name)

    for name in ("s3-inside", "azure-inside", "aws"):
        status = location_status(stack, tenant.namespace, name, "Unavailable")
        assert "EndpointNotAllowed" in status["message"], status
        assert "DAVIT_TENANT_ENDPOINT_ALLOWLIST" in status["message"], status
        wait_warning(stack, tenant.namespace, name, "Unavailable", "EndpointNotAllowed")
        final = backup_final(stack, tenant.namespace, f"via-{name}", services)
        assert final["status"] == "Failed", final
        assert "EndpointNotAllowed" in final["reason"], final
    assert location_status(stack, tenant.namespace, "allowed", "Available")
    assert listener.connections == 0

    # The listener does notice a connection: the admin namespace is not held to the list, and its
    # location with the same endpoint is contacted.
    stack.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation",
        "metadata": {"name": f"probe-{tenant.namespace}", "namespace": ADMIN_NAMESPACE},
        "location": {"type": "s3", "path": "bucket", "s3Config": {"endpoint": target, **keys}},
    }))  # fmt: skip
    try:
        wait_for("the admin location's check to reach the listener", lambda: listener.connections > 0)
    finally:
        stack.kubectl("-n", ADMIN_NAMESPACE, "delete", "backuplocation", f"probe-{tenant.namespace}")


# --- TLS --------------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no one trusts, and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class TlsListener(Listener):
    """An https endpoint with an untrusted certificate that counts the requests that got through the
    handshake (a client that verifies certificates never sends one)."""

    def __init__(self, directory: Path) -> None:
        import ssl

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*_self_signed(directory))
        self.requests = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                if tls.recv(4096):
                    self.requests += 1
                    tls.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:  # the client refused the certificate (ssl.SSLError is an OSError)
            conn.close()


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[TlsListener]:
    running = TlsListener(tmp_path)
    yield running
    running.close()


def test_disable_ssl_with_an_https_endpoint_still_verifies_the_certificate(
    stack: StackEnv, stack_services: Callable[..., Services], tenant: Tenant, tls_listener: TlsListener
) -> None:
    env = stack.env
    stack_services()
    endpoint = f"https://127.0.0.1:{tls_listener.port}"
    keys = {"accessKeyID": env["S3_ACCESS_KEY"], "secretAccessKey": env["S3_SECRET_KEY"]}
    # Stork's disableSSL next to an https:// endpoint: once taken to mean "trust any certificate".
    tenant.location(
        "disable-ssl", type="s3", path="bucket", s3Config={"endpoint": endpoint, "disableSSL": True, **keys}
    )
    status = location_status(stack, tenant.namespace, "disable-ssl", "Unavailable")
    assert "certificate verify failed" in status["message"], status
    assert tls_listener.connections > 0 and tls_listener.requests == 0

    # Only the explicit field accepts the certificate: the request (with its signed credentials) then
    # reaches the endpoint, which is what a location that skips verification risks.
    tenant.location(
        "skip-verify",
        type="s3",
        path="bucket",
        s3Config={"endpoint": endpoint, "insecureSkipTLSVerify": True, **keys},
    )
    location_status(stack, tenant.namespace, "skip-verify", "Unavailable")
    wait_for("a request through the skipped verification", lambda: tls_listener.requests > 0)
