"""Per-cluster TLS: a CA of its own and one leaf certificate per role.

Every cluster gets a fresh CA, so a certificate from one cluster never opens another.
Dask uses mutual TLS and workers connect to each other, so every leaf carries both the
serverAuth and the clientAuth usage. Keys stay in memory as PEM; they reach the disk only
through :func:`write_tls_files` (0600 files in a 0700 folder), because the Dask command
line takes file paths only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reccd.providers import ClusterTLS

VALIDITY = dt.timedelta(days=30)
BACKDATE = dt.timedelta(minutes=5)  # tolerate clock skew between machines
ROLES = ("scheduler", "worker", "client")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RECC"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def make_cluster_tls(cluster_name: str) -> ClusterTLS:
    """A new CA for ``cluster_name`` and scheduler, worker and client leaves signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = now - BACKDATE, now + VALIDITY

    ca_key = _key()
    ca_name = _name(f"recc-ca-{cluster_name}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    san = x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.DNSName("*.recc.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ])
    leaves: dict[str, tuple[str, str]] = {}
    for role in ROLES:
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"recc-{role}-{cluster_name}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(san, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaves[role] = (_cert_pem(cert), _key_pem(key))

    return ClusterTLS(
        ca_cert=_cert_pem(ca_cert),
        scheduler_cert=leaves["scheduler"][0],
        scheduler_key=leaves["scheduler"][1],
        worker_cert=leaves["worker"][0],
        worker_key=leaves["worker"][1],
        client_cert=leaves["client"][0],
        client_key=leaves["client"][1],
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file that is 0600 from the moment it exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def write_tls_files(tls: ClusterTLS, folder: Path) -> dict[str, Path]:
    """Write the CA and the scheduler and worker leaves into ``folder`` (made 0700).

    The client key is not written: the client side uses in-memory PEM (:func:`client_security`).
    Existing files are replaced (removed, then created anew with 0600), so a retried step converges.
    Returns ``{"ca", "scheduler_cert", "scheduler_key", "worker_cert", "worker_key"}`` paths.
    """
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
        raise PermissionError(f"{folder} is not owned by this user")
    os.chmod(folder, 0o700)
    files = {
        "ca": ("ca.pem", tls.ca_cert),
        "scheduler_cert": ("scheduler.pem", tls.scheduler_cert),
        "scheduler_key": ("scheduler-key.pem", tls.scheduler_key),
        "worker_cert": ("worker.pem", tls.worker_cert),
        "worker_key": ("worker-key.pem", tls.worker_key),
    }
    out: dict[str, Path] = {}
    for label, (filename, text) in files.items():
        path = folder / filename
        path.unlink(missing_ok=True)
        _write_private(path, text)
        out[label] = path
    return out


def client_security(tls: ClusterTLS):
    """A ``distributed.Security`` for a client of this cluster, from in-memory PEM."""
    from distributed import Security  # imported late: importing distributed is slow

    return Security(
        tls_ca_file=tls.ca_cert,
        tls_client_cert=tls.client_cert,
        tls_client_key=tls.client_key,
        require_encryption=True,
    )
