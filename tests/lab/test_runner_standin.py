"""The runner stand-in image (tools/lab/images.py RUNNER_STANDIN, tools/lab/standin_image/runner_standin.py).

It runs in a real dockerd in a namespace of its own (tools/lab/docker.py) as the program
runs gitlab-runner: the config volume at /etc/gitlab-runner, config.toml from
render_config_toml put in with mode 0600 before start (the archive API, as the docker
provider's ``uploads``), the stack CA at CA_PATH, the daemon's own socket bind-mounted at
/var/run/docker.sock. It must log ready and stop with 0: on SIGQUIT (the stop signal the
program gives it) after its running job finished, on SIGTERM at once, abandoning it; each
broken variant must exit 1 naming the problem, never the token. With no GitLab in its
namespace its ``POST /runners/verify`` fails, is reported and retried, and it runs on;
its GitLab client (runner_gitlab.py) is checked in-process against a small HTTPS server
(tests/lab/test_runner_gitlab_client.py)
(only the config's CA trusted; verify before any job request; ``concurrent`` kept), and
end to end against the GitLab stand-in in tests/lab/test_gitlab_api_standin.py.

Needs root, docker.io and debootstrap: fails loudly without them, never skips. The first
run on a machine builds the image (~15 s with the minbase cached); later runs reuse it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import secrets
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from components.render.runner_config import CA_PATH, RunnerSettingsView, render_config_toml
from tests.certs import make_ca
from tests.lab.host_view import container_pids, secrets_shown
from tests.lab.netns import scratch_dockerd
from tools.lab.docker import DaemonInfo, docker
from tools.lab.images import RUNNER_STANDIN, ensure_image

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.79"  # only inside the test's own namespace
TOKEN = "glrt-" + secrets.token_urlsafe(18)  # made per run: no token-shaped string in the repo
REGISTRATION = "GR1348941lab-registration-token"
SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "runner_standin.py"


CA_PEM = make_ca("forgeway lab CA").pem


def _view(**overrides: object) -> RunnerSettingsView:
    fields: dict[str, object] = {
        "name": "runner-arm",
        "url": "https://gitlab.forgeway.lab",
        "token": TOKEN,
        "arch": "arm64",
        "concurrent": 2,
        "default_image": "alpine:3.20",
        "tags": ("docker", "lab"),
        **overrides,
    }
    return RunnerSettingsView(**fields)  # type: ignore[arg-type]


CONFIG = render_config_toml(_view())
CONFIG_CA = render_config_toml(_view(ca_registries=("gitlab.forgeway.lab:5050",)))


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runner_standin", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the checks, in-process


class _FakeDocker:
    """A unix socket that answers every request with ``answer``."""

    def __init__(self, path: Path, answer: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_checks_in_process(tmp_path: Path) -> None:
    m = _module()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nApi-Version: 1.41\r\n\r\nOK"
    sock = tmp_path / "docker.sock"
    fake = _FakeDocker(sock, ok)
    try:
        config = _write(tmp_path / "config.toml", CONFIG)
        ready = m.check(config, sock)
        assert (
            ready.line()
            == "runner-standin ready: runner-arm https://gitlab.forgeway.lab tags-from-comment=arm64,docker,lab"
        )

        def refused(text: str, match: str, mode: int = 0o600) -> None:
            with pytest.raises(m.Fatal, match=match) as info:
                m.check(_write(tmp_path / "config.toml", text, mode), sock)
            assert TOKEN not in str(info.value) and REGISTRATION not in str(info.value)

        refused(CONFIG, "mode 0640, not 0600", 0o640)
        refused(CONFIG.replace("concurrent = 2", "concurrent = 0"), "concurrent must be an integer >= 1")
        refused(CONFIG + CONFIG[CONFIG.index("[[runners]]") :], "exactly one \\[\\[runners\\]\\] table, found 2")
        refused(CONFIG.replace('executor = "docker"', 'executor = "shell"'), 'executor must be "docker"')
        refused(CONFIG.replace("https://gitlab", "http://gitlab"), "url must start with https://")
        refused(CONFIG.replace(TOKEN, REGISTRATION), "registration token \\(GR1348941...\\)")
        refused(CONFIG.replace(TOKEN, "glpat-xyz"), "not a runner authentication token \\(glrt-...\\)")
        refused(CONFIG.replace('image = "alpine:3.20"', 'image = ""'), "runners.docker.image")
        refused(CONFIG.replace("[runners.docker]", "[runners.dock]"), "no \\[runners.docker\\] table")
        refused(CONFIG.replace("concurrent = 2", "concurrent = = 2"), "not valid TOML")
        # the spec forgeway once rendered: certs.d's <host>:<port> inside a volume path
        colon = '"/etc/docker/certs.d/gitlab.forgeway.lab:5050/ca.crt:/etc/docker/certs.d/g:5050/ca.crt:ro"'
        refused(re.sub(r"(?m)^    volumes = .*$", f"    volumes = [{colon}]", CONFIG), "volumes: ")
        refused(CONFIG_CA, f"tls-ca-file {CA_PATH} does not exist")
        ca = _write(tmp_path / "ca.crt", "not a certificate\n", 0o644)
        refused(CONFIG_CA.replace(CA_PATH, str(ca)), "holds no PEM certificate")
        _write(ca, CA_PEM, 0o644)
        assert m.check(_write(config, CONFIG_CA.replace(CA_PATH, str(ca))), sock).name == "runner-arm"
        _write(config, CONFIG)
        os.chown(config, 65534, 0)
        with pytest.raises(m.Fatal, match="owned by uid 65534, not root"):
            m.check(config, sock)
        os.chown(config, 0, 0)
    finally:
        fake.close()


def test_docker_ping_in_process(tmp_path: Path) -> None:
    m = _module()
    with pytest.raises(m.Fatal, match=re.escape("docker.sock.absent is missing: bind-mount the host's docker socket")):
        m.ping_docker(tmp_path / "docker.sock.absent")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n"
    fake = _FakeDocker(sock2 := tmp_path / "chunked.sock", chunked)
    try:
        m.ping_docker(sock2)
    finally:
        fake.close()
    fake = _FakeDocker(sock3 := tmp_path / "bad.sock", b"HTTP/1.1 500 Internal Server Error\r\n\r\nno")
    try:
        with pytest.raises(m.Fatal, match=re.escape("answered 'HTTP/1.1 500 Internal Server Error', not 200")):
            m.ping_docker(sock3)
    finally:
        fake.close()


# --------------------------------------------------------------------------- in a real dockerd


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonInfo]:
    started = time.monotonic()
    with scratch_dockerd("fwrs", ADDRESS, index=12) as info:
        print(f"\ndockerd start: {time.monotonic() - started:.2f}s")
        print(f"ensure_image: {ensure_image(info, RUNNER_STANDIN)}")
        yield info


def _archive(files: dict[str, tuple[str, int]]) -> bytes:
    """A tar of ``files`` (path under /etc/gitlab-runner -> text, mode), owner root."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for directory in sorted({str(Path(p).parent) for p in files} - {"."}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (text, mode) in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _create(daemon: DaemonInfo, name: str, files: dict[str, tuple[str, int]], *, socket_mount: bool = True) -> None:
    """docker create as the program does, then the uploads (archive API, with modes), not started."""
    args = ["-v", f"{name}-config:/etc/gitlab-runner"]
    if socket_mount:
        args += ["-v", f"{daemon.socket}:/var/run/docker.sock"]
    docker(daemon, "create", "--name", name, "--memory", "512m", "--stop-signal", "SIGQUIT", *args, RUNNER_STANDIN)
    docker(daemon, "cp", "-", f"{name}:/etc/gitlab-runner", input=_archive(files))


def _logs(daemon: DaemonInfo, name: str) -> str:
    done = docker(daemon, "logs", name, check=False)
    return (done.stdout + done.stderr).decode(errors="replace")


def _state(daemon: DaemonInfo, name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(docker(daemon, "inspect", "--format", "{{json .State}}", name).stdout)
    return state


def _remove(daemon: DaemonInfo, name: str) -> None:
    docker(daemon, "rm", "-f", "-v", name, check=False)
    docker(daemon, "volume", "rm", f"{name}-config", check=False)


def test_standin_runs_as_the_program_runs_gitlab_runner(daemon: DaemonInfo) -> None:
    _create(daemon, "runner", {"config.toml": (CONFIG_CA, 0o600), "certs/ca.crt": (CA_PEM, 0o644)})
    try:
        listing = docker(daemon, "run", "--rm", "-v", "runner-config:/c", "--entrypoint", "stat", RUNNER_STANDIN,
                         "-c", "%a %U %n", "/c/config.toml", "/c/certs/ca.crt").stdout.decode()  # fmt: skip
        assert listing.splitlines() == ["600 root /c/config.toml", "644 root /c/certs/ca.crt"], listing
        started = time.monotonic()
        docker(daemon, "start", "runner")
        while "runner-standin ready:" not in (logs := _logs(daemon, "runner")):
            assert _state(daemon, "runner")["Running"], f"runner exited:\n{logs}"
            assert time.monotonic() - started < 30, f"not ready in 30 s:\n{logs}"
            time.sleep(0.2)
        print(f"ready after {time.monotonic() - started:.2f}s")
        expected = "runner-standin ready: runner-arm https://gitlab.forgeway.lab tags-from-comment=arm64,docker,lab"
        assert expected in logs.splitlines(), logs
        # no GitLab in this namespace: verify fails, is said, and retried; the runner runs on
        while "runner-standin: Verifying runner... failed: " not in (logs := _logs(daemon, "runner")):
            assert time.monotonic() - started < 30, f"no verify in 30 s:\n{logs}"
            time.sleep(0.2)
        assert _state(daemon, "runner")["Running"], logs
        # the token only in the 0600 config.toml: not in docker inspect, nor any process's environ or cmdline
        init = int(json.loads(docker(daemon, "inspect", "--format", "{{json .State.Pid}}", "runner").stdout))
        pids = container_pids(init)
        assert init in pids, pids
        assert secrets_shown(docker(daemon, "inspect", "runner").stdout, pids, {"token": TOKEN.encode()}) == []
        kind = docker(daemon, "exec", "runner", "stat", "-c", "%F", "/var/run/docker.sock").stdout
        assert kind == b"socket\n", kind
        started = time.monotonic()
        docker(daemon, "stop", "--time", "10", "runner")
        stop_seconds = time.monotonic() - started
        print(f"docker stop: {stop_seconds:.2f}s")
        assert stop_seconds < 5.0
        state = _state(daemon, "runner")
        assert state["ExitCode"] == 0, _logs(daemon, "runner")
        assert TOKEN not in _logs(daemon, "runner")
    finally:
        _remove(daemon, "runner")


VARIANTS = {
    "mode-0644": ({"config.toml": (CONFIG, 0o644)}, True, "has mode 0644, not 0600: it holds the runner token"),
    "registration-token": (
        {"config.toml": (CONFIG.replace(TOKEN, REGISTRATION), 0o600)}, True, "is a registration token (GR1348941...)"
    ),
    "broken-toml": ({"config.toml": (CONFIG.replace("[[runners]]", "[[runners]"), 0o600)}, True, "is not valid TOML"),
    "missing-ca": ({"config.toml": (CONFIG_CA, 0o600)}, True, f"tls-ca-file {CA_PATH} does not exist"),
    "no-socket": ({"config.toml": (CONFIG, 0o600)}, False, "/var/run/docker.sock is missing"),
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_standin_refuses_a_broken_setup(daemon: DaemonInfo, variant: str) -> None:
    files, socket_mount, reason = VARIANTS[variant]
    name = f"bad-{variant}"
    _create(daemon, name, files, socket_mount=socket_mount)
    try:
        started = time.monotonic()
        done = docker(daemon, "start", "-a", name, check=False, timeout=60)
        output = (done.stdout + done.stderr).decode(errors="replace")
        print(f"{variant}: exit {done.returncode} after {time.monotonic() - started:.2f}s")
        assert _state(daemon, name)["ExitCode"] == 1, output
        lines = [line for line in output.splitlines() if line]
        assert len(lines) == 1 and lines[0].startswith("runner-standin: FATAL: "), output
        assert reason in lines[0], output
        assert TOKEN not in output and REGISTRATION not in output
    finally:
        _remove(daemon, name)


def _wait_for_line(daemon: DaemonInfo, name: str, text: str, timeout: float = 30.0) -> str:
    started = time.monotonic()
    while text not in (logs := _logs(daemon, name)):
        assert time.monotonic() - started < timeout, f"no {text!r} in {timeout:g} s:\n{logs}"
        time.sleep(0.1)
    return logs


def test_standin_drains_jobs_on_sigquit_and_abandons_them_on_sigterm(daemon: DaemonInfo) -> None:
    """As gitlab-runner: SIGQUIT (the container's stop signal, as the program sets it) lets
    the running job finish and refuses new ones; SIGTERM kills the running job and exits at once."""
    _create(daemon, "drain", {"config.toml": (CONFIG, 0o600)})
    try:
        docker(daemon, "start", "drain")
        _wait_for_line(daemon, "drain", "runner-standin ready:")
        docker(daemon, "exec", "drain", "runner-standin", "job", "build-1", "3")
        started = time.monotonic()
        stopping = threading.Thread(target=docker, args=(daemon, "stop", "--time", "30", "drain"))
        stopping.start()
        _wait_for_line(daemon, "drain", "SIGQUIT: graceful shutdown")
        refused = docker(daemon, "exec", "drain", "runner-standin", "job", "late-1", "1", check=False)
        stopping.join(timeout=60)
        seconds = time.monotonic() - started
        print(f"\ndrained in {seconds:.2f}s")
        logs = _logs(daemon, "drain")
        assert refused.returncode == 1 and b"refused" in refused.stderr, refused
        lines = [line.removeprefix("runner-standin: ") for line in logs.splitlines()]
        drain = lines.index("SIGQUIT: graceful shutdown, no new jobs; waiting for 1 running job(s): build-1")
        finished = next(i for i, line in enumerate(lines) if line.startswith("job build-1 finished after"))
        assert drain < finished < lines.index("all jobs finished, exiting") == len(lines) - 1, logs
        assert "job late-1 refused: shutting down, no new jobs" in lines, logs
        assert 1.5 < seconds < 20, seconds
        assert _state(daemon, "drain")["ExitCode"] == 0, logs

        docker(daemon, "start", "drain")
        _wait_for_line(daemon, "drain", "all jobs finished, exiting\nrunner-standin ready:")
        docker(daemon, "exec", "drain", "runner-standin", "job", "build-2", "60")
        started = time.monotonic()
        docker(daemon, "kill", "--signal", "SIGTERM", "drain")
        logs = _wait_for_line(daemon, "drain", "SIGTERM: stopping")
        assert "runner-standin: SIGTERM: stopping; abandoned 1 running job(s): build-2" in logs.splitlines(), logs
        while _state(daemon, "drain")["Running"]:
            time.sleep(0.1)
        print(f"SIGTERM: gone in {time.monotonic() - started:.2f}s")
        assert time.monotonic() - started < 5
        assert "job build-2 finished" not in logs
    finally:
        _remove(daemon, "drain")
