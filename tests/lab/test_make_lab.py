"""`make lab` as a user runs it (tools/lab.py), and the data path it builds.

One lab is built for this module and torn down at the end, pass or fail. What is
real: namespaces, veths, the CGNAT's masquerade, each host's sshd, wireguard-go,
nftables, policy routing, a dockerd on the home device, the runners and the client,
and the program applied by tools/applier (GitLab's image, volumes and container
included). GitLab's image is a stand-in built from Debian (tools/standin_image/): nginx
answers ``forgeway-gitlab-standin <port> <client address>`` on HTTPS, redirects HTTP,
serves Debian's docker-registry on 5050 behind TLS and basic auth, and runs an sshd
whose host keys live in the config volume, as omnibus keeps them.

The applier runs independent resources concurrently in an order drawn from a seed
(tools/applier.py). The module's lab is applied from nothing under each of ``SEEDS``
on the same namespaces (``FORGEWAY_LAB_SEEDS=a,b,c`` tries others); the later tests
run on the last of those applies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stacks import ROOT

LAB = [sys.executable, "-m", "tools.lab"]
VPS = "203.0.113.10"
CLIENT_ADDRESS = "203.0.113.100"
REGISTRY = "gitlab.forgeway.test:5050"
# Each a fresh apply of the lab stack (tools.lab up --seed): the first builds the lab.
SEEDS = [int(seed) for seed in os.environ.get("FORGEWAY_LAB_SEEDS", "1,2,3").split(",")]
GITLAB_VOLUMES = [f"docker:index/volume:Volume::home-gitlab-{role}" for role in ("config", "data", "logs")]


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _in(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=False)


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _ping(netns: str, address: str, tries: int = 1) -> bool:
    # The first packets may wait for a handshake: a few tries, one second each.
    return any(_in(netns, "ping", "-c1", "-W1", address).returncode == 0 for _ in range(tries))


def _https(topology: dict[str, Any], path: str = "/", tries: int = 3, port: int = 443) -> tuple[int, str]:
    """From the client namespace, HTTPS verified with the stack's CA: (status, body)."""
    probe = (
        "import http.client, ssl, sys;"
        f"c=http.client.HTTPSConnection('{VPS}',{port},timeout=5,"
        f"context=ssl.create_default_context(cafile='{topology['ca_certificate']}'));"
        f"c.request('GET','{path}');r=c.getresponse();sys.stdout.write(f'{{r.status}} ' + r.read().decode())"
    )
    for attempt in range(tries):
        done = _in("fwl-client", "python3", "-c", probe)
        if done.returncode == 0:
            status, _, body = done.stdout.partition(" ")
            return int(status), body.strip()
        if attempt + 1 < tries:
            time.sleep(1)
    raise AssertionError(f"client could not fetch https://{VPS}:{port}{path}: {done.stderr.strip()[-300:]}")


def _seen_address(topology: dict[str, Any], tries: int = 3) -> str:
    """The client address GitLab's nginx saw for a request from the client namespace."""
    status, body = _https(topology, tries=tries)
    banner, port, address = body.split()
    assert (status, banner, port) == (200, "forgeway-gitlab-standin", "443"), body
    return address


def _client_mss(port: int = 443) -> int:
    """The MSS the client's side of a connection through the VPS settled on (the SYN-ACK's)."""
    probe = (
        f"import socket; s=socket.create_connection(('{VPS}',{port}),3);"
        "print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))"
    )
    done = _in("fwl-client", "python3", "-c", probe)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def _home_docker(topology: dict[str, Any], *args: str, check: bool = True) -> str:
    from tools.lab_docker import DaemonInfo, docker

    done = docker(DaemonInfo.from_json(topology["docker"]["home"]), *args, check=check)
    return done.stdout.decode()


def _gitlab_ssh_key(topology: dict[str, Any]) -> str:
    """GitLab's SSH host key as the container has it (in its config volume)."""
    return _home_docker(topology, "exec", "forgeway-gitlab", "cat", "/etc/gitlab/ssh_host_ed25519_key.pub").split()[1]


def _root_password() -> str:
    state = json.loads((ROOT / ".lab" / "state.json").read_text())["entries"]
    result: str = state["random:index/randomPassword:RandomPassword::home-gitlab-root-password"]["outputs"]["result"]
    return result


def _docker_in(
    topology: dict[str, Any], name: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """The docker client against lab host ``name``'s daemon, with a client config of its own."""
    from tools.lab_docker import DaemonInfo, docker

    info = DaemonInfo.from_json(topology["docker"][name])
    config = ROOT / ".lab" / "docker-clients" / name
    config.mkdir(parents=True, exist_ok=True)
    done = docker(info, "--config", str(config), *args, input=stdin, check=False, timeout=300)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def _login(topology: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
    return _docker_in(
        topology, name, "login", REGISTRY, "-u", "root", "--password-stdin", stdin=_root_password().encode()
    )


def _push_and_pull(topology: dict[str, Any], name: str, size: int) -> None:
    """From lab host ``name``: push an image with a ``size``-byte random layer, delete it, pull it back."""
    import io
    import os
    import tarfile

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    tag = f"{REGISTRY}/root/lab-{name}:{time.time_ns()}"
    assert _login(topology, name).returncode == 0
    imported = _docker_in(topology, name, "import", "-", tag, stdin=layer.getvalue())
    assert imported.returncode == 0, imported.stderr
    pushed = _docker_in(topology, name, "push", tag)
    assert pushed.returncode == 0, f"push from {name}: {pushed.stdout[-500:]} {pushed.stderr[-500:]}"
    layers = _docker_in(topology, name, "image", "inspect", "--format", "{{.RootFS.Layers}}", tag).stdout
    assert _docker_in(topology, name, "rmi", tag).returncode == 0
    pulled = _docker_in(topology, name, "pull", tag)
    assert pulled.returncode == 0, f"pull to {name}: {pulled.stderr[-500:]}"
    assert _docker_in(topology, name, "image", "inspect", "--format", "{{.RootFS.Layers}}", tag).stdout == layers


HANDLERS_BEFORE_LAB: list[str] = []


@pytest.fixture(scope="module")
def topology() -> Iterator[dict[str, Any]]:
    from tools.lab_binfmt import handlers

    if (ROOT / ".lab" / "topology.json").exists() or any(n.startswith("fwl-") for n in _netns()):
        pytest.fail("a lab is already up (fwl-* namespaces or .lab/): run `make lab-down` first")
    HANDLERS_BEFORE_LAB[:] = handlers()
    try:
        up = _lab("up", "--seed", str(SEEDS[0]))
        assert up.returncode == 0, up.stderr
        assert f"apply seed {SEEDS[0]} " in up.stderr, up.stderr[:500]
        yield json.loads((ROOT / ".lab" / "topology.json").read_text())
    finally:
        _lab("down")


def test_lab_describes_itself_and_reapplies_as_a_no_op(topology: dict[str, Any]) -> None:
    assert {h["name"] for h in topology["hosts"]} == {"vps", "home", "runner-arm", "runner-amd"}
    assert set(topology["namespaces"]) <= _netns()
    again = _lab("up")
    assert again.returncode == 0, again.stderr
    assert "0 change(s)" in again.stdout, again.stdout


def test_refresh_then_up_is_a_no_op_and_keeps_gitlabs_container(topology: dict[str, Any]) -> None:
    """`pulumi refresh` then `up`: the providers' reads (tools/applier_refresh.py) are what
    the program registers, so nothing changes, and GitLab's container is not replaced."""
    key = "docker:index/container:Container::home-gitlab"
    before = json.loads((ROOT / ".lab" / "state.json").read_text())["entries"][key]["id"]
    refreshed = _lab("refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "lab: refreshed the lab stack:" in refreshed.stdout, refreshed.stdout
    # The state holds what the read wrote: Go's duration form.
    state = json.loads((ROOT / ".lab" / "state.json").read_text())["entries"]
    assert state[key]["inputs"]["healthcheck"]["interval"] == "1m0s"
    again = _lab("up")
    assert again.returncode == 0, again.stderr
    assert "0 change(s)" in again.stdout, again.stderr + again.stdout
    after = json.loads((ROOT / ".lab" / "state.json").read_text())["entries"][key]["id"]
    assert after == before
    running = _home_docker(topology, "inspect", "--format", "{{.Id}}", "forgeway-gitlab").strip()
    assert running == before


def _serves_gitlab(topology: dict[str, Any]) -> bool:
    status, body = _https(topology, tries=10)
    return status == 200 and body.startswith("forgeway-gitlab-standin 443 ")


def test_a_fresh_apply_under_each_seed_serves_gitlab_through_the_vps(topology: dict[str, Any]) -> None:
    """Independent resources run in another order under each seed: none may need what it does not depend on."""
    assert _serves_gitlab(topology), f"seed {SEEDS[0]}"
    for seed in SEEDS[1:]:
        # From nothing on the same namespaces: destroy, then what destroy keeps (GitLab's
        # protected volumes, on the host and in the state) goes too.
        destroyed = _lab("destroy")
        assert destroyed.returncode == 0, destroyed.stderr
        state = ROOT / ".lab" / "state.json"
        assert sorted(json.loads(state.read_text())["entries"]) == GITLAB_VOLUMES
        _home_docker(topology, "volume", "rm", *(f"forgeway-gitlab-{role}" for role in ("config", "logs", "data")))
        state.unlink()
        up = _lab("up", "--seed", str(seed))
        assert up.returncode == 0, f"seed {seed}: {up.stderr[-3000:]}"
        assert f"apply seed {seed} " in up.stderr, up.stderr[:500]
        assert _serves_gitlab(topology), f"seed {seed}"


def test_home_reaches_the_internet_only_by_dialing_out(topology: dict[str, Any]) -> None:
    assert _ping("fwl-home", VPS), "home cannot reach the VPS through the home router and the CGNAT"
    assert not _ping("fwl-client", "198.51.100.2"), "the home LAN must not be reachable from the internet"
    assert not _ping("fwl-client", "100.64.0.2"), "the CGNAT side must not be reachable from the internet"


def test_the_tunnel_is_up_through_the_cgnat_both_ways(topology: dict[str, Any]) -> None:
    peers = {"home": "10.8.0.2", "runner-arm": "10.8.0.3", "runner-amd": "10.8.0.4"}
    for name in peers:
        assert _ping(f"fwl-{name}", "10.8.0.1", tries=5), f"{name} cannot reach the VPS through the tunnel"
    for name, address in peers.items():
        assert _ping("fwl-vps", address), f"the VPS cannot reach {name} through the tunnel"


def test_http_https_ssh_and_registry_reach_gitlab_and_snat_shows_the_tunnel_address(
    topology: dict[str, Any],
) -> None:
    # HTTPS verifies against the stack's CA (the certificate names the VPS address too).
    assert _seen_address(topology) == "10.8.0.1"
    redirect = _in(
        "fwl-client", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", f"http://{VPS}/"
    )
    assert redirect.stdout == "301 https://gitlab.forgeway.test/", redirect.stdout + redirect.stderr
    status, _ = _https(topology, "/v2/", port=5050)
    assert status == 401, "the registry must ask for credentials"
    # Public 22 lands on GitLab's SSH in the container, not on the home device's own sshd.
    scan = _in("fwl-client", "ssh-keyscan", "-T", "3", "-t", "ed25519", "-p", "22", VPS)
    assert _gitlab_ssh_key(topology) in scan.stdout, scan.stderr


def test_docker_login_from_the_client_fails_x509_until_it_trusts_the_stack_ca(topology: dict[str, Any]) -> None:
    # The client is nobody's managed host: its daemon knows nothing of our CA yet.
    before = _login(topology, "client")
    assert before.returncode != 0
    assert "x509" in before.stderr or "certificate signed by unknown authority" in before.stderr, before.stderr
    # What the README tells a user to do on a laptop: the stack output ca_certificate in certs.d.
    certs = ROOT / ".lab" / "client" / "etc-docker" / "certs.d" / REGISTRY
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_text(Path(topology["ca_certificate"]).read_text())
    after = _login(topology, "client")
    assert after.returncode == 0 and "Login Succeeded" in after.stdout, after.stderr


def test_a_runner_host_trusts_the_registry_by_itself_and_pushes_and_pulls(topology: dict[str, Any]) -> None:
    # runner-amd's daemon trusts our CA only through forgeway's docker-client command.
    _push_and_pull(topology, "runner-amd", size=64 << 10)


def test_gitlab_data_and_ssh_host_key_survive_a_replaced_container(topology: dict[str, Any]) -> None:
    marker = f"forgeway-{time.time_ns()}"
    _home_docker(topology, "exec", "forgeway-gitlab", "sh", "-c", f"echo {marker} > /var/opt/gitlab/lab-marker")
    old_id = _home_docker(topology, "inspect", "--format", "{{.Id}}", "forgeway-gitlab").strip()
    ssh_key = _gitlab_ssh_key(topology)
    # A new image (same files, one more label: another image id): the container's image
    # is a replace-on-change input, as a GitLab upgrade would change it.
    scratch = _home_docker(topology, "create", "forgeway-lab/gitlab-standin:1.0").strip()
    _home_docker(
        topology, "commit", "--change", "LABEL forgeway.lab=upgrade", scratch, "forgeway-lab/gitlab-standin:1.0-lab2"
    )
    _home_docker(topology, "rm", scratch)
    try:
        moved = _lab("up", "--set", "gitlab.images.amd64=forgeway-lab/gitlab-standin:1.0-lab2")
        assert moved.returncode == 0, moved.stderr
        assert "replace  docker:index/container:Container home-gitlab" in moved.stderr, moved.stderr
        new_id = _home_docker(topology, "inspect", "--format", "{{.Id}}", "forgeway-gitlab").strip()
        assert new_id != old_id
        assert _home_docker(topology, "exec", "forgeway-gitlab", "cat", "/var/opt/gitlab/lab-marker").strip() == marker
        assert _seen_address(topology, tries=10) == "10.8.0.1"
        scan = _in("fwl-client", "ssh-keyscan", "-T", "3", "-t", "ed25519", "-p", "22", VPS)
        assert ssh_key in scan.stdout, "GitLab's SSH host key changed with the container"
    finally:
        assert _lab("up").returncode == 0


def _runner_docker(topology: dict[str, Any], name: str, *args: str) -> str:
    from tools.lab_docker import DaemonInfo, docker

    current = Path(topology["docker"][name]["work"]) / "daemon.json"
    info = DaemonInfo.from_json(json.loads(current.read_text()))
    return docker(info, *args, check=False).stdout.decode()


def _dockerd_pid(topology: dict[str, Any], name: str) -> int:
    pid: int = json.loads((Path(topology["docker"][name]["work"]) / "daemon.json").read_text())["pid"]
    return pid


def test_runners_run_with_their_config_and_a_merged_daemon_json(topology: dict[str, Any]) -> None:
    from tools.lab import SEEDED_DAEMON_JSON

    for name in ("runner-arm", "runner-amd"):
        logs = ""
        for _ in range(30):  # the stand-in checks config.toml, the CA and the socket, then says ready
            logs = _runner_docker(topology, name, "logs", "forgeway-runner")
            if "runner-standin ready" in logs:
                break
            time.sleep(0.5)
        assert f"runner-standin ready: {name} https://gitlab.forgeway.test" in logs, logs
        daemon = json.loads((ROOT / ".lab" / "hosts" / name / "etc" / "docker" / "daemon.json").read_text())
        assert daemon["labels"] == json.loads(SEEDED_DAEMON_JSON)["labels"], "the host's own key was lost"
        assert daemon["mtu"] == 1420 and daemon["log-driver"] == "json-file", daemon
        # dockerd runs with it: the default bridge has the tunnel MTU
        mtu = _runner_docker(topology, name, "network", "inspect", "bridge", "--format", "{{json .Options}}")
        assert '"com.docker.network.driver.mtu":"1420"' in mtu, mtu
    # runner-arm is declared arm64: its image is what the applier checked was linux/arm64
    arch = _runner_docker(
        topology, "runner-arm", "image", "inspect", "--format", "{{.Architecture}}", "forgeway-lab/runner-standin:1.0"
    )
    assert arch.strip() == "arm64"


def test_jobs_get_ipv6_and_reach_another_lab_host(topology: dict[str, Any]) -> None:
    """On docker's default bridge and on a per-job network (IPv6, no subnet given, as the
    runner makes one): an address from runners.ipv6_prefix, and home reached over IPv6."""
    # home listens on its LAN ULA; a container on runner-amd connects, as a job would.
    server = subprocess.Popen(
        ["ip", "netns", "exec", "fwl-home", "python3", "-c",
         "import socket; s=socket.create_server(('fd00:198:51:100::2', 8099), family=socket.AF_INET6);"
         "s.settimeout(60)\nwhile True:\n c,a=s.accept(); c.sendall(('seen '+a[0]+'\\n').encode()); c.close()"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    probe = (
        "import socket; s=socket.create_connection(('fd00:198:51:100::2', 8099), 5);print(s.recv(100).decode().strip())"
    )
    addresses = (
        "import socket; print([a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET6)])"
    )
    image = "forgeway-lab/runner-standin:1.0"
    try:
        time.sleep(0.5)
        for network in ("bridge", "forgeway-lab-job"):
            if network != "bridge":  # a per-job network, as the runner makes one: IPv6, no subnet given
                made = _runner_docker(topology, "runner-amd", "network", "create", "--ipv6", network)
                assert made.strip(), "docker could not make an IPv6 job network on runner-amd"
            try:
                run = ["run", "--rm", "--network", network, "--entrypoint", "python3", image, "-c"]
                ran = _runner_docker(topology, "runner-amd", *run, addresses)
                assert "fd00:f0e5:7a1b:" in ran, f"{network}: no address from runners.ipv6_prefix: {ran!r}"
                seen = _runner_docker(topology, "runner-amd", *run, probe)
                # NAT66: home sees the runner host's own ULA
                assert seen.startswith("seen fd00:198:51:100::4"), f"{network}: {seen!r}"
            finally:
                if network != "bridge":
                    _runner_docker(topology, "runner-amd", "network", "rm", network)
    finally:
        server.kill()
        server.wait()


def test_a_job_sees_the_registry_ca_in_certs_d_and_a_buildkitd_toml_that_names_it(topology: dict[str, Any]) -> None:
    """A container started as the docker executor starts a job (the volumes of the
    config.toml the runner was given) finds the stack CA where docker looks for the
    registry's, and a buildkitd.toml whose every ``ca`` is a file holding that CA."""
    import tomllib

    ca = Path(topology["ca_certificate"]).read_text()
    for name in ("runner-arm", "runner-amd"):
        rendered = _runner_docker(topology, name, "exec", "forgeway-runner", "cat", "/etc/gitlab-runner/config.toml")
        volumes = tomllib.loads(rendered)["runners"][0]["docker"]["volumes"]
        binds = [arg for volume in volumes if volume.count(":") >= 1 for arg in ("-v", volume)]
        check = (
            "import pathlib, tomllib, json\n"
            "cfg = tomllib.loads(pathlib.Path('/etc/forgeway/buildkitd.toml').read_text())\n"
            "print(json.dumps({r: [pathlib.Path(p).read_text() for p in v['ca']] for r, v in cfg['registry'].items()}))"
        )
        image = "forgeway-lab/runner-standin:1.0"
        seen = _runner_docker(topology, name, "run", "--rm", *binds, "--entrypoint", "python3", image, "-c", check)
        assert seen.strip(), f"{name}: the job container could not read its buildkitd.toml (volumes {volumes})"
        cas = json.loads(seen)
        assert REGISTRY in cas, cas.keys()
        assert all(texts == [ca] for texts in cas.values()), f"{name}: a buildkitd ca is not the stack CA"
        listing = _runner_docker(topology, name, "run", "--rm", *binds, image, "ls", "/etc/docker/certs.d")
        assert REGISTRY in listing.split(), listing


def _host_env(host: dict[str, Any]) -> dict[str, str]:
    """The host's own environment: the FORGEWAY_* directories the lab gives it in sshd's SetEnv."""
    config = (ROOT / ".lab" / "hosts" / host["name"] / "sshd_config").read_text()
    return dict(
        pair.split("=", 1) for line in config.splitlines() if line.startswith("SetEnv ") for pair in line.split()[1:]
    )


def _run_unit(host: dict[str, Any], unit: str) -> subprocess.CompletedProcess[str]:
    """Run an installed unit's ExecStart as boot would: in the host's namespace, with its environment."""
    ((_, unit_env, starts),) = [u for u in _unit_commands(host) if u[0] == unit]
    variables = [f"{k}={v}" for k, v in {**_host_env(host), **unit_env}.items()]
    (start,) = starts
    return subprocess.run(
        ["ip", "netns", "exec", host["netns"], "env", *variables, "sh", "-c", start],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


def test_multiarch_runs_arm64_programs_on_the_amd64_runner_and_boot_registers_qemu_again(
    topology: dict[str, Any],
) -> None:
    """runner-amd has runner.multiarch: a container of an arm64 image runs there through the
    QEMU handler binfmt-up.sh registered (this machine is x86_64: without it, exec fails).
    A reboot forgets the handler; the installed boot unit registers it again."""
    from tools.lab_binfmt import handlers, unregister
    from tools.lab_images import HELLO_ARM64

    hello = ["run", "--rm", HELLO_ARM64]
    assert _runner_docker(topology, "runner-amd", *hello).strip() == "hello from aarch64"
    ours = ROOT / ".lab" / "hosts" / "runner-amd" / "etc" / "forgeway" / "binfmt" / "ours"
    assert "qemu-aarch64" in handlers()
    if not ours.exists() or "qemu-aarch64" not in ours.read_text().split():
        pytest.skip(
            "SKIPPED LOUDLY: this machine had qemu-aarch64 registered before the lab; the reboot half "
            "would remove the machine's own handler, so it is not run"
        )
    # The arch check on runner-arm is a uname shim: it never asks for amd64 emulation.
    assert "qemu-x86_64" not in ours.read_text()
    unregister("qemu-aarch64")  # what a reboot does to binfmt_misc
    try:
        lost = _runner_docker(topology, "runner-amd", *hello)
        assert "hello from aarch64" not in lost, "the arm64 program ran without a handler: the test proves nothing"
    finally:
        host = next(h for h in topology["hosts"] if h["name"] == "runner-amd")
        booted = _run_unit(host, "forgeway-binfmt.service")
    assert booted.returncode == 0, booted.stderr
    assert "qemu-aarch64" in handlers()
    assert _runner_docker(topology, "runner-amd", *hello).strip() == "hello from aarch64"
    # binfmt-up.sh again, where the applier ran it (the host's sshd namespaces): nothing to change
    env = [f"{k}={v}" for k, v in _host_env(host).items()]
    stage = ROOT / ".lab" / "hosts" / host["name"] / "etc" / "forgeway" / "stage" / "binfmt"
    image = _runner_docker(
        topology, "runner-amd", "image", "inspect", "--format", "{{.Id}}", "forgeway-lab/binfmt-standin:1.0"
    )
    again = subprocess.run(
        ["nsenter", "-t", _sshd_pid(host), "-m", "-n", "env", *env, "sh", str(stage / "binfmt-up.sh"),
         image.strip(), "arm64", str(stage)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and again.stdout.startswith("ok binfmt: registered: qemu-aarch64"), again


def test_reapply_leaves_the_runner_daemons_running(topology: dict[str, Any]) -> None:
    before = {name: _dockerd_pid(topology, name) for name in ("runner-arm", "runner-amd")}
    again = _lab("up")
    assert again.returncode == 0 and "0 change(s)" in again.stdout, again.stdout + again.stderr
    assert {name: _dockerd_pid(topology, name) for name in before} == before, "a no-op apply restarted docker"


def test_the_prune_timer_is_installed_and_its_service_runs(topology: dict[str, Any]) -> None:
    host = next(h for h in topology["hosts"] if h["name"] == "runner-amd")
    units = ROOT / ".lab" / "hosts" / host["name"] / "etc" / "systemd" / "system"
    assert (units / "timers.target.wants" / "forgeway-docker-prune.timer").is_symlink()
    service = (units / "forgeway-docker-prune.service").read_text()
    start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    variables = [f"{k}={v}" for k, v in _host_env(host).items()]
    ran = subprocess.run(
        ["ip", "netns", "exec", host["netns"], "env", *variables, "sh", "-c", start.removeprefix("ExecStart=")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "forgeway-docker-prune" in ran.stdout or "%" in ran.stdout, ran.stdout


def test_mss_is_clamped_on_syn_and_syn_ack_at_the_tunnel(topology: dict[str, Any]) -> None:
    # The client's SYN offers MSS 1460 (its path is 1500). The home end offers 1460 too,
    # as GitLab behind a 1500-byte docker bridge would: a route with advmss 1460 back to
    # the VPS. The tunnel's MTU is 1420, so the VPS must bring both to 1380 at most. An
    # observer table that runs after ours counts the handshakes, and those still above.
    observer = """table inet lab-mss-observer {
  counter syns {}
  counter syns_too_big {}
  counter synacks {}
  counter synacks_too_big {}
  chain after_clamp {
    type filter hook forward priority 500;
    oifname "wg0" tcp flags & (syn|ack) == syn counter name syns
    oifname "wg0" tcp flags & (syn|ack) == syn tcp option maxseg size > 1380 counter name syns_too_big
    iifname "wg0" tcp flags & (syn|ack) == syn|ack counter name synacks
    iifname "wg0" tcp flags & (syn|ack) == syn|ack tcp option maxseg size > 1380 counter name synacks_too_big
  }
}
"""
    loaded = subprocess.run(
        ["ip", "netns", "exec", "fwl-vps", "nft", "-f", "-"], input=observer, text=True, check=False
    )
    assert loaded.returncode == 0
    offered = _in("fwl-home", "ip", "route", "add", "10.8.0.1/32", "dev", "wg0", "advmss", "1460")
    assert offered.returncode == 0, offered.stderr
    try:
        client_mss = _client_mss()
        counters = _in("fwl-vps", "nft", "-j", "list", "counters", "table", "inet", "lab-mss-observer").stdout
        packets = {
            c["counter"]["name"]: c["counter"]["packets"] for c in json.loads(counters)["nftables"] if "counter" in c
        }
        assert packets["syns"] >= 1 and packets["synacks"] >= 1, packets
        assert packets["syns_too_big"] == 0, f"{packets['syns_too_big']} SYN(s) entered wg0 with MSS above 1380"
        assert packets["synacks_too_big"] == 0, f"{packets['synacks_too_big']} SYN-ACK(s) left wg0 above 1380"
        assert client_mss <= 1380, f"the SYN-ACK reached the client with MSS {client_mss}"
    finally:
        _in("fwl-vps", "nft", "delete", "table", "inet", "lab-mss-observer")
        _in("fwl-home", "ip", "route", "del", "10.8.0.1/32", "dev", "wg0")


def test_bulk_transfer_works_when_icmp_fragmentation_needed_is_dropped(topology: dict[str, Any]) -> None:
    # A black-hole path: no "fragmentation needed" gets back, so only the clamped MSS
    # keeps segments small enough for the tunnel.
    blackhole = """table inet lab-pmtu-blackhole {
  chain drop_frag_needed {
    type filter hook forward priority -300;
    icmp type destination-unreachable icmp code frag-needed drop
  }
}
"""
    loaded = subprocess.run(
        ["ip", "netns", "exec", "fwl-vps", "nft", "-f", "-"], input=blackhole, text=True, check=False
    )
    assert loaded.returncode == 0
    try:
        # 4 MiB of a sparse file nginx serves: one HTTPS download, home -> client.
        got = _in(
            "fwl-client", "curl", "-sS", "--max-time", "60", "--cacert", topology["ca_certificate"],
            "-r", f"0-{(4 << 20) - 1}", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
            f"https://{VPS}/-/bulk",
        )  # fmt: skip
        assert got.stdout == f"206 {4 << 20}", f"bulk download stalled: {got.stdout} {got.stderr}"
        # ... and client -> home: push an image with a 4 MiB random layer to the registry.
        _push_and_pull(topology, "client", size=4 << 20)
    finally:
        _in("fwl-vps", "nft", "delete", "table", "inet", "lab-pmtu-blackhole")


def _assert_admin_ssh(topology: dict[str, Any]) -> None:
    vps = next(h for h in topology["hosts"] if h["name"] == "vps")
    scan = _in("fwl-client", "ssh-keyscan", "-T", "3", "-t", "ed25519", "-p", str(vps["ssh_port"]), VPS)
    assert vps["host_key"].split()[1] in scan.stdout, f"admin SSH to the VPS is not reachable: {scan.stderr}"


def test_every_docker_host_trusts_our_ca_for_the_registry(topology: dict[str, Any]) -> None:
    state = json.loads((ROOT / ".lab" / "state.json").read_text())["entries"]
    ca_pem = state["tls:index/selfSignedCert:SelfSignedCert::ca-cert"]["outputs"]["certPem"]
    for name in ("home", "runner-arm", "runner-amd"):
        ca = ROOT / ".lab" / "hosts" / name / "etc" / "docker" / "certs.d" / "gitlab.forgeway.test:5050" / "ca.crt"
        assert ca.read_text() == ca_pem, f"{name} does not trust the stack's CA for the registry"
    assert not (ROOT / ".lab" / "hosts" / "vps" / "etc" / "docker").exists(), "the VPS runs no docker"


def test_admin_ssh_on_the_vps_stays_reachable(topology: dict[str, Any]) -> None:
    _assert_admin_ssh(topology)  # after an apply


def test_home_keeps_its_lan_route_and_its_own_ssh(topology: dict[str, Any]) -> None:
    route = _in("fwl-home", "ip", "route", "show", "default")
    assert route.stdout.startswith("default via 198.51.100.1"), route.stdout
    home = next(h for h in topology["hosts"] if h["name"] == "home")
    scan = subprocess.run(
        ["ssh-keyscan", "-T", "3", "-t", "ed25519", home["address"]], capture_output=True, text=True, check=False
    )
    assert home["host_key"].split()[1] in scan.stdout, "SSH to the home device from its LAN broke"


def test_a_lapsed_cgnat_mapping_comes_back_with_the_keepalive(topology: dict[str, Any]) -> None:
    # Forget every UDP mapping of the CGNAT, as its timeout would.
    flushed = _in("fwl-cgnat", "conntrack", "-D", "-p", "udp")
    assert flushed.returncode in (0, 1), flushed.stderr  # 1: nothing to delete
    started = time.monotonic()
    assert _seen_address(topology, tries=10)
    assert time.monotonic() - started < 10, "the mapping took longer than two keepalives to return"


def test_preserve_source_shows_the_client_and_switching_back_removes_the_return_path(
    topology: dict[str, Any],
) -> None:
    switched = _lab("up", "--mode", "preserve-source")
    assert switched.returncode == 0, switched.stderr
    assert _seen_address(topology) == CLIENT_ADDRESS
    assert _ping("fwl-home", "198.51.100.1"), "the home LAN must keep working in preserve-source mode"
    _assert_admin_ssh(topology)  # after an update
    assert "4680" in _in("fwl-home", "ip", "rule").stdout

    back = _lab("up", "--mode", "snat")
    assert back.returncode == 0, back.stderr
    assert "delete   command:remote:Command home-return-path" in back.stderr
    assert "4680" not in _in("fwl-home", "ip", "rule").stdout
    assert _seen_address(topology) == "10.8.0.1"


def test_hostile_firewall_state_on_the_vps_does_not_break_forwarding(topology: dict[str, Any]) -> None:
    # A default-drop forward policy and a catch-all reject in tables not ours, as
    # Docker, ufw or a cloud image leave them. Apply from scratch on top of them.
    hostile = """table inet hostile {
  chain forward {
    type filter hook forward priority 0; policy drop;
  }
}
table ip catchall {
  chain forward {
    type filter hook forward priority 10; policy accept;
    reject
  }
}
"""
    assert _lab("destroy").returncode == 0
    loaded = subprocess.run(["ip", "netns", "exec", "fwl-vps", "nft", "-f", "-"], input=hostile, text=True, check=False)
    assert loaded.returncode == 0
    before = _in("fwl-vps", "nft", "list", "ruleset").stdout
    try:
        up = _lab("up")
        assert up.returncode == 0, up.stderr
        assert _seen_address(topology, tries=5) == "10.8.0.1"
        assert _lab("destroy").returncode == 0
        assert _in("fwl-vps", "nft", "list", "ruleset").stdout == before, "their tables changed"
    finally:
        _in("fwl-vps", "nft", "delete", "table", "inet", "hostile")
        _in("fwl-vps", "nft", "delete", "table", "ip", "catchall")
        assert _lab("up").returncode == 0


def _unit_commands(host: dict[str, Any]) -> list[tuple[str, dict[str, str], list[str]]]:
    """(unit, environment, ExecStart lines) of every enabled unit a host's scripts installed."""
    units = ROOT / ".lab" / "hosts" / host["name"] / "etc" / "systemd" / "system"
    found = []
    for link in sorted(units.glob("*.wants/*.service")):
        template = link.resolve()
        instance = link.name.split("@", 1)[1].removesuffix(".service") if "@" in link.name else ""
        env: dict[str, str] = {}
        starts = []
        for raw in template.read_text().splitlines():
            if raw.startswith("Environment="):
                key, _, value = raw.removeprefix("Environment=").partition("=")
                env[key] = value
            elif raw.startswith("ExecStart="):
                starts.append(raw.removeprefix("ExecStart=").replace("%i", instance))
        found.append((link.name, env, starts))
    # The tunnel first: the other units wait for its wg0 device.
    return sorted(found, key=lambda unit: not unit[0].startswith("forgeway-tunnel@"))


def _sshd_pid(host: dict[str, Any]) -> str:
    """The host's sshd: the boot units run in its PID namespace, as on a real host
    everything shares one (the lab gives each sshd a PID namespace of its own)."""
    children = Path(f"/proc/{host['pid']}/task/{host['pid']}/children").read_text().split()
    assert len(children) == 1, f"expected one sshd under {host['pid']}: {children}"
    return children[0]


def _booting_hosts(topology: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in topology["hosts"] if h.get("boots")]


def _inside(host: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` inside a booting host (its init's namespaces)."""
    from tools.lab_nspawn import inside

    return inside(Path(host["state"]), *argv)


def _hosts_as_they_are(topology: dict[str, Any]) -> dict[str, Any]:
    """What a change on a host would touch: its files (etc and run), rulesets, policy
    rules, links, and its docker containers and volumes."""
    from tools.lab import DOCKER_HOSTS

    seen: dict[str, Any] = {}
    for host in topology["hosts"]:
        name, netns = host["name"], host["netns"]
        files: dict[str, object] = {}
        for sub in ("etc", "run"):
            top = ROOT / ".lab" / "hosts" / name / sub
            for path in sorted(top.rglob("*")):
                key = f"{sub}/{path.relative_to(top)}"
                if path.is_symlink():
                    files[key] = ("link", str(path.readlink()))
                elif path.is_file():
                    files[key] = (path.stat().st_mode, path.read_bytes())
                else:
                    files[key] = path.stat().st_mode
        seen[name] = {
            "files": files,
            "nft": _in(netns, "nft", "--stateless", "list", "ruleset").stdout,  # counters move with any packet
            "rules": _in(netns, "ip", "rule").stdout,
            "links": _in(netns, "ip", "-br", "link").stdout,
        }
        if name in DOCKER_HOSTS:
            listing = ("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}")
            seen[name]["containers"] = _runner_docker(topology, name, *listing)
            seen[name]["volumes"] = _runner_docker(topology, name, "volume", "ls", "-q")
    return seen


def _hosts_settled(topology: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """The hosts once two looks a second apart agree: a destroy restarts the runners'
    dockerds (their daemon.json given back), which settle for a moment after."""
    deadline = time.monotonic() + timeout
    seen = _hosts_as_they_are(topology)
    while True:
        time.sleep(1)
        again = _hosts_as_they_are(topology)
        if again == seen:
            return seen
        assert time.monotonic() < deadline, "hosts never settled:\n" + "\n".join(_differences(seen, again))
        seen = again


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs, host by host: file names, or the lines of a listing."""
    import difflib

    found = []
    for host in sorted(before):
        for part in sorted(set(before[host]) | set(after[host])):
            old, new = before[host].get(part), after[host].get(part)
            if old == new:
                continue
            if isinstance(old, dict) and isinstance(new, dict):
                names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                found.append(f"{host} {part}: {names}")
            else:
                lines = difflib.unified_diff(str(old).splitlines(), str(new).splitlines(), lineterm="", n=0)
                found.append(f"{host} {part}: " + " | ".join(list(lines)[2:]))
    return found


def test_zyz_without_its_sudo_right_the_apply_stops_at_the_check_and_no_host_changes(
    topology: dict[str, Any],
) -> None:
    """The deployer's VPS user loses its sudoers drop-in; a fresh apply (after a destroy:
    every check runs again) stops at the VPS's read-only check, says which host, user and
    sudoers line, and leaves every host as it was; with the right back it applies."""
    from tools.lab_nspawn import grant_sudo, revoke_sudo

    vps_root = Path(next(h for h in topology["hosts"] if h["name"] == "vps")["root"])
    destroyed = _lab("destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    before = _hosts_settled(topology)
    revoke_sudo(vps_root, "fwl-admin")
    try:
        refused = _lab("up")
        assert refused.returncode != 0, refused.stdout
        assert "host 'vps': user 'fwl-admin' cannot run commands as root with `sudo -n`" in refused.stderr, (
            refused.stderr[-2000:]
        )
        assert "'fwl-admin ALL=(ALL:ALL) NOPASSWD: ALL' to /etc/sudoers.d/forgeway" in refused.stderr
        after = _hosts_as_they_are(topology)
        # (the VPS boots: its sudoers is its own /etc, where the right was taken away)
        assert before["vps"]["files"].pop("etc/sudoers.d/fwl-admin")
        assert after == before, "hosts changed although a check failed:\n" + "\n".join(_differences(before, after))
    finally:
        grant_sudo(vps_root, "fwl-admin")
    again = _lab("up")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _seen_address(topology, tries=10) == "10.8.0.1"  # snat: GitLab sees the VPS's tunnel address


def test_zz_destroy_restores_every_host_and_down_removes_the_lab(topology: dict[str, Any]) -> None:
    # Named zz: runs last in this module (it takes the stack away).
    destroyed = _lab("destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    _assert_admin_ssh(topology)  # after a destroy
    # GitLab's volumes are protected and retained: the container goes, the data stays, and it says so.
    assert _home_docker(topology, "ps", "-aq", "--filter", "name=forgeway-gitlab").strip() == ""
    volumes = _home_docker(topology, "volume", "ls", "--format", "{{.Name}}").split()
    assert {"forgeway-gitlab-config", "forgeway-gitlab-logs", "forgeway-gitlab-data"} <= set(volumes)
    for role in ("config", "logs", "data"):
        assert f"home-gitlab-{role}" in destroyed.stderr and "protected" in destroyed.stderr, destroyed.stderr
    assert _in("fwl-vps", "nft", "list", "ruleset").stdout == "", "the VPS ruleset is not back to empty"
    assert _in("fwl-vps", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    for host in topology["hosts"]:
        assert _in(host["netns"], "ip", "link", "show", "wg0").returncode != 0, f"wg0 left on {host['name']}"
        etc = ROOT / ".lab" / "hosts" / host["name"] / "etc"
        leftovers = [*etc.rglob("forgeway*"), *etc.rglob("certs.d")]
        assert leftovers == [], f"files left on {host['name']}: {leftovers}"
    from tools.lab import SEEDED_DAEMON_JSON

    for name in ("runner-arm", "runner-amd"):
        restored = (ROOT / ".lab" / "hosts" / name / "etc" / "docker" / "daemon.json").read_text()
        assert restored == SEEDED_DAEMON_JSON, f"{name}: daemon.json not restored byte for byte"
    from tools.lab_binfmt import handlers

    # binfmt-down.sh unregistered what runner-amd's up registered (this machine had none before)
    assert set(handlers()) == set(HANDLERS_BEFORE_LAB), "binfmt handlers differ from before the lab"
    assert _runner_docker(topology, "runner-amd", "ps", "-aq", "--filter", "name=forgeway-binfmt").strip() == ""

    from tools.lab_nspawn import container_pid1

    inits = [container_pid1(Path(h["state"])) for h in _booting_hosts(topology)]
    down = _lab("down")
    assert down.returncode == 0, down.stderr
    assert not any(n.startswith("fwl-") for n in _netns())
    assert not (ROOT / ".lab").exists()
    pids = [h["pid"] for h in topology["hosts"]] + [d["pid"] for d in topology["docker"].values()] + inits
    listed = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))], capture_output=True, text=True, check=False
    )
    # A dead process whose new parent (PID 1 here) has not reaped it yet shows as Z.
    alive = [line for line in listed.stdout.splitlines() if not line.split()[1].startswith("Z")]
    assert alive == [], f"lab processes still running: {alive}"
