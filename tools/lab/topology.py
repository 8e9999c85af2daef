"""`make lab` / `make lab-down`: the lab topology on this machine, and the lab stack on it.

Topology (network namespaces ``fwl-*``; addresses exist only inside them):

    client 203.0.113.100 ─┐   (and 2001:db8::100)
    vps    203.0.113.10  ─┼─ fwl-inet (a bridge: "the internet", 203.0.113.0/24
    cgnat  203.0.113.20  ─┤      and 2001:db8::/64; the VPS 2001:db8::10, cgnat 2001:db8::20)
                          │      the deployer (root namespace) is 203.0.113.254 and 2001:db8::254 on it
      │ 100.64.0.1        │
      ├─ homegw 100.64.0.2 (the home router: NAT to the CGNAT)
      │    └─ 198.51.100.1 bridge: the home LAN; the deployer is 198.51.100.254 on it
      │         home 198.51.100.2, runner-amd .4
      └─ 2001:db8:6::1 ── runner-arm 2001:db8:6::2: IPv6 only (no IPv4 on its uplink), routed by
           the CGNAT, no route from this machine: the deployer reaches it through the VPS (jump host)

Every host (vps, home and the runners) boots: systemd is its PID 1, in systemd-nspawn
inside its namespace, with its own root file system, sshd, host key and users
(tools/lab/nspawn.py); on home and the runners systemd also starts dockerd.
`python -m tools.lab reboot HOST...|all` reboots hosts for real. The
CGNAT router masquerades the home side with a short UDP timeout, so nothing reaches
home unless home dials out. The lab stack is applied with tools/applier: host arch
checks, the tunnel, the forwarding, the CA, GitLab's container and every docker
daemon's trust. The home device and both runners run Debian's docker.service in
their root; the client gets a dockerd of the lab's (tools/lab/docker.py); GitLab's
image is a stand-in built from Debian (tools/lab/images.py, tools/lab/standin_image/):
nothing can be pulled here. Names: each host's /etc/hosts and ``/etc/netns/fwl-*/hosts``
say that gitlab.forgeway.test is the VPS.

The deployer logs in as non-root users with passwordless sudo, as on real hosts
(Pulumi.prod.yaml): ``fwl-admin`` on the VPS, ``fwl-forgeway`` (in the docker group)
on the others, each in its host's own root with a sudoers drop-in there.

``runner-arm`` is declared arm64: its sshd gives sessions a PATH whose ``uname``
says aarch64, so the arch check passes; nothing arm64 runs (this machine is x86_64).

`make lab` is idempotent (an existing topology is kept; the apply is a no-op when
nothing changed); `make lab-down` destroys the stack's resources, stops every
process it started by PID and deletes the namespaces, veths and the lab directory.
The description of what was built is in ``.lab/topology.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.lab.binfmt import remove_leftovers
from tools.lab.config import lab_config
from tools.lab.hosts import (
    host_sshd_answers,
    keygen,
    start_booting_host,
    start_docker_hosts,
    wait_booted,
    write_name_files,
)
from tools.lab.layout import (
    CLIENT,
    CLIENT_V6,
    DEPLOYER_INTERNET,
    DEPLOYER_INTERNET_V6,
    DEPLOYER_LAN,
    HOSTS,
    LAB_DIR,
    LAB_HOME,
    LAB_LINK,
    PREFIX,
    PUBLIC_NAMES,
    ROOT,
    STATE,
    TOPOLOGY,
    VPS_ADDRESS_V6,
)
from tools.lab.network import DEPLOYER, build_network, ns


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _make_lab_dir() -> None:
    """LAB_DIR (mode 0711: the deployer's users traverse it; secrets in it are 0600) and
    the clone's `.lab` link to it."""
    LAB_HOME.mkdir(mode=0o755, exist_ok=True)
    LAB_DIR.mkdir(exist_ok=True)
    LAB_DIR.chmod(0o711)
    if LAB_LINK.is_symlink() and LAB_LINK.resolve() == LAB_DIR:
        return
    if LAB_LINK.exists() or LAB_LINK.is_symlink():
        raise RuntimeError(f"{LAB_LINK} exists and is not the lab's link to {LAB_DIR}: run `make lab-down` first")
    LAB_LINK.symlink_to(LAB_DIR)


def _gitea_images(topology: dict[str, Any]) -> None:
    """The Gitea variant's stand-in images (tools/lab/images.py) in the daemons that run them:
    Gitea and Woodpecker's server on home, an agent on each runner host, labelled with the
    host's declared arch (the agent stand-in reports its image's platform, as the real one
    reports the machine's)."""
    from concurrent.futures import ThreadPoolExecutor

    from tools.lab.docker import DaemonInfo
    from tools.lab.images import (
        GITEA_STANDIN,
        WOODPECKER_AGENT_STANDIN,
        WOODPECKER_SERVER_STANDIN,
        ensure_image,
        ensure_image_as,
    )
    from tools.lab.layout import RUNNER_HOSTS

    def load(name: str) -> None:
        daemon = DaemonInfo.from_json(topology["docker"][name])
        if name == "home":
            ensure_image(daemon, GITEA_STANDIN)
            ensure_image(daemon, WOODPECKER_SERVER_STANDIN)
        else:
            ensure_image_as(daemon, WOODPECKER_AGENT_STANDIN, RUNNER_HOSTS[name])

    with ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(load, name) for name in ("home", *RUNNER_HOSTS)]:
            done.result()


def up(
    mode: str | None = None, overrides: list[str] | None = None, seed: int | None = None, forge: str = "gitlab"
) -> int:
    """Build the topology if it is not there, then apply the lab stack (``forge``: its
    GitLab or its Gitea variant, tools/lab/config.py). Both are one stack, one state, as a
    user's: switching forges on it meets the guard and the old forge's protected volumes
    (docs/lab-gitea.md)."""
    from tools.stack.synth import stack_config_strings

    if not TOPOLOGY.exists():
        if any(line.startswith(PREFIX) for line in DEPLOYER.succeed(["ip", "netns", "list"]).splitlines()):
            print("lab: namespaces fwl-* exist without .lab/topology.json; run `make lab-down` first", file=sys.stderr)
            return 1
        _make_lab_dir()
        record: dict[str, Any] = {"hosts": []}
        try:
            deployer_pub = keygen(LAB_DIR / "deployer")
            build_network()
            write_name_files()
            # Every host boots, all at once.
            for spec in HOSTS:
                record["hosts"].append(start_booting_host(spec, LAB_DIR / "hosts" / spec.name, deployer_pub))
                # Record each started host at once, so lab-down finds it even if a later step fails.
                TOPOLOGY.with_suffix(".partial").write_text(json.dumps(record))
            for host in record["hosts"]:
                wait_booted(host)
            start_docker_hosts(record)
        except Exception:
            down()
            raise
        _write_private(LAB_DIR / "runner-tokens.json", "{}")
        topology = {
            **record,
            "namespaces": sorted(
                line.split()[0]
                for line in DEPLOYER.succeed(["ip", "netns", "list"]).splitlines()
                if line.startswith(PREFIX)
            ),
            "client": {"netns": ns("client"), "address": CLIENT, "address6": CLIENT_V6},
            "deployer": {"internet": DEPLOYER_INTERNET, "internet6": DEPLOYER_INTERNET_V6, "lan": DEPLOYER_LAN},
            "public_ports": [80, 443, 22, 5050],
            "public_names": list(PUBLIC_NAMES),
            "vps_public_address": next(h.address for h in HOSTS if h.name == "vps"),
            "vps_public_address6": VPS_ADDRESS_V6,
            "ca_certificate": str(LAB_DIR / "ca.crt"),
        }
        TOPOLOGY.write_text(json.dumps(topology, indent=1) + "\n")
        print(f"lab: built {len(topology['namespaces'])} namespaces; described in .lab/{TOPOLOGY.name}")
    topology = json.loads(TOPOLOGY.read_text())
    config, secret_keys = lab_config(topology, mode, overrides, forge)
    if forge == "gitea":
        _gitea_images(topology)
    # The applier runs independent resources concurrently in an order drawn from the seed
    # (printed; None: FORGEWAY_APPLY_SEED, else a fresh one).
    returncode, changes = _applier({"action": "apply", "stack": "lab", "config": stack_config_strings(config),
                                    "secret_keys": secret_keys, "state": str(STATE), "seed": seed})  # fmt: skip
    if returncode != 0:
        return returncode
    changed = [c for c in changes if c["op"] != "same"]
    print(f"lab: applied the lab stack: {len(changed)} change(s), {len(changes) - len(changed)} unchanged")
    # The stack's CA (the stack output ca_certificate), for clients to trust.
    state = json.loads(STATE.read_text())["entries"]
    ca = state.get("tls:index/selfSignedCert:SelfSignedCert::ca-cert")
    if ca is not None:
        Path(topology["ca_certificate"]).write_text(ca["outputs"]["certPem"])
    _print_runners(state)
    name, vps = config.get(f"forgeway:{forge}", {}).get("domain", PUBLIC_NAMES[0]), topology["vps_public_address"]
    product = "Gitea" if forge == "gitea" else "GitLab"
    print(
        f"lab: {product} through the VPS: ip netns exec {ns('client')} curl --cacert {topology['ca_certificate']} "
        f"--resolve {name}:443:{vps} https://{name}/"
    )
    return 0


def _print_runners(state: dict[str, Any]) -> None:
    """The runners the program created through GitLab's API, with what GitLab holds (issue 17)."""
    for key, entry in sorted(state.items()):
        if key.startswith("gitlab:index/userRunner:UserRunner::"):
            inputs, host = entry.get("inputs", {}), key.split("::", 1)[1].removesuffix("-runner-registration")
            level, tags = inputs.get("accessLevel"), ",".join(inputs.get("tagLists", []))
            print(f"lab: runner {host}: GitLab runner {entry.get('id')}, access_level {level}, tags {tags}")


def _applier_run(request: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """tools.applier in its own process (one program run per process); request on stdin.

    The request carries the lab's stand-in for the deployer's DNS (``resolve``): the
    public names at the VPS's public address (tools/applier/gitlab.py); and, for the
    containers it creates, at its public IPv6 address too (``resolve6``, AAAA: an
    IPv6-only runner host's containers reach GitLab over IPv6), unless the request says."""
    if TOPOLOGY.exists():
        described = json.loads(TOPOLOGY.read_text())
        names, v4, v6 = (
            described.get("public_names", []),
            described["vps_public_address"],
            described.get("vps_public_address6"),
        )
        request = {"resolve": {name: v4 for name in names}, "resolve6": {name: v6 for name in names if v6}, **request}
    return subprocess.run(
        [sys.executable, "-m", "tools.applier"],
        input=json.dumps(request),
        text=True,
        capture_output=True,
        cwd=ROOT,
        check=False,
    )


def _applier(request: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """:func:`_applier_run` with its log on stderr: its exit status and, when it succeeded, its changes."""
    done = _applier_run(request)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode, []
    return 0, [json.loads(line) for line in done.stdout.splitlines()]


def destroy() -> int:
    """Destroy the stack's resources on the lab hosts (either forge), keep the topology (for tests)."""
    # As `pulumi destroy --exclude-protected`: the forge's volumes stay (and the log says so).
    returncode, _ = _applier({"action": "destroy", "state": str(STATE), "exclude_protected": True})
    return returncode


def refresh() -> int:
    """`pulumi refresh` of the lab stack: the state takes what the providers read back."""
    returncode, changes = _applier({"action": "refresh", "state": str(STATE)})
    if returncode != 0:
        return returncode
    read = [c for c in changes if c["op"] != "same"]
    print(f"lab: refreshed the lab stack: {len(read)} read back differently, {len(changes) - len(read)} unchanged")
    return 0


def _stop_started(errors: list[str]) -> None:
    """Stop, by PID, every dockerd and host that (partial) topology files record."""
    from tools.lab.docker import DaemonInfo
    from tools.lab.dockerd import stop_dockerd

    for described in (TOPOLOGY, TOPOLOGY.with_suffix(".partial")):
        if not described.exists():
            continue
        data = json.loads(described.read_text())
        for name, daemon in data.get("docker", {}).items():
            if daemon.get("in_host"):
                continue  # systemd in the host stops it when the host powers off
            # A restarted daemon's current record is in its work directory.
            current = Path(daemon["work"]) / "daemon.json"
            record = json.loads(current.read_text()) if current.exists() else daemon
            try:
                stop_dockerd(DaemonInfo.from_json(record), remove=False)  # .lab/ goes in down()
            except RuntimeError as exc:
                errors.append(f"dockerd of {name}: {exc}")
        from tools.lab.nspawn import stop_all

        # Every host powers off at once.
        stop_all([(h["pid"], Path(h["state"]), Path(h["root"]), h["name"]) for h in data["hosts"]])


def _remove_host_cgroups() -> None:
    """The booting hosts' cgroups, once what a killed supervisor left running is gone too."""
    from tools.lab.nspawn import CGROUPS, remove_cgroups

    deadline = time.monotonic() + 10
    for host in HOSTS:
        remove_cgroups(host.name)
        while any(CGROUPS.glob(f"*/fwl-{host.name}")) and time.monotonic() < deadline:
            time.sleep(0.2)  # its processes, killed just now, may take a moment to go
            remove_cgroups(host.name)


def down() -> int:
    """Destroy the stack's resources, stop our processes by PID, delete the namespaces."""
    errors: list[str] = []
    if STATE.exists() and TOPOLOGY.exists():
        done = _applier_run({"action": "destroy", "state": str(STATE), "exclude_protected": True})
        if done.returncode != 0:
            errors.append(f"destroy: {done.stderr.strip()}")
    _stop_started(errors)
    try:  # what a destroy that never ran or failed left in the kernel
        for name in remove_leftovers(LAB_DIR):
            print(f"lab-down: removed binfmt handler {name}, registered by a lab host")
    except RuntimeError as failure:
        errors.append(str(failure))
    for line in DEPLOYER.succeed(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            # Whatever still runs in a lab namespace (e.g. a wireguard-go a test started) goes too.
            for pid in DEPLOYER.execute(["ip", "netns", "pids", name]).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            DEPLOYER.execute(["ip", "netns", "delete", name])
    _remove_host_cgroups()
    for link in ("fwl-inet0", "fwl-lan0"):
        DEPLOYER.execute(["ip", "link", "delete", link])
    for directory in Path("/etc/netns").glob(f"{PREFIX}*"):
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(LAB_DIR, ignore_errors=True)
    if LAB_LINK.is_symlink():
        LAB_LINK.unlink()
    else:  # a lab of a version that kept its files in the clone
        shutil.rmtree(LAB_LINK, ignore_errors=True)
    with contextlib.suppress(OSError):
        LAB_HOME.rmdir()  # only when no other clone's lab is in it
    for err in errors:
        print(f"lab-down: {err}", file=sys.stderr)
    print("lab-down: namespaces, processes and .lab/ removed")
    return 1 if errors else 0


REBOOT_TIMEOUT = 120.0


def reboot(names: list[str]) -> int:
    """Reboot lab hosts for real (`systemctl reboot` in each, all at once); one JSON line
    per host on stdout as soon as its sshd answers again with its own key."""
    import threading

    from tools.lab.nspawn import boot_count, inside, running

    if not TOPOLOGY.exists():
        print("lab: no lab is up (.lab/topology.json): run `make lab` first", file=sys.stderr)
        return 1
    by_name = {h["name"]: h for h in json.loads(TOPOLOGY.read_text())["hosts"]}
    chosen = list(dict.fromkeys(names))
    if names == ["all"]:
        chosen = list(by_name)  # every lab host boots
    for name in chosen:
        if name not in by_name:
            print(f"lab: reboot: no lab host {name!r}; hosts: {', '.join(by_name)} or all", file=sys.stderr)
            return 2
    failed: list[str] = []
    printing = threading.Lock()

    def reboot_one(host: dict[str, Any]) -> None:
        state = Path(host["state"])
        before = boot_count(state)
        asked = inside(state, "systemctl", "reboot")  # its init may take the call with it: rc ignored
        deadline = time.monotonic() + REBOOT_TIMEOUT
        while boot_count(state) == before or not host_sshd_answers(host):
            if not running(host["pid"]) or time.monotonic() > deadline:
                why = "its supervisor ended" if not running(host["pid"]) else f"not within {REBOOT_TIMEOUT:.0f} s"
                failed.append(f"lab host {host['name']} did not come back ({why}; `systemctl reboot`: "
                              f"{asked.returncode} {asked.stderr.strip()}); see {state / 'console.log'}")  # fmt: skip
                return
            time.sleep(0.1)
        back = time.time()
        with printing:
            print(json.dumps({"host": host["name"], "sshd_back": back}), flush=True)

    threads = [threading.Thread(target=reboot_one, args=(by_name[name],)) for name in chosen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for failure in failed:
        print(f"lab: reboot: {failure}", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="The forgeway lab on this machine.")
    parser.add_argument("action", choices=["up", "refresh", "down", "destroy", "reboot"])
    parser.add_argument("hosts", nargs="*", help="reboot: lab host names, or all")
    parser.add_argument("--mode", choices=["snat", "preserve-source"], help="override forwarding.mode")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a string in the lab stack"
    )
    parser.add_argument(
        "--forge",
        choices=["gitlab", "gitea"],
        default="gitlab",
        help="up: the lab stack's forge variant (default gitlab; docs/lab-gitea.md)",
    )
    parser.add_argument(
        "--seed", type=int, help="the apply's order seed (default: FORGEWAY_APPLY_SEED, else a fresh one, printed)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("lab: needs root (network namespaces); run as root", file=sys.stderr)
        return 1
    if args.forge != "gitlab" and args.action != "up":
        parser.error(f"--forge applies to up, not {args.action}")
    if args.action != "reboot" and args.hosts:
        parser.error(f"{args.action} takes no host names")
    if args.action == "reboot":
        if not args.hosts:
            parser.error("reboot: name the hosts (vps, home, runner-arm, runner-amd) or all")
        return reboot(args.hosts)
    if args.action == "up":
        return up(args.mode, args.set, args.seed, args.forge)
    if args.action == "refresh":
        return refresh()
    return destroy() if args.action == "destroy" else down()


if __name__ == "__main__":
    sys.exit(main())
