"""Our own certificate authority (gitlab.tls = own-ca) and the server certificates
it signs.

Made with pulumi-tls so the CA key lives only in encrypted state (or comes from
secret config); daemons and clients trust the certificate it exports. A server
certificate names everything clients dial for GitLab and the registry
(``server_names``); ``covers`` is the matching rule a config check can use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_tls as tls

from components.config import StackConfig

__all__ = [
    "SERVER_CERT_EARLY_RENEWAL_HOURS",
    "SERVER_CERT_VALIDITY_HOURS",
    "CertificateAuthority",
    "CertificateAuthorityArgs",
    "ServerCertificate",
    "ServerCertificateArgs",
    "covers",
    "server_names",
]

# Ten years: a home CA is rotated by hand, rarely; server certificates are short-lived.
_CA_VALIDITY_HOURS = 10 * 365 * 24
# A year, renewed by any `pulumi up` in its last 30 days. Nothing renews it between
# runs (unlike ACME clients), so 90 days would break the registry for anyone who does
# not deploy monthly; a year stays under every client limit that applies to private
# CAs (Apple: 825 days; the 398-day rule binds only publicly trusted CAs, and we meet
# it anyway).
SERVER_CERT_VALIDITY_HOURS = 365 * 24
SERVER_CERT_EARLY_RENEWAL_HOURS = 30 * 24
# What a TLS server certificate may do (RFC 5280 key usage + extended key usage).
SERVER_CERT_USES = ("server_auth", "digital_signature", "key_encipherment")


@dataclass(frozen=True)
class CertificateAuthorityArgs:
    common_name: str
    supplied_key: pulumi.Output[str] | None = None  # secret PEM; None: generate


class CertificateAuthority(pulumi.ComponentResource):
    """A self-signed CA: secret key, public certificate."""

    private_key_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]

    def __init__(self, name: str, args: CertificateAuthorityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:pki:CertificateAuthority", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if args.supplied_key is not None:
            key_pem: pulumi.Output[str] = pulumi.Output.secret(args.supplied_key)
        else:
            key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            key_pem = pulumi.Output.secret(key.private_key_pem)
        cert = tls.SelfSignedCert(
            f"{name}-cert",
            private_key_pem=key_pem,
            is_ca_certificate=True,
            validity_period_hours=_CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=args.common_name, organization="forgeway"),
            opts=child,
        )
        self.private_key_pem = key_pem
        self.cert_pem = pulumi.Output.unsecret(cert.cert_pem)
        self.register_outputs({"cert_pem": self.cert_pem})


@dataclass(frozen=True)
class ServerCertificateArgs:
    ca: CertificateAuthority
    common_name: str
    dns_names: Sequence[str] = field(default_factory=tuple)
    ip_addresses: Sequence[str] = field(default_factory=tuple)
    validity_hours: int = SERVER_CERT_VALIDITY_HOURS
    early_renewal_hours: int = SERVER_CERT_EARLY_RENEWAL_HOURS

    def __post_init__(self) -> None:
        if not self.dns_names and not self.ip_addresses:
            raise ValueError("a server certificate needs at least one DNS name or IP address")
        for address in self.ip_addresses:
            ipaddress.ip_address(address)  # ValueError names the bad one
        if not 0 <= self.early_renewal_hours < self.validity_hours:
            raise ValueError(
                f"early_renewal_hours ({self.early_renewal_hours}) must be below validity_hours "
                f"({self.validity_hours}), or every run would renew the certificate"
            )


class ServerCertificate(pulumi.ComponentResource):
    """A TLS server certificate signed by our CA: its own ECDSA P-256 key, a CSR with
    every name and address, the signed certificate. Renewed (replaced) by the first
    `pulumi up` within early_renewal_hours of its expiry; a change of names replaces it.
    """

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]
    chain_pem: pulumi.Output[str]

    def __init__(self, name: str, args: ServerCertificateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:pki:ServerCertificate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        key_pem: pulumi.Output[str] = pulumi.Output.secret(key.private_key_pem)
        request = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=args.common_name, organization="forgeway"),
            dns_names=list(args.dns_names),
            ip_addresses=list(args.ip_addresses),
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_cert_pem=args.ca.cert_pem,
            ca_private_key_pem=args.ca.private_key_pem,
            validity_period_hours=args.validity_hours,
            early_renewal_hours=args.early_renewal_hours,
            allowed_uses=list(SERVER_CERT_USES),
            # Strict verifiers (Python 3.13's default, OpenSSL -x509_strict) want key ids.
            set_subject_key_id=True,
            opts=child,
        )
        self.private_key_pem = key_pem
        self.cert_pem = pulumi.Output.unsecret(cert.cert_pem)
        self.chain_pem = pulumi.Output.all(self.cert_pem, args.ca.cert_pem).apply(
            lambda pems: "".join(p if p.endswith("\n") else p + "\n" for p in pems)
        )
        self.register_outputs({"cert_pem": self.cert_pem, "chain_pem": self.chain_pem})


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    # A certificate's IP SAN holds no IPv6 zone (fe80::50%eth0 is fe80::50 there), and the
    # tls provider's parser (Go's net.ParseIP) refuses one.
    return ipaddress.IPv6Address(int(ip)) if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id else ip


def server_names(cfg: StackConfig, addresses: Mapping[str, ipaddress.IPv4Address]) -> tuple[list[str], list[str]]:
    """(dns_names, ip_addresses) of every way clients reach GitLab and its registry.

    The GitLab domain (first: the common name), the registry domain, the VPS's public
    address if it is an IP (clients that dial the VPS directly), the GitLab host's
    tunnel address (``addresses``: tunnel_addresses(cfg)) and its LAN address (its
    ``address``: an IP, or a DNS name on the LAN). No duplicates, in that order.
    """
    dns: list[str] = []
    ips: list[str] = []

    def add(value: str) -> None:
        ip = _ip(value)
        target, text = (ips, str(ip)) if ip is not None else (dns, value.lower().rstrip("."))
        if text not in target:
            target.append(text)

    add(cfg.gitlab.domain)
    add(cfg.registry_domain)
    public = cfg.vps.internet_address
    if _ip(public) is not None:
        add(public)
    gitlab = cfg.gitlab_host
    add(str(addresses[gitlab.name]))
    add(gitlab.address)
    return dns, ips


def covers(cert_names: Iterable[str], host: str) -> bool:
    """Whether a certificate naming ``cert_names`` (its DNS and IP SANs) is valid for
    ``host``, as TLS clients check it (RFC 6125): IPs match exactly, DNS names
    case-insensitively, and ``*.`` matches exactly one leftmost label, never an IP.
    """
    wanted_ip = _ip(host)
    wanted = host.lower().rstrip(".")
    for name in cert_names:
        ip = _ip(name)
        if wanted_ip is not None or ip is not None:
            if ip is not None and ip == wanted_ip:
                return True
            continue
        pattern = name.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "*" not in pattern[2:]:
            first, _, rest = wanted.partition(".")
            if first and rest and rest == pattern[2:]:
                return True
    return False
