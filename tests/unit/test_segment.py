"""The tunnel's segmentation (components/render/segment.py, segment-up.sh, segment-down.sh).

The rendered tables are read back by the real nft: `nft -c` for syntax, and, for what
they mean, loaded into a scratch user and network namespace (``unshare -rn``) whose
``nft list`` is compared with what the design allows. The scripts run there too, with
FORGEWAY_ETC in a temporary directory: they converge, refuse anything but their table
and their delete puts the namespace and the directory back as they were.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.config import ConfigError, ForwardingMode, parse_stack
from components.render.segment import SegmentSettings, render_segment, segment_settings
from components.scripts import script
from components.tunnel import tunnel_addresses, tunnel_addresses6
from tests.stacks import lab_stack, prod_stack

pytestmark = pytest.mark.unit


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: run `make setup` (tools/ci/apt-packages.txt)")
    return path


def _lab() -> SegmentSettings:
    """The lab's tunnel, without the default backup repository's SFTP (its own tests, at the end)."""
    cfg, _ = parse_stack(*lab_stack())
    return dataclasses.replace(segment_settings(cfg, tunnel_addresses(cfg)), backup_sftp=False)


def _chain(text: str, chain: str) -> list[str]:
    """The rule lines of one chain, in order."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {chain} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1 : end] if not line.strip().startswith("#")]


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
@pytest.mark.parametrize("admins", [(), ("runner-arm",), ("vps", "home", "runner-amd")])
def test_every_hosts_table_passes_nft_check(tmp_path: Path, mode: str, admins: tuple[str, ...]) -> None:
    settings = dataclasses.replace(_lab(), mode=mode, admins=admins)  # type: ignore[arg-type]
    for host in settings.names:
        f = tmp_path / f"{host}.nft"
        f.write_text(render_segment(settings, host))
        done = subprocess.run(
            [_tool("unshare"), "-rn", _tool("nft"), "-c", "-f", str(f)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{host} ({mode}, admins {admins}): {done.stderr}"


def test_prod_stack_renders_for_every_host() -> None:
    cfg, _ = parse_stack(*prod_stack())
    settings = segment_settings(cfg, tunnel_addresses(cfg))
    for host in cfg.hosts:
        assert "counter drop" in render_segment(settings, host.name)


def test_vps_forward_allows_runners_to_gitlabs_ports_and_dnat_only_then_drops_the_tunnel() -> None:
    vps = render_segment(_lab(), "vps")
    forward = _chain(vps, "forward")
    assert forward[0].startswith("type filter hook forward priority filter; policy accept;")
    body = forward[1:]
    assert body[0].startswith("ct state established,related accept")
    assert body[1].startswith('oifname "wg0" ct status dnat ip daddr 10.8.0.2 accept')
    assert body[2].startswith(
        'iifname "wg0" oifname "wg0" ip saddr { 10.8.0.3, 10.8.0.4 } ip daddr 10.8.0.2 '
        "tcp dport { 443, 2222, 5050 } accept"
    )
    assert body[3].startswith('iifname "wg0" counter drop')
    assert body[4].startswith('oifname "wg0" counter drop')
    assert len(body) == 5, "no admin rule without tunnel.admin_peers"


def test_vps_input_from_the_tunnel_drops_the_admin_port_unless_an_admin_peer_asks() -> None:
    body = _chain(render_segment(_lab(), "vps"), "input")[1:]
    assert body[0].startswith('iifname != "wg0" accept'), "only the tunnel is this table's to filter"
    assert not any("2202" in rule for rule in body)
    assert body[-1].startswith("counter drop")
    with_admin = _chain(render_segment(dataclasses.replace(_lab(), admins=("runner-arm",)), "vps"), "input")
    assert any(rule.startswith("ip saddr 10.8.0.3 tcp dport 2202 accept") for rule in with_admin)
    forward = _chain(render_segment(dataclasses.replace(_lab(), admins=("runner-arm",)), "vps"), "forward")
    assert any(
        r.startswith('iifname "wg0" oifname "wg0" ip saddr 10.8.0.3 ip daddr 10.8.0.4 tcp dport 22') for r in forward
    )
    assert not any("ip daddr 10.8.0.3 tcp dport 22" in r for r in forward), "an admin needs no rule to itself"


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_gitlab_host_accepts_the_forwarded_ports_from_the_vps_and_runners_and_internet_only_in_preserve_source(
    mode: str,
) -> None:
    body = _chain(render_segment(dataclasses.replace(_lab(), mode=mode), "home"), "prerouting")  # type: ignore[arg-type]
    assert body[0].startswith("type filter hook prerouting priority mangle; policy accept;")
    assert (
        'ip saddr 10.8.0.1 tcp dport { 80, 443, 2222, 5050 } accept comment "segment: the vps to the forwarded ports"'
        in body
    )
    assert any(r.startswith("ip saddr { 10.8.0.3, 10.8.0.4 } tcp dport { 443, 2222, 5050 } accept") for r in body)
    internet = [r for r in body if r.startswith("ip saddr != 10.8.0.0/24")]
    assert bool(internet) == (mode == "preserve-source")
    assert not any("dport 22 " in r for r in body), "the home device's own SSH only for admin peers"
    assert body[-1].startswith("counter drop")


def test_runner_accepts_nothing_new_from_the_tunnel_but_a_ping_from_the_vps() -> None:
    body = _chain(render_segment(_lab(), "runner-arm"), "prerouting")[1:]
    assert [r.split(" comment ")[0] for r in body] == [
        'iifname != "wg0" accept',
        "ct state established,related accept",
        "ip saddr 10.8.0.1 ip protocol icmp icmp type echo-request accept",
        "counter drop",
    ]
    admin = _chain(
        render_segment(dataclasses.replace(_lab(), admins=("vps", "runner-arm")), "runner-arm"), "prerouting"
    )
    assert any(r.startswith("ip saddr 10.8.0.1 tcp dport 22 accept") for r in admin), (
        "vps is an admin; runner-arm is itself"
    )


def test_comments_never_carry_forwarding_downs_label() -> None:
    for host in _lab().names:
        assert "forgeway:" not in render_segment(_lab(), host), "forwarding-down.sh deletes rules labelled forgeway:"


def test_settings_no_table_comes_from_are_refused() -> None:
    with pytest.raises(ValueError, match="not one member"):
        render_segment(dataclasses.replace(_lab(), admins=("nobody",)), "vps")
    with pytest.raises(ValueError, match="outside"):
        s = _lab()
        bad = dataclasses.replace(s.members[1], address=ipaddress.IPv4Address("10.9.0.2"))
        render_segment(dataclasses.replace(s, members=(s.members[0], bad, *s.members[2:])), "vps")
    with pytest.raises(ValueError, match="interface"):
        render_segment(dataclasses.replace(_lab(), interface='wg0"; flush ruleset'), "vps")


# --- the meaning, as the kernel has it ----------------------------------------------------


def _loaded_listing(text: str, tmp_path: Path) -> str:
    f = tmp_path / "t.nft"
    f.write_text(text)
    done = subprocess.run(
        [_tool("unshare"), "-rn", "sh", "-c", 'nft -f "$1" && nft -s list table inet forgeway_segment', "sh", str(f)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_kernel_reads_back_a_default_drop_on_every_host(tmp_path: Path) -> None:
    for host in _lab().names:
        listing = _loaded_listing(render_segment(_lab(), host), tmp_path)
        assert listing.count("drop") >= 1, f"{host}: {listing}"
        assert "2202" not in listing and " 22 " not in listing.replace("dport 2222", ""), (
            f"{host}: no SSH through the tunnel by default:\n{listing}"
        )


# --- config ---------------------------------------------------------------------------------


def _with_tunnel(**tunnel: object) -> tuple[dict[str, object], list[str]]:
    config, secret_keys = lab_stack()
    config["forgeway:tunnel"] = {**config["forgeway:tunnel"], **tunnel}
    return config, secret_keys


@pytest.mark.parametrize(
    ("value", "key", "shown", "expected"),
    [
        (["runner-armm"], "forgeway:tunnel.admin_peers[0]", '"runner-armm"', "the name of a host in hosts (vps, home"),
        (["home", "home"], "forgeway:tunnel.admin_peers[1]", '"home"', "each host once"),
        ("home", "forgeway:tunnel.admin_peers", '"home"', "list"),
    ],
)
def test_admin_peers_must_name_hosts(value: object, key: str, shown: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_stack(*_with_tunnel(admin_peers=value))
    problems = [p for p in raised.value.problems if p.key == key]
    assert problems, str(raised.value)
    assert problems[0].value == shown and expected in problems[0].expected, str(problems[0])


def test_admin_peers_default_to_none_and_reach_the_settings() -> None:
    cfg, _ = parse_stack(*lab_stack())
    assert cfg.tunnel.admin_peers == []
    cfg, _ = parse_stack(*_with_tunnel(admin_peers=["runner-arm", "vps"]))
    assert segment_settings(cfg, tunnel_addresses(cfg)).admins == ("runner-arm", "vps")


# --- the scripts, in a scratch namespace ----------------------------------------------------


def _run(tmp_path: Path, body: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``body`` (shell) in one scratch user+network namespace; $UP and $DOWN are the scripts."""
    (tmp_path / "segment-up.sh").write_text(script("segment-up.sh"))
    (tmp_path / "segment-down.sh").write_text(script("segment-down.sh"))
    env = {
        **os.environ,
        "FORGEWAY_ETC": str(tmp_path / "etc"),
        "FORGEWAY_SYSTEMD": "yes",
        "UP": str(tmp_path / "segment-up.sh"),
        "DOWN": str(tmp_path / "segment-down.sh"),
    }
    return subprocess.run(
        [_tool("unshare"), "-rn", "sh", "-ec", body], input=stdin, capture_output=True, text=True, env=env, check=False
    )


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_up_converges_installs_its_boot_unit_and_down_removes_exactly_that(tmp_path: Path) -> None:
    (tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants").mkdir(parents=True)  # as on any host
    before = _tree(tmp_path / "etc")
    ruleset = render_segment(_lab(), "runner-arm")
    (tmp_path / "rules.nft").write_text(ruleset)
    done = _run(
        tmp_path,
        f"""
        nft add table ip theirs
        nft list ruleset > {tmp_path}/before
        sh "$UP" < {tmp_path}/rules.nft > {tmp_path}/first
        sh "$UP" < {tmp_path}/rules.nft > {tmp_path}/second
        nft -s list table inet forgeway_segment > {tmp_path}/loaded
        nft delete table inet forgeway_segment
        sh "$UP" < {tmp_path}/rules.nft > {tmp_path}/drifted
        sh "$DOWN" > {tmp_path}/down
        sh "$DOWN" > {tmp_path}/down2
        nft list ruleset > {tmp_path}/after
        """,
    )
    assert done.returncode == 0, done.stderr
    out = {name: (tmp_path / name).read_text() for name in ("first", "second", "drifted", "down", "down2")}
    assert "changed table inet forgeway_segment" in out["first"]
    assert all(line.startswith("ok ") for line in out["second"].splitlines()), out["second"]
    assert "changed table inet forgeway_segment" in out["drifted"], "a table lost (reboot, flush) is loaded again"
    assert "counter packets 0" not in (tmp_path / "loaded").read_text()  # stateless listing
    assert "removed table inet forgeway_segment" in out["down"]
    assert out["down2"].strip() == "ok segment: nothing to remove"
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text(), "another table was touched"
    assert _tree(tmp_path / "etc") == before, "down left something or removed what it did not add"


def test_the_boot_unit_loads_the_saved_table_before_the_network(tmp_path: Path) -> None:
    (tmp_path / "rules.nft").write_text(render_segment(_lab(), "home"))
    done = _run(tmp_path, f'sh "$UP" < {tmp_path}/rules.nft')
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "etc" / "systemd" / "system" / "forgeway-segment.service").read_text()
    assert "Before=network-pre.target" in unit and "After=local-fs.target nftables.service" in unit
    (start,) = [line.removeprefix("ExecStart=") for line in unit.splitlines() if line.startswith("ExecStart=")]
    booted = _run(tmp_path, f"{start}\nnft -s list table inet forgeway_segment")
    assert booted.returncode == 0, booted.stderr
    saved = (tmp_path / "etc" / "forgeway" / "segment" / "segment.live").read_text()
    assert booted.stdout == saved
    assert (
        tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants" / "forgeway-segment.service"
    ).is_symlink()


@pytest.mark.parametrize(
    "extra",
    ["flush ruleset\n", "table ip theirs {\n}\n", "table inet forgeway_segment {\n\tchain x {\n\t\tfoo bar\n\t}\n}\n"],
)
def test_up_refuses_anything_but_its_own_valid_table_and_changes_nothing(tmp_path: Path, extra: str) -> None:
    (tmp_path / "rules.nft").write_text(render_segment(_lab(), "vps") + extra)
    done = _run(tmp_path, f'sh "$UP" < {tmp_path}/rules.nft; nft list ruleset > {tmp_path}/after')
    assert done.returncode != 0 and "nothing changed" in done.stderr, done.stderr
    assert not (tmp_path / "etc").exists() or not _tree(tmp_path / "etc" / "forgeway")


def test_a_host_reached_through_the_tunnel_needs_its_jump_host_among_the_admin_peers() -> None:
    config, secret_keys = lab_stack()
    home = next(h for h in config["forgeway:hosts"] if h["name"] == "home")
    home.update(address="10.8.0.2", jump_host="vps")
    with pytest.raises(ConfigError) as raised:
        parse_stack(config, secret_keys)
    (problem,) = [p for p in raised.value.problems if p.key == "forgeway:tunnel.admin_peers"]
    assert problem.value == "[]" and "a list naming 'vps'" in problem.expected, str(problem)
    config["forgeway:tunnel"]["admin_peers"] = ["vps"]
    cfg, _ = parse_stack(config, secret_keys)
    assert "ip saddr 10.8.0.1 tcp dport 22 accept" in render_segment(
        segment_settings(cfg, tunnel_addresses(cfg)), "home"
    )


# --- the default backup repository: the GitLab host's SFTP to the VPS (issue 18) -----------------


def test_backups_to_the_vps_let_only_the_gitlab_host_reach_the_admin_ssh(tmp_path: Path) -> None:
    config, secret_keys = lab_stack()
    cfg, _ = parse_stack(config, secret_keys)
    settings = segment_settings(cfg, tunnel_addresses(cfg))
    assert settings.backup_sftp, "backups are on by default, to the VPS"
    body = _chain(render_segment(settings, "vps"), "input")
    ssh = [rule for rule in body if "2202" in rule]
    assert len(ssh) == 1 and ssh[0].startswith("ip saddr 10.8.0.2 tcp dport 2202 accept"), body
    assert body[-1].startswith("counter drop")
    listing = _loaded_listing(render_segment(settings, "vps"), tmp_path)
    assert "ip saddr 10.8.0.2 tcp dport 2202 accept" in listing, listing
    for host in ("home", "runner-arm", "runner-amd"):  # the peers' own tables are unchanged
        assert render_segment(settings, host) == render_segment(_lab(), host)
    config["forgeway:backup"] = {"repository": "s3:https://s3.example.org/bucket"}
    other, _ = parse_stack(config, secret_keys)
    assert not segment_settings(other, tunnel_addresses(other)).backup_sftp
    config["forgeway:backup"] = {"enabled": False}
    off, _ = parse_stack(config, secret_keys)
    assert render_segment(segment_settings(off, tunnel_addresses(off)), "vps") == render_segment(_lab(), "vps")


# --- the dual-stack tunnel (issue 20): every rule has its IPv6 twin --------------------------------


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_a_dual_stack_tunnel_gives_every_rule_its_ipv6_twin(tmp_path: Path, mode: ForwardingMode) -> None:
    config, secret_keys = lab_stack()
    config["forgeway:tunnel"]["ipv6"] = True  # as `make lab` applies it (tools/lab/config.py)
    cfg, _ = parse_stack(config, secret_keys)
    addresses6 = tunnel_addresses6(cfg)
    assert addresses6, "tunnel.ipv6 gives every host an IPv6 address"
    four = dataclasses.replace(segment_settings(cfg, tunnel_addresses(cfg)), mode=mode, admins=("runner-arm",))
    both = dataclasses.replace(
        segment_settings(cfg, tunnel_addresses(cfg), addresses6=addresses6), mode=mode, admins=("runner-arm",)
    )
    for host in both.names:
        v4, dual = render_segment(four, host), render_segment(both, host)
        for chain in ("forward", "input") if host == "vps" else ("prerouting",):
            rules4, rules = _chain(v4, chain), _chain(dual, chain)
            assert [r for r in rules if "ip6 " not in r and "icmpv6" not in r] == rules4, f"{host}: IPv4 rules changed"
            allows4 = [r for r in rules4 if " saddr " in r or " daddr " in r or "echo-request" in r]
            allows6 = [r for r in rules if "ip6 " in r or "icmpv6" in r]
            assert len(allows6) == len(allows4) >= 1, f"{host} ({mode}): {allows6} beside {allows4}"
            assert all(rule.endswith(twin.split(" accept ")[1]) for rule, twin in zip(allows6, allows4, strict=True))
            assert rules[-1] == rules4[-1] and "drop" in rules[-1], f"{host}: the default drop comes last"
        listing = _loaded_listing(dual, tmp_path)  # the kernel takes it
        if host != "vps":
            assert f"ip6 saddr {addresses6['vps']} icmpv6 type echo-request accept" in listing, listing
    home = _chain(render_segment(both, "home"), "prerouting")
    assert any(r.startswith("ip6 saddr fd77:6179:7761::1 tcp dport { 80, 443, 2222, 5050 } accept") for r in home)
    if mode == "preserve-source":
        assert any(r.startswith("ip6 saddr != fd77:6179:7761::/64 tcp dport") for r in home), home
    forward = _chain(render_segment(both, "vps"), "forward")
    assert any(r.startswith('oifname "wg0" ct status dnat ip6 daddr fd77:6179:7761::2 accept') for r in forward)
