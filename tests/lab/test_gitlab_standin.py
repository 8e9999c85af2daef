"""The GitLab stand-in image (tools/lab/images.py GITLAB_STANDIN, tools/lab/standin_image/) on the wire.

It runs in a real dockerd in a namespace of its own (tools/lab/docker.py), given what the
program gives the omnibus container: GITLAB_OMNIBUS_CONFIG from render_gitlab_rb, the
root password, the three volumes, the TLS files uploaded into /etc/gitlab/ssl before
start, the four ports published on the host's address. Checked from the namespace:
HTTPS with our CA, the HTTP redirect, the registry's basic auth, docker login and push,
the ssh host key, and what a new container on the same volumes keeps.

Needs root, docker.io and debootstrap: fails loudly without them, never skips. The first
run on a machine builds the image (~1 min); later runs reuse the cache.
"""

from __future__ import annotations

import datetime
import importlib.util
import io
import ipaddress
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.gitlab import (
    PRIVATE_FILE_PERMISSIONS,
    PUBLIC_FILE_PERMISSIONS,
    SECRETS_FILE,
    omnibus_config,
    secrets_rb,
)
from components.render.gitlab import GitLabSettings, render_gitlab_rb, ruby_str
from tests.lab.host_view import container_pids, secrets_shown
from tests.lab.netns import isolated_netns, require_docker_tools
from tools.lab import images as lab_images
from tools.lab.docker import DaemonInfo, docker_client, docker_env
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import GITLAB_STANDIN, ImageFile, Recipe, ensure_image
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.78"  # only inside the test's own namespace, which has no link out
DOMAIN = "gitlab.standin.test"
PASSWORD = "lab s3cret 'pw' for root"  # noqa: S105 (a test value; spaces and quotes on purpose)
REGISTRY = f"{ADDRESS}:5050"  # the daemon's name for it (it cannot resolve DOMAIN)
PORTS = (80, 443, 22, 5050)
VOLUMES = {"gs-config": "/etc/gitlab", "gs-logs": "/var/log/gitlab", "gs-data": "/var/opt/gitlab"}
HEALTHCHECK = ["/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "10"]  # the program's
WRAPPER = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "wrapper.py"


def _settings(**overrides: object) -> GitLabSettings:
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "https_public_port": 443,
        "ssh_public_port": 22,
        "forwarding_mode": "snat",
        "vps_tunnel_address": "10.8.0.1",
        "http_public_port": 80,
        "registry_public_port": 5050,
        **overrides,
    }
    return GitLabSettings(**fields)  # type: ignore[arg-type]


GITLAB_RB = render_gitlab_rb(_settings()).text
PROGRAM_CONFIG = omnibus_config(GITLAB_RB)  # GITLAB_OMNIBUS_CONFIG as the program sets it


# --------------------------------------------------------------------------- the parser, in-process


def _wrapper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("standin_wrapper", WRAPPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrapper_reads_the_rendered_gitlab_rb() -> None:
    wrapper = _wrapper()
    s = wrapper.settings(GITLAB_RB)
    assert s.gitlab.origin == f"https://{DOMAIN}"
    assert (s.gitlab.listen_port, str(s.gitlab.certificate)) == (443, f"/etc/gitlab/ssl/{DOMAIN}.crt")
    assert s.registry is not None
    assert (s.registry.origin, s.registry.listen_port) == (f"https://{DOMAIN}:5050", 5050)
    assert str(s.registry.key) == f"/etc/gitlab/ssl/{DOMAIN}.key"
    assert s.letsencrypt is False
    # Ruby's two escapes, as ruby_str writes them
    tricky = "/etc/gitlab/ssl/a\\b'c.crt"
    found = wrapper.parse_gitlab_rb(f"nginx['ssl_certificate'] = {ruby_str(tricky)}  # note\n")
    assert found == {"nginx['ssl_certificate']": tricky}
    no_registry = render_gitlab_rb(_settings(registry_enabled=False, tls="letsencrypt")).text
    s = wrapper.settings(no_registry)
    assert (s.registry, s.letsencrypt) == (None, True)
    with pytest.raises(wrapper.Fatal, match="cannot read external_url"):
        wrapper.settings('external_url "https://x"\n')


def test_wrapper_reads_the_root_password_from_a_private_from_file(tmp_path: Path) -> None:
    wrapper = _wrapper()
    secrets = tmp_path / "secrets.rb"
    secrets.write_text(secrets_rb(PASSWORD))
    secrets.chmod(0o600)
    text = f"{GITLAB_RB}from_file({ruby_str(str(secrets))})\n"
    assert wrapper.settings(text).root_password == PASSWORD
    assert wrapper.settings(GITLAB_RB).root_password is None
    secrets.chmod(0o644)
    with pytest.raises(wrapper.Fatal, match="mode 0644 owned by uid 0: a private file must be root's alone") as err:
        wrapper.settings(text)
    assert PASSWORD not in str(err.value)
    secrets.unlink()
    with pytest.raises(wrapper.Fatal, match="no such file"):
        wrapper.settings(text)


def test_recipe_key_covers_the_content_of_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_images, "REPO_ROOT", tmp_path)
    script = tmp_path / "entry.py"
    script.write_text("print(1)\n")
    recipe = Recipe(packages=("python3-minimal",), files=(ImageFile("entry.py", "/assets/entry", 0o755),))
    first = recipe.key()
    script.write_text("print(2)\n")
    assert recipe.key() != first
    assert Recipe(packages=("python3-minimal",)).key() not in (first, recipe.key())


# --------------------------------------------------------------------------- fixtures


class Host:
    """The namespace, its dockerd (with the image), and a scratch directory."""

    def __init__(self, netns: str, daemon: DaemonInfo, scratch: Path) -> None:
        self.netns, self.daemon, self.scratch = netns, daemon, scratch
        self.client_config = scratch / "docker-client"  # docker login writes here, not to ~/.docker
        self.client_config.mkdir()

    def docker(
        self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None, check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        cmd = [docker_client(), *args]
        done = subprocess.run(
            cmd, input=input, capture_output=True, timeout=timeout, check=False,
            env={**os.environ, **docker_env(self.daemon), "DOCKER_CONFIG": str(self.client_config), **(env or {})},
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}")
        return done

    def in_ns(self, *cmd: str, input: bytes | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
        argv = Machine("host", self.netns).argv(cmd)
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False)

    def logs(self, name: str) -> str:
        done = self.docker("logs", name, check=False)
        return (done.stdout + done.stderr).decode(errors="replace")


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    require_docker_tools("curl", "ssh-keyscan")
    scratch = Path(tempfile.mkdtemp(prefix="fwgs-"))
    try:
        with isolated_netns("fwgs", ADDRESS) as netns:
            daemon = None
            try:
                started = time.monotonic()
                daemon = start_dockerd(netns, scratch / "docker", index=9, extra_args=("--insecure-registry", REGISTRY))
                print(f"\ndockerd start: {time.monotonic() - started:.2f}s")
                print(f"ensure_image: {ensure_image(daemon, GITLAB_STANDIN)}")
                yield Host(netns, daemon, scratch)
            finally:
                if daemon is not None:
                    stop_dockerd(daemon)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def _certificates(directory: Path) -> Path:
    """A throwaway CA and its server certificate for DOMAIN and ADDRESS: ssl/<DOMAIN>.{crt,key}; the CA's path."""
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("forgeway lab CA")).issuer_name(name("forgeway lab CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    san = x509.SubjectAlternativeName([x509.DNSName(DOMAIN), x509.IPAddress(ipaddress.ip_address(ADDRESS))])
    cert = (
        x509.CertificateBuilder().subject_name(name(DOMAIN)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ssl = directory / "ssl"
    ssl.mkdir()
    (ssl / f"{DOMAIN}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = ssl / f"{DOMAIN}.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca_path


def _program_files(directory: Path, *, key_mode: str = PRIVATE_FILE_PERMISSIONS) -> dict[str, tuple[bytes, str]]:
    """What the program uploads, with its modes: the secrets file and (own-ca) the certificate and key."""
    ssl = directory / "ssl"
    return {
        SECRETS_FILE: (secrets_rb(PASSWORD).encode(), PRIVATE_FILE_PERMISSIONS),
        f"/etc/gitlab/ssl/{DOMAIN}.crt": ((ssl / f"{DOMAIN}.crt").read_bytes(), PUBLIC_FILE_PERMISSIONS),
        f"/etc/gitlab/ssl/{DOMAIN}.key": ((ssl / f"{DOMAIN}.key").read_bytes(), key_mode),
    }


def _upload(host: Host, name: str, files: dict[str, tuple[bytes, str]]) -> None:
    """Into a created container, as the provider does: a tar, the mode given, no owner (root)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), int(mode, 8)
            tar.addfile(info, io.BytesIO(data))
    host.docker("cp", "-", f"{name}:/", input=out.getvalue())


def _create(
    host: Host, name: str, *, gitlab_rb: str = PROGRAM_CONFIG, password: str | None = None, fresh: bool = False
) -> None:
    """docker create as the program does it: env, volumes, ports on the host's address.

    ``fresh``: volumes of the container's own (``docker rm -v`` removes them), not the shared ones.
    """
    env = {"GITLAB_OMNIBUS_CONFIG": gitlab_rb}
    args = ["-e", "GITLAB_OMNIBUS_CONFIG"]  # values from the client's environment: never on a command line
    if password is not None:
        env["GITLAB_ROOT_PASSWORD"] = password
        args += ["-e", "GITLAB_ROOT_PASSWORD"]
    for volume, path in VOLUMES.items():
        args += ["-v", path if fresh else f"{volume}:{path}"]
    for port in PORTS:
        args += ["-p", f"{ADDRESS}:{port}:{port}"]
    host.docker("create", "--name", name, "--hostname", DOMAIN, *args, GITLAB_STANDIN, env=env)


def _wait_healthy(host: Host, name: str, timeout: float = 120.0) -> float:
    """Seconds until the program's healthcheck command passes; fails at once if the container exits."""
    started = time.monotonic()
    while True:
        state = json.loads(host.docker("inspect", "--format", "{{json .State}}", name).stdout)
        if not state["Running"]:
            raise AssertionError(f"{name} exited ({state['ExitCode']}):\n{host.logs(name)}")
        if host.docker("exec", name, *HEALTHCHECK, check=False).returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{name} not healthy in {timeout}s:\n{host.logs(name)}")
        time.sleep(0.5)


def _wait_exit(host: Host, name: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(host.docker("inspect", "--format", "{{json .State}}", name).stdout)
        if not state["Running"]:
            return int(state["ExitCode"])
        assert time.monotonic() < deadline, f"{name} still running after {timeout}s:\n{host.logs(name)}"
        time.sleep(0.2)


def _curl(host: Host, ca: Path, url: str, *, auth: bool = False) -> tuple[int, str]:
    """(status, headers and body) of GET ``url`` from the namespace, DOMAIN resolving to ADDRESS."""
    cmd = ["curl", "-sS", "-D", "-", "--max-time", "10", "--cacert", str(ca)]
    cmd += [arg for port in PORTS for arg in ("--resolve", f"{DOMAIN}:{port}:{ADDRESS}")]
    config = ""
    if auth:  # the password goes on stdin, as curl config
        escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
        cmd += ["-K", "-"]
        config = f'user = "root:{escaped}"\n'
    done = host.in_ns(*cmd, url, input=config.encode())
    assert done.returncode == 0, f"curl {url}: {done.stderr.decode()}"
    text = done.stdout.decode(errors="replace")
    return int(text.split(None, 2)[1]), text


def _host_key(host: Host) -> str:
    done = host.in_ns("ssh-keyscan", "-T", "10", "-p", "22", "-t", "ed25519", ADDRESS)
    keys = [line.split(None, 1)[1] for line in done.stdout.decode().splitlines() if not line.startswith("#")]
    assert len(keys) == 1, f"ssh-keyscan: {done.stdout.decode()} {done.stderr.decode()}"
    return keys[0]


def _tiny_image() -> bytes:
    """A one-file root file system for `docker import`: 3 MiB that do not compress."""
    data = os.urandom(3 << 20)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("noise.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# The password in no process's command line or environment; it comes on stdin.
_PROCESS_SCAN = """
import os, sys
secret = sys.stdin.read().encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if pid == str(os.getpid()):
        continue
    for part in ("cmdline", "environ"):
        try:
            if secret in open(f"/proc/{pid}/{part}", "rb").read():
                print(pid, part, open(f"/proc/{pid}/cmdline", "rb").read())
        except OSError:
            pass
"""


# --------------------------------------------------------------------------- tests


def _check_web(host: Host, ca: Path) -> None:
    """HTTPS with our certificate, the HTTP redirect, the registry's basic auth."""
    status, page = _curl(host, ca, f"https://{DOMAIN}/")
    assert status == 200, page
    assert f"forgeway-gitlab-standin 443 {ADDRESS}\n" in page, page
    status, page = _curl(host, ca, f"https://{DOMAIN}/-/health")
    assert status == 200, page
    status, page = _curl(host, ca, f"http://{DOMAIN}/users/sign_in?x=1")
    assert status == 301, page
    assert f"location: https://{DOMAIN}/users/sign_in?x=1\r\n" in page.lower(), page

    status, page = _curl(host, ca, f"https://{DOMAIN}:5050/v2/")
    assert status == 401, page
    assert "docker-distribution-api-version: registry/2.0" in page.lower(), page
    status, page = _curl(host, ca, f"https://{DOMAIN}:5050/v2/", auth=True)
    assert status == 200, page


def _check_logs(host: Host, name: str) -> None:
    """Client addresses in nginx's logs (log volume) and on stdout; the password nowhere."""
    for log in ("gitlab_access.log", "gitlab_registry_access.log"):
        text = host.docker("exec", name, "cat", f"/var/log/gitlab/nginx/{log}").stdout.decode()
        assert f"\n{ADDRESS} - " in f"\n{text}", f"{log}: {text}"
    logs = host.logs(name)
    assert f"nginx: 443 {ADDRESS} - " in logs and f"nginx: 5050 {ADDRESS} - root " in logs, logs
    assert f"sshd: Connection from {ADDRESS} port " in logs, logs
    assert PASSWORD not in logs
    scan = host.docker("exec", "-i", name, "python3", "-c", _PROCESS_SCAN, input=PASSWORD.encode())
    assert scan.stdout == b"", scan.stdout.decode()


def _secrets_outside(host: Host, name: str, secrets: dict[str, bytes]) -> list[str]:
    """Where, seen from the host, a secret of container ``name`` shows (tests/lab/host_view.py)."""
    init = int(json.loads(host.docker("inspect", "--format", "{{json .State.Pid}}", name).stdout))
    pids = container_pids(init)
    assert init in pids and len(pids) >= 4, pids  # the wrapper, nginx, sshd, registry (and children)
    return secrets_shown(host.docker("inspect", name).stdout, pids, secrets)


def test_standin_serves_like_omnibus_and_keeps_its_volumes(host: Host) -> None:
    ca = _certificates(host.scratch)
    _create(host, "gitlab")
    files = _program_files(host.scratch)
    _upload(host, "gitlab", files)  # the program's uploads
    host.docker("start", "gitlab")
    print(f"healthy after {_wait_healthy(host, 'gitlab'):.1f}s")
    _check_web(host, ca)

    # no secret where the host shows a container: the root password, the TLS key's body
    key_body = b"".join(files[f"/etc/gitlab/ssl/{DOMAIN}.key"][0].splitlines()[1:-1])
    secrets = {"root password": PASSWORD.encode(), "TLS key": key_body[:40], "TLS key line": key_body[-40:]}
    assert _secrets_outside(host, "gitlab", secrets) == []
    modes = host.docker("exec", "gitlab", "stat", "-c", "%n %a %U", SECRETS_FILE, f"/etc/gitlab/ssl/{DOMAIN}.key")
    assert modes.stdout.decode().split("\n")[:2] == [
        f"{SECRETS_FILE} 600 root",
        f"/etc/gitlab/ssl/{DOMAIN}.key 600 root",
    ]

    # docker login and push through nginx: a 3 MiB layer (nginx's default body limit is 1 MiB)
    host.docker("login", REGISTRY, "-u", "root", "--password-stdin", input=PASSWORD.encode())
    host.docker("import", "-", f"{REGISTRY}/root/tiny:1", input=_tiny_image())
    started = time.monotonic()
    host.docker("push", f"{REGISTRY}/root/tiny:1")
    print(f"docker push: {time.monotonic() - started:.1f}s")

    key = _host_key(host)
    assert key in host.docker("exec", "gitlab", "cat", "/etc/gitlab/ssh_host_ed25519_key.pub").stdout.decode()
    assert host.docker("exec", "gitlab", "id", "-un", "git").stdout == b"git\n"
    baked = host.docker("exec", "gitlab", "python3", "-c", "import glob; print(glob.glob('/etc/ssh/ssh_host_*'))")
    assert baked.stdout == b"[]\n"  # no host key shared by every container of the image
    host.docker("exec", "gitlab", "sh", "-c", "echo kept > /var/opt/gitlab/forgeway-marker")
    _check_logs(host, "gitlab")

    started = time.monotonic()
    host.docker("stop", "--time", "10", "gitlab")
    stop_seconds = time.monotonic() - started
    print(f"docker stop: {stop_seconds:.1f}s")
    assert stop_seconds < 5.0
    assert _wait_exit(host, "gitlab") == 0, host.logs("gitlab")

    # a new container on the same volumes: same host key, same data, the pushed image
    host.docker("rm", "gitlab")
    host.docker("rmi", f"{REGISTRY}/root/tiny:1")
    _create(host, "gitlab2")
    host.docker("start", "gitlab2")
    print(f"recreated, healthy after {_wait_healthy(host, 'gitlab2'):.1f}s")
    assert _host_key(host) == key
    assert "made ssh host key" not in host.logs("gitlab2")
    assert host.docker("exec", "gitlab2", "cat", "/var/opt/gitlab/forgeway-marker").stdout == b"kept\n"
    status, page = _curl(host, ca, f"https://{DOMAIN}:5050/v2/root/tiny/tags/list", auth=True)
    assert status == 200 and '"tags":["1"]' in page, page
    host.docker("pull", f"{REGISTRY}/root/tiny:1")

    # a service that dies takes the container down, non-zero
    host.docker("exec", "gitlab2", "sh", "-c", 'kill -KILL "$(cat /run/gitlab-standin/nginx.pid)"')
    assert _wait_exit(host, "gitlab2", timeout=15) != 0
    assert "nginx exited (-9): stopping the container" in host.logs("gitlab2")
    host.docker("rm", "gitlab2")


def _run_to_exit(host: Host, name: str, gitlab_rb: str, password: str | None) -> tuple[int, str]:
    """Create and start a container on fresh volumes (no uploads); its exit status and output."""
    env = {"GITLAB_OMNIBUS_CONFIG": gitlab_rb, "GITLAB_ROOT_PASSWORD": password or ""}
    args = ["-e", "GITLAB_OMNIBUS_CONFIG", *(["-e", "GITLAB_ROOT_PASSWORD"] if password else [])]
    done = host.docker("run", "--rm", "--name", name, *args, GITLAB_STANDIN, env=env, check=False, timeout=60)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def test_standin_refuses_to_start_without_password_or_certificate(host: Host) -> None:
    code, output = _run_to_exit(host, "no-password", GITLAB_RB, None)
    assert code != 0, output
    assert "FATAL: no root password: set gitlab_rails['initial_root_password']" in output, output

    code, output = _run_to_exit(host, "no-certificate", GITLAB_RB, PASSWORD)
    assert code != 0, output
    assert f"nginx['ssl_certificate'] /etc/gitlab/ssl/{DOMAIN}.crt is missing" in output, output
    assert PASSWORD not in output


def test_standin_with_letsencrypt_serves_a_self_signed_certificate(host: Host) -> None:
    gitlab_rb = render_gitlab_rb(_settings(tls="letsencrypt")).text
    env = {"GITLAB_OMNIBUS_CONFIG": gitlab_rb, "GITLAB_ROOT_PASSWORD": PASSWORD}
    host.docker("run", "-d", "--name", "acme", "-e", "GITLAB_OMNIBUS_CONFIG", "-e", "GITLAB_ROOT_PASSWORD",
                GITLAB_STANDIN, env=env)  # fmt: skip
    try:
        _wait_healthy(host, "acme")
        logs = host.logs("acme")
        assert "LET'S ENCRYPT IS NOT AVAILABLE IN THE STAND-IN" in logs, logs
        subject = host.docker(
            "exec", "acme", "openssl", "x509", "-noout", "-subject", "-in", f"/etc/gitlab/ssl/{DOMAIN}.crt"
        ).stdout.decode()
        assert DOMAIN in subject, subject
    finally:
        host.docker("rm", "-f", "-v", "acme", check=False)


def _start_to_exit(host: Host, name: str, files: dict[str, tuple[bytes, str]]) -> tuple[int, str]:
    """The program's container on fresh volumes with ``files`` uploaded; its exit status and output."""
    _create(host, name, fresh=True)
    try:
        _upload(host, name, files)
        done = host.docker("start", "-a", name, check=False, timeout=60)
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
    finally:
        host.docker("rm", "-f", "-v", name, check=False)


def test_standin_refuses_a_key_or_secrets_file_others_can_read(host: Host) -> None:
    directory = host.scratch / "refusals"
    directory.mkdir()
    _certificates(directory)
    code, output = _start_to_exit(host, "open-key", _program_files(directory, key_mode="0644"))
    assert code != 0, output
    expected = f"nginx['ssl_certificate_key'] /etc/gitlab/ssl/{DOMAIN}.key is mode 0644 owned by uid 0"
    assert expected in output, output

    files = _program_files(directory)
    files[SECRETS_FILE] = (files[SECRETS_FILE][0], "0640")
    code, output = _start_to_exit(host, "open-secrets", files)
    assert code != 0, output
    assert f"from_file {SECRETS_FILE} is mode 0640 owned by uid 0: a private file must be root's alone" in output
    assert PASSWORD not in output

    del files[SECRETS_FILE]
    code, output = _start_to_exit(host, "no-secrets", files)
    assert code != 0, output
    assert f"from_file '{SECRETS_FILE}': no such file" in output, output
