"""The GitLab stand-in image (tools/lab/images.py GITLAB_STANDIN, tools/lab/standin_image/) on the wire.

It runs in a real dockerd in a namespace of its own (tools/lab/docker.py), given what the
program gives the omnibus container: GITLAB_OMNIBUS_CONFIG from render_gitlab_rb, the
root password, the three volumes, the TLS files uploaded into /etc/gitlab/ssl before
start, the four ports published on the host's address. Checked from the namespace:
HTTPS with our CA, the HTTP redirect, the registry's basic auth, docker login and push,
the ssh host key, and what a new container on the same volumes keeps. The host and the
program's side: tests/lab/standin_host.py; the wrapper in-process: test_standin_wrapper.py.

Needs root, docker.io and debootstrap: fails loudly without them, never skips. The first
run on a machine builds the image (~1 min); later runs reuse the cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.gitlab import SECRETS_FILE
from components.render.gitlab import render_gitlab_rb
from tests.lab.host_view import container_pids, secrets_shown
from tests.lab.standin_host import (
    ADDRESS,
    DOMAIN,
    GITLAB_RB,
    PASSWORD,
    REGISTRY,
    Host,
    certificates,
    create,
    curl,
    host_key,
    program_files,
    standin_host,
    standin_settings,
    tiny_image,
    upload,
    wait_exit,
    wait_healthy,
)
from tools.lab.images import GITLAB_STANDIN

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with standin_host() as made:
        yield made


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


def _check_web(host: Host, ca: Path) -> None:
    """HTTPS with our certificate, the HTTP redirect, the registry's basic auth."""
    status, page = curl(host, ca, f"https://{DOMAIN}/")
    assert status == 200, page
    assert f"forgeway-gitlab-standin 443 {ADDRESS}\n" in page, page
    status, page = curl(host, ca, f"https://{DOMAIN}/-/health")
    assert status == 200, page
    status, page = curl(host, ca, f"http://{DOMAIN}/users/sign_in?x=1")
    assert status == 301, page
    assert f"location: https://{DOMAIN}/users/sign_in?x=1\r\n" in page.lower(), page

    status, page = curl(host, ca, f"https://{DOMAIN}:5050/v2/")
    assert status == 401, page
    assert "docker-distribution-api-version: registry/2.0" in page.lower(), page
    status, page = curl(host, ca, f"https://{DOMAIN}:5050/v2/", auth=True)
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
    ca = certificates(host.scratch)
    create(host, "gitlab")
    files = program_files(host.scratch)
    upload(host, "gitlab", files)  # the program's uploads
    host.docker("start", "gitlab")
    print(f"healthy after {wait_healthy(host, 'gitlab'):.1f}s")
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
    host.docker("import", "-", f"{REGISTRY}/root/tiny:1", input=tiny_image())
    started = time.monotonic()
    host.docker("push", f"{REGISTRY}/root/tiny:1")
    print(f"docker push: {time.monotonic() - started:.1f}s")

    key = host_key(host)
    assert key in host.docker("exec", "gitlab", "cat", "/etc/gitlab/ssh_host_ed25519_key.pub").stdout.decode()
    assert host.docker("exec", "gitlab", "id", "-un", "git").stdout == b"git\n"
    baked = host.docker("exec", "gitlab", "python3", "-c", "import glob; print(glob.glob('/etc/ssh/ssh_host_*'))")
    assert baked.stdout == b"[]\n"  # no host key shared by every container of the image
    host.docker("exec", "gitlab", "sh", "-c", "echo kept > /var/opt/gitlab/forgeway-marker")
    gitlab_secrets = host.docker("exec", "gitlab", "cat", "/etc/gitlab/gitlab-secrets.json").stdout
    assert json.loads(gitlab_secrets)["gitlab_rails"]["db_key_base"], gitlab_secrets
    _check_logs(host, "gitlab")

    started = time.monotonic()
    host.docker("stop", "--time", "10", "gitlab")
    stop_seconds = time.monotonic() - started
    print(f"docker stop: {stop_seconds:.1f}s")
    assert stop_seconds < 5.0
    assert wait_exit(host, "gitlab") == 0, host.logs("gitlab")

    # a new container on the same volumes: same host key, same data, the pushed image
    host.docker("rm", "gitlab")
    host.docker("rmi", f"{REGISTRY}/root/tiny:1")
    create(host, "gitlab2")
    host.docker("start", "gitlab2")
    print(f"recreated, healthy after {wait_healthy(host, 'gitlab2'):.1f}s")
    assert host_key(host) == key
    assert "made ssh host key" not in host.logs("gitlab2")
    assert "gitlab-secrets.json (first start)" not in host.logs("gitlab2")
    assert host.docker("exec", "gitlab2", "cat", "/etc/gitlab/gitlab-secrets.json").stdout == gitlab_secrets
    assert host.docker("exec", "gitlab2", "cat", "/var/opt/gitlab/forgeway-marker").stdout == b"kept\n"
    status, page = curl(host, ca, f"https://{DOMAIN}:5050/v2/root/tiny/tags/list", auth=True)
    assert status == 200 and '"tags":["1"]' in page, page
    host.docker("pull", f"{REGISTRY}/root/tiny:1")

    # a service that dies takes the container down, non-zero
    host.docker("exec", "gitlab2", "sh", "-c", 'kill -KILL "$(cat /run/gitlab-standin/nginx.pid)"')
    assert wait_exit(host, "gitlab2", timeout=15) != 0
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
    gitlab_rb = render_gitlab_rb(standin_settings(tls="letsencrypt")).text
    env = {"GITLAB_OMNIBUS_CONFIG": gitlab_rb, "GITLAB_ROOT_PASSWORD": PASSWORD}
    host.docker("run", "-d", "--name", "acme", "-e", "GITLAB_OMNIBUS_CONFIG", "-e", "GITLAB_ROOT_PASSWORD",
                GITLAB_STANDIN, env=env)  # fmt: skip
    try:
        wait_healthy(host, "acme")
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
    create(host, name, fresh=True)
    try:
        upload(host, name, files)
        done = host.docker("start", "-a", name, check=False, timeout=60)
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
    finally:
        host.docker("rm", "-f", "-v", name, check=False)


def test_standin_refuses_a_key_or_secrets_file_others_can_read(host: Host) -> None:
    directory = host.scratch / "refusals"
    directory.mkdir()
    certificates(directory)
    code, output = _start_to_exit(host, "open-key", program_files(directory, key_mode="0644"))
    assert code != 0, output
    expected = f"nginx['ssl_certificate_key'] /etc/gitlab/ssl/{DOMAIN}.key is mode 0644 owned by uid 0"
    assert expected in output, output

    files = program_files(directory)
    files[SECRETS_FILE] = (files[SECRETS_FILE][0], "0640")
    code, output = _start_to_exit(host, "open-secrets", files)
    assert code != 0, output
    assert f"from_file {SECRETS_FILE} is mode 0640 owned by uid 0: a private file must be root's alone" in output
    assert PASSWORD not in output

    del files[SECRETS_FILE]
    code, output = _start_to_exit(host, "no-secrets", files)
    assert code != 0, output
    assert f"from_file '{SECRETS_FILE}': no such file" in output, output
