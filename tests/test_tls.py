"""Per-cluster TLS material: chains, usages, file modes, isolation between clusters."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from reccd.tls import client_security, make_cluster_tls, write_tls_files

ROLES = ("scheduler", "worker", "client")


@pytest.fixture(scope="module")
def tls():
    return make_cluster_tls("alpha")


def leaf(tls, role):
    cert = x509.load_pem_x509_certificate(getattr(tls, f"{role}_cert").encode())
    key = serialization.load_pem_private_key(getattr(tls, f"{role}_key").encode(), password=None)
    return cert, key


def test_ca_is_a_p256_ca_named_for_the_cluster(tls):
    ca = x509.load_pem_x509_certificate(tls.ca_cert.encode())
    assert ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "recc-ca-alpha"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(ca.public_key().curve, ec.SECP256R1)
    now = dt.datetime.now(dt.timezone.utc)
    assert ca.not_valid_before_utc < now - dt.timedelta(minutes=1)  # backdated for clock skew
    assert ca.not_valid_after_utc > now + dt.timedelta(days=7)


@pytest.mark.parametrize("role", ROLES)
def test_leaves_chain_to_the_cluster_ca(tls, role):
    ca = x509.load_pem_x509_certificate(tls.ca_cert.encode())
    cert, key = leaf(tls, role)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "*.recc.local"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    pem = getattr(tls, f"{role}_key")
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted


@pytest.mark.parametrize("role", ROLES)
def test_leaves_pass_webpki_verification(tls, role):
    from cryptography.x509.verification import PolicyBuilder, Store

    ca = x509.load_pem_x509_certificate(tls.ca_cert.encode())
    cert, _ = leaf(tls, role)
    builder = PolicyBuilder().store(Store([ca]))
    builder.build_server_verifier(x509.DNSName("localhost")).verify(cert, [])
    builder.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(cert, [])
    builder.build_client_verifier().verify(cert, [])


def test_two_clusters_get_different_cas(tls):
    cert, _ = leaf(tls, "client")
    other = make_cluster_tls("beta")
    assert other.ca_cert != tls.ca_cert
    with pytest.raises(ValueError):  # different issuer
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other.ca_cert.encode()))
    # Even a cluster created again under the same name has a new key: same issuer name, bad signature.
    same_name = x509.load_pem_x509_certificate(make_cluster_tls("alpha").ca_cert.encode())
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(same_name)


def test_files_are_private(tls, tmp_path):
    folder = tmp_path / "c" / "tls"
    paths = write_tls_files(tls, folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {p.name for p in paths.values()} == {
        "ca.pem", "scheduler.pem", "scheduler-key.pem", "worker.pem", "worker-key.pem"}
    assert sorted(os.listdir(folder)) == sorted(p.name for p in paths.values())  # no client key on disk
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert paths["worker_key"].read_text() == tls.worker_key
    # Python's ssl (what Dask uses) accepts them.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=paths["ca"])
    ctx.load_cert_chain(paths["scheduler_cert"], paths["scheduler_key"])
    # Writing again (a retried step) replaces the files and keeps the modes.
    again = make_cluster_tls("alpha")
    write_tls_files(again, folder)
    assert paths["ca"].read_text() == again.ca_cert
    assert stat.S_IMODE(paths["scheduler_key"].stat().st_mode) == 0o600


def test_existing_folder_is_tightened(tls, tmp_path):
    folder = tmp_path / "loose"
    folder.mkdir(mode=0o755)
    write_tls_files(tls, folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_client_security_uses_in_memory_pem(tls):
    sec = client_security(tls)
    assert sec.require_encryption is True
    assert sec.tls_ca_file == tls.ca_cert and sec.tls_client_key == tls.client_key
    ctx = sec.get_connection_args("client")["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED
