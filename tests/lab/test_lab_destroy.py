"""`make lab` undone: a destroy gives every host back as it was, and `lab down` removes the lab.

The one test takes the session's lab down: it runs after the lab's other tests
(tests/lab/conftest.py), and a test after it anyway brings the lab up again.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.lab.make_lab import LAB_DIR, MakeLab, assert_admin_ssh, namespaces
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


def test_destroy_restores_every_host_and_down_removes_the_lab(lab_to_take_down: MakeLab) -> None:
    lab = lab_to_take_down
    topology = lab.topology
    runner_ids = {
        str(entry["id"]) for urn, entry in lab.state().items() if urn.startswith("gitlab:index/userRunner:UserRunner::")
    }
    assert len(runner_ids) == 2, f"the lab registers one runner per runner host: {runner_ids}"
    destroyed = lab.run("destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    assert_admin_ssh(lab)  # after a destroy
    # GitLab's volumes are protected and retained: the container goes, the data stays, and it says so.
    home = lab.machine("home")
    assert home.docker("ps", "-aq", "--filter", "name=forgeway-gitlab").strip() == ""
    volumes = home.docker("volume", "ls", "--format", "{{.Name}}").split()
    assert {"forgeway-gitlab-config", "forgeway-gitlab-logs", "forgeway-gitlab-data"} <= set(volumes)
    for role in ("config", "logs", "data"):
        assert f"home-gitlab-{role}" in destroyed.stderr and "protected" in destroyed.stderr, destroyed.stderr
    # GitLab itself forgot the runners and the API token (the stand-in's database, in the kept data volume).
    data = home.docker("volume", "inspect", "--format", "{{.Mountpoint}}", "forgeway-gitlab-data").strip()
    database = json.loads(home.path(data + "/gitlab-rails/forgeway-standin.json").read_text())
    left = runner_ids & {str(key) for key in database["runners"]}
    assert not left, f"runners {sorted(left)} outlived destroy in GitLab"
    assert all(t["revoked"] for t in database["tokens"] if t["name"] == "forgeway-provisioner"), "API token not revoked"
    vps = lab.machine("vps")
    assert vps.succeed(["nft", "list", "ruleset"]) == "", "the VPS ruleset is not back to empty"
    assert vps.succeed(["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "0"
    # forwarding.ipv6: forwarding-down.sh put IPv6 forwarding back as found (a lab namespace starts with 0).
    v6 = vps.succeed(["sysctl", "-n", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.eth0.forwarding"]).split()
    assert v6 == ["0", "0"], f"the VPS's IPv6 forwarding not as before: {v6}"
    for host in topology["hosts"]:
        _assert_nothing_of_forgeway_left(lab.machine(host["name"]))
    # GitLab's dual-stack network went with its container, and forge-nat-down.sh put the forge
    # host's IPv6 forwarding back as found (table ip6 forgeway_forge: the loop above).
    assert "forgeway-gitlab" not in home.docker("network", "ls", "--format", "{{.Name}}").split()
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
    down = lab.run("down")
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
