"""The `make lab` topology (tools/lab/topology.py) as the lab tests share it: :class:`MakeLab`.

One lab is brought up for the whole test session (tests/lab/conftest.py, fixture
``make_lab``) and taken down at its end, pass or fail; every ``test_lab_*`` module runs on
it. Each host is a :class:`~tools.lab.machine.Machine`. A test that changes the lab
(another forwarding mode, a table it adds) puts it back before it ends. One that takes
the lab down, or leaves its stack destroyed (a test on ``destroyed_lab``), leaves it to
the next test's fixture: :meth:`MakeLab.ensure_up` brings the lab up and applies it
again, :meth:`MakeLab.ensure_destroyed` destroys it if it is applied, each by what
:attr:`MakeLab.applied` recorded. So any test runs alone (``-k``) or in any order.

The probes several modules use (HTTPS from the client, a registry push, the admin SSH)
are here too. The lab's names and addresses are FIXED: run under ``flock /tmp/fwl.lock``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.stacks import ROOT
from tools.lab.docker import DaemonInfo
from tools.lab.machine import CommandFailed, Machine

VPS = "203.0.113.10"
CLIENT_ADDRESS = "203.0.113.100"
REGISTRY = "gitlab.forgeway.test:5050"
# The first is the seed of the session's lab; the seeds test applies the others from nothing.
SEEDS = [int(seed) for seed in os.environ.get("FORGEWAY_LAB_SEEDS", "1,2,3").split(",")]
GITLAB_VOLUMES = [f"docker:index/volume:Volume::home-gitlab-{role}" for role in ("config", "data", "logs")]
LAB_DIR = ROOT / ".lab"
STANDIN_RUNNER = "forgeway-lab/runner-standin:1.0"


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class MakeLab:
    """The session's `make lab`: its CLI, its description and its hosts as Machines."""

    def __init__(self) -> None:
        self.handlers_before: list[str] = []  # binfmt handlers this machine had before the lab
        # Whether the lab stack is applied (True), destroyed (False) or unknown (None: an up
        # or a destroy failed, or an apply ran by other means), as the last `up`/`destroy` left it.
        self.applied: bool | None = None
        # The forge of the lab stack's state (`up --forge`: gitlab or gitea; None: an up that
        # switched forges failed, the state is in doubt). One state for both, as a user's stack.
        self.forge: str | None = "gitlab"

    # ----------------------------------------------------------------------- the CLI

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``python -m tools.lab ARGS`` as a user runs it."""
        done = subprocess.run(
            [sys.executable, "-m", "tools.lab", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        if args[:1] in (("up",), ("destroy",)):
            self.applied = (args[0] == "up") if done.returncode == 0 else None
        if args[:1] == ("down",):
            self.forge = "gitlab"  # no state left: the next up starts anew
        if args[:1] == ("up",):
            forge = args[args.index("--forge") + 1] if "--forge" in args else "gitlab"
            self.forge = forge if done.returncode == 0 or forge == self.forge else None
        return done

    def up(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``tools.lab up ARGS``, which must succeed."""
        done = self.run("up", *args)
        assert done.returncode == 0, f"lab up {' '.join(args)}: {done.stderr[-3000:]}"
        return done

    def destroy(self) -> subprocess.CompletedProcess[str]:
        """``tools.lab destroy``, which must succeed."""
        done = self.run("destroy")
        assert done.returncode == 0, f"lab destroy: {done.stderr[-3000:]}"
        return done

    def is_up(self) -> bool:
        return (LAB_DIR / "topology.json").exists() and any(n.startswith("fwl-") for n in namespaces())

    def start(self) -> None:
        """Bring the lab up from nothing (under the first seed), on GitLab; fail if one is up already."""
        from tools.lab.binfmt import handlers

        if (LAB_DIR / "topology.json").exists() or any(n.startswith("fwl-") for n in namespaces()):
            raise AssertionError("a lab is already up (fwl-* namespaces or .lab/): run `make lab-down` first")
        self.handlers_before = handlers()
        up = self.up("--seed", str(SEEDS[0]))
        assert f"apply seed {SEEDS[0]} " in up.stderr, up.stderr[:500]

    def ensure_up(self, forge: str | None = "gitlab") -> None:
        """Bring the lab up again if a test took it down (the destroy test's `down`), and
        apply it again if a test left it destroyed (or in doubt). ``forge``: the stack on
        that forge (a lab on the other one, or in doubt, is brought up anew: switching back
        is not what its tests are about); None: on the forge it has."""
        if self.is_up() and (self.forge is None or forge not in (None, self.forge)):
            self.run("down")
        if not self.is_up():
            self.start()
        elif self.applied is not True:
            self.up(*forge_args(self.forge or "gitlab"))

    def ensure_destroyed(self) -> None:
        """The lab up with its GitLab stack destroyed: every host as before any apply, GitLab's
        protected volumes kept (on the home host and in the state)."""
        if self.is_up() and self.forge != "gitlab":
            self.run("down")
        if not self.is_up():
            self.start()
        if self.applied is not False:
            self.destroy()

    # ----------------------------------------------------------------------- what it built

    @property
    def topology(self) -> dict[str, Any]:
        described: dict[str, Any] = json.loads((LAB_DIR / "topology.json").read_text())
        return described

    def host(self, name: str) -> dict[str, Any]:
        """The topology's record of managed host ``name`` (vps, home, runner-arm, runner-amd)."""
        found: dict[str, Any] = next(h for h in self.topology["hosts"] if h["name"] == name)
        return found

    def state(self) -> dict[str, Any]:
        """The lab stack's state entries (urn -> resource)."""
        entries: dict[str, Any] = json.loads((LAB_DIR / "state.json").read_text())["entries"]
        return entries

    def ca_certificate(self) -> str:
        """Where the stack's CA is (the stack output ca_certificate), written by every up."""
        path: str = self.topology["ca_certificate"]
        return path

    def machine(self, name: str) -> Machine:
        """Lab host ``name`` (a managed host, or client, cgnat, homegw) as a Machine."""
        from tools.lab.layout import DOCKER_HOSTS
        from tools.lab.network import ns

        topology = self.topology
        record = next((h for h in topology["hosts"] if h["name"] == name), None)
        daemon = _daemon(topology["docker"][name]) if name in topology["docker"] else None
        if record is None:
            return Machine(name, ns(name), daemon=daemon if name in (*DOCKER_HOSTS, "client") else None)
        # Every managed host boots: systemd is its PID 1, with its own root, /etc and units.
        return Machine(name, record["netns"], leader=_container_init(Path(record["state"])), daemon=daemon)

    def docker_config(self, name: str) -> Path:
        """A docker client config of its own for lab host ``name`` (its registry logins)."""
        config = LAB_DIR / "docker-clients" / name
        config.mkdir(parents=True, exist_ok=True)
        return config


def forge_args(forge: str) -> tuple[str, ...]:
    """`tools.lab up` arguments of the lab stack on ``forge``. On Gitea with
    ``allow_forge_change``: GitLab's kept volumes hold data, and every up's guard sees them."""
    return () if forge == "gitlab" else ("--forge", forge, "--set", "allow_forge_change=true")


def _daemon(record: dict[str, Any]) -> Callable[[], DaemonInfo]:
    """The dockerd of a topology record as it is now: a restarted one records itself in its work dir."""

    def current() -> DaemonInfo:
        path = Path(record["work"]) / "daemon.json"
        return DaemonInfo.from_json(json.loads(path.read_text()) if path.exists() else record)

    return current


def _container_init(state: Path) -> Callable[[], int]:
    from tools.lab.nspawn import container_pid1

    return lambda: container_pid1(state)


def run_unit(lab: MakeLab, name: str, unit: str) -> subprocess.CompletedProcess[str]:
    """Run an installed unit as boot does: the host's systemd restarts it."""
    return lab.machine(name).inside.execute(["systemctl", "restart", unit])


# --------------------------------------------------------------------------- probes


def ping(machine: Machine, address: str, tries: int = 1) -> bool:
    # The first packets may wait for a handshake: a few tries, one second each.
    return any(machine.execute(["ping", "-c1", "-W1", address]).returncode == 0 for _ in range(tries))


def https(lab: MakeLab, path: str = "/", tries: int = 3, port: int = 443) -> tuple[int, str]:
    """From the client namespace, HTTPS verified with the stack's CA: (status, body)."""
    probe = (
        "import http.client, ssl, sys;"
        f"c=http.client.HTTPSConnection('{VPS}',{port},timeout=5,"
        f"context=ssl.create_default_context(cafile='{lab.ca_certificate()}'));"
        f"c.request('GET','{path}');r=c.getresponse();sys.stdout.write(f'{{r.status}} ' + r.read().decode())"
    )
    client = lab.machine("client")
    for attempt in range(tries):
        done = client.execute(["python3", "-c", probe])
        if done.returncode == 0:
            status, _, body = done.stdout.partition(" ")
            return int(status), body.strip()
        if attempt + 1 < tries:
            time.sleep(1)
    raise AssertionError(f"client could not fetch https://{VPS}:{port}{path}: {done.stderr.strip()[-300:]}")


def seen_address(lab: MakeLab, tries: int = 3) -> str:
    """The client address GitLab's nginx saw for a request from the client namespace."""
    status, body = https(lab, tries=tries)
    banner, port, address = body.split()
    assert (status, banner, port) == (200, "forgeway-gitlab-standin", "443"), body
    return address


def gitlab_ssh_key(lab: MakeLab) -> str:
    """GitLab's SSH host key as the container has it (in its config volume)."""
    home = lab.machine("home")
    return home.docker("exec", "forgeway-gitlab", "cat", "/etc/gitlab/ssh_host_ed25519_key.pub").split()[1]


def ssh_keys_offered(lab: MakeLab, port: int = 22, address: str = VPS, timeout: int = 3) -> str:
    """``ssh-keyscan`` of ``address:port`` (ed25519) from the client."""
    keyscan = ["ssh-keyscan", "-T", str(timeout), "-t", "ed25519", "-p", str(port), address]
    return lab.machine("client").execute(keyscan).stdout


def assert_admin_ssh(lab: MakeLab) -> None:
    vps = lab.host("vps")
    assert vps["host_key"].split()[1] in ssh_keys_offered(lab, vps["ssh_port"]), "admin SSH to the VPS is unreachable"


def client_trusts_the_stack_ca(lab: MakeLab) -> None:
    """What the README tells a user to do on a laptop: the CA as it is now in the client's certs.d."""
    certs = LAB_DIR / "client" / "etc-docker" / "certs.d" / REGISTRY
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "ca.crt").write_text(Path(lab.ca_certificate()).read_text())


def login(lab: MakeLab, name: str) -> subprocess.CompletedProcess[str]:
    """``docker login`` to the registry as root from lab host ``name``."""
    password = lab.state()["random:index/randomPassword:RandomPassword::home-gitlab-root-password"]["outputs"]["result"]
    login = ("login", REGISTRY, "-u", "root", "--password-stdin")
    return lab.machine(name).docker_execute(*login, stdin=password.encode(), config=lab.docker_config(name))


def random_layer(size: int) -> bytes:
    """A tar of one ``size``-byte file of random bytes (``docker import``: an image no registry has)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return layer.getvalue()


def push_and_pull(lab: MakeLab, name: str, size: int) -> None:
    """From lab host ``name``: push an image with a ``size``-byte random layer, delete it, pull it back."""
    tag = f"{REGISTRY}/root/lab-{name}:{time.time_ns()}"
    logged_in = login(lab, name)
    assert logged_in.returncode == 0, logged_in.stderr
    machine, config = lab.machine(name), lab.docker_config(name)
    try:
        machine.docker("import", "-", tag, stdin=random_layer(size), config=config)
        machine.docker("push", tag, config=config)
        layers = machine.docker("image", "inspect", "--format", "{{.RootFS.Layers}}", tag, config=config)
        machine.docker("rmi", tag, config=config)
        machine.docker("pull", tag, config=config)
    except CommandFailed as failed:
        raise AssertionError(f"push and pull from {name}: {failed}") from failed
    assert machine.docker("image", "inspect", "--format", "{{.RootFS.Layers}}", tag, config=config) == layers


# --------------------------------------------------------------------------- GitLab's destroy


def gitlab_runner_ids(lab: MakeLab) -> set[str]:
    """The GitLab runners the applied stack registered (their ids in GitLab), one per runner host."""
    ids = {str(e["id"]) for urn, e in lab.state().items() if urn.startswith("gitlab:index/userRunner:UserRunner::")}
    assert len(ids) == 2, f"the lab registers one runner per runner host: {ids}"
    return ids


def assert_gitlab_destroyed(lab: MakeLab, destroyed: subprocess.CompletedProcess[str], runner_ids: set[str]) -> None:
    """After GitLab's stack was destroyed (``destroyed``, from applied with ``runner_ids``):
    the container gone, its protected volumes kept and named in the log, and GitLab itself
    (the stand-in's database, in the kept data volume) forgot the runners and the API token."""
    assert destroyed.returncode == 0, destroyed.stderr
    home = lab.machine("home")
    assert home.docker("ps", "-aq", "--filter", "name=forgeway-gitlab").strip() == ""
    volumes = home.docker("volume", "ls", "--format", "{{.Name}}").split()
    assert {"forgeway-gitlab-config", "forgeway-gitlab-logs", "forgeway-gitlab-data"} <= set(volumes)
    for role in ("config", "logs", "data"):
        assert f"home-gitlab-{role}" in destroyed.stderr and "protected" in destroyed.stderr, destroyed.stderr
    data = home.docker("volume", "inspect", "--format", "{{.Mountpoint}}", "forgeway-gitlab-data").strip()
    database = json.loads(home.path(data + "/gitlab-rails/forgeway-standin.json").read_text())
    left = runner_ids & {str(key) for key in database["runners"]}
    assert not left, f"runners {sorted(left)} outlived destroy in GitLab"
    assert all(t["revoked"] for t in database["tokens"] if t["name"] == "forgeway-provisioner"), "API token not revoked"
