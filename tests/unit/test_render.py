"""Pure renderers, checked against the real tools that read their output."""

from __future__ import annotations

import base64
import ipaddress
import os
import shutil
import subprocess

import pytest

from components.render.ssh import SshTarget, host_key_algorithms, ssh_options
from components.render.wireguard import assign_tunnel_addresses, wg_public_key

pytestmark = pytest.mark.unit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnM0Tvg7PtccZCfS8ooe1OpKgKcuG6qMwJ1jiaycyd3"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make setup` (tools/ci/apt-packages.txt)")
    return path


def test_wg_public_key_matches_wg_pubkey() -> None:
    wg = _require("wg")
    for _ in range(5):
        private = base64.b64encode(os.urandom(32)).decode()  # unclamped, as RandomBytes gives
        expected = subprocess.run([wg, "pubkey"], input=private, capture_output=True, text=True, check=True)
        assert wg_public_key(private) == expected.stdout.strip()


def test_tunnel_addresses_put_the_vps_first_and_keep_pinned_ones() -> None:
    subnet = ipaddress.IPv4Network("10.8.0.0/24")
    pinned = ipaddress.IPv4Address("10.8.0.2")
    got = assign_tunnel_addresses(subnet, [("home", False, None), ("vps", True, None), ("r1", False, pinned)])
    assert got == {
        "home": ipaddress.IPv4Address("10.8.0.3"),
        "vps": ipaddress.IPv4Address("10.8.0.1"),
        "r1": pinned,
    }


def test_appending_a_host_moves_no_other() -> None:
    subnet = ipaddress.IPv4Network("10.8.0.0/24")
    hosts = [("vps", True, None), ("home", False, None)]
    before = assign_tunnel_addresses(subnet, hosts)
    after = assign_tunnel_addresses(subnet, [*hosts, ("new", False, None)])
    assert {k: after[k] for k in before} == before


def test_ssh_options_pin_the_key_and_offer_only_its_algorithm() -> None:
    opts = ssh_options(SshTarget("192.0.2.1", 2202, "admin", KEY))
    assert opts[opts.index("-p") + 1] == "2202"
    assert "StrictHostKeyChecking=yes" in opts
    assert f"KnownHostsCommand=/bin/echo %H {KEY}" in opts
    assert "HostKeyAlgorithms=ssh-ed25519" in opts
    assert host_key_algorithms("ssh-rsa AAAAB3") == "rsa-sha2-512,rsa-sha2-256"


def test_jump_options_escape_the_jumps_tokens() -> None:
    jump = SshTarget("203.0.113.10", 22, "admin", KEY)
    opts = ssh_options(SshTarget("10.8.0.2", 22, "root", KEY), jump)
    proxy = next(o for o in opts if o.startswith("ProxyCommand="))
    assert "%%H" in proxy and "-W '[%h]:%p'" in proxy and proxy.endswith("admin@203.0.113.10")


def test_opt_out_accepts_any_key_and_remembers_none() -> None:
    opts = ssh_options(SshTarget("192.0.2.1", 22, "root", None))
    assert "StrictHostKeyChecking=no" in opts and "UserKnownHostsFile=/dev/null" in opts
