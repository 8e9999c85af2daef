"""The forge host's DNAT to the forge's container (components/render/forge_nat.py,
forge-nat-up.sh, forge-nat-down.sh; issue 20). The rendered tables are read back by the
real nft in a scratch user and network namespace (``unshare -rn``), and the scripts run
there with FORGEWAY_ETC in a temporary directory: they converge, switch a family off,
refuse anything but their tables, and their delete puts the namespace, its IPv6 sysctls
and the directory back as they were. Config errors name the key.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.config import PROJECT, ConfigError, parse_stack
from components.render.forge_nat import FILE4, FILE6, ForgeNatSettings, PortMap, render_forge_nat
from components.scripts import script
from tests.stacks import gitea_stack, lab_stack
from tests.unit.test_segment import _tool

pytestmark = pytest.mark.unit

PORTS = (PortMap("https", 443, 443), PortMap("ssh", 2222, 22), PortMap("registry", 5050, 5050))
TUNNEL6, GITLAB6 = ipaddress.IPv6Address("fd77:6179:7761::2"), ipaddress.IPv6Address("fd77:6179:7762::2")
LAN4, GITLAB4 = ipaddress.IPv4Address("198.51.100.2"), ipaddress.IPv4Address("172.31.254.2")
BOTH = ForgeNatSettings(PORTS, tunnel6=TUNNEL6, container6=GITLAB6, lan4=LAN4, container4=GITLAB4)


def _ns(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """``body`` (shell) in one scratch user+network namespace; $UP and $DOWN are the scripts."""
    for name in ("forge-nat-up.sh", "forge-nat-down.sh"):
        (tmp_path / name).write_text(script(name))
    env = {
        **os.environ,
        "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin",
        "FORGEWAY_ETC": str(tmp_path / "etc"),
        "FORGEWAY_SYSTEMD": "yes",
        "UP": str(tmp_path / "forge-nat-up.sh"),
        "DOWN": str(tmp_path / "forge-nat-down.sh"),
    }
    return subprocess.run(
        [_tool("unshare"), "-rn", "sh", "-ec", body], capture_output=True, text=True, env=env, check=False, timeout=60
    )


def _stage(tmp_path: Path, settings: ForgeNatSettings, name: str = "stage") -> Path:
    stage = tmp_path / name
    stage.mkdir()
    for file, text in render_forge_nat(settings).items():
        (stage / file).write_text(text)
    return stage


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# --- the render ---------------------------------------------------------------------------


def test_each_family_is_rendered_only_with_both_of_its_addresses() -> None:
    assert set(render_forge_nat(BOTH)) == {FILE4, FILE6}
    assert set(render_forge_nat(ForgeNatSettings(PORTS, tunnel6=TUNNEL6, container6=GITLAB6))) == {FILE6}
    assert set(render_forge_nat(ForgeNatSettings(PORTS, lan4=LAN4, container4=GITLAB4))) == {FILE4}
    assert render_forge_nat(ForgeNatSettings(PORTS)) == {}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (ForgeNatSettings(()), "no port"),
        (ForgeNatSettings(PORTS, tunnel6=TUNNEL6), "go together"),
        (ForgeNatSettings(PORTS, container4=GITLAB4), "go together"),
        (ForgeNatSettings((PortMap("https", 0, 443),)), "out of 1-65535"),
        (ForgeNatSettings((PortMap('x" accept', 443, 443),)), "service name"),
    ],
)
def test_bad_settings_are_refused_by_name(settings: ForgeNatSettings, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        render_forge_nat(settings)


def test_the_kernel_reads_back_one_dnat_per_port_for_clients_and_for_the_host(tmp_path: Path) -> None:
    stage = _stage(tmp_path, BOTH)
    done = _ns(tmp_path, f"nft -f {stage}/{FILE6} && nft -f {stage}/{FILE4} && nft list ruleset")
    assert done.returncode == 0, done.stderr
    listed = done.stdout
    assert listed.count("table ") == 2
    for p in PORTS:
        six = f"ip6 daddr {TUNNEL6} tcp dport {p.host_port} dnat to [{GITLAB6}]:{p.container_port}"
        four = f"ip daddr {LAN4} tcp dport {p.host_port} dnat to {GITLAB4}:{p.container_port}"
        assert listed.count(six) == 2 and listed.count(four) == 2, p  # prerouting and output
    assert listed.count("type nat hook prerouting priority dstnat; policy accept;") == 2
    assert listed.count("type nat hook output priority -100; policy accept;") == 2


# --- the scripts, in a scratch namespace ----------------------------------------------------


def test_up_converges_keeps_the_ra_route_and_down_removes_exactly_what_it_added(tmp_path: Path) -> None:
    (tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants").mkdir(parents=True)
    (tmp_path / "etc" / "sysctl.d").mkdir()
    before = _tree(tmp_path / "etc")
    both, six = _stage(tmp_path, BOTH), _stage(tmp_path, ForgeNatSettings(PORTS, lan4=LAN4, container4=GITLAB4), "s4")
    sysctls = "sysctl -n net.ipv6.conf.all.forwarding net.ipv6.conf.up0.accept_ra"
    done = _ns(
        tmp_path,
        f"""
        ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up
        ip -6 addr add 2001:db8:1::2/64 dev up0 nodad && ip -6 route add default via 2001:db8:1::1 dev up0
        nft add table ip theirs
        nft list ruleset > {tmp_path}/before; {sysctls} > {tmp_path}/sysctls-before
        sh "$UP" "ip6 ip" {both} > {tmp_path}/first; {sysctls} > {tmp_path}/sysctls-up
        sh "$UP" "ip6 ip" {both} > {tmp_path}/second
        nft delete table ip6 forgeway_forge
        sh "$UP" "ip6 ip" {both} > {tmp_path}/drifted
        sh "$UP" ip {six} > {tmp_path}/v4only; {sysctls} > {tmp_path}/sysctls-v4only
        nft list tables > {tmp_path}/tables-v4only
        sh "$UP" "ip6 ip" {both} > {tmp_path}/again
        sh "$DOWN" > {tmp_path}/down; sh "$DOWN" > {tmp_path}/down2
        nft list ruleset > {tmp_path}/after; {sysctls} > {tmp_path}/sysctls-after
        """,
    )
    assert done.returncode == 0, done.stderr
    out = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file() and "." not in p.name}
    assert "changed table ip6 forgeway_forge" in out["first"] and "changed table ip forgeway_forge" in out["first"]
    assert "changed net.ipv6.conf.all.forwarding=1" in out["first"]
    assert "changed net.ipv6.conf.up0.accept_ra=2" in out["first"]  # forwarding would drop the RA route
    assert out["sysctls-before"].split() == ["0", "1"] and out["sysctls-up"].split() == ["1", "2"]
    assert all(line.startswith("ok ") for line in out["second"].splitlines()), out["second"]
    assert "changed table ip6 forgeway_forge" in out["drifted"] and "changed table ip " not in out["drifted"]
    # IPv6 switched off: its table goes and the sysctls are back as found
    assert "removed table ip6 forgeway_forge" in out["v4only"]
    assert out["sysctls-v4only"].split() == ["0", "1"]
    assert "table ip6 forgeway_forge" not in out["tables-v4only"] and "table ip forgeway_forge" in out["tables-v4only"]
    assert "removed table ip6 forgeway_forge" in out["down"] and "removed table ip forgeway_forge" in out["down"]
    assert out["down2"].strip() == "ok forge-nat: nothing to remove"
    assert out["after"] == out["before"], "another table was touched"
    assert out["sysctls-after"].split() == ["0", "1"]
    assert _tree(tmp_path / "etc") == before, "down left something or removed what it did not add"


def test_the_boot_unit_loads_the_saved_tables_and_the_sysctl_file_keeps_forwarding(tmp_path: Path) -> None:
    stage = _stage(tmp_path, BOTH)
    assert _ns(tmp_path, f'sh "$UP" "ip6 ip" {stage}').returncode == 0
    etc = tmp_path / "etc"
    unit = (etc / "systemd" / "system" / "forgeway-forge-nat.service").read_text()
    starts = [line.removeprefix("ExecStart=") for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(starts) == 2 and "After=local-fs.target nftables.service" in unit
    booted = _ns(tmp_path, "\n".join([*starts, "nft -s list table ip6 forgeway_forge"]))
    assert booted.returncode == 0, booted.stderr
    assert booted.stdout == (etc / "forgeway" / "forge-nat" / "forge6.nft.live").read_text()
    assert "net.ipv6.conf.all.forwarding = 1" in (etc / "sysctl.d" / "60-forgeway-forge-nat.conf").read_text()
    assert (etc / "systemd" / "system" / "multi-user.target.wants" / "forgeway-forge-nat.service").is_symlink()


@pytest.mark.parametrize("extra", ["flush ruleset\n", "table ip theirs {\n}\n"])
def test_up_refuses_anything_but_its_own_tables_and_changes_nothing(tmp_path: Path, extra: str) -> None:
    stage = _stage(tmp_path, BOTH)
    (stage / FILE4).write_text((stage / FILE4).read_text() + extra)
    done = _ns(tmp_path, f'! sh "$UP" "ip6 ip" {stage}\nnft list ruleset > {tmp_path}/after')
    assert done.returncode == 0 and "nothing changed" in done.stderr, done.stderr
    assert (tmp_path / "after").read_text() == ""  # not even the valid ip6 table was loaded
    assert not _tree(tmp_path / "etc" / "forgeway")


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gitlab", "tunnel", "key", "expected"),
    [
        ({"container_subnet": "8.8.8.0/29"}, {}, "gitlab.container_subnet", "private IPv4 subnet"),
        ({"container_subnet": "172.31.254.0/31"}, {}, "gitlab.container_subnet", "/30 or larger"),
        ({"container_subnet6": "fd77:6100::/40"}, {}, "gitlab.container_subnet6", "/64 to /120"),
        ({"container_subnet": "10.8.0.0/29", "publish_on_lan": True}, {}, "gitlab.container_subnet", "tunnel.subnet"),
        ({"container_subnet6": "fd77:6179:7761::/64"}, {"ipv6": True}, "gitlab.container_subnet6", "ipv6_subnet"),
    ],
)
def test_bad_container_subnets_name_the_key(
    gitlab: dict[str, object], tunnel: dict[str, object], key: str, expected: str
) -> None:
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config[f"{PROJECT}:gitlab"] = {**config[f"{PROJECT}:gitlab"], **gitlab}
    _refused_naming(config, secret_keys, tunnel, key, expected)


def _refused_naming(
    config: dict[str, Any], secret_keys: list[str], tunnel: dict[str, object], key: str, expected: str
) -> None:
    """``config`` with ``tunnel`` merged in is refused, the message naming ``key`` and ``expected``."""
    config[f"{PROJECT}:tunnel"] = {**config.get(f"{PROJECT}:tunnel", {}), **tunnel}
    with pytest.raises(ConfigError) as failed:
        parse_stack(config, secret_keys)
    message = str(failed.value)
    assert f"{PROJECT}:{key}" in message and expected in message, message


def test_publish_on_lan_needs_the_forge_hosts_address_as_ipv4() -> None:
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config[f"{PROJECT}:gitlab"] = {**config[f"{PROJECT}:gitlab"], "publish_on_lan": True}
    i, home = next((i, h) for i, h in enumerate(config[f"{PROJECT}:hosts"]) if "gitlab" in h["roles"])
    home["address"] = "home.lan"
    with pytest.raises(ConfigError) as failed:
        parse_stack(config, secret_keys)
    assert f"{PROJECT}:hosts[{i}].address" in str(failed.value) and "LAN IPv4 address" in str(failed.value)


@pytest.mark.parametrize(
    ("gitea", "tunnel", "key", "expected"),
    [
        ({"container_subnet": "8.8.8.0/29"}, {}, "gitea.container_subnet", "private IPv4 subnet"),
        ({"container_subnet6": "fd77:6100::/40"}, {}, "gitea.container_subnet6", "/64 to /120"),
        ({"container_subnet": "192.168.1.0/29", "publish_on_lan": True}, {}, "gitea.container_subnet", "lan_networks"),
        ({"container_subnet6": "fd77:6179:7761::/64"}, {"ipv6": True}, "gitea.container_subnet6", "ipv6_subnet"),
        ({"publish_on_lan": True, "address": "jetson.lan"}, {}, "hosts[1].address", "Gitea host's LAN IPv4"),
    ],
)
def test_giteas_network_is_checked_as_gitlabs_by_its_own_keys(
    gitea: dict[str, object], tunnel: dict[str, object], key: str, expected: str
) -> None:
    """check_forge_network reads the chosen forge's section: Gitea's keys, Gitea's host."""
    config, secret_keys = gitea_stack()
    config, gitea = copy.deepcopy(config), dict(gitea)
    forge_host = next(h for h in config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"])
    assert config[f"{PROJECT}:hosts"].index(forge_host) == 1
    if "address" in gitea:
        forge_host["address"] = gitea.pop("address")
    forge_host.setdefault("lan_networks", ["192.168.1.0/24"])
    config[f"{PROJECT}:gitea"] = {**config[f"{PROJECT}:gitea"], **gitea}
    _refused_naming(config, secret_keys, tunnel, key, expected)
