"""components/render/ssh.py against real sshd: the pin is enforced, and nothing is remembered.

The options of ``ssh_options`` are what ``pulumi_docker.Provider(ssh_opts=...)`` gets,
and the docker CLI runs ``ssh <opts> user@host docker system dial-stdio``. Here the
same options go to a real ``ssh`` that runs ``true`` on a namespace host.

How the client is set up, and why:

* ``-F /dev/null``: the outer ssh reads neither ~/.ssh/config nor /etc/ssh/ssh_config,
  so nothing on this machine decides the outcome but the options under test.
* ``-i <client key> -o IdentitiesOnly=yes`` are added by the test: the options under
  test carry no identity.
* Through a jump, the ssh that ProxyCommand starts is a new process: it gets none of
  the outer ssh's ``-F``, ``-i`` or ``-o``, only its environment. So its identity comes
  from an ssh-agent of the lab (``SSH_AUTH_SOCK``), as it would in production from the
  operator's agent. ``test_jump_hop_does_not_inherit_the_outer_identity`` pins this down.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from components.render.ssh import SshTarget, ssh_destination, ssh_options
from tests.lab.netns import LINK_NETWORK, Lab, LabHost

HOST_KEY_FAILED = "Host key verification failed."
KNOWN_HOSTS = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".ssh" / "known_hosts"


def _base_env() -> dict[str, str]:
    """This process's environment without any agent of the person running the tests."""
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}


def run_ssh(
    opts: list[str],
    target: SshTarget,
    identity: Path,
    *,
    env: Mapping[str, str] | None = None,
    command: str = "true",
) -> subprocess.CompletedProcess[str]:
    cmd = [
        "ssh",
        "-F",
        "/dev/null",
        *opts,
        "-i",
        str(identity),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        ssh_destination(target),
        command,
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_base_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def target_of(host: LabHost, host_key: str | None) -> SshTarget:
    return SshTarget(address=host.address, port=host.port, user="root", host_key=host_key)


def known_hosts_name(host: LabHost) -> str:
    """The name ssh looks the host up by, and so what KnownHostsCommand's %H expands to."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def _known_hosts_state() -> bytes | None:
    return KNOWN_HOSTS.read_bytes() if KNOWN_HOSTS.exists() else None


@pytest.fixture(autouse=True)
def known_hosts_untouched() -> Iterator[None]:
    """No test here may create or change the user's known_hosts, pass or fail."""
    before = _known_hosts_state()
    yield
    assert _known_hosts_state() == before, f"{KNOWN_HOSTS} was written"


# --------------------------------------------------------------------------- one host


# (IP version, port): the default port, another one (so ssh looks up "[address]:port"), IPv6.
ENDPOINTS = {
    "ipv4-port-22": (4, 22),
    "ipv4-port-2222": (4, 2222),
    "ipv6-port-2222": (6, 2222),
}
endpoints = pytest.mark.parametrize(("ip_version", "port"), ENDPOINTS.values(), ids=ENDPOINTS.keys())


@endpoints
def test_pinned_key_connects(lab: Lab, ip_version: int, port: int) -> None:
    host = lab.add_host("web", port=port, ip_version=ip_version)
    target = target_of(host, host.host_key)

    result = run_ssh(ssh_options(target), target, host.client_key, command="echo $SSH_CONNECTION")

    assert result.returncode == 0, result.stderr
    # client address, client port, server address, server port: we reached that sshd.
    assert result.stdout.split()[2:] == [host.address, str(port)]


@endpoints
def test_wrong_pinned_key_fails_and_writes_nothing(lab: Lab, ip_version: int, port: int) -> None:
    host = lab.add_host("web", port=port, ip_version=ip_version)
    target = target_of(host, lab.spare_host_key("ed25519"))
    before = _known_hosts_state()

    result = run_ssh(ssh_options(target), target, host.client_key)

    assert result.returncode == 255
    assert HOST_KEY_FAILED in result.stderr, result.stderr
    assert f"Host key for {known_hosts_name(host)} has changed" in result.stderr, result.stderr
    assert _known_hosts_state() == before


KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@pytest.fixture(scope="module")
def multi_key_host() -> Iterator[tuple[Lab, LabHost]]:
    """One host offering a host key of each type, shared by the tests of this module."""
    with Lab() as lab:
        yield lab, lab.add_host("web", host_key_types=KEY_TYPES)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_each_key_type_is_negotiated_and_checked(multi_key_host: tuple[Lab, LabHost], key_type: str) -> None:
    """sshd offers three host keys; HostKeyAlgorithms makes ssh pick the pinned one's type."""
    lab, host = multi_key_host
    pinned = [host.host_key, *host.other_host_keys][KEY_TYPES.index(key_type)]
    wrong_key = lab.spare_host_key(key_type)

    right = run_ssh(ssh_options(target_of(host, pinned)), target_of(host, pinned), host.client_key)
    wrong = run_ssh(ssh_options(target_of(host, wrong_key)), target_of(host, wrong_key), host.client_key)

    assert right.returncode == 0, right.stderr
    assert wrong.returncode == 255
    assert HOST_KEY_FAILED in wrong.stderr, wrong.stderr
    assert f"Host key for {known_hosts_name(host)} has changed" in wrong.stderr, wrong.stderr


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_offering_only_the_pins_type_as_pulumi_command_does(multi_key_host: tuple[Lab, LabHost], key_type: str) -> None:
    """pulumi-command offers exactly the pinned key's type, ``publicKey.Type()``
    (provider/pkg/provider/remote/connection.go: ``HostKeyAlgorithms = []string{...}``).
    For ed25519 and ecdsa that is the algorithm itself; for RSA it is ``ssh-rsa``, SHA-1
    signatures, which OpenSSH 8.8 and later refuse: why config refuses ssh-rsa pins."""
    _, host = multi_key_host
    pinned = [host.host_key, *host.other_host_keys][KEY_TYPES.index(key_type)]
    algorithm = pinned.split()[0]
    target = target_of(host, pinned)
    # The first -o of an option wins: this one stands in for the provider's list.
    result = run_ssh(["-o", f"HostKeyAlgorithms={algorithm}", *ssh_options(target)], target, host.client_key)
    if algorithm == "ssh-rsa":
        assert result.returncode == 255
        assert "no matching host key type found" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_unpinned_opt_out_connects(lab: Lab) -> None:
    host = lab.add_host("web", port=2222)
    target = target_of(host, None)

    result = run_ssh(ssh_options(target), target, host.client_key)

    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- through a jump host


@pytest.fixture
def jump_pair(lab: Lab) -> tuple[LabHost, LabHost]:
    """Host A (root namespace can reach it) and host B, linked to A's namespace only."""
    jump = lab.add_host("bastion", port=2200)
    inner = lab.add_host("inner", port=2222, via=jump)
    return jump, inner


def test_inner_host_is_reachable_only_through_the_jump(lab: Lab, jump_pair: tuple[LabHost, LabHost]) -> None:
    _, inner = jump_pair
    target = target_of(inner, inner.host_key)

    result = run_ssh(ssh_options(target), target, inner.client_key)

    assert result.returncode == 255
    assert "No route to host" in result.stderr, result.stderr


# jump's pin, target's pin, which host key check fails (None: it connects)
KEY_CASES = {
    "both-right": ("right", "right", None),
    "wrong-jump-key": ("wrong", "right", "jump"),
    "wrong-target-key": ("right", "wrong", "target"),
    "both-wrong": ("wrong", "wrong", "jump"),
    "jump-unpinned": (None, "right", None),
    "target-unpinned": ("right", None, None),
}


@pytest.mark.parametrize(("jump_pin", "target_pin", "fails_at"), KEY_CASES.values(), ids=KEY_CASES.keys())
def test_jump(
    lab: Lab,
    jump_pair: tuple[LabHost, LabHost],
    jump_pin: str | None,
    target_pin: str | None,
    fails_at: str | None,
) -> None:
    jump, inner = jump_pair

    def pin(host: LabHost, which: str | None) -> str | None:
        if which == "wrong":
            return lab.spare_host_key("ed25519")
        return host.host_key if which == "right" else None

    target = target_of(inner, pin(inner, target_pin))
    opts = ssh_options(target, jump=target_of(jump, pin(jump, jump_pin)))

    result = run_ssh(opts, target, inner.client_key, env=lab.agent_env(jump, inner), command="echo $SSH_CONNECTION")

    if fails_at is None:
        assert result.returncode == 0, result.stderr
        # B saw the connection come from A's end of the private link: it went through A.
        client_address, _, server_address, server_port = result.stdout.split()
        assert ipaddress.ip_address(client_address) in LINK_NETWORK
        assert [server_address, server_port] == [inner.address, str(inner.port)]
    else:
        assert result.returncode == 255
        assert HOST_KEY_FAILED in result.stderr, result.stderr
        failing = jump if fails_at == "jump" else inner
        assert f"Host key for {known_hosts_name(failing)} has changed" in result.stderr, result.stderr


def test_jump_hop_does_not_inherit_the_outer_identity(lab: Lab, jump_pair: tuple[LabHost, LabHost]) -> None:
    """Without an agent, the jump hop has no key: -i of the outer ssh does not reach it."""
    jump, inner = jump_pair
    target = target_of(inner, inner.host_key)
    opts = ssh_options(target, jump=target_of(jump, jump.host_key))

    result = run_ssh(opts, target, inner.client_key)

    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr, result.stderr
    assert HOST_KEY_FAILED not in result.stderr


def test_jump_to_ipv6_target(lab: Lab) -> None:
    jump = lab.add_host("bastion", port=2200, ip_version=6)
    inner = lab.add_host("inner", port=2222, via=jump)
    target = target_of(inner, inner.host_key)
    opts = ssh_options(target, jump=target_of(jump, jump.host_key))

    result = run_ssh(opts, target, inner.client_key, env=lab.agent_env(jump, inner), command="echo $SSH_CONNECTION")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[2:] == [inner.address, str(inner.port)]
