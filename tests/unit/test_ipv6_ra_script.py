"""ipv6-ra-up.sh (and its --restore) in a scratch user and network namespace (``unshare -rn``).

Each case is a shell scenario: a veth pair ``e0``/``e1`` (and ``e2``/``e3`` where the
uplink moves), a default route put there by hand, the scripts run with FORGEWAY_ETC in
the test's directory, and ``docker`` stood in for by what it does to the sysctls
(``net.ipv6.conf.all.forwarding=1``); the sysctl.d file is read back by systemd-sysctl,
as at boot. A hand-made route is not an RA route: that the
route survives router lifetimes is tests/lab/test_ipv6_ra_lab.py's, with radvd.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components.scripts import script

pytestmark = pytest.mark.unit

PRELUDE = """set -eu
for pair in "e0 e1" "e2 e3"; do
  set -- $pair; ip link add "$1" type veth peer name "$2"; ip link set "$1" up; ip link set "$2" up
done
ip -6 addr add 2001:db8:6::2/64 dev e0 nodad
ip -6 addr add 2001:db8:7::2/64 dev e2 nodad
snap() {
  for d in /proc/sys/net/ipv6/conf/*/; do echo "$(basename "$d") $(cat "$d/forwarding") $(cat "$d/accept_ra")"; done
}
as_docker() { echo 1 >/proc/sys/net/ipv6/conf/all/forwarding; }
ra() { cat /proc/sys/net/ipv6/conf/$1/accept_ra; }
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare is missing (util-linux, tools/ci/apt-packages.txt)")
    (tmp_path / "ipv6-ra-up.sh").write_text(script("ipv6-ra-up.sh"))
    etc = tmp_path / "etc"
    scenario = f'{PRELUDE}\nUP="sh {tmp_path}/ipv6-ra-up.sh"; DOWN="sh {tmp_path}/ipv6-ra-up.sh --restore"\n{body}'
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FORGEWAY_ETC": str(etc), "TMPDIR": str(tmp_path)}
    return subprocess.run([unshare, "-rn", "sh", "-c", scenario], capture_output=True, text=True, env=env, check=False)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_uplink_takes_ras_while_forwarding_and_delete_restores_every_sysctl(tmp_path: Path) -> None:
    out = _ok(
        _run(
            tmp_path,
            """ip -6 route add default via 2001:db8:6::1 dev e0
snap >"$TMPDIR/before"
echo "== first"; $UP
echo "== second"; $UP
as_docker
echo "== live e0 $(ra e0) e1 $(ra e1)"
echo "== file"; cat "$FORGEWAY_ETC/sysctl.d/60-forgeway-ipv6-ra.conf"
echo 1 >/proc/sys/net/ipv6/conf/e0/accept_ra  # as after a reboot, before boot applies sysctl.d
/lib/systemd/systemd-sysctl "$FORGEWAY_ETC/sysctl.d/60-forgeway-ipv6-ra.conf"
echo "== at boot e0 $(ra e0)"
echo "== down"; $DOWN
echo "== down again"; $DOWN
snap >"$TMPDIR/after"
cmp "$TMPDIR/before" "$TMPDIR/after" && echo "== sysctls as before"
[ ! -e "$FORGEWAY_ETC" ] && echo "== nothing left"
""",
        )
    )
    first, second = out.split("== first")[1].split("== second")
    second = second.split("== live")[0]
    assert "net.ipv6.conf.e0.accept_ra=2 (was 1)" in first, out
    assert "changed" not in second and "ok ipv6-ra: nothing to change" in second, out
    assert "== live e0 2 e1 1" in out, "only the uplink's accept_ra changes"
    assert "net/ipv6/conf/e0/accept_ra = 2" in out.split("== file")[1], out
    assert "== at boot e0 2" in out, "systemd-sysctl, which reads sysctl.d at boot, sets it again"
    down, again = out.split("== down")[1], out.split("== down again")[1]
    assert "net.ipv6.conf.all.forwarding=0" in down and "net.ipv6.conf.e0.accept_ra=1" in down, out
    assert "changed" not in again.split("==")[0] and "nothing to undo" in again, out
    assert "== sysctls as before" in out and "== nothing left" in out, out


def test_no_ipv6_default_route_changes_no_accept_ra_and_says_so(tmp_path: Path) -> None:
    out = _ok(
        _run(
            tmp_path,
            """$UP
echo "== e0 $(ra e0)"
[ ! -e "$FORGEWAY_ETC/sysctl.d" ] && echo "== no sysctl file"
as_docker; $DOWN
echo "== forwarding $(cat /proc/sys/net/ipv6/conf/all/forwarding)"
""",
        )
    )
    assert "no IPv6 default route on this host" in out and "== e0 1" in out and "== no sysctl file" in out, out
    assert "== forwarding 0" in out, "forwarding is recorded and restored with or without an uplink"


def test_an_uplink_that_takes_no_ras_is_left_alone(tmp_path: Path) -> None:
    out = _ok(
        _run(
            tmp_path,
            """echo 0 >/proc/sys/net/ipv6/conf/e0/accept_ra
ip -6 route add default via 2001:db8:6::1 dev e0
$UP; echo "== e0 $(ra e0)"
[ ! -e "$FORGEWAY_ETC/sysctl.d/60-forgeway-ipv6-ra.conf" ] && echo "== no sysctl file"
""",
        )
    )
    assert "e0 takes no router advertisements (accept_ra=0)" in out and "== e0 0" in out, out
    assert "== no sysctl file" in out, out


def test_a_moved_uplink_gives_the_old_one_back_and_a_lost_route_keeps_the_record(tmp_path: Path) -> None:
    out = _ok(
        _run(
            tmp_path,
            """ip -6 route add default via 2001:db8:6::1 dev e0
$UP >/dev/null
ip -6 route del default; ip -6 route add default via 2001:db8:7::1 dev e2
echo "== moved"; $UP
echo "== e0 $(ra e0) e2 $(ra e2)"
ip -6 route del default
echo "== lost"; $UP
echo "== e2 $(ra e2)"; cat "$FORGEWAY_ETC/sysctl.d/60-forgeway-ipv6-ra.conf"
$DOWN >/dev/null; echo "== down e0 $(ra e0) e2 $(ra e2)"
""",
        )
    )
    moved = out.split("== moved")[1].split("== e0")[0]
    assert "net.ipv6.conf.e0.accept_ra=1 (restored: e0 is no longer the uplink)" in moved, out
    assert "net.ipv6.conf.e2.accept_ra=2 (was 1)" in moved and "== e0 1 e2 2" in out, out
    lost = out.split("== lost")[1]
    assert "keeping accept_ra=2 on the uplink recorded before" in lost and "== e2 2" in lost, out
    assert "net/ipv6/conf/e2/accept_ra = 2" in lost and "conf/e0/" not in lost, out
    assert "== down e0 1 e2 1" in out, out
