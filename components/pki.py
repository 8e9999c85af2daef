"""Our own certificate authority (gitlab.tls = own-ca).

Made with pulumi-tls so the CA key lives only in encrypted state (or comes from
secret config); daemons and clients trust the certificate it exports.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

__all__ = ["CertificateAuthority", "CertificateAuthorityArgs"]

# Ten years: a home CA is rotated by hand, rarely; server certificates are short-lived.
_CA_VALIDITY_HOURS = 10 * 365 * 24


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
