"""The lab applier's pulumi-tls emulation (tools/applier/apply.py): real keys, requests and
certificates made with cryptography, as Go's crypto/x509 makes them."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from tools.applier.state import ApplyError, Entry

# --- tls: real keys, requests and certificates (cryptography) -------------------------

_TLS_CERT_TYPES = ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert")
# The inputs each emulation honours; any other (write-only keys, ...) is refused by name.
_TLS_INPUTS = {
    "tls:index/certRequest:CertRequest": {"privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris"},
    "tls:index/selfSignedCert:SelfSignedCert": {
        "privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris", "validityPeriodHours",
        "earlyRenewalHours", "allowedUses", "isCaCertificate", "maxPathLength", "setSubjectKeyId",
    },
    "tls:index/locallySignedCert:LocallySignedCert": {
        "certRequestPem", "caCertPem", "caPrivateKeyPem", "validityPeriodHours", "earlyRenewalHours",
        "allowedUses", "isCaCertificate", "maxPathLength", "setSubjectKeyId",
    },
}  # fmt: skip
# pulumi-tls subject fields -> X.509 attribute OIDs (dotted, to import cryptography lazily).
_SUBJECT_OIDS = {
    "commonName": "2.5.4.3",
    "serialNumber": "2.5.4.5",
    "country": "2.5.4.6",
    "locality": "2.5.4.7",
    "province": "2.5.4.8",
    "streetAddresses": "2.5.4.9",
    "organization": "2.5.4.10",
    "organizationalUnit": "2.5.4.11",
    "postalCode": "2.5.4.17",
    "emailAddress": "1.2.840.113549.1.9.1",
}
# allowed_uses -> KeyUsage flag (the cryptography keyword) or ExtendedKeyUsage OID.
_KEY_USAGES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
    "encipher_only": "encipher_only",
    "decipher_only": "decipher_only",
}
_EXTENDED_KEY_USAGES = {
    "any_extended": "2.5.29.37.0",
    "server_auth": "1.3.6.1.5.5.7.3.1",
    "client_auth": "1.3.6.1.5.5.7.3.2",
    "code_signing": "1.3.6.1.5.5.7.3.3",
    "email_protection": "1.3.6.1.5.5.7.3.4",
    "timestamping": "1.3.6.1.5.5.7.3.8",
    "ocsp_signing": "1.3.6.1.5.5.7.3.9",
}


def _tls_inputs(typ: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs that are set, after refusing any the emulation does not honour."""
    given = {k: v for k, v in inputs.items() if v is not None}
    unknown = sorted(set(given) - _TLS_INPUTS[typ])
    if unknown:
        raise ApplyError(f"the lab applier does not emulate {', '.join(unknown)} of {typ}")
    return given


def _tls_private_key(inputs: Mapping[str, Any]) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if inputs.get("algorithm") != "ECDSA" or inputs.get("ecdsaCurve", "P224") != "P256":
        raise ApplyError(f"the lab applier emulates ECDSA P256 keys only, not {inputs.get('algorithm')}")
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "privateKeyPem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode(),
        "publicKeyPem": key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    }


def _signing_key(pem: str, what: str) -> tuple[Any, Any, str]:
    """(key, hash for signing, pulumi-tls key algorithm) of a PEM private key; the
    hash follows Go's crypto/x509 (SHA-256, SHA-384 for P-384, SHA-512 for P-521)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ApplyError(f"{what}: not a readable unencrypted PEM private key ({exc})") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = {"secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}.get(key.curve.name, hashes.SHA256())
        return key, digest, "ECDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return key, hashes.SHA256(), "RSA"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, None, "ED25519"
    raise ApplyError(f"{what}: the lab applier signs with ECDSA, RSA or Ed25519 keys only")


def _x509_name(subject: Mapping[str, Any] | None) -> Any:
    from cryptography import x509

    attributes = []
    for field_name, value in (subject or {}).items():
        if field_name not in _SUBJECT_OIDS:
            raise ApplyError(f"the lab applier does not emulate subject field {field_name}")
        oid = x509.ObjectIdentifier(_SUBJECT_OIDS[field_name])
        values = value if isinstance(value, list) else [value]
        attributes += [x509.NameAttribute(oid, str(v)) for v in values if v not in (None, "")]
    return x509.Name(attributes)


def _sans(inputs: Mapping[str, Any]) -> list[Any]:
    from cryptography import x509

    names: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []]
    names += [x509.UniformResourceIdentifier(u) for u in inputs.get("uris") or []]
    return names


def _with_uses(builder: Any, allowed_uses: list[str]) -> Any:
    """KeyUsage (critical) and ExtendedKeyUsage extensions, as pulumi-tls sets them."""
    from cryptography import x509

    unknown = sorted(set(allowed_uses) - set(_KEY_USAGES) - set(_EXTENDED_KEY_USAGES))
    if unknown:
        raise ApplyError(f"the lab applier does not emulate allowed_uses {', '.join(unknown)}")
    flags = {flag: False for flag in _KEY_USAGES.values()}
    flags.update({_KEY_USAGES[u]: True for u in allowed_uses if u in _KEY_USAGES})
    if any(flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    extended = [x509.ObjectIdentifier(_EXTENDED_KEY_USAGES[u]) for u in allowed_uses if u in _EXTENDED_KEY_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    return builder


def _tls_certificate(
    inputs: Mapping[str, Any], *, subject: Any, public_key: Any, issuer: Any, signer: Any, digest: Any, sans: list[Any]
) -> dict[str, Any]:
    """Build and sign one certificate the way pulumi-tls (Go's crypto/x509) does: the
    validity from now, basic constraints (critical), the allowed uses, a subject key
    id for CA certificates or on request, an authority key id from the issuer's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    end = now + datetime.timedelta(hours=int(inputs["validityPeriodHours"]))
    is_ca = bool(inputs.get("isCaCertificate"))
    path_length = inputs.get("maxPathLength")
    path_length = int(path_length) if is_ca and path_length is not None and int(path_length) >= 0 else None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
    )
    builder = _with_uses(builder, list(inputs.get("allowedUses") or []))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if is_ca or inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
            )
    cert = builder.sign(signer, digest)
    return {
        "certPem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "validityEndTime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "readyForRenewal": False,
    }


def _tls_self_signed(inputs: Mapping[str, Any]) -> dict[str, Any]:
    given = _tls_inputs("tls:index/selfSignedCert:SelfSignedCert", inputs)
    key, digest, _ = _signing_key(given["privateKeyPem"], "selfSignedCert private_key_pem")
    subject = _x509_name(given.get("subject") or {"commonName": "forgeway"})
    return _tls_certificate(
        given, subject=subject, public_key=key.public_key(), issuer=None, signer=key, digest=digest, sans=_sans(given)
    )


def _tls_cert_request(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A real CSR (PEM) for the key, subject and SANs, as pulumi-tls's certRequest."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    given = _tls_inputs("tls:index/certRequest:CertRequest", inputs)
    if "privateKeyPem" not in given:
        raise ApplyError("certRequest: private_key_pem is required (the lab applier emulates no write-only key)")
    key, digest, algorithm = _signing_key(given["privateKeyPem"], "certRequest private_key_pem")
    builder = x509.CertificateSigningRequestBuilder().subject_name(_x509_name(given.get("subject")))
    sans = _sans(given)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(key, digest)
    return {"certRequestPem": request.public_bytes(serialization.Encoding.PEM).decode(), "keyAlgorithm": algorithm}


def _tls_locally_signed(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A real certificate for a CSR, signed by the CA key: the request's subject and
    SANs, the validity and allowed uses of the inputs (pulumi-tls's locallySignedCert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    given = _tls_inputs("tls:index/locallySignedCert:LocallySignedCert", inputs)
    for required in ("certRequestPem", "caCertPem", "caPrivateKeyPem", "validityPeriodHours"):
        if required not in given:
            raise ApplyError(f"locallySignedCert: {required} is required")
    try:
        request = x509.load_pem_x509_csr(given["certRequestPem"].encode())
        ca_cert = x509.load_pem_x509_certificate(given["caCertPem"].encode())
    except ValueError as exc:
        raise ApplyError(f"locallySignedCert: unreadable request or CA certificate ({exc})") from exc
    if not request.is_signature_valid:
        raise ApplyError("locallySignedCert: the certificate request's signature does not verify")
    ca_key, digest, ca_algorithm = _signing_key(given["caPrivateKeyPem"], "locallySignedCert ca_private_key_pem")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if ca_key.public_key().public_bytes(serialization.Encoding.DER, public) != ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ApplyError("locallySignedCert: ca_private_key_pem is not the key of ca_cert_pem")
    try:
        sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    outputs = _tls_certificate(
        given,
        subject=request.subject,
        public_key=request.public_key(),
        issuer=ca_cert,
        signer=ca_key,
        digest=digest,
        sans=sans,
    )
    return {**outputs, "caKeyAlgorithm": ca_algorithm}


_TLS_EMULATIONS: dict[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
    "tls:index/privateKey:PrivateKey": _tls_private_key,
    "tls:index/selfSignedCert:SelfSignedCert": _tls_self_signed,
    "tls:index/certRequest:CertRequest": _tls_cert_request,
    "tls:index/locallySignedCert:LocallySignedCert": _tls_locally_signed,
}


def _due_for_renewal(entry: Entry, now: datetime.datetime | None = None) -> bool:
    """A certificate within early_renewal_hours of its end: the provider's
    ready_for_renewal, which makes the next update replace it."""
    end = entry.outputs.get("validityEndTime") if entry.type in _TLS_CERT_TYPES else None
    if not end:
        return False
    ends = datetime.datetime.strptime(end, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    early = datetime.timedelta(hours=int(entry.inputs.get("earlyRenewalHours") or 0))
    return (now or datetime.datetime.now(datetime.UTC)) >= ends - early
