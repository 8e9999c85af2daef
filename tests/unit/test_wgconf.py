"""WireGuard interface files (components/render/wgconf.py), read back by the real ``wg``.

``wg`` has no "check this file" mode: it parses a config only when it applies it to an
interface. So each real-tool test starts wireguard-go (there is no kernel module here)
in a throwaway user + network + mount namespace (``unshare -rnm``), which needs no
root and touches nothing outside: a tmpfs on /run holds wireguard-go's control socket,
and a bind-mounted /etc/hosts makes the DNS-name endpoint resolve without a network.
``wg setconf`` applies the rendered text (with a PrivateKey line added, as
tunnel-up.sh does) and ``wg showconf`` shows what the interface took.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.config import Tunnel
from components.render.wgconf import (
    TunnelHost,
    WgInterface,
    WgPeer,
    endpoint_interface,
    format_endpoint,
    peer_interface,
    render_setconf,
    render_settings,
    tunnel_files,
)
from components.render.wireguard import wg_public_key

pytestmark = pytest.mark.unit

V4 = ipaddress.IPv4Address
NET = ipaddress.ip_network


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


VPS_KEY, HOME_KEY, RUNNER_KEY = _key(), _key(), _key()
VPS = TunnelHost("vps", wg_public_key(VPS_KEY), V4("10.8.0.1"))
HOME = TunnelHost("home", wg_public_key(HOME_KEY), V4("10.8.0.2"))
RUNNER = TunnelHost("runner1", wg_public_key(RUNNER_KEY), V4("10.8.0.3"))
TUNNEL = Tunnel(uplink_mtu=1420)  # effective MTU 1340


def _vps() -> WgInterface:
    return endpoint_interface(tunnel=TUNNEL, address=VPS.address, peers=[HOME, RUNNER])


def _home(endpoint_host: str = "vps.example.org") -> WgInterface:
    return peer_interface(tunnel=TUNNEL, address=HOME.address, vps=VPS, endpoint_host=endpoint_host)


# --- the text ------------------------------------------------------------------------


def test_peer_side_renders_exactly_this() -> None:
    # The whole file, as a reviewer sees it.
    assert render_setconf(_home()) == (
        "# forgeway WireGuard config of wg0 for `wg setconf`.\n"
        "# No PrivateKey here on purpose: tunnel-up.sh adds it from a 0600 file through a pipe.\n"
        "[Interface]\n"
        "\n"
        "[Peer]\n"
        "# vps\n"
        f"PublicKey = {VPS.public_key}\n"
        "AllowedIPs = 10.8.0.0/24\n"
        "Endpoint = vps.example.org:51820\n"
        "PersistentKeepalive = 25\n"
    )


def test_vps_side_gives_each_peer_its_32_and_no_endpoint_or_keepalive() -> None:
    text = render_setconf(_vps())
    assert "ListenPort = 51820" in text
    assert f"PublicKey = {HOME.public_key}\nAllowedIPs = 10.8.0.2/32\n" in text
    assert f"PublicKey = {RUNNER.public_key}\nAllowedIPs = 10.8.0.3/32\n" in text
    assert "Endpoint" not in text and "PersistentKeepalive" not in text


def test_settings_carry_address_mtu_routes_and_implementation() -> None:
    assert render_settings(_home()).splitlines()[1:] == [
        "ADDRESS=10.8.0.2/24",
        "MTU=1340",
        "ROUTES=",  # the address's /24 already routes the tunnel subnet
        "IMPLEMENTATION=auto",
    ]


def test_routes_list_allowed_ips_beyond_the_tunnel_subnet() -> None:
    lan = WgPeer("home", HOME.public_key, (NET("10.8.0.2/32"), NET("192.168.10.0/24"), NET("192.168.11.0/24")))
    iface = WgInterface("wg0", ipaddress.ip_interface("10.8.0.1/24"), 51820, 1420, (lan,))
    assert "ROUTES=192.168.10.0/23\n" in render_settings(iface)


def test_no_private_key_in_any_rendered_file() -> None:
    for iface in (_vps(), _home()):
        for name, text in tunnel_files(iface).items():
            assert "privatekey" not in text.lower().replace("# no privatekey here", ""), name
            for secret in (VPS_KEY, HOME_KEY, RUNNER_KEY):
                assert secret not in text, name


def test_files_are_named_after_the_interface() -> None:
    assert sorted(tunnel_files(_home())) == ["wg0.conf", "wg0.env"]


def test_ipv6_endpoint_gets_brackets() -> None:
    assert format_endpoint("2001:db8::1", 51820) == "[2001:db8::1]:51820"
    assert format_endpoint("203.0.113.1", 51820) == "203.0.113.1:51820"
    assert "Endpoint = [2001:db8::1]:51820" in render_setconf(_home("2001:db8::1"))


# --- bad input: a clear error ---------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: WgPeer("home", "not-a-key", (NET("10.8.0.2/32"),)), "expected a WireGuard public key"),
        (lambda: WgPeer("home", HOME.public_key, ()), "allowed_ips is empty"),
        (lambda: WgPeer("home", HOME.public_key, (NET("10.8.0.2/32"),), endpoint="vps"), "expected host:port"),
        (
            lambda: WgPeer("home", HOME.public_key, (NET("10.8.0.2/32"),), endpoint="bad_host:1"),
            "neither an IPv4 address, a DNS name",
        ),
        (lambda: WgPeer("home\nPrivateKey = x", HOME.public_key, (NET("10.8.0.2/32"),)), "a peer name is"),
        (
            lambda: WgInterface(
                "wg0",
                ipaddress.ip_interface("10.8.0.1/24"),
                51820,
                1420,
                (
                    WgPeer("a", HOME.public_key, (NET("10.8.0.0/25"),)),
                    WgPeer("b", RUNNER.public_key, (NET("10.8.0.3/32"),)),
                ),
            ),
            "overlap",
        ),
        (lambda: WgInterface("wg0; reboot", ipaddress.ip_interface("10.8.0.1/24"), None, 1420, ()), "interface name"),
        (
            lambda: endpoint_interface(tunnel=TUNNEL, address=V4("10.9.0.1"), peers=[]),
            "outside tunnel.subnet",
        ),
    ],
)
def test_bad_input_is_refused_with_a_reason(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


# --- read back by wg (wireguard-go in a scratch namespace) ----------------------------

_APPLY = r"""
set -eu
mount -t tmpfs tmpfs /run
mkdir /run/wireguard
mount --bind "$1" /etc/hosts
ip link set lo up
wireguard-go -f wgt >/dev/null 2>&1 &
pid=$!
i=0
until [ -S /run/wireguard/wgt.sock ]; do
  i=$((i + 1)); [ "$i" -le 100 ] || { echo "wireguard-go did not start" >&2; exit 1; }
  sleep 0.05
done
status=0
wg setconf wgt /dev/stdin || status=$?
[ "$status" -ne 0 ] || wg showconf wgt
kill "$pid"
wait "$pid" || true
exit "$status"
"""


def _wg_apply(tmp_path: Path, text: str, private_key: str) -> subprocess.CompletedProcess[str]:
    """Apply ``text`` (+ PrivateKey) to a wireguard-go interface in ``unshare -rnm``."""
    for tool in ("wg", "wireguard-go", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup` (tools/ci/apt-packages.txt)")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n203.0.113.1 vps.example.org\n")
    with_key = text.replace("[Interface]\n", f"[Interface]\nPrivateKey = {private_key}\n", 1)
    done = subprocess.run(
        ["unshare", "-rnm", "sh", "-c", _APPLY, "apply", str(hosts)],
        input=with_key,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if "unshare" in done.stderr and "Operation not permitted" in done.stderr:
        pytest.fail(f"unshare -rnm is not allowed here (user namespaces off?): {done.stderr.strip()}")
    return done


def _showconf_peers(text: str) -> dict[str, dict[str, str]]:
    peers: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line == "[Peer]":
            current = {}
        elif current is not None and " = " in line:
            key, value = line.split(" = ", 1)
            current[key] = value
            if key == "PublicKey":
                peers[value] = current
    return peers


def test_wg_takes_the_vps_side(tmp_path: Path) -> None:
    done = _wg_apply(tmp_path, render_setconf(_vps()), VPS_KEY)
    assert done.returncode == 0, done.stderr
    assert "ListenPort = 51820" in done.stdout
    assert _showconf_peers(done.stdout) == {
        HOME.public_key: {"PublicKey": HOME.public_key, "AllowedIPs": "10.8.0.2/32"},
        RUNNER.public_key: {"PublicKey": RUNNER.public_key, "AllowedIPs": "10.8.0.3/32"},
    }


def test_wg_takes_the_peer_side_and_resolves_the_endpoint_name(tmp_path: Path) -> None:
    done = _wg_apply(tmp_path, render_setconf(_home()), HOME_KEY)
    assert done.returncode == 0, done.stderr
    assert _showconf_peers(done.stdout) == {
        VPS.public_key: {
            "PublicKey": VPS.public_key,
            "AllowedIPs": "10.8.0.0/24",
            "Endpoint": "203.0.113.1:51820",  # vps.example.org, from the bind-mounted hosts file
            "PersistentKeepalive": "25",
        }
    }


def test_the_harness_sees_wg_refuse_a_bad_file(tmp_path: Path) -> None:
    # Proves the tests above would catch a file wg cannot read.
    bad = render_setconf(_home()).replace("PersistentKeepalive = 25", "PersistentKeepalive = often")
    done = _wg_apply(tmp_path, bad, HOME_KEY)
    assert done.returncode != 0
    assert "Configuration parsing error" in done.stderr, done.stderr


def test_any_source_peer_accepts_every_source_but_adds_no_route() -> None:
    # preserve-source: DNATed packets keep the client's address, so the home device must
    # accept any source from the VPS; a default route into the tunnel would loop.
    cfg = WgInterface(
        "wg0",
        ipaddress.ip_interface("10.8.0.2/24"),
        None,
        1420,
        (WgPeer("vps", HOME.public_key, (NET("0.0.0.0/0"),), endpoint="203.0.113.10:51820", persistent_keepalive=25),),
    )
    assert "AllowedIPs = 0.0.0.0/0" in render_setconf(cfg)
    assert "ROUTES=\n" in render_settings(cfg)
