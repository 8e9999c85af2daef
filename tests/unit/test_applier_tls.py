"""The lab applier's TLS emulation (tools/applier): real CA, CSR and server
certificate, checked by OpenSSL (`openssl verify`) and by Python's TLS client.

No SSH and no program run: the emulation functions are called as the applier calls
them, with the inputs pulumi-tls sends (camelCase).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.pki import SERVER_CERT_USES, covers
from tools.applier.apply import REPLACE_ON
from tools.applier.state import ApplyError, Entry
from tools.applier.tls import (
    _due_for_renewal,
    _tls_cert_request,
    _tls_locally_signed,
    _tls_private_key,
    _tls_self_signed,
)

pytestmark = pytest.mark.unit

DNS = ["gitlab.forgeway.test", "registry.forgeway.test"]
IPS = ["203.0.113.10", "10.8.0.2", "198.51.100.2"]


def _key() -> str:
    return _tls_private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]


def _ca() -> tuple[str, str]:
    """(key PEM, cert PEM) of a CA made as components.pki.CertificateAuthority asks."""
    key = _key()
    cert = _tls_self_signed(
        {
            "privateKeyPem": key,
            "isCaCertificate": True,
            "validityPeriodHours": 87600,
            "allowedUses": ["cert_signing", "crl_signing", "digital_signature"],
            "subject": {"commonName": "forgeway CA gitlab.forgeway.test", "organization": "forgeway"},
        }
    )["certPem"]
    return key, cert


def _server(ca: tuple[str, str], dns: list[str], ips: list[str], hours: int = 8760) -> dict[str, Any]:
    """Key, CSR and certificate, as components.pki.ServerCertificate asks for them."""
    key = _key()
    csr = _tls_cert_request(
        {
            "privateKeyPem": key,
            "subject": {"commonName": dns[0], "organization": "forgeway"},
            "dnsNames": dns,
            "ipAddresses": ips,
        }
    )
    signed = _tls_locally_signed(
        {
            "certRequestPem": csr["certRequestPem"],
            "caCertPem": ca[1],
            "caPrivateKeyPem": ca[0],
            "validityPeriodHours": hours,
            "earlyRenewalHours": 720,
            "allowedUses": list(SERVER_CERT_USES),
            "setSubjectKeyId": True,
        }
    )
    return {"key": key, **csr, **signed}


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return _ca()


@pytest.fixture(scope="module")
def server(ca: tuple[str, str]) -> dict[str, Any]:
    return _server(ca, DNS, IPS)


def _openssl_verify(tmp_path: Path, ca_pem: str, cert_pem: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ca.pem").write_text(ca_pem)
    (tmp_path / "cert.pem").write_text(cert_pem)
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(tmp_path / "ca.pem"), *extra,
         str(tmp_path / "cert.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_csr_is_real_signed_and_carries_subject_and_sans(server: dict[str, Any]) -> None:
    csr = x509.load_pem_x509_csr(server["certRequestPem"].encode())
    assert csr.is_signature_valid
    assert server["keyAlgorithm"] == "ECDSA"
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DNS[0]
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == DNS
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == IPS


def test_signed_certificate_verifies_against_the_ca_with_openssl(
    tmp_path: Path, ca: tuple[str, str], server: dict[str, Any]
) -> None:
    done = _openssl_verify(tmp_path, ca[1], server["certPem"], "-verify_hostname", DNS[1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(": OK")


def test_openssl_refuses_the_certificate_under_another_ca(tmp_path: Path, server: dict[str, Any]) -> None:
    done = _openssl_verify(tmp_path, _ca()[1], server["certPem"])
    assert done.returncode != 0


def test_openssl_refuses_a_name_the_certificate_does_not_carry(
    tmp_path: Path, ca: tuple[str, str], server: dict[str, Any]
) -> None:
    done = _openssl_verify(tmp_path, ca[1], server["certPem"], "-verify_hostname", "evil.forgeway.test")
    assert done.returncode != 0 and "hostname mismatch" in done.stdout + done.stderr


def test_certificate_has_the_requests_names_uses_validity_and_key_ids(
    ca: tuple[str, str], server: dict[str, Any]
) -> None:
    cert = x509.load_pem_x509_certificate(server["certPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(ca[1].encode())
    assert cert.issuer == ca_cert.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == DNS
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == IPS
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(hours=8760)
    assert server["validityEndTime"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ca_usage = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and ca_usage.crl_sign


def _handshake(ca_pem: str, server: dict[str, Any], tmp_path: Path, server_hostname: str) -> None:
    """A real TLS handshake over a socketpair: our server presents the certificate;
    a Python client that trusts only our CA checks it for server_hostname (the check
    ssl.match_hostname did before 3.12: OpenSSL's own, DNS and IP SANs)."""
    (tmp_path / "chain.pem").write_text(server["certPem"] + ca_pem)
    (tmp_path / "key.pem").write_text(server["key"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cadata=ca_pem)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; strict clients must accept us
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)

    def serve() -> None:
        # The server side ends with an error when the client aborts the handshake.
        with contextlib.suppress(OSError), server_ctx.wrap_socket(right, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname=server_hostname) as tls:
            tls.sendall(b"x")
    finally:
        left.close()
        thread.join(10)
        right.close()


@pytest.mark.parametrize("name", [*DNS, *IPS])
def test_python_tls_client_accepts_every_name_and_address(
    tmp_path: Path, ca: tuple[str, str], server: dict[str, Any], name: str
) -> None:
    _handshake(ca[1], server, tmp_path, name)


@pytest.mark.parametrize("name", ["evil.forgeway.test", "forgeway.test", "10.8.0.9"])
def test_python_tls_client_refuses_a_name_the_certificate_does_not_carry(
    tmp_path: Path, ca: tuple[str, str], server: dict[str, Any], name: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(ca[1], server, tmp_path, name)
    assert not covers([*DNS, *IPS], name)  # the config check's rule agrees with the client


def test_python_tls_client_refuses_a_certificate_from_another_ca(tmp_path: Path, server: dict[str, Any]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(_ca()[1], server, tmp_path, DNS[0])


def test_signing_with_a_key_that_is_not_the_cas_is_refused(ca: tuple[str, str]) -> None:
    csr = _tls_cert_request({"privateKeyPem": _key(), "subject": {"commonName": "x.test"}, "dnsNames": ["x.test"]})
    with pytest.raises(ApplyError, match="not the key of ca_cert_pem"):
        _tls_locally_signed(
            {"certRequestPem": csr["certRequestPem"], "caCertPem": ca[1], "caPrivateKeyPem": _key(),
             "validityPeriodHours": 1, "allowedUses": ["server_auth"]}
        )  # fmt: skip


def test_inputs_the_emulation_does_not_honour_are_refused_by_name(ca: tuple[str, str]) -> None:
    with pytest.raises(ApplyError, match="privateKeyPemWo"):
        _tls_cert_request({"privateKeyPemWo": _key(), "privateKeyPemWoVersion": 1})
    csr = _tls_cert_request({"privateKeyPem": _key(), "dnsNames": ["x.test"]})["certRequestPem"]
    base = {"certRequestPem": csr, "caCertPem": ca[1], "caPrivateKeyPem": ca[0], "validityPeriodHours": 1}
    with pytest.raises(ApplyError, match="ipsec_tunnel"):
        _tls_locally_signed({**base, "allowedUses": ["server_auth", "ipsec_tunnel"]})
    with pytest.raises(ApplyError, match="caPrivateKeyPemWo"):
        _tls_locally_signed({**base, "caPrivateKeyPemWo": ca[0]})
    with pytest.raises(ApplyError, match="subject field title"):
        _tls_cert_request({"privateKeyPem": _key(), "subject": {"title": "x"}})


def test_every_input_change_replaces_requests_and_certificates() -> None:
    assert REPLACE_ON["tls:index/certRequest:CertRequest"] == {"*"}
    assert REPLACE_ON["tls:index/locallySignedCert:LocallySignedCert"] == {"*"}


def test_a_certificate_is_due_for_renewal_within_its_early_renewal_window(server: dict[str, Any]) -> None:
    entry = Entry(
        "tls:index/locallySignedCert:LocallySignedCert", "registry-cert", "id", 0, {"earlyRenewalHours": 720}, server
    )
    ends = datetime.datetime.strptime(server["validityEndTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert not _due_for_renewal(entry)
    assert not _due_for_renewal(entry, ends - datetime.timedelta(hours=721))
    assert _due_for_renewal(entry, ends - datetime.timedelta(hours=720))
    assert not _due_for_renewal(Entry("tls:index/certRequest:CertRequest", "r", "id", 0, {}, server))


def test_ip_sans_are_addresses_not_names(server: dict[str, Any]) -> None:
    cert = x509.load_pem_x509_certificate(server["certPem"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert all(isinstance(a, ipaddress.IPv4Address) for a in sans.get_values_for_type(x509.IPAddress))
    assert not set(IPS) & set(sans.get_values_for_type(x509.DNSName))
