"""A small fake GitLab API for the applier's gitlab tests (tests/unit/test_applier_gitlab.py):
http.server over TLS on 127.0.0.1 with a throwaway CA made here, answering the user/runners
endpoints the provider uses (docs.gitlab.com/api/users, /runners) as GitLab does."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAME = "gitlab.forgeway.test"
TOKEN = "glpat-forgeway-provisioner-0123456789"  # noqa: S105 (a test value)


# --- a throwaway CA and the fake GitLab ----------------------------------------------


def make_ca(tmp: Path, label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"forgeway test CA {label}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"ca-{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def server_context(
    tmp: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path], *, san: bool = True
) -> ssl.SSLContext:
    """The fake's TLS: a certificate for NAME from ``ca`` (in its SANs, or with ``san`` off only as its CN)."""
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "server.pem", tmp / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class FakeGitLab:
    """GitLab's user/runners API as the provider uses it (docs.gitlab.com/api/users, /runners)."""

    port: int = 0
    runners: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    next_id: int = 41
    too_many: int = 0  # answer this many requests 429 first
    echo_auth_in_errors: bool = False  # a hostile server that repeats the token back

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:  # noqa: PLR0911 (one per endpoint)
        self.requests.append((method, path, headers, body))
        if self.too_many:
            self.too_many -= 1
            return 429, {"message": "429 Too Many Requests"}
        if headers.get("authorization") != f"Bearer {TOKEN}":
            said = headers.get("authorization", "") if self.echo_auth_in_errors else ""
            return 401, {"message": f"401 Unauthorized {said}".strip()}
        if (method, path) == ("GET", "/api/v4/user"):
            return 200, {"id": 1, "username": "root"}
        if (method, path) == ("POST", "/api/v4/user/runners"):
            self.next_id += 1
            token = f"glrt-{self.next_id:04d}-{'x' * 20}"
            self.runners[self.next_id] = {
                "id": self.next_id,
                "runner_type": body["runner_type"],
                "description": body.get("description", ""),
                "paused": body.get("paused", False),
                "locked": body.get("locked", False),
                "run_untagged": body.get("run_untagged", True),
                "tag_list": body.get("tag_list", []),
                "access_level": body.get("access_level", "not_protected"),
                "maximum_timeout": body.get("maximum_timeout"),
                "maintenance_note": body.get("maintenance_note"),
                "token": token,
            }
            return 201, {"id": self.next_id, "token": token, "token_expires_at": None}
        found = re.fullmatch(r"/api/v4/runners/(\d+)", path)
        runner = self.runners.get(int(found.group(1))) if found else None
        if runner is None:
            said = headers.get("authorization", "") if self.echo_auth_in_errors else ""
            return 404, {"message": f"404 Not found {said}".strip()}
        if method == "GET":
            return 200, {k: v for k, v in runner.items() if k != "token"}
        if method == "PUT":
            runner.update(body)
            return 200, {k: v for k, v in runner.items() if k != "token"}
        if method == "DELETE":
            del self.runners[runner["id"]]
            return 204, None
        return 405, {"message": "405 Method Not Allowed"}


@contextlib.contextmanager
def fake_gitlab(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """The fake serving on 127.0.0.1 (reached by NAME only through a resolve map), stopped after."""
    ca = make_ca(tmp_path, "lab")
    fake = FakeGitLab()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.answer(self.command, self.path, headers, json.loads(raw) if raw else None)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    class TLSServer(ThreadingHTTPServer):
        context = server_context(tmp_path, ca)  # a test may swap it: each connection takes the current one

        def get_request(self) -> tuple[Any, Any]:
            sock, address = super().get_request()
            return self.context.wrap_socket(sock, server_side=True), address

    server = TLSServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            fake=fake, ca=ca, ca_file=ca[2], tmp=tmp_path, base=f"https://{NAME}:{fake.port}/api/v4/", server=server
        )
    finally:
        server.shutdown()
        server.server_close()
