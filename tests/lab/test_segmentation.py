"""The tunnel's segmentation on the `make lab` topology, tried from where an attacker sits.

A CI job is code anyone with a branch can run. From a job-shaped container on each
runner host (the runner-standin image on the host's dockerd, the volumes of the
config.toml the runner was given, docker's default bridge: what the docker executor
starts), what the design needs works: GitLab's HTTPS, registry and SSH, by the public
name and through the tunnel. What it does not need is refused or times out: the VPS's
admin SSH through the tunnel, the GitLab host's own SSH, the other runner's SSH, and
another port on the VPS that listens on all addresses. Every sshd of the lab listens
on all addresses, as a real host's does, and each forbidden target is shown to be
listening (from its own namespace) before it is tried. In both forwarding modes; in
preserve-source also an internet host that routes the tunnel subnet at the VPS.

Runs on the session's `make lab` (tests/lab/make_lab.py; FIXED names: run it under
`flock /tmp/fwl.lock`); a test that changes the lab puts it back.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.make_lab import MakeLab, run_unit
from tests.stacks import ROOT
from tools.lab.machine import Machine

VPS_PUBLIC = "203.0.113.10"
VPS_PUBLIC6 = "2001:db8::10"  # what runner-arm's jobs reach: it is IPv6-only (no IPv4 route out)
VPS, GITLAB = "10.8.0.1", "10.8.0.2"
RUNNERS = {"runner-arm": "10.8.0.3", "runner-amd": "10.8.0.4"}
ADMIN_SSH = 2202  # Pulumi.lab.yaml: the VPS's ssh_port
OTHER_PORT = 8099  # a listener on all addresses of the VPS, started by this module
IMAGE = "forgeway-lab/runner-standin:1.0"
CA_IN_JOB = "/etc/docker/certs.d/gitlab.forgeway.test:5050/ca.crt"  # the job's volume of the registry CA
TABLE = ("inet", "forgeway_segment")

# Run inside the job container: each probe -> "ok ..." or why not ("refused", "timeout", ...).
PROBE = r"""
import concurrent.futures, json, socket, ssl, sys
CA = sys.argv[1]
def connect(host, port):
    return socket.create_connection((host, port), timeout=4)
def tls(host, port, path):
    ctx = ssl.create_default_context(cafile=CA)
    with ctx.wrap_socket(connect(host, port), server_hostname="gitlab.forgeway.test") as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: gitlab.forgeway.test\r\n\r\n".encode())
        return s.recv(200).decode(errors="replace").split("\r\n")[0]
def probe(kind, host, port):
    try:
        if kind == "https":
            return "ok " + tls(host, port, "/")
        if kind == "registry":
            return "ok " + tls(host, port, "/v2/")
        with connect(host, port) as s:
            s.settimeout(4)
            try:
                banner = s.recv(64).decode(errors="replace").strip()
            except socket.timeout:
                banner = "(no banner)"
            return "ok " + banner
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as exc:
        return f"error {exc}"
# All at once (each has its own 4 s timeout): a dropped probe waits out its timeout alone.
probes = [tuple(p) for p in json.loads(sys.argv[2])]
with concurrent.futures.ThreadPoolExecutor(max_workers=len(probes)) as pool:
    results = list(pool.map(lambda p: probe(*p), probes))
print(json.dumps({f"{k} {h}:{p}": r for (k, h, p), r in zip(probes, results)}))
"""


LAB = MakeLab()


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return LAB.run(*args)


def _in(netns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return Machine(netns, netns).execute(argv, timeout=timeout)


def _runner_docker(topology: dict[str, Any], name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return LAB.machine(name).docker_execute(*args)


def _job_probe(topology: dict[str, Any], runner: str, probes: list[tuple[str, str, int]]) -> dict[str, str]:
    """Run the probes in a container started as the docker executor starts a job on ``runner``."""
    import tomllib

    rendered = _runner_docker(topology, runner, "exec", "forgeway-runner", "cat", "/etc/gitlab-runner/config.toml")
    assert rendered.returncode == 0, rendered.stderr
    volumes = tomllib.loads(rendered.stdout)["runners"][0]["docker"]["volumes"]
    binds = [arg for volume in volumes if volume.count(":") >= 1 for arg in ("-v", volume)]
    done = _runner_docker(
        topology, runner, "run", "--rm", *binds, "--entrypoint", "python3", IMAGE, "-c", PROBE, CA_IN_JOB,
        json.dumps(probes),
    )  # fmt: skip
    assert done.returncode == 0, f"{runner}: the job container failed: {done.stderr[-1000:]}"
    seen: dict[str, str] = json.loads(done.stdout)
    return seen


def _allowed(runner: str) -> list[tuple[str, str, int]]:
    public = VPS_PUBLIC6 if runner == "runner-arm" else VPS_PUBLIC
    return [
        # By GitLab's public name (what jobs use): the VPS's public address, DNATed to GitLab.
        ("https", public, 443),
        ("registry", public, 5050),
        ("ssh", public, 22),
        # Straight through the tunnel to the GitLab host's published ports.
        ("https", GITLAB, 443),
        ("registry", GITLAB, 5050),
        ("ssh", GITLAB, 2222),
    ]


def _forbidden(runner: str) -> list[tuple[str, str, int]]:
    other = next(address for name, address in RUNNERS.items() if name != runner)
    return [
        ("tcp", VPS, ADMIN_SSH),  # the VPS's admin SSH, through the tunnel
        ("tcp", GITLAB, 22),  # the GitLab host's own sshd
        ("tcp", other, 22),  # the other runner's sshd
        ("tcp", VPS, OTHER_PORT),  # anything else listening on all addresses of the VPS
    ]


def _assert_allowed(seen: dict[str, str], runner: str) -> None:
    for kind, host, port in _allowed(runner):
        result = seen[f"{kind} {host}:{port}"]
        want = {"https": "ok HTTP/1.1 200", "registry": "ok HTTP/1.1 401", "ssh": "ok SSH-2.0-"}[kind]
        assert result.startswith(want), f"{runner}: {kind} {host}:{port} should work from a job: {result}"


def _assert_forbidden(seen: dict[str, str], runner: str) -> None:
    opened = {probe: result for probe, result in seen.items() if probe.startswith("tcp ") and result.startswith("ok")}
    assert not opened, f"{runner}: a job reached what the tunnel must hold off: {opened}"
    for probe, result in seen.items():
        if probe.startswith("tcp "):
            assert result in ("refused", "timeout"), f"{runner}: {probe}: {result}"


def _listening(netns: str, address: str, port: int) -> bool:
    """Does something accept on address:port, asked from inside the host itself?"""
    probe = f"import socket; socket.create_connection(('{address}', {port}), 3).close()"
    return _in(netns, "python3", "-c", probe).returncode == 0


@pytest.fixture
def topology(make_lab: MakeLab) -> Iterator[dict[str, Any]]:
    """The session's lab, with a service on all addresses of the VPS, as any daemon a VPS image ships may be."""
    vps = make_lab.machine("vps")
    listener = (
        f"import socket\ns=socket.create_server(('0.0.0.0', {OTHER_PORT}))\n"
        "while True:\n c,a=s.accept(); c.sendall(b'other-service\\n'); c.close()"
    )
    with vps.background(["python3", "-c", listener]):
        vps.wait_for_open_port(OTHER_PORT, timeout=10)
        yield make_lab.topology


def test_every_forbidden_target_listens_on_its_tunnel_address(topology: dict[str, Any]) -> None:
    """Else the forbidden probes below would pass for the wrong reason."""
    assert _listening("fwl-vps", VPS, ADMIN_SSH), "the VPS's sshd does not listen on its tunnel address"
    assert _listening("fwl-vps", VPS, OTHER_PORT)
    assert _listening("fwl-home", GITLAB, 22), "the home device's sshd does not listen on its tunnel address"
    for name, address in RUNNERS.items():
        assert _listening(f"fwl-{name}", address, 22), f"{name}'s sshd does not listen on its tunnel address"
    # And the LAN is not the tunnel's to filter: runner to home over the home LAN works
    # (runner-arm is IPv6-only, on no LAN of home's).
    assert _listening("fwl-runner-amd", "198.51.100.2", 22)


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_snat_a_job_reaches_gitlab_and_nothing_else_through_the_tunnel(topology: dict[str, Any], runner: str) -> None:
    seen = _job_probe(topology, runner, _allowed(runner) + _forbidden(runner))
    _assert_allowed(seen, runner)
    _assert_forbidden(seen, runner)


def test_a_host_that_lost_the_table_gets_it_back_from_its_boot_unit(topology: dict[str, Any]) -> None:
    """What a reboot forgets, the unit restores (run as boot runs it)."""
    assert _in("fwl-runner-amd", "nft", "delete", "table", *TABLE).returncode == 0
    _restore(topology, ["runner-amd"])
    loaded = (ROOT / ".lab" / "hosts" / "runner-amd" / "etc" / "forgeway" / "segment" / "segment.live").read_text()
    listed = _in("fwl-runner-amd", "nft", "-s", "list", "table", *TABLE)
    assert listed.stdout == loaded, "the boot unit did not load what the deploy loaded"


def _restore(topology: dict[str, Any], names: list[str]) -> None:
    """Load the hosts' saved tables again (an apply would not: nothing changed in its state)."""
    for name in names:
        booted = run_unit(LAB, name, "forgeway-segment.service")  # a host that boots: systemd runs it
        assert booted.returncode == 0, booted.stderr


def test_the_vps_alone_and_the_peers_alone_each_hold_off_the_forbidden_paths(topology: dict[str, Any]) -> None:
    """A compromised peer cannot route around it: with every peer's own table gone, the
    VPS still refuses the forbidden paths; and with the VPS's gone, the peers do."""
    peers = ["home", *RUNNERS]
    for name in peers:
        assert _in(f"fwl-{name}", "nft", "delete", "table", *TABLE).returncode == 0
    try:
        for runner in RUNNERS:
            seen = _job_probe(topology, runner, _forbidden(runner))
            _assert_forbidden(seen, runner)
    finally:
        _restore(topology, peers)
    assert _in("fwl-vps", "nft", "delete", "table", *TABLE).returncode == 0
    try:
        for runner in RUNNERS:
            seen = _job_probe(topology, runner, [p for p in _forbidden(runner) if p[1] != VPS])
            _assert_forbidden(seen, runner)
            # The VPS's own ports have no second line of defence: they are its input.
    finally:
        _restore(topology, ["vps"])


def test_preserve_source_a_job_reaches_gitlab_and_nothing_else_and_the_internet_only_dnat(
    topology: dict[str, Any],
) -> None:
    switched = _lab("up", "--mode", "preserve-source")
    assert switched.returncode == 0, switched.stderr[-2000:]
    try:
        for runner in sorted(RUNNERS):
            seen = _job_probe(topology, runner, _allowed(runner) + _forbidden(runner))
            _assert_allowed(seen, runner)
            _assert_forbidden(seen, runner)
        # An internet host that routes the tunnel subnet at the VPS: in this mode the GitLab
        # host would answer it through the tunnel, so only the VPS's forward chain stops it.
        # A public port (22, 80, 443, 5050) is DNATed to GitLab whatever the address it was
        # sent to (the forwarding matches the port on the public interface): that is the
        # forwarding, allowed. GitLab's SSH on the tunnel address (2222) is not a public port.
        assert _in("fwl-client", "ip", "route", "add", "10.8.0.0/24", "via", VPS_PUBLIC).returncode == 0
        try:
            probe = f"import socket; socket.create_connection(('{GITLAB}', 2222), 3).close()"
            done = _in("fwl-client", "python3", "-c", probe)
            assert done.returncode != 0, f"the internet reached {GITLAB}:2222 through the tunnel without DNAT"
            assert "timed out" in done.stderr, done.stderr[-300:]
            # The control: without the VPS's table the same connection is answered.
            assert _in("fwl-vps", "nft", "delete", "table", *TABLE).returncode == 0
            try:
                opened = _in("fwl-client", "python3", "-c", probe)
                assert opened.returncode == 0, "the control failed: the path is closed by something else"
            finally:
                _restore(topology, ["vps"])
        finally:
            _in("fwl-client", "ip", "route", "del", "10.8.0.0/24")
    finally:
        back = _lab("up", "--mode", "snat")
        assert back.returncode == 0, back.stderr[-2000:]
