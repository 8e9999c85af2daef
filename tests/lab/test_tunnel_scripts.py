"""tunnel-up.sh / tunnel-down.sh on two network namespaces joined by a veth (the hosts:
tests/lab/tunnel_hosts.py): the tunnel carries pings, a second run changes nothing, the key
stays private, down removes what up added, the boot units bring it back, drift is repaired.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.render.wireguard import wg_public_key
from components.scripts import script_command
from tests.lab.tunnel_hosts import IFACE, VPS_NAME, Pair, _alive, _ok, _run, tunnel_pair

pytestmark = pytest.mark.lab


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with tunnel_pair(tmp_path) as made:
        yield made


def test_ping_crosses_the_tunnel_both_ways(pair: Pair) -> None:
    assert pair.home.ping("10.8.0.1"), "home cannot ping the VPS through wg0"
    assert pair.vps.ping("10.8.0.2"), "the VPS cannot ping home through wg0"


def test_second_up_changes_nothing(pair: Pair) -> None:
    assert pair.home.ping("10.8.0.1")
    before = {h.name: (h.wireguard_go_pid(), h.ifindex(), h.showconf()) for h in pair.hosts}
    for host in pair.hosts:
        done = host.up()
        assert done.stdout == f"ok {IFACE}: nothing to change\n", f"{host.name}: {done.stdout}{done.stderr}"
    after = {h.name: (h.wireguard_go_pid(), h.ifindex(), h.showconf()) for h in pair.hosts}
    assert after == before  # same process, same interface, same config
    assert all(_alive(h.wireguard_go_pid()) for h in pair.hosts)


def test_key_is_0600_and_in_no_argv_output_or_other_file(pair: Pair) -> None:
    for host in pair.hosts:
        key_file = host.state / f"{IFACE}.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text() == host.private_key + "\n"
    pair.home.up()  # a second pass under the watch
    time.sleep(0.05)
    assert pair.watch.passes > 0
    assert not pair.watch.hits, f"a private key appeared in a command line: {pair.watch.hits}"
    keys = [h.private_key for h in pair.hosts]
    for host in pair.hosts:
        assert not any(k in out for k in keys for out in host.outputs), f"{host.name}: key in script output"
        for path in [*host.base.rglob("*")]:
            if path.is_file() and not path.is_socket() and path.name != f"{IFACE}.key":
                text = path.read_text(errors="replace")
                assert not any(k in text for k in keys), f"key in {path}"


def test_down_removes_what_up_added(pair: Pair) -> None:
    pids = {h.name: h.wireguard_go_pid() for h in pair.hosts}
    for host in pair.hosts:
        host.down()
        assert not _alive(pids[host.name]), f"{host.name}: wireguard-go {pids[host.name]} still runs"
        assert host.ifindex() is None, f"{host.name}: {IFACE} still exists"
        assert not host.run_dir.exists(), f"{host.name}: {list(host.run_dir.rglob('*'))}"
        left = sorted(str(p.relative_to(host.etc)) for p in host.etc.rglob("*"))
        assert left == ["systemd", "systemd/system"], f"{host.name}: left behind {left}"
        assert host.down().stdout == f"ok {IFACE}: nothing to remove\n"


def test_units_are_valid_for_systemd(pair: Pair) -> None:
    units = pair.home.etc / "systemd" / "system"
    assert (units / "multi-user.target.wants" / "forgeway-tunnel@wg0.service").resolve().is_file()
    assert (units / "timers.target.wants" / "forgeway-tunnel-reresolve@wg0.timer").resolve().is_file()
    # The VPS's peers have no DNS-name endpoint: nothing to re-resolve there.
    assert not (pair.vps.etc / "systemd" / "system" / "forgeway-tunnel-reresolve@.timer").exists()
    for template in units.glob("forgeway-*@.*"):
        instance = pair.home.base / template.name.replace("@.", "@wg0.")
        instance.write_text(template.read_text())
        done = _run(["systemd-analyze", "verify", str(instance)])
        assert done.returncode == 0 and not done.stderr.strip(), f"{template.name}: {done.stderr}"


def test_boot_path_brings_the_tunnel_back_after_a_reboot(pair: Pair) -> None:
    assert pair.home.ping("10.8.0.1")
    old = {h.name: h.wireguard_go_pid() for h in pair.hosts}
    for host in pair.hosts:
        host.reboot()
    assert not pair.home.ping("10.8.0.1", wait=0)
    for host in pair.hosts:
        done = host.boot()
        assert done.returncode == 0, f"{host.name} boot: {done.stdout}{done.stderr}"
        assert f"created (wireguard-go, pid {host.wireguard_go_pid()})" in done.stdout
        assert host.wireguard_go_pid() != old[host.name]
    assert pair.home.ping("10.8.0.1"), "no tunnel after the boot path"
    assert pair.vps.ping("10.8.0.2")


def test_boot_without_dns_comes_up_and_the_reresolve_unit_sets_the_endpoint(pair: Pair) -> None:
    pair.home.reboot()
    no_name = pair.home.base / "hosts-without-vps"
    no_name.write_text("127.0.0.1 localhost\n")
    done = pair.home.boot(hosts=no_name, WG_ENDPOINT_RESOLUTION_RETRIES="0")
    assert done.returncode == 0, done.stderr
    assert "did not resolve" in done.stderr
    assert "Endpoint" not in pair.home.showconf()  # up, peers set, nowhere to send yet
    command, env = pair.home.unit_command("forgeway-tunnel-reresolve@.service")
    done = pair.home.sh(command, env=env)  # DNS works again
    assert done.returncode == 0, done.stderr
    assert f"endpoint {VPS_NAME}:51820" in done.stdout
    assert pair.home.ping("10.8.0.1"), "no tunnel after re-resolving the endpoint"
    assert pair.home.sh(command, env=env).stdout == ""  # a working tunnel is left alone


def test_up_repairs_drift(pair: Pair) -> None:
    home = pair.home
    home.machine.succeed(["ip", "link", "set", "dev", IFACE, "mtu", "1300"])
    home.machine.succeed(["ip", "addr", "add", "10.8.0.99/24", "dev", IFACE])
    home.wg("set", IFACE, "peer", wg_public_key(pair.vps.private_key), "remove")
    pid = home.wireguard_go_pid()
    done = home.up()
    for what in ("peers and private key", "address 10.8.0.2/24", "mtu 1420"):
        assert f"changed {IFACE}: {what}" in done.stdout, done.stdout
    assert home.wireguard_go_pid() == pid  # repaired in place, not restarted
    assert home.ping("10.8.0.1")


def test_up_refuses_what_is_not_a_key_and_keeps_the_old_one(pair: Pair) -> None:
    key_file = pair.home.state / f"{IFACE}.key"
    before = key_file.read_text()
    line = script_command("tunnel-up.sh", IFACE, str(pair.home.rendered))
    done = pair.home.sh(["sh", "-c", line], stdin="not a key\n")
    assert done.returncode == 1
    assert "stdin is not a WireGuard private key" in done.stderr
    assert key_file.read_text() == before


def test_a_new_key_is_applied_without_restarting_wireguard_go(pair: Pair) -> None:
    new_key = _ok(["wg", "genkey"]).stdout.strip()
    pid = pair.home.wireguard_go_pid()
    done = pair.home.up(new_key)
    assert f"changed {IFACE}: {pair.home.state / IFACE}.key\n" in done.stdout and "peers and private key" in done.stdout
    assert pair.home.wireguard_go_pid() == pid
    assert pair.home.wg("show", IFACE, "public-key").strip() == wg_public_key(new_key)


def test_implementation_kernel_is_detected_never_assumed(pair: Pair) -> None:
    # Whatever this machine has, the script must find out: try the kernel type here.
    probe = pair.home.machine.execute(["ip", "link", "add", "fwprobe", "type", "wireguard"])
    pair.home.machine.execute(["ip", "link", "delete", "fwprobe"])
    kernel_works = probe.returncode == 0
    rendered = pair.home.base / "rendered-kernel"
    rendered.mkdir()
    for name, text in {
        "wg1.conf": (pair.home.rendered / "wg0.conf").read_text(),
        "wg1.env": (pair.home.rendered / "wg0.env")
        .read_text()
        .replace("IMPLEMENTATION=auto", "IMPLEMENTATION=kernel")
        .replace("10.8.0.2/24", "10.9.0.2/24"),
    }.items():
        (rendered / name).write_text(text)
    done = pair.home.sh(["sh", "-c", script_command("tunnel-up.sh", "wg1", str(rendered))], stdin=pair.home.private_key)
    if kernel_works:
        assert done.returncode == 0 and "created (kernel)" in done.stdout, done.stderr
    else:
        assert done.returncode == 1
        assert "IMPLEMENTATION=kernel, but `ip link add wg1 type wireguard` fails here" in done.stderr
        assert not (pair.home.run_dir / "wg1.pid").exists()  # no wireguard-go fallback
    pair.home.sh(["sh", "-c", script_command("tunnel-down.sh", "wg1")])
