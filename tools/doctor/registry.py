"""The registry's TLS as each docker host's daemon trusts it: a pure judge of probe output.

The probe (tools/doctor/probe.py) fetches, on each docker host, the chain the registry
serves at each endpoint (``openssl s_client -showcerts``, reached as that host reaches it:
its names, its route) and, with ``gitlab.tls = own-ca``, the CA forgeway installed for
dockerd in ``/etc/docker/certs.d/<endpoint>/ca.crt``. Here the chain is verified against
that CA alone (cryptography's RFC 5280 path validation with the endpoint's name, as Go's
crypto/x509 in dockerd does), and the days left of the server certificate and the CA are
counted. With Let's Encrypt the host's own openssl verifies against its system store (its
``Verify return code``). Only public certificates are read; nothing here runs a command.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from components.gitlab import CONTAINER_NAME as GITLAB_CONTAINER
from components.tlscheck import covers
from tools.doctor.findings import Finding, Repair, Status, replace, run, staged_up
from tools.doctor.probe import Section

__all__ = [
    "CA_WARN_DAYS",
    "CERT_WARN_DAYS",
    "DOCKER_CLIENT_STAGE",
    "DOCKER_CLIENT_UP",
    "LE_RENEW",
    "RegistryContext",
    "ca_path",
    "follows_from",
    "pem_certificates",
    "registry_tls",
]

# Warn this many days before the server certificate ends: an own-ca one is renewed by any
# `pulumi up` in its last 30 days (components/pki.py), a Let's Encrypt one by omnibus
# 30 days before; three weeks left means that did not happen.
CERT_WARN_DAYS = 21
# Our CA lasts ten years; a new one must reach every client that trusts ca_certificate.
CA_WARN_DAYS = 90
# components/docker_host.py DockerHost._client: the stage that holds what the last `up` sent
# and the script that installs it (tests/unit/test_doctor_registry.py checks the program's).
DOCKER_CLIENT_STAGE = "docker-client"
DOCKER_CLIENT_UP = "docker-client-up.sh"
LE_RENEW = f"docker exec {GITLAB_CONTAINER} gitlab-ctl renew-le-certs"  # omnibus's documented manual renewal
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?\n-----END CERTIFICATE-----", re.DOTALL)
_VERIFY = re.compile(r"^Verify return code: (\d+) \((.*)\)$", re.MULTILINE)
UNREACHABLE = "unreachable"
MISSING = "(missing from the probe's output: the connection dropped or the probe was cut short)"


def ca_path(endpoint: str) -> str:
    """Where dockerd reads the CA it trusts for ``endpoint`` (host:port)."""
    return f"/etc/docker/certs.d/{endpoint}/ca.crt"


@dataclass(frozen=True)
class RegistryContext:
    host: str  # the docker host
    endpoint: str  # host:port, as the daemon dials it
    own_ca: bool  # gitlab.tls = own-ca: trust is certs.d's ca.crt alone; else the system store
    cert_urn: str  # own-ca: the server certificate (tls LocallySignedCert)
    ca_urn: str  # own-ca: the CA certificate (tls SelfSignedCert)
    gitlab_urn: str  # the GitLab container (serves the registry)
    gitlab_host: str  # the host GitLab runs on
    warn_days: int = CERT_WARN_DAYS

    @property
    def name(self) -> str:
        return self.endpoint.rsplit(":", 1)[0].strip("[]")


def pem_certificates(text: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``text``, in order (an unreadable block is left out)."""
    found = []
    for block in _PEM.findall(text):
        try:
            found.append(x509.load_pem_x509_certificate(block.encode()))
        except ValueError:
            continue
    return found


def _days(cert: x509.Certificate, now: datetime.datetime) -> int:
    """Whole days left (negative: expired that many days ago, rounded down)."""
    return (cert.not_valid_after_utc - now) // datetime.timedelta(days=1)


def _when(cert: x509.Certificate, now: datetime.datetime) -> str:
    date = cert.not_valid_after_utc.date().isoformat()
    if cert.not_valid_after_utc < now:
        return f"expired {date} ({(now - cert.not_valid_after_utc) // datetime.timedelta(days=1)} days ago)"
    return f"expires {date} (in {_days(cert, now)} days)"


def _subject(name: str) -> x509.DNSName | x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _verify(
    leaf: x509.Certificate, others: list[x509.Certificate], ca: x509.Certificate, name: str, now: datetime.datetime
) -> str | None:
    """Why ``leaf`` is not trusted by ``ca`` for ``name`` (None: it is), dates apart (they are
    judged on their own): the full path validation at ``now`` moved into the time both are
    valid; when they never are both valid (a certificate older than its CA), its signature
    by the CA and its names."""
    start = max(leaf.not_valid_before_utc, ca.not_valid_before_utc)
    end = min(leaf.not_valid_after_utc, ca.not_valid_after_utc)
    if start > end:
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return f"not signed by that CA ({exc or type(exc).__name__})"
        if not covers(_names(leaf), name):
            return f"the certificate does not name {name}"
        return None
    try:
        verifier = PolicyBuilder().store(Store([ca])).time(min(max(now, start), end))
        verifier.build_server_verifier(_subject(name)).verify(leaf, others)
    except VerificationError as exc:
        return str(exc).split(" (encountered processing", 1)[0]
    return None


def _names(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]


@dataclass(frozen=True)
class _Issue:
    status: Status
    text: str
    repair: Repair | None = None


def _cert_repair(ctx: RegistryContext) -> Repair:
    if ctx.own_ca:
        return replace(
            ctx.cert_urn,
            "a new certificate from the stack's CA; the GitLab container is replaced with it, same volumes",
        )
    return run(ctx.gitlab_host, LE_RENEW, "omnibus renews Let's Encrypt certificates itself; this does it now")


def _trust_repair(ctx: RegistryContext) -> Repair:
    note = "installs again the registry trust the last `pulumi up` staged here"
    return staged_up(ctx.host, DOCKER_CLIENT_STAGE, DOCKER_CLIENT_UP, note=note)


def _unreachable(ctx: RegistryContext, why: str) -> Finding:
    fix = replace(ctx.gitlab_urn, "if the tunnel and forwarding are well: a new container, same volumes")
    return Finding(ctx.host, "registry-tls", "fail", f"{ctx.endpoint}: {UNREACHABLE}: {why}", fix)


def follows_from(findings: list[Finding], vps: str, gitlab_host: str) -> list[Finding]:
    """``findings`` with each unreachable registry given the repair of what cuts the way to
    it, when doctor found that too: the VPS's forwarding, ip_forward or tunnel, the GitLab
    host's tunnel or GitLab itself, or either host out of reach. One cause, one repair."""
    cause = next(
        (f for f in findings if f.status == "fail" and f.repair is not None
         and ((f.host == vps and f.item in ("ssh", "forwarding", "ip_forward", "tunnel"))
              or (f.host == gitlab_host and (f.item in ("ssh", "tunnel") or f.item.startswith("gitlab"))))),
        None,
    )  # fmt: skip
    if cause is None:
        return findings
    return [
        dataclasses.replace(f, detail=f"{f.detail} (follows from {cause.host} {cause.item})", repair=cause.repair)
        if f.item == "registry-tls" and f": {UNREACHABLE}: " in f.detail
        else f
        for f in findings
    ]


def _own_ca(
    ca_part: Section | None, certs: list[x509.Certificate], ctx: RegistryContext, now: datetime.datetime
) -> list[_Issue]:
    """The chain against the CA dockerd trusts for the endpoint, and the CA's days left."""
    where = ca_path(ctx.endpoint)
    cas = pem_certificates(ca_part.text) if ca_part is not None and ca_part.ok else []
    if not cas:
        shown = MISSING if ca_part is None else (ca_part.first_line[:120] or "empty")
        missing = f"{where} is missing or unreadable ({shown}): dockerd does not trust the registry"
        return [_Issue("fail", missing, _trust_repair(ctx))]
    ca, issues = cas[0], []
    why = _verify(certs[0], certs[1:], ca, ctx.name, now)
    if why is not None:
        issues.append(_Issue("fail", f"not trusted with {where}: {why[:160]}", _cert_repair(ctx)))
    else:
        issues.append(_Issue("ok", f"verified with {where}"))
    ca_days, ca_text = _days(ca, now), f"CA {_when(ca, now)}"
    ca_fix = replace(
        ctx.ca_urn,
        "a new CA: the certificate is reissued, every host's trust updated; "
        "clients that trust ca_certificate need the new one",
    )
    if ca_days < 0:
        issues.append(_Issue("fail", ca_text, ca_fix))
    elif ca_days < CA_WARN_DAYS:
        issues.append(_Issue("warn", f"{ca_text}, under {CA_WARN_DAYS} days", ca_fix))
    else:
        issues.append(_Issue("ok", ca_text))
    return issues


def _system(chain: Section, ctx: RegistryContext) -> _Issue:
    match = _VERIFY.search(chain.text)
    if match is None:
        return _Issue("fail", "the host's openssl gave no verify result", _cert_repair(ctx))
    code, text = int(match.group(1)), match.group(2)
    if code in (0, 10):  # 10: expired, judged from the dates
        return _Issue("ok", "verified with the system store")
    return _Issue("fail", f"not trusted by the system store: {text} (openssl verify code {code})", _cert_repair(ctx))


def registry_tls(parts: Mapping[str, Section], ctx: RegistryContext, now: datetime.datetime) -> Finding:
    """One endpoint on one docker host: the served chain, its trust, and days left."""
    chain = parts.get(f"registry-chain:{ctx.endpoint}")
    if chain is None:
        return _unreachable(ctx, f"no answer {MISSING}")
    if chain.rc == 127:
        return Finding(ctx.host, "registry-tls", "info", f"{ctx.endpoint}: not checked: this host has no openssl")
    certs = pem_certificates(chain.text)
    if not certs:
        error = next((line for line in chain.text.splitlines() if line.strip()), f"exit {chain.rc}")
        return _unreachable(ctx, f"no certificate served: {error[:160]}")
    issues = _own_ca(parts.get(f"registry-ca:{ctx.endpoint}"), certs, ctx, now) if ctx.own_ca else [_system(chain, ctx)]
    days = _days(certs[0], now)
    cert_text = f"certificate {_when(certs[0], now)}"
    if days < 0:
        issues.insert(0, _Issue("fail", cert_text, _cert_repair(ctx)))
    elif days < ctx.warn_days:
        issues.insert(0, _Issue("warn", f"{cert_text}, under {ctx.warn_days} days", _cert_repair(ctx)))
    else:
        issues.insert(0, _Issue("ok", cert_text))
    rank = {"ok": 0, "info": 0, "warn": 1, "fail": 2}
    worst = max(issues, key=lambda issue: rank[issue.status])
    detail = f"{ctx.endpoint}: " + "; ".join(issue.text for issue in issues)
    return Finding(ctx.host, "registry-tls", worst.status, detail, worst.repair)
