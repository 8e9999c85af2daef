"""docker-client-up/-down.sh with FORGEWAY_ETC under the test's directory, and a real dockerd.

dockerd reads registry CAs from a fixed directory: docker 20.10's
``registry.CertsDir()`` is ``/etc/docker/certs.d`` (``$XDG_CONFIG_HOME/docker/certs.d``
only under RootlessKit), re-read on every pull. So the daemon test bind-mounts
``$FORGEWAY_ETC/docker`` over ``/etc/docker`` inside dockerd's own mount namespace
(``ip netns exec`` gives it one, a slave of the root one: nothing shows outside and it
dies with the daemon) and pulls from a TLS registry stand-in whose certificate the
forgeway CA signed: before, the pull fails with x509; after, TLS succeeds and the
stand-in sees the manifest request. The real /etc is never written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.render.docker_client import DockerClientSettings, render_docker_client
from components.scripts import script_command
from tests.certs import make_ca
from tests.lab.netns import isolated_netns
from tests.lab.tree import listing
from tools.lab.docker import DOCKERD, docker
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.78"
PORT = 5443


def _settings(ca_pem: str, *, proxy: bool = True) -> DockerClientSettings:
    return DockerClientSettings(
        registries=(f"{ADDRESS}:{PORT}", "registry.forgeway.lab:5050"),
        ca_pem=ca_pem,
        gitlab_host="gitlab.forgeway.lab",
        tunnel_subnet="10.8.0.0/24",
        http_proxy="http://proxy.corp:3128" if proxy else None,
        https_proxy="http://proxy.corp:3128" if proxy else None,
    )


def _stage(directory: Path, settings: DockerClientSettings) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_docker_client(settings).staged().items():
        (directory / name).write_text(text)
    return directory


def _run(etc: Path, name: str, *args: str) -> list[str]:
    env = {**os.environ, "FORGEWAY_ETC": str(etc), "FORGEWAY_SYSTEMD": "auto"}
    done = subprocess.run(
        ["sh", "-c", script_command(name, *args)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{name} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    assert done.stderr == "", done.stderr
    return done.stdout.splitlines()


@pytest.fixture
def ca_pem() -> str:
    return make_ca("forgeway lab CA").pem


def test_up_converges_and_down_removes_exactly_what_up_added(tmp_path: Path, ca_pem: str) -> None:
    etc = tmp_path / "etc"
    (etc / "docker").mkdir(parents=True)  # what a host had before: kept
    (etc / "docker" / "key.json").write_text("{}\n")
    (etc / "systemd" / "system").mkdir(parents=True)
    stage = _stage(tmp_path / "stage", _settings(ca_pem))
    before = listing(etc)

    first = _run(etc, "docker-client-up.sh", str(stage))
    # 2 certs.d CAs, 2 job certs.d CAs and the jobs' buildkitd.toml, the trust store, the drop-in
    assert sum(line.startswith("changed ") for line in first) == 7, first
    assert any("trust store is left alone" in line for line in first), first
    assert any("systemd is not PID 1" in line for line in first), first
    assert (etc / f"docker/certs.d/{ADDRESS}:{PORT}/ca.crt").read_text() == ca_pem
    assert (etc / "docker/certs.d/registry.forgeway.lab:5050/ca.crt").read_text() == ca_pem
    assert (etc / "forgeway/root/usr/local/share/ca-certificates/forgeway-ca.crt").read_text() == ca_pem
    assert (etc / "docker/forgeway-jobs/certs.d/registry.forgeway.lab:5050/ca.crt").read_text() == ca_pem
    assert "[registry." in (etc / "docker/forgeway-jobs/buildkitd.toml").read_text()
    dropin = (etc / "systemd/system/docker.service.d/forgeway-proxy.conf").read_text()
    assert f"NO_PROXY=localhost,127.0.0.1,{ADDRESS},registry.forgeway.lab,gitlab.forgeway.lab,10.8.0.0/24" in dropin
    after_first = listing(etc)

    second = _run(etc, "docker-client-up.sh", str(stage))
    assert second and all(line.startswith("ok ") for line in second), second
    assert listing(etc) == after_first

    # The proxy goes away: up removes the drop-in and says what the caller must do.
    _stage(stage, _settings(ca_pem, proxy=False))
    (stage / "forgeway-proxy.conf").unlink()
    third = _run(etc, "docker-client-up.sh", str(stage))
    assert any("removed" in line and "forgeway-proxy.conf" in line for line in third), third
    assert not (etc / "systemd/system/docker.service.d").joinpath("forgeway-proxy.conf").exists()

    down = _run(etc, "docker-client-down.sh")
    assert any(line.startswith("changed ") for line in down), down
    assert listing(etc) == before
    again = _run(etc, "docker-client-down.sh")
    assert again and all(line.startswith("ok ") for line in again), again
    assert listing(etc) == before


def test_a_file_changed_by_hand_is_put_back(tmp_path: Path, ca_pem: str) -> None:
    etc = tmp_path / "etc"
    stage = _stage(tmp_path / "stage", _settings(ca_pem, proxy=False))
    _run(etc, "docker-client-up.sh", str(stage))
    cert = etc / f"docker/certs.d/{ADDRESS}:{PORT}/ca.crt"
    cert.write_text("tampered\n")
    cert.chmod(0o600)
    out = _run(etc, "docker-client-up.sh", str(stage))
    assert [line for line in out if not line.startswith("ok ")] == [f"changed docker-client: {cert}"]
    assert cert.read_text() == ca_pem and cert.stat().st_mode & 0o777 == 0o644
    _run(etc, "docker-client-down.sh")
    assert not etc.exists()


# --- a real dockerd ------------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[str]:
    if not Path(DOCKERD).is_file():
        raise RuntimeError(f"{DOCKERD} is missing: apt-get install -y docker.io (tools/ci/apt-packages.txt)")
    with isolated_netns("fwdc", ADDRESS) as name:
        yield name


REGISTRY = f"""
import http.server, ssl, sys
log = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.path + "\\n")
        if self.path == "/v2/":
            self.send_response(200); self.send_header("Content-Length", "2")
            self.end_headers(); self.wfile.write(b"{{}}")
        else:
            body = b'{{"errors":[{{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}}]}}'
            self.send_response(404); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    do_HEAD = do_GET
    def log_message(self, *a): pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv = http.server.HTTPServer(("{ADDRESS}", {PORT}), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"""


def test_dockerd_trusts_the_ca_from_the_certs_d_layout(netns: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="fwdc-"))  # short: the docker socket path is limited
    server: subprocess.Popen[bytes] | None = None
    daemon = None
    try:
        ca = make_ca("forgeway lab CA")
        ca.issue(ADDRESS, ips=[ADDRESS]).write(base / "server.crt", base / "server.key")
        ca_pem = ca.pem
        etc = base / "etc"
        stage = _stage(base / "stage", _settings(ca_pem))
        log = base / "registry.log"
        (base / "registry.py").write_text(REGISTRY)
        server = subprocess.Popen(
            Machine("host", netns).argv([sys.executable, str(base / "registry.py"), str(log),
                                         str(base / "server.crt"), str(base / "server.key")]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert server.stdout is not None
        assert server.stdout.readline() == b"ready\n", server.stderr.read() if server.stderr else b""

        started = time.monotonic()
        daemon = start_dockerd(netns, base / "docker", index=9)
        print(f"\ndockerd start: {time.monotonic() - started:.2f}s")
        image = f"{ADDRESS}:{PORT}/forgeway/probe:1"

        untrusted = docker(daemon, "pull", image, check=False, timeout=60)
        assert untrusted.returncode != 0
        assert b"x509" in untrusted.stderr, untrusted.stderr  # the CA is not trusted yet

        _run(etc, "docker-client-up.sh", str(stage))
        # docker's documented layout: certs.d/<host>:<port>/ca.crt
        assert (etc / "docker" / "certs.d" / f"{ADDRESS}:{PORT}" / "ca.crt").read_text() == ca_pem
        # dockerd reads /etc/docker/certs.d (fixed): show it FORGEWAY_ETC's, in its own mount namespace
        dockerd = Machine("dockerd", netns, leader=lambda: daemon.pid, nsenter_flags=("-m",))
        dockerd.inside.succeed(["mount", "--bind", str(etc / "docker"), "/etc/docker"], timeout=30)
        log.write_text("")
        trusted = docker(daemon, "pull", image, check=False, timeout=60)
        assert trusted.returncode != 0  # the stand-in has no image
        assert b"x509" not in trusted.stderr, trusted.stderr
        assert b"manifest unknown" in trusted.stderr or b"not found" in trusted.stderr, trusted.stderr
        assert "/v2/forgeway/probe/manifests/1" in log.read_text()  # TLS worked: dockerd asked for it
        assert "/etc/docker" not in [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]

        _run(etc, "docker-client-down.sh")
        assert not etc.exists()
    finally:
        if daemon is not None:
            stop_dockerd(daemon)
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
