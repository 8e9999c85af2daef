"""Our own certificate authority (gitlab.tls = own-ca) and the server certificates
it signs.

Made with pulumi-tls so the CA key lives only in encrypted state (or comes from
secret config); daemons and clients trust the certificate it exports. A server
certificate names everything clients dial for the forge and its registry
(``certificate_names``). ``ForgeTls`` owns both, after the checks of tlscheck.py.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pulumi
import pulumi_tls as tls

from components.config import StackConfig
from components.tlscheck import (
    Resolver,
    covers,
    forge_dns_problems,
    ip_or_none,
    system_resolver,
    uncovered_names,
)

if TYPE_CHECKING:  # see server_names
    from components.forge import Forge

__all__ = [
    "SERVER_CERT_EARLY_RENEWAL_HOURS",
    "SERVER_CERT_VALIDITY_HOURS",
    "CertificateAuthority",
    "CertificateAuthorityArgs",
    "ForgeTls",
    "ForgeTlsArgs",
    "ServerCertificate",
    "ServerCertificateArgs",
    "certificate_names",
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


def server_names(cfg: StackConfig, addresses: Mapping[str, ipaddress.IPv4Address]) -> tuple[list[str], list[str]]:
    """:func:`certificate_names` of the stack's forge (``addresses``: tunnel_addresses(cfg))."""
    from components.forge import (
        stack_forge,
    )  # not at the top: components.forge imports the registry, which imports this
    from components.tunnel import tunnel_addresses6  # as above: components.tunnel imports the forge

    forge = stack_forge(cfg)
    return certificate_names(
        forge,
        cfg.vps.internet_address,
        addresses[forge.host],
        vps_public6=cfg.vps_public_address6 if cfg.forwarding.ipv6 else None,
        forge_tunnel_address6=tunnel_addresses6(cfg).get(forge.host),
    )


def certificate_names(
    forge: Forge,
    vps_public: str,
    forge_tunnel_address: ipaddress.IPv4Address,
    *,
    vps_public6: str | None = None,
    forge_tunnel_address6: ipaddress.IPv6Address | None = None,
) -> tuple[list[str], list[str]]:
    """(dns_names, ip_addresses) of every way clients reach the forge and its registry.

    The forge's names (its domain first: the common name; then the registry's), the
    VPS's public address if it is an IP (clients that dial the VPS directly) and its
    public IPv6 address (forwarding.ipv6), the forge host's tunnel addresses (IPv4, then
    IPv6 with tunnel.ipv6) and its LAN address (an IP, or a DNS name on the LAN). No
    duplicates, in that order.
    """
    dns: list[str] = []
    ips: list[str] = []

    def add(value: str) -> None:
        ip = ip_or_none(value)
        target, text = (ips, str(ip)) if ip is not None else (dns, value.lower().rstrip("."))
        if text not in target:
            target.append(text)

    for name in forge.certificate_names:
        add(name)
    if ip_or_none(vps_public) is not None:
        add(vps_public)
    if vps_public6 is not None:
        add(vps_public6)
    add(str(forge_tunnel_address))
    if forge_tunnel_address6 is not None:
        add(str(forge_tunnel_address6))
    add(forge.lan_address)
    return dns, ips


# --- the forge's TLS ------------------------------------------------------------------


@dataclass(frozen=True)
class ForgeTlsArgs:
    """What the forge's TLS needs: the forge, where clients reach it, and the secret CA key."""

    forge: Forge  # its tls mode, names and registry endpoints
    vps_public: str  # the VPS's internet address (an IP goes in the certificate)
    forge_tunnel_address: ipaddress.IPv4Address  # the forge host's tunnel address
    ca_private_key: pulumi.Output[str] | None = None  # secret config; None: generate (own-ca)
    # letsencrypt: warn about names that do not resolve to the VPS. FORGEWAY_NO_DNS=1: the
    # test harness (tools/stack/synth) never lets the program query DNS.
    check_dns: bool = field(default_factory=lambda: os.environ.get("FORGEWAY_NO_DNS") != "1")
    resolve: Resolver = system_resolver
    vps_public6: str | None = None  # the VPS's public IPv6 address where config gives one
    forge_tunnel_address6: ipaddress.IPv6Address | None = None  # tunnel.ipv6: the forge host's
    forward_ipv6: bool = False  # forwarding.ipv6: AAAA records can be answered

    @classmethod
    def for_stack(
        cls,
        cfg: StackConfig,
        forge: Forge,
        addresses: Mapping[str, ipaddress.IPv4Address],
        ca_private_key: pulumi.Output[str] | None,
    ) -> ForgeTlsArgs:
        """The stack's forge TLS: its VPS addresses of both families and the forge host's tunnel addresses."""
        from components.tunnel import tunnel_addresses6  # as in server_names

        return cls(
            forge,
            cfg.vps.internet_address,
            addresses[forge.host],
            ca_private_key,
            vps_public6=cfg.vps_public_address6,
            forge_tunnel_address6=tunnel_addresses6(cfg).get(forge.host),
            forward_ipv6=cfg.forwarding.ipv6,
        )


class ForgeTls:
    """The forge's certificates: with ``own-ca`` our CA (``ca``) and one server
    certificate (``<forge>-tls``) for every name and address clients use; with
    ``letsencrypt`` nothing (the forge gets its own), after a DNS check that warns.

    Its checks run before it registers anything (tlscheck.py): DNS problems are
    warnings, a name the certificate would miss is an error. Not a component itself:
    the CA and the certificate are components at the stack's root, as they always were,
    and with Let's Encrypt there is nothing to register.
    """

    ca: CertificateAuthority | None
    certificate: ServerCertificate | None

    @property
    def ca_pem(self) -> pulumi.Output[str] | None:
        """The CA certificate daemons and runners trust (own-ca), else None."""
        return self.ca.cert_pem if self.ca is not None else None

    def __init__(self, args: ForgeTlsArgs) -> None:
        forge = args.forge
        problems = (
            forge_dns_problems(
                forge, args.vps_public, args.resolve, public6=args.vps_public6, forward_ipv6=args.forward_ipv6
            )
            if args.check_dns
            else []
        )
        for problem in problems:
            pulumi.log.warn(f"{forge.kind}.tls=letsencrypt: {problem}")
        dns_names, ip_addresses = certificate_names(
            forge,
            args.vps_public,
            args.forge_tunnel_address,
            vps_public6=args.vps_public6 if args.forward_ipv6 else None,
            forge_tunnel_address6=args.forge_tunnel_address6,
        )
        if forge.tls == "own-ca" and (missing := uncovered_names(dns_names, ip_addresses, forge.dialed_names)):
            raise RuntimeError(
                f"the server certificate would not cover {', '.join(missing)} (a forgeway bug: report it)"
            )
        self.ca = None
        self.certificate = None
        if forge.tls == "own-ca":
            self.ca = CertificateAuthority(
                "ca", CertificateAuthorityArgs(f"forgeway CA {forge.domain}", args.ca_private_key)
            )
            self.certificate = ServerCertificate(
                f"{forge.kind}-tls", ServerCertificateArgs(self.ca, dns_names[0], dns_names, ip_addresses)
            )
