"""Throwaway certificates for tests: a self-signed CA and the server certificates it signs.

ECDSA P-256 keys, SHA-256, valid from five minutes ago for a day, made with cryptography.
The CA carries what RFC 5280 asks of one (basicConstraints CA, pathLen 0, keyCertSign and
cRLSign, a subject key id); a server certificate has its names in subjectAltName (none
given: only its CN), serverAuth, and the CA's key id. Not forgeway's CA (components/pki.py,
pulumi-tls) nor the applier's emulation of it (tools/applier/tls.py).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Ca", "Leaf", "gitlab_ssl", "make_ca"]


# keyCertSign and cRLSign only
_CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@dataclass(frozen=True)
class _KeyAndCert:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()


@dataclass(frozen=True)
class Leaf(_KeyAndCert):
    """A server certificate and its key."""

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        """The certificate (0644) and its key (0600) in these files."""
        return _write(cert_path, self.pem.encode(), 0o644), _write(key_path, self.key_pem.encode(), 0o600)


@dataclass(frozen=True)
class Ca(_KeyAndCert):
    """A self-signed CA, with its key to sign server certificates."""

    def write(self, path: Path) -> Path:
        """The CA certificate in ``path`` (0644); its path."""
        return _write(path, self.pem.encode(), 0o644)

    def issue(self, common_name: str, *, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> Leaf:
        """A server certificate for ``common_name``, with ``dns`` and ``ips`` as its subjectAltName."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(_name(common_name), self.cert.subject, key)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Leaf(key, cert)


def make_ca(common_name: str = "forgeway test CA") -> Ca:
    """A new CA named ``common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(common_name), _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(key, cert)


def gitlab_ssl(directory: Path, domain: str, address: str, ca_name: str = "forgeway lab CA") -> Path:
    """GitLab's layout under ``directory``: ssl/<domain>.{crt,key} for ``domain`` and ``address``,
    signed by a new CA written to ca.crt; the CA's path."""
    ca = make_ca(ca_name)
    ssl = directory / "ssl"
    ssl.mkdir()
    ca.issue(domain, dns=[domain], ips=[address]).write(ssl / f"{domain}.crt", ssl / f"{domain}.key")
    return ca.write(directory / "ca.crt")
