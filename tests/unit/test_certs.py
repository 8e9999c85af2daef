"""tests/certs.py: what it makes, checked by OpenSSL (`openssl verify -x509_strict`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.certs import gitlab_ssl, make_ca

pytestmark = pytest.mark.unit


def _verify(ca: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(ca), *extra, str(cert)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_a_server_certificate_verifies_for_its_names_under_its_ca_only(tmp_path: Path) -> None:
    ca_file = gitlab_ssl(tmp_path, "gitlab.example.test", "192.0.2.7")
    cert = tmp_path / "ssl" / "gitlab.example.test.crt"
    assert (tmp_path / "ssl" / "gitlab.example.test.key").stat().st_mode & 0o777 == 0o600
    for name in (("-verify_hostname", "gitlab.example.test"), ("-verify_ip", "192.0.2.7")):
        done = _verify(ca_file, cert, *name)
        assert done.returncode == 0, done.stdout + done.stderr
    assert _verify(ca_file, cert, "-verify_hostname", "other.example.test").returncode != 0
    assert _verify(make_ca("another").write(tmp_path / "other.pem"), cert).returncode != 0


def test_without_names_a_certificate_carries_no_subject_alt_name(tmp_path: Path) -> None:
    ca = make_ca()
    leaf = ca.issue("only-a-cn.example.test")
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cert, _ = leaf.write(tmp_path / "c.pem", tmp_path / "k.pem")
    assert _verify(ca.write(tmp_path / "ca.pem"), cert).returncode == 0
