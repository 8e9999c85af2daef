"""`make lab` undone: a destroy gives every host back as it was, and `lab down` removes the lab.

The one test takes the session's lab down: it runs after the lab's other tests
(tests/lab/conftest.py), and a test after it anyway brings the lab up again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from tests.lab.make_lab import (
    LAB_DIR,
    MakeLab,
    assert_admin_ssh,
    assert_gitlab_destroyed,
    gitlab_runner_ids,
    namespaces,
)
from tools.lab.machine import Machine


def _assert_nothing_of_forgeway_left(machine: Machine) -> None:
    machine.fail(["ip", "link", "show", "wg0"])
    # No table of forgeway's on any host, of any family (ip, ip6, inet: the segmentation's too).
    assert "forgeway" not in machine.succeed(["nft", "list", "tables"]), f"a table left on {machine.name}"
    for family in ("-4", "-6"):  # no return-path rule or route of either family
        rules = machine.succeed(["ip", family, "rule", "show"])
        assert "fwmark" not in rules and "lookup 4680" not in rules, f"{machine.name}: {rules}"
        # Empty, or gone ("FIB table does not exist": IPv4 forgets a table with its last route).
        routes = machine.execute(["ip", family, "route", "show", "table", "4680"])
        assert routes.stdout.strip() == "", f"{machine.name}: table 4680 left: {routes.stdout}"
    etc = machine.path("/etc")
    leftovers = [*etc.rglob("forgeway*"), *etc.rglob("*segment*"), *etc.rglob("certs.d")]
    assert leftovers == [], f"files left on {machine.name}: {leftovers}"


def _assert_gitea_destroyed(lab: MakeLab, destroyed: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """Gitea's and Woodpecker's containers gone from every host, their protected volumes kept
    and named in the log, and Woodpecker's OAuth application gone from Gitea (the stand-in's
    database in the kept data volume)."""
    for name in ("home", "runner-arm", "runner-amd"):
        left = lab.machine(name).docker("ps", "-a", "--format", "{{.Names}}").split()
        assert not [c for c in left if c.startswith(("forgeway-gitea", "forgeway-woodpecker"))], f"{name}: {left}"
    home = lab.machine("home")
    volumes = set(home.docker("volume", "ls", "--format", "{{.Name}}").split())
    assert {"forgeway-gitea-data", "forgeway-woodpecker-server-data"} <= volumes, volumes
    for volume in ("home-gitea-data", "home-woodpecker-data"):
        assert volume in destroyed.stderr and "protected" in destroyed.stderr, destroyed.stderr
    data = home.docker("volume", "inspect", "--format", "{{.Mountpoint}}", "forgeway-gitea-data").strip()
    copy = tmp_path / "gitea.db"  # a copy: sqlite did not open it in place (through /proc/<pid>/root)
    copy.write_bytes(home.copy_from(data + "/gitea/gitea.db"))
    with closing(sqlite3.connect(copy)) as db:
        apps = db.execute("SELECT name FROM oauth2_application").fetchall()
    assert ("forgeway-woodpecker",) not in apps, f"Woodpecker's OAuth application outlived destroy: {apps}"


def test_destroy_restores_every_host_and_down_removes_the_lab(lab_on_either_forge: MakeLab, tmp_path: Path) -> None:
    """On the forge the lab has (after tests/lab/test_lab_gitea.py, Gitea's stack in
    preserve-source mode; alone, GitLab's)."""
    lab = lab_on_either_forge
    topology = lab.topology
    runner_ids = gitlab_runner_ids(lab) if lab.forge == "gitlab" else set()
    started = time.monotonic()
    destroyed = lab.run("destroy")
    print(f"{lab.forge} stack destroyed in {time.monotonic() - started:.0f} s")
    assert destroyed.returncode == 0, destroyed.stderr
    assert_admin_ssh(lab)  # after a destroy
    if lab.forge == "gitlab":
        assert_gitlab_destroyed(lab, destroyed, runner_ids)
    else:
        _assert_gitea_destroyed(lab, destroyed, tmp_path)
    vps = lab.machine("vps")
    assert vps.succeed(["nft", "list", "ruleset"]) == "", "the VPS ruleset is not back to empty"
    assert vps.succeed(["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "0"
    # forwarding.ipv6: forwarding-down.sh put IPv6 forwarding back as found (a lab namespace starts with 0).
    v6 = vps.succeed(["sysctl", "-n", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.eth0.forwarding"]).split()
    assert v6 == ["0", "0"], f"the VPS's IPv6 forwarding not as before: {v6}"
    for host in topology["hosts"]:
        _assert_nothing_of_forgeway_left(lab.machine(host["name"]))
    # The forge's dual-stack network (GitLab's or Gitea's) went with its container, and
    # forge-nat-down.sh put the forge host's IPv6 forwarding back as found (table ip6
    # forgeway_forge: the loop above).
    home = lab.machine("home")
    left = home.docker("network", "ls", "--format", "{{.Name}}").split()
    assert not {"forgeway-gitlab", "forgeway-gitea"} & set(left), left
    assert home.succeed(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).strip() == "0"
    from tools.lab.layout import SEEDED_DAEMON_JSON

    for name in ("runner-arm", "runner-amd"):
        restored = lab.machine(name).path("/etc/docker/daemon.json").read_text()
        assert restored == SEEDED_DAEMON_JSON, f"{name}: daemon.json not restored byte for byte"
        # docker forwarded IPv6 for runners.ipv6 and never stops; ipv6-ra-up.sh --restore put it back as
        # the host had it before forgeway (a lab namespace starts with 0), and eth0 takes RAs as before.
        conf = "/proc/sys/net/ipv6/conf"
        ipv6 = lab.machine(name).succeed(["cat", f"{conf}/all/forwarding", f"{conf}/eth0/accept_ra"])
        assert ipv6.split() == ["0", "1"], f"{name}: IPv6 forwarding / eth0 accept_ra not as before: {ipv6.split()}"
    from tools.lab.binfmt import handlers

    # binfmt-down.sh unregistered what runner-amd's up registered (this machine had none before)
    assert set(handlers()) == set(lab.handlers_before), "binfmt handlers differ from before the lab"
    runner = lab.machine("runner-amd")
    assert runner.docker("ps", "-aq", "--filter", "name=forgeway-binfmt").strip() == ""

    from tools.lab.nspawn import container_pid1

    inits = [container_pid1(Path(h["state"])) for h in topology["hosts"] if h.get("boots")]
    started = time.monotonic()
    down = lab.run("down")
    print(f"lab down in {time.monotonic() - started:.0f} s")
    assert down.returncode == 0, down.stderr
    assert not any(n.startswith("fwl-") for n in namespaces())
    assert not LAB_DIR.exists()
    pids = [h["pid"] for h in topology["hosts"]] + [d["pid"] for d in topology["docker"].values()] + inits
    listed = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))], capture_output=True, text=True, check=False
    )
    # A dead process whose new parent (PID 1 here) has not reaped it yet shows as Z.
    alive = [line for line in listed.stdout.splitlines() if not line.split()[1].startswith("Z")]
    assert alive == [], f"lab processes still running: {alive}"
