"""tools.imagecheck: an index's platforms against those asked for, and the registry's auth flows.

The index documents in tests/unit/imagecheck/ are in the shapes buildx pushes (an OCI index
whose provenance manifests are ``unknown/unknown`` with buildx's annotations; without
attestations; a Docker manifest list with ``arm64/v8``). The HTTP tests run a registry-shaped
HTTPS server on loopback that asks for a bearer token (GitLab's registry) or basic auth (the
lab's stand-in). The lab reads a real registry: tests/lab/test_lab_registry_gc.py."""

from __future__ import annotations

import base64
import io
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tools.imagecheck import Platform, index_problems, parse_platforms, parse_ref
from tools.imagecheck.__main__ import main

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "imagecheck"
BOTH = parse_platforms(["linux/amd64,linux/arm64"])


def _index(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def test_exactly_the_platforms_built_passes() -> None:
    assert index_problems(_index("buildx-no-attestations.json"), BOTH) == []


def test_buildx_attestations_fail_and_name_the_flags() -> None:
    problems = index_problems(_index("buildx-default-attestations.json"), BOTH)
    assert len(problems) == 2, problems
    assert all(p.startswith("unknown/unknown") and "--provenance=false --sbom=false" in p for p in problems)


def test_an_unknown_entry_without_annotations_fails_too() -> None:
    index = _index("buildx-no-attestations.json")
    index["manifests"].append(
        {"digest": "sha256:" + "c" * 64, "platform": {"os": "unknown", "architecture": "unknown"}}
    )
    assert [p.split(" ")[0] for p in index_problems(index, BOTH)] == ["unknown/unknown"]


def test_a_platform_not_asked_for_fails() -> None:
    (problem,) = index_problems(_index("three-platforms.json"), BOTH)
    assert problem.startswith("linux/arm/v7") and "not asked for" in problem


def test_a_missing_platform_fails() -> None:
    wanted = parse_platforms(["linux/amd64,linux/arm64", "linux/riscv64"])
    assert index_problems(_index("buildx-no-attestations.json"), wanted) == [
        "linux/riscv64: asked for, but the index has no manifest for it"
    ]


def test_arm64_v8_is_arm64_as_containerd_normalizes_it() -> None:
    assert index_problems(_index("manifest-list-arm64-v8.json"), BOTH) == []
    assert Platform.parse("linux/aarch64") == Platform.parse("linux/arm64/v8") == Platform("linux", "arm64")
    assert Platform.parse("linux/arm") == Platform.parse("linux/arm/v7") != Platform.parse("linux/arm/v6")


def test_duplicate_platforms_fail() -> None:
    index = _index("buildx-no-attestations.json")
    index["manifests"].append(dict(index["manifests"][0], digest="sha256:" + "d" * 64))
    assert index_problems(index, BOTH) == ["linux/amd64: 2 manifests for one platform"]


@pytest.mark.parametrize("bad", ["", "linux", "linux/", "a/b/c/d"])
def test_bad_platforms_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="platform"):
        parse_platforms([bad])


def test_references() -> None:
    ref = parse_ref("gitlab.example.org:5050/group/app:1.0")
    assert (ref.registry, ref.name, ref.reference) == ("gitlab.example.org:5050", "group/app", "1.0")
    assert parse_ref("10.8.0.2:5050/a/b").reference == "latest"
    digest = "sha256:" + "e" * 64
    assert parse_ref(f"r.example/a@{digest}").reference == digest
    for bad in ("app:1.0", "library/app", "r.example/App", "r.example/a:"):
        with pytest.raises(ValueError, match="REGISTRY"):
            parse_ref(bad)


# --- over HTTPS ---------------------------------------------------------------------

USER, PASSWORD, TOKEN, WRONG = "ci", "pw-not-a-secret", "tok123", "pw-wrong"


class _Registry(BaseHTTPRequestHandler):
    auth = "bearer"  # or "basic"
    document: ClassVar[dict[str, Any]] = {}
    seen_accept: ClassVar[list[str]] = []

    def log_message(self, *_: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        given = self.headers.get("Authorization")
        if self.path.startswith("/jwt/auth?"):
            ok = given == basic and "scope=repository%3Agroup%2Fapp%3Apull" in self.path and "service=reg" in self.path
            self._send(200 if ok else 401, json.dumps({"token": TOKEN}).encode() if ok else b"{}", {})
            return
        if self.auth == "bearer" and given != f"Bearer {TOKEN}":
            host = f"https://127.0.0.1:{PORT[0]}"
            self._send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{host}/jwt/auth",service="reg"'})
            return
        if self.auth == "basic" and given != basic:
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="Registry realm"'})
            return
        if self.path == "/v2/group/app/manifests/1.0":
            _Registry.seen_accept.append(self.headers.get("Accept", ""))
            media = self.document["mediaType"]
            self._send(200, json.dumps(self.document).encode(), {"Content-Type": media})
            return
        self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {})


PORT: list[int] = []


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "crt.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", crt],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    PORT[:] = [server.server_address[1]]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", crt
    server.shutdown()


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], given: str = PASSWORD) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(given + "\n"))
    return main(argv)


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_the_cli_reads_the_index_through_the_registrys_auth(
    registry: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], auth: str
) -> None:
    address, ca = registry
    monkeypatch.setattr(_Registry, "auth", auth)
    ref = f"{address}/group/app:1.0"
    args = [ref, "--platform", "linux/amd64,linux/arm64", "--ca", str(ca), "--user", USER, "--password-stdin"]
    monkeypatch.setattr(_Registry, "document", _index("buildx-no-attestations.json"))
    assert _run(monkeypatch, args) == 0, capsys.readouterr()
    assert "application/vnd.oci.image.index.v1+json" in _Registry.seen_accept[-1]
    assert "ok: exactly linux/amd64, linux/arm64" in capsys.readouterr().out
    monkeypatch.setattr(_Registry, "document", _index("buildx-default-attestations.json"))
    assert _run(monkeypatch, args) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL unknown/unknown") == 2 and "2 problem(s)" in out
    assert _run(monkeypatch, args, WRONG) == 2  # could not read: not a verdict
    assert PASSWORD not in capsys.readouterr().err


def test_the_cli_checks_the_registrys_certificate(
    registry: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = registry
    monkeypatch.setattr(_Registry, "auth", "basic")
    code = _run(
        monkeypatch, [f"{address}/group/app:1.0", "--platform", "linux/amd64", "--user", USER, "--password-stdin"]
    )
    assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
