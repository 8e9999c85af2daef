"""The lab's applier: run the program under the mock monitor and really do what the
providers would, for the resource types forgeway uses.

This is not the Pulumi engine. What it emulates, per type:
- ``command:remote:Command``: runs ``create`` (or ``update``, else ``create`` again on
  an input change; ``delete`` on delete) on the host over SSH with the real ``ssh``
  binary: the connection's pinned host key (the same ssh options the docker provider
  gets), its private key through a private ssh-agent, a jump host as ProxyCommand,
  ``stdin`` piped, ``environment`` exported in front of the command (the provider uses
  SSH setenv, which needs AcceptEnv), ``PULUMI_COMMAND_STDOUT/STDERR`` on delete.
- ``random:index/randomBytes:RandomBytes``, ``randomPassword``: real random values.
- ``tls:index/privateKey:PrivateKey`` (ECDSA P256), ``selfSignedCert``, ``certRequest``,
  ``locallySignedCert``: real keys, CSRs and certificates (cryptography), with the
  subject, SANs, validity, allowed uses (KeyUsage/ExtendedKeyUsage) and key ids Go's
  crypto/x509 gives them; a certificate within ``early_renewal_hours`` of its end is
  replaced on the next run (the provider's ``ready_for_renewal``). Write-only key
  inputs and anything else not listed in ``_TLS_INPUTS`` are refused by name.
- ``pulumi:providers:*``: recorded, nothing to do.
Anything else is refused by name, so the lab never pretends.

State (like the engine's checkpoint, but plain JSON with mode 0600 under the lab
directory) maps ``type::name`` to inputs and outputs. On the next run each resource
is created, left alone (inputs equal), updated, or replaced (a replace-on-change input
such as ``triggers`` changed: the new one is created, then the old one deleted), and
resources the program no longer registers are deleted in reverse creation order.
Not emulated: ``delete_before_replace``, ``protect``, ``retain_on_delete`` (the mock
monitor does not hand resource options to ``new_resource``), previews, refresh, and
parallelism (resources are applied one at a time, in the order the SDK resolves them,
which respects dependencies).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.render.ssh import SshTarget, ssh_destination, ssh_options
from tools.synth import Synthesis, synthesize, unwrap

__all__ = ["Applier", "ApplyError", "Change", "apply_stack", "destroy"]

# Inputs whose change replaces the resource (the providers' replace-on-change sets);
# "*" means every input.
REPLACE_ON = {
    "command:remote:Command": {"triggers"},
    "random:index/randomBytes:RandomBytes": {"length", "keepers"},
    "random:index/randomPassword:RandomPassword": {"*"},
    "tls:index/privateKey:PrivateKey": {"*"},
    "tls:index/selfSignedCert:SelfSignedCert": {"*"},
    "tls:index/certRequest:CertRequest": {"*"},
    "tls:index/locallySignedCert:LocallySignedCert": {"*"},
}
COMMAND_TIMEOUT_S = 300


class ApplyError(RuntimeError):
    """A resource could not be applied; the message names the resource, host and step."""


@dataclass
class Change:
    op: str  # create | update | replace | delete | same
    type: str
    name: str


@dataclass
class Entry:
    type: str
    name: str
    id: str
    seq: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class State:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    next_seq: int = 0

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text())
        entries = {k: Entry(**v) for k, v in data["entries"].items()}
        return cls(path, entries, data["next_seq"])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Holds secrets, as the engine's state does (encrypted there): owner-only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {"entries": {k: asdict(v) for k, v in self.entries.items()}, "next_seq": self.next_seq}, out, indent=1
            )
        tmp.replace(self.path)


# --- SSH -------------------------------------------------------------------------


class SshAgent:
    """A private ssh-agent for one apply, stopped by PID at the end."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="forgeway-agent-")
        self.socket = str(Path(self._dir.name) / "agent.sock")
        out = subprocess.run(["ssh-agent", "-a", self.socket, "-s"], capture_output=True, text=True, check=True)
        pid = next(part for part in out.stdout.split(";") if part.strip().startswith("SSH_AGENT_PID="))
        self.pid = int(pid.split("=")[1])
        self._keys: set[str] = set()

    def add(self, private_key: str) -> None:
        if private_key in self._keys:
            return
        key_file = Path(self._dir.name) / f"key{len(self._keys)}"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(private_key if private_key.endswith("\n") else private_key + "\n")
        subprocess.run(["ssh-add", "-q", str(key_file)], env=self.env(), check=True, capture_output=True)
        key_file.unlink()
        self._keys.add(private_key)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SSH_AUTH_SOCK": self.socket}

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 15)
        self._dir.cleanup()


def _target(conn: Mapping[str, Any]) -> SshTarget:
    return SshTarget(
        address=conn["host"],
        port=int(conn.get("port", 22)),
        user=conn.get("user", "root"),
        host_key=conn.get("hostKey"),
    )


def _with_env(command: str, env: Mapping[str, str]) -> str:
    if not env:
        return command
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"export {exports}; {command}"


# --- the applier --------------------------------------------------------------------


class Applier:
    """Performs resources as the SDK resolves them; see the module docstring."""

    def __init__(self, state_path: Path, log: Callable[[str], None] = print) -> None:
        self.state = State.load(state_path)
        self.log = log
        self.changes: list[Change] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._agent: SshAgent | None = None

    # -- called by the mock monitor, from worker threads --

    def handle(self, args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:
            return f"{args.name}-component", dict(args.inputs)  # components do nothing themselves
        with self._lock:
            return self._handle(args.typ, args.name, unwrap(args.inputs))

    def _handle(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = f"{typ}::{name}"
        if key in self._seen:
            raise ApplyError(f"{key} is registered twice in one run")
        self._seen.add(key)
        previous = self.state.entries.get(key)
        if previous is not None and previous.inputs == inputs and not _due_for_renewal(previous):
            self.changes.append(Change("same", typ, name))
            return previous.id, previous.outputs
        if previous is None:
            op = "create"
        else:
            changed = {k for k in {*inputs, *previous.inputs} if inputs.get(k) != previous.inputs.get(k)}
            replace_on = REPLACE_ON.get(typ, set())
            op = "replace" if "*" in replace_on or changed & replace_on else "update"
        self.log(f"{op:8} {typ} {name}")
        if op == "update":
            assert previous is not None
            outputs = self._update(typ, name, inputs, previous)
        else:
            outputs = self._create(typ, name, inputs)
        entry = Entry(typ, name, f"{name}-{self.state.next_seq}", self.state.next_seq, inputs, outputs)
        self.state.next_seq += 1
        if op == "replace":
            assert previous is not None
            self._delete(previous)  # create-then-delete, the engine's default order
        self.state.entries[key] = entry
        self.state.save()
        self.changes.append(Change(op, typ, name))
        return entry.id, outputs

    def finish(self) -> None:
        """Delete what the program no longer registers, newest first."""
        stale = sorted((e for k, e in self.state.entries.items() if k not in self._seen), key=lambda e: -e.seq)
        for entry in stale:
            self.log(f"{'delete':8} {entry.type} {entry.name}")
            self._delete(entry)
            del self.state.entries[f"{entry.type}::{entry.name}"]
            self.state.save()
            self.changes.append(Change("delete", entry.type, entry.name))

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    # -- per type --

    def _create(self, typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if typ == "command:remote:Command":
            return self._command(name, inputs, "create", inputs.get("create"))
        if typ == "random:index/randomBytes:RandomBytes":
            raw = os.urandom(int(inputs["length"]))
            return {**inputs, "base64": base64.b64encode(raw).decode(), "hex": raw.hex()}
        if typ == "random:index/randomPassword:RandomPassword":
            return {**inputs, "result": base64.urlsafe_b64encode(os.urandom(int(inputs["length"]))).decode()}
        if typ in _TLS_EMULATIONS:
            return {**inputs, **_TLS_EMULATIONS[typ](inputs)}
        if typ.startswith("pulumi:providers:"):
            return dict(inputs)
        raise ApplyError(f"the lab applier does not emulate {typ} (resource {name})")

    def _update(self, typ: str, name: str, inputs: dict[str, Any], previous: Entry) -> dict[str, Any]:
        if typ == "command:remote:Command":
            script = inputs.get("update") or inputs.get("create")
            return self._command(name, inputs, "update", script)
        if typ.startswith("pulumi:providers:"):
            return dict(inputs)
        # Types whose every input replaces never get here; for the others keep outputs.
        return {**previous.outputs, **inputs}

    def _delete(self, entry: Entry) -> None:
        if entry.type == "command:remote:Command" and entry.inputs.get("delete"):
            env = {
                "PULUMI_COMMAND_STDOUT": str(entry.outputs.get("stdout", "")),
                "PULUMI_COMMAND_STDERR": str(entry.outputs.get("stderr", "")),
            }
            self._command(entry.name, entry.inputs, "delete", entry.inputs["delete"], extra_env=env)

    def _command(
        self,
        name: str,
        inputs: Mapping[str, Any],
        step: str,
        script: str | None,
        extra_env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        outputs = {**inputs, "stdout": "", "stderr": ""}
        if not script:
            return outputs
        conn = inputs["connection"]
        env = {**(inputs.get("environment") or {}), **(extra_env or {})}
        done = self._ssh(conn, _with_env(script, env), inputs.get("stdin"))
        if done.returncode != 0:
            raise ApplyError(
                f"{name}: `{step}` failed on host {conn['host']} (exit {done.returncode}): "
                f"{done.stderr.strip()[-2000:] or done.stdout.strip()[-2000:]}"
            )
        return {**outputs, "stdout": done.stdout.rstrip("\n"), "stderr": done.stderr.rstrip("\n")}

    def _ssh(self, conn: Mapping[str, Any], command: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
        if self._agent is None:
            self._agent = SshAgent()
        for holder in (conn, conn.get("proxy") or {}):
            if holder.get("privateKey"):
                self._agent.add(holder["privateKey"])
        target = _target(conn)
        jump = _target(conn["proxy"]) if conn.get("proxy") else None
        argv = [
            "ssh",
            *ssh_options(target, jump),
            "-o",
            f"ConnectTimeout={int(conn.get('perDialTimeout', 15))}",
            ssh_destination(target),
            command,
        ]
        try:
            return subprocess.run(
                argv,
                input=stdin or "",
                capture_output=True,
                text=True,
                env=self._agent.env(),
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ApplyError(f"host {conn['host']}: no answer within {COMMAND_TIMEOUT_S} s") from exc


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


def apply_stack(
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    state_path: Path,
    log: Callable[[str], None] = print,
) -> tuple[Synthesis, list[Change]]:
    """Apply one stack (in this process: one apply per process, as with synthesis)."""
    applier = Applier(state_path, log)
    try:
        synthesis = synthesize(stack, config, secret_keys, handler=applier.handle)
        applier.finish()
    finally:
        applier.close()
    return synthesis, applier.changes


def destroy(state_path: Path, log: Callable[[str], None] = print) -> list[Change]:
    """Delete everything in the state, newest first (what `pulumi destroy` would)."""
    applier = Applier(state_path, log)
    try:
        applier.finish()
    finally:
        applier.close()
    return applier.changes


def main() -> int:
    """``python -m tools.applier``: a JSON request on stdin (secrets never on argv).

    {"action": "apply"|"destroy", "stack": ..., "config": {...}, "secret_keys": [...],
    "state": "path"}; prints the changes as JSON lines on stdout, progress on stderr.
    """
    import sys

    request = json.load(sys.stdin)
    state_path = Path(request["state"])

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if request["action"] == "destroy":
            changes = destroy(state_path, log)
        else:
            _, changes = apply_stack(request["stack"], request["config"], request["secret_keys"], state_path, log)
    except ApplyError as exc:
        print(f"apply failed: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(json.dumps(asdict(change)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
