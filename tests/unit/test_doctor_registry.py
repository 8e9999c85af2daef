"""tools/doctor/registry.py: the registry's TLS as a docker host trusts it, judged from probe output.

The certificates are made as the program's are (the lab applier's pulumi-tls emulation,
tools/applier/tls.py: the CA and the server certificate with the program's inputs), so the
verification is tried on the shapes a deployment serves. The dates are judged at a moved
``now`` instead of backdating: 350 days after issue, a one-year certificate has 15 left.
The probe's part is run for real against a local ``openssl s_server``.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.pki import SERVER_CERT_USES, SERVER_CERT_VALIDITY_HOURS
from tools.applier.tls import _tls_cert_request, _tls_locally_signed, _tls_private_key, _tls_self_signed
from tools.doctor.findings import Finding
from tools.doctor.probe import Section, _registry_parts, sections
from tools.doctor.registry import (
    CERT_WARN_DAYS,
    DOCKER_CLIENT_STAGE,
    DOCKER_CLIENT_UP,
    LE_RENEW,
    RegistryContext,
    pem_certificates,
    registry_tls,
)

ENDPOINT = "gitlab.forgeway.test:5050"
PREFIX = "urn:pulumi:lab::forgeway::"
CERT_URN = f"{PREFIX}forgeway:pki:ServerCertificate$tls:index/locallySignedCert:LocallySignedCert::gitlab-tls-cert"
CA_URN = f"{PREFIX}forgeway:pki:CertificateAuthority$tls:index/selfSignedCert:SelfSignedCert::ca-cert"
GITLAB_URN = f"{PREFIX}forgeway:gitlab:GitLabServer$docker:index/container:Container::home-gitlab"


@dataclass(frozen=True)
class Pki:
    ca: str  # PEM
    ca_key: str
    leaf: str
    leaf_key: str
    issued: datetime.datetime

    @property
    def chain(self) -> str:  # what GitLab serves: the certificate, then the CA (components/pki.py chain_pem)
        return self.leaf + self.ca


def make_pki(names: tuple[str, ...] = ("gitlab.forgeway.test",), ca_hours: int = 10 * 365 * 24) -> Pki:
    """A CA and a server certificate with the program's inputs (components/pki.py)."""
    key = {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    ca_key = _tls_private_key(key)["privateKeyPem"]
    subject = {"commonName": "forgeway CA test", "organization": "forgeway"}
    ca = _tls_self_signed({"privateKeyPem": ca_key, "isCaCertificate": True, "validityPeriodHours": ca_hours,
                           "allowedUses": ["cert_signing", "crl_signing", "digital_signature"],
                           "subject": subject})["certPem"]  # fmt: skip
    leaf_key = _tls_private_key(key)["privateKeyPem"]
    subject = {"commonName": names[0], "organization": "forgeway"}
    csr = _tls_cert_request({"privateKeyPem": leaf_key, "dnsNames": list(names),
                             "subject": subject})["certRequestPem"]  # fmt: skip
    signed = _tls_locally_signed({"certRequestPem": csr, "caCertPem": ca, "caPrivateKeyPem": ca_key,
                                  "validityPeriodHours": SERVER_CERT_VALIDITY_HOURS, "setSubjectKeyId": True,
                                  "allowedUses": list(SERVER_CERT_USES)})  # fmt: skip
    issued = datetime.datetime.strptime(signed["validityStartTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return Pki(ca, ca_key, signed["certPem"], leaf_key, issued)


def backdated(cert_pem: str, ca_pem: str, ca_key_pem: str, end: datetime.datetime) -> tuple[str, datetime.datetime]:
    """``cert_pem`` signed again by the CA, its validity as long but ending at ``end``: what
    the program issued that long ago, had no `up` renewed it. Same key, names, uses, serial.
    (Its start may be before the CA's: the lab's CA is as young as the lab.)"""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    start = end - (cert.not_valid_after_utc - cert.not_valid_before_utc)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(ca.subject)
               .public_key(cert.public_key()).serial_number(cert.serial_number)
               .not_valid_before(start).not_valid_after(end))  # fmt: skip
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode(), start


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def ctx(own_ca: bool = True, host: str = "runner-amd") -> RegistryContext:
    return RegistryContext(host, ENDPOINT, own_ca, CERT_URN, CA_URN, GITLAB_URN, "home")


def parts(chain: str, ca: str | None = None, chain_rc: int = 0, ca_rc: int = 0) -> dict[str, Section]:
    found = {f"registry-chain:{ENDPOINT}": Section(chain.strip(), chain_rc)}
    if ca is not None:
        found[f"registry-ca:{ENDPOINT}"] = Section(ca.strip(), ca_rc)
    return found


def judge_at(pki: Pki, days: float, **kw: object) -> Finding:
    return registry_tls(parts(pki.chain, pki.ca), ctx(**kw), pki.issued + datetime.timedelta(days=days))  # type: ignore[arg-type]


def test_a_fresh_chain_is_verified_with_the_hosts_ca(pki: Pki) -> None:
    found = judge_at(pki, 1)
    assert found.status == "ok", found
    assert found.item == "registry-tls" and found.repair is None
    assert found.detail.startswith(f"{ENDPOINT}: certificate expires ")
    assert "(in 364 days)" in found.detail and f"verified with /etc/docker/certs.d/{ENDPOINT}/ca.crt" in found.detail
    assert "CA expires" in found.detail and "(in 3649 days)" in found.detail


@pytest.mark.parametrize(("seconds_before_end", "status"), [(CERT_WARN_DAYS * 86400, "ok"),
                                                           (CERT_WARN_DAYS * 86400 - 1, "warn")])  # fmt: skip
def test_the_warning_starts_under_the_threshold(pki: Pki, seconds_before_end: int, status: str) -> None:
    end = pki.issued + datetime.timedelta(hours=SERVER_CERT_VALIDITY_HOURS)
    found = registry_tls(parts(pki.chain, pki.ca), ctx(), end - datetime.timedelta(seconds=seconds_before_end))
    assert found.status == status, found


def test_a_certificate_near_its_end_warns_with_the_replace(pki: Pki) -> None:
    found = judge_at(pki, 350)
    assert found.status == "warn" and "(in 15 days), under 21 days" in found.detail
    assert found.repair is not None and found.repair.text.startswith(f"pulumi up --replace '{CERT_URN}'")


def test_an_expired_certificate_fails_with_the_replace(pki: Pki) -> None:
    found = judge_at(pki, 367)
    assert found.status == "fail", found
    assert "certificate expired " in found.detail and "(2 days ago)" in found.detail
    # the chain itself is still the CA's: only the date is wrong
    assert "verified with" in found.detail
    assert found.repair is not None and found.repair.kind == "replace" and found.repair.subject == CERT_URN


def test_a_certificate_older_than_its_ca_is_judged_by_signature_and_names(pki: Pki) -> None:
    """The lab's break: the program's certificate with its dates a year back, the CA as young as the lab."""
    end = pki.issued - datetime.timedelta(days=2)
    old, _ = backdated(pki.leaf, pki.ca, pki.ca_key, end)
    found = registry_tls(parts(old + pki.ca, pki.ca), ctx(), pki.issued)
    assert found.status == "fail" and found.detail == (
        f"{ENDPOINT}: certificate expired {end.date().isoformat()} (2 days ago); "
        f"verified with /etc/docker/certs.d/{ENDPOINT}/ca.crt; CA expires "
        f"{(pki.issued + datetime.timedelta(days=3650)).date().isoformat()} (in 3650 days)"
    )
    other = make_pki()
    foreign, _ = backdated(other.leaf, other.ca, other.ca_key, end)
    found = registry_tls(parts(foreign + other.ca, pki.ca), ctx(), pki.issued)
    assert "not trusted with" in found.detail and "not signed by that CA" in found.detail, found
    unnamed = make_pki(names=("elsewhere.forgeway.test",))
    far, _ = backdated(unnamed.leaf, pki.ca, pki.ca_key, end)
    found = registry_tls(parts(far + pki.ca, pki.ca), ctx(), pki.issued)
    assert "does not name gitlab.forgeway.test" in found.detail, found


def test_a_threshold_of_its_own(pki: Pki) -> None:
    context = RegistryContext("home", ENDPOINT, True, CERT_URN, CA_URN, GITLAB_URN, "home", warn_days=400)
    assert registry_tls(parts(pki.chain, pki.ca), context, pki.issued).status == "warn"


def test_a_chain_from_another_ca_is_not_trusted(pki: Pki) -> None:
    other = make_pki()
    found = registry_tls(parts(other.chain, pki.ca), ctx(), pki.issued)
    assert found.status == "fail" and f"not trusted with /etc/docker/certs.d/{ENDPOINT}/ca.crt" in found.detail
    assert found.repair is not None and found.repair.subject == CERT_URN


def test_a_certificate_without_the_endpoints_name_is_not_trusted() -> None:
    other = make_pki(names=("elsewhere.forgeway.test",))
    found = registry_tls(parts(other.chain, other.ca), ctx(), other.issued)
    assert found.status == "fail" and "not trusted" in found.detail, found


def test_a_missing_ca_names_the_staged_trust_install(pki: Pki) -> None:
    gone = f"cat: /etc/docker/certs.d/{ENDPOINT}/ca.crt: No such file or directory"
    found = registry_tls(parts(pki.chain, gone, ca_rc=1), ctx(), pki.issued)
    assert found.status == "fail" and "is missing or unreadable (cat: " in found.detail
    stage = "/etc/forgeway/stage/docker-client"
    assert found.repair is not None and found.repair.kind == "run" and found.repair.host == "runner-amd"
    assert found.repair.text.startswith(f"on runner-amd: sudo sh {stage}/docker-client-up.sh {stage}")


def test_a_ca_near_its_end_warns_with_the_ca_replace() -> None:
    short = make_pki(ca_hours=24 * 400)
    found = registry_tls(parts(short.chain, short.ca), ctx(), short.issued + datetime.timedelta(days=340))
    assert found.status == "warn" and "CA expires" in found.detail and "(in 60 days), under 90 days" in found.detail
    assert found.repair is not None and found.repair.subject == CA_URN


def test_letsencrypt_uses_the_hosts_verify_result(pki: Pki) -> None:
    ok = registry_tls(parts(pki.chain + "\nVerify return code: 0 (ok)"), ctx(own_ca=False), pki.issued)
    assert ok.status == "ok" and "verified with the system store" in ok.detail
    bad = pki.chain + "\nverify error:num=20:unable to get local issuer certificate\n"
    bad += "Verify return code: 20 (unable to get local issuer certificate)"
    found = registry_tls(parts(bad), ctx(own_ca=False), pki.issued)
    assert found.status == "fail" and "unable to get local issuer certificate (openssl verify code 20)" in found.detail
    assert found.repair is not None and found.repair.text.startswith(f"on home: sudo {LE_RENEW}")
    expired = registry_tls(parts(pki.chain + "\nVerify return code: 10 (certificate has expired)"),
                           ctx(own_ca=False), pki.issued + datetime.timedelta(days=400))  # fmt: skip
    assert expired.status == "fail" and "certificate expired" in expired.detail
    assert expired.repair is not None and expired.repair.subject == LE_RENEW


def test_no_openssl_is_said_and_an_unreachable_registry_names_gitlab(pki: Pki) -> None:
    absent = registry_tls(parts("openssl: not found", pki.ca, chain_rc=127), ctx(), pki.issued)
    assert absent.status == "info" and "no openssl" in absent.detail
    refused = "4087F3E1B77F0000:error:8000006F:system library:BIO_connect:Connection refused:../crypto/bio/bio_sock2.c"
    found = registry_tls(parts(refused + "\nconnect:errno=111", pki.ca, chain_rc=1), ctx(), pki.issued)
    assert found.status == "fail" and "no certificate served: 4087F3E1B77F0000:error" in found.detail
    assert found.repair is not None and found.repair.subject == GITLAB_URN
    assert registry_tls({}, ctx(), pki.issued).status == "fail"


def test_pem_certificates_skip_what_is_not_one(pki: Pki) -> None:
    text = f"depth=0 CN = x\n{pki.leaf}junk\n-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    assert [c.subject.rfc4514_string() for c in pem_certificates(text)] == ["O=forgeway,CN=gitlab.forgeway.test"]


# --------------------------------------------------------------------------- the probe, for real


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Pki, int, Path]]:
    """``openssl s_server`` on 127.0.0.1 serving a chain for ``localhost`` (leaf, then CA)."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is not installed (tools/ci/apt-packages.txt)")
    pki = make_pki(names=("localhost",))
    (tmp_path / "leaf.pem").write_text(pki.leaf)
    (tmp_path / "key.pem").write_text(pki.leaf_key)
    (tmp_path / "ca.pem").write_text(pki.ca)
    port = _free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "leaf.pem", "-key", "key.pem",
         "-cert_chain", "ca.pem", "-quiet"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "s_server did not listen"
            time.sleep(0.05)
        yield pki, port, tmp_path
    finally:
        server.kill()
        server.wait()


def test_the_probe_part_fetches_the_served_chain_and_the_trusted_ca(served: tuple[Pki, int, Path]) -> None:
    pki, port, tmp = served
    endpoint = f"localhost:{port}"
    certs_d = tmp / "etc" / "docker" / "certs.d" / endpoint
    certs_d.mkdir(parents=True)
    (certs_d / "ca.crt").write_text(pki.ca)
    script = "".join(_registry_parts(endpoint, own_ca=True))
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "FORGEWAY_ETC": str(tmp / "etc")})  # fmt: skip
    found = sections(done.stdout)
    chain = found[f"registry-chain:{endpoint}"]
    assert chain.ok, done.stdout
    assert pem_certificates(chain.text) == pem_certificates(pki.chain)  # the certificate, then the CA
    # s_client's session section (its Master-Key) is never passed on
    assert "Master-Key" not in done.stdout and "Session-ID" not in done.stdout
    assert "Verify return code:" in chain.text
    assert found[f"registry-ca:{endpoint}"] == Section(pki.ca.strip(), 0)
    context = RegistryContext("home", endpoint, True, CERT_URN, CA_URN, GITLAB_URN, "home")
    judged = registry_tls(found, context, pki.issued + datetime.timedelta(days=1))
    assert judged.status == "ok" and f"verified with /etc/docker/certs.d/{endpoint}/ca.crt" in judged.detail, judged


def test_the_probe_part_says_why_nothing_was_served() -> None:
    endpoint = f"localhost:{_free_port()}"
    done = subprocess.run(["sh", "-c", "".join(_registry_parts(endpoint, own_ca=False))], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    found = sections(done.stdout)
    assert list(found) == [f"registry-chain:{endpoint}"]
    judged = registry_tls(
        found, RegistryContext("home", endpoint, False, "", "", GITLAB_URN, "home"), datetime.datetime.now(datetime.UTC)
    )
    assert judged.status == "fail" and "no certificate served" in judged.detail, judged


def test_an_ip_endpoint_is_checked_as_an_address() -> None:
    script = "".join(_registry_parts("203.0.113.10:5050", own_ca=True))
    assert "-verify_ip 203.0.113.10" in script and "-servername" not in script


# --------------------------------------------------------------------------- the program's own names


def test_the_staged_trust_install_is_the_programs() -> None:
    """The repair's stage and script are those of the program's <host>-docker-client command."""
    from tools.stack.configs import lab_placeholder_stack
    from tools.stack.synth import synthesize_in_subprocess, unwrap

    raw, secret_keys = lab_placeholder_stack()
    synthesis = synthesize_in_subprocess("lab", raw, secret_keys)
    command = next(r for r in synthesis.resources if r.name == "runner-amd-docker-client")
    create = str(unwrap(command.inputs)["create"])
    assert f'/forgeway/stage/"{DOCKER_CLIENT_STAGE} ' in create, create[:400]
    assert f'sh "$d"/{DOCKER_CLIENT_UP} ' in create
    names = {r.name for r in synthesis.resources}
    assert {"gitlab-tls-cert", "ca-cert", "home-gitlab"} <= names


def test_an_unreachable_registry_takes_the_repair_of_what_cuts_the_way(pki: Pki) -> None:
    from tools.doctor.findings import restart
    from tools.doctor.registry import follows_from

    refused = parts("4087F3E1B77F0000:error:8000006F:system library:BIO_connect:Connection refused", pki.ca, 1)
    cut = registry_tls(refused, ctx(), pki.issued)
    assert f"{ENDPOINT}: unreachable: no certificate served" in cut.detail
    fix = restart("vps", "forgeway-nftables.service")
    flushed = Finding("vps", "forwarding", "fail", "table ip forgeway differs", fix)
    served = registry_tls(parts(pki.chain, pki.ca), ctx(host="home"), pki.issued)
    linked = follows_from([flushed, cut, served], "vps", "home")
    assert linked[1].repair == fix and linked[1].detail.endswith("(follows from vps forwarding)")
    assert linked[2] == served and linked[0] == flushed
    # a runner host's own tunnel does not cut its way to the registry (it goes through the internet)
    own = Finding("runner-amd", "tunnel", "fail", "the interface is down", restart("runner-amd", "t"))
    assert follows_from([own, cut], "vps", "home") == [own, cut]
