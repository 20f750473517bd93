"""Keys and certificates for a dev control plane: a CA, the API server's serving certificate (for
127.0.0.1 and localhost), the service-account signing key, and bearer tokens for token auth."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _new_ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Name, x509.Certificate]:
    """A self-signed CA: its key, name and certificate."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return ca_key, ca_name, ca


def _certificate(
    subject: str,
    public_key: rsa.RSAPublicKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def ensure_pki(directory: Path) -> Pki:
    """Create the keys and certificates once; later calls reuse them."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    if all(p.exists() for p in (pki.ca_cert, pki.serving_cert, pki.serving_key, pki.sa_key, pki.sa_pub)):
        return pki

    ca_key, ca_name, ca = _new_ca("davit-dev-ca")
    serving_key = _key()
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    serving = _certificate(
        "kube-apiserver",
        serving_key.public_key(),
        ca_name,
        ca_key,
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        san,
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.serving_key, serving_key)
    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def new_token() -> str:
    return secrets.token_hex(24)


# --- the kubelet endpoint ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeletPki:
    """The dev kubelet's exec endpoint and the API server's way in: a CA of the kubelet's own (so an
    existing cluster's CA is never touched), the endpoint's serving certificate for 127.0.0.1, and the
    client certificate the API server presents (``--kubelet-client-certificate``)."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    client_cert: Path
    client_key: Path


def ensure_kubelet_pki(directory: Path) -> KubeletPki:
    """Create the kubelet endpoint's CA and certificates once; later calls reuse them."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = KubeletPki(
        ca_cert=directory / "kubelet-ca.crt",
        serving_cert=directory / "kubelet.crt",
        serving_key=directory / "kubelet.key",
        client_cert=directory / "apiserver-kubelet-client.crt",
        client_key=directory / "apiserver-kubelet-client.key",
    )
    if all(
        p.exists() for p in (pki.ca_cert, pki.serving_cert, pki.serving_key, pki.client_cert, pki.client_key)
    ):
        return pki
    ca_key, ca_name, ca = _new_ca("davit-dev-kubelet-ca")
    serving_key, client_key = _key(), _key()
    serving = _certificate(
        "davit-dev-kubelet", serving_key.public_key(), ca_name, ca_key,
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )  # fmt: skip
    client = _certificate(
        "kube-apiserver-kubelet-client", client_key.public_key(), ca_name, ca_key,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    _write_key(pki.serving_key, serving_key)
    _write_key(pki.client_key, client_key)
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    # The CA's certificate last: its presence with the others is what says the set is complete.
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return pki
