"""docker-daemon-up/-down.sh against a real dockerd whose /etc/docker is FORGEWAY_ETC's.

The daemon is started with ``config_file=True`` (tools/lab/docker.py): no flag that
forgeway's daemon.json also sets (``--default-address-pool``), and ``$FORGEWAY_ETC/docker``
bind-mounted over /etc/docker in its own mount namespace, so it reads the
``daemon.json`` the scripts write at its default path. ``FORGEWAY_DOCKER_RESTART`` is
``python -m tools.lab.docker restart WORK``, and the scripts run as on a lab host: in
the namespace and in a PID namespace of their own (sshd's, on a lab host), which the
kernel empties when they exit, so the restarted daemon must have been started outside it.

Debian's dockerd is 20.10: it has no ``--validate``, so a daemon.json it rejects is
caught by the restart (dockerd exits at once) and the roll-back path runs; the
``--validate`` path is exercised with a stand-in dockerd (Docker 28) at the end.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.render.docker_daemon import DaemonSettings, host_ipv6_prefixes, render_daemon_json
from components.scripts import script, script_command, staged_command, unstaged_command
from tests.lab.netns import isolated_netns, require_docker_tools
from tools.lab.docker import DaemonInfo, docker
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.dockerd_processes import alive as _alive
from tools.lab.images import BASE, ensure_image
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "203.0.113.79"
STAGE = "docker-daemon"
PREFIX = ipaddress.IPv6Network("fd00:f0e5:7a1b::/48")
BRIDGE_V6, POOL_V6 = host_ipv6_prefixes(PREFIX, 0)
SEED = b'{ "max-concurrent-downloads": 2,\n  "labels": ["lab.seeded=yes"] }\n'  # not in our format: bytes are checked


def _ours() -> str:
    rendered = render_daemon_json(
        DaemonSettings(
            address_pools=[("172.28.0.0/14", 24)],
            mtu=1420,
            ipv6_bridge=BRIDGE_V6,
            ipv6_pool=POOL_V6,
            log_max_size_mb=5,
            log_max_files=2,
        )
    )
    return json.dumps(rendered, indent=2, sort_keys=True) + "\n"  # as components/runners.py


def _up_command(ours: str) -> str:
    files = {
        "forgeway.json": ours,
        "daemon_merge.py": script("daemon_merge.py"),
        "docker-daemon-up.sh": script("docker-daemon-up.sh"),
    }
    return staged_command(STAGE, files, "docker-daemon-up.sh", [])


DOWN = unstaged_command(STAGE, script_command("docker-daemon-up.sh", "--restore"))


@dataclass
class RunnerHost:
    """A namespace host with FORGEWAY_ETC under ``base`` and a dockerd reading its daemon.json."""

    netns: str
    etc: Path
    work: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.etc / "docker" / "daemon.json"

    @property
    def daemon(self) -> DaemonInfo:
        """The latest record: every restart writes a new PID to work/daemon.json."""
        return DaemonInfo.from_json(json.loads((self.work / "daemon.json").read_text()))

    def run(self, what: str, command: str) -> subprocess.CompletedProcess[str]:
        """``command`` as a lab host's SSH session runs it: in the namespace, in a PID
        namespace that dies with it (``--kill-child``, as sshd's does)."""
        cmd = Machine("host", self.netns).argv(["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", command])
        started = time.monotonic()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300, check=False)
        self.timings[what] = round(time.monotonic() - started, 2)
        return done


@pytest.fixture
def host() -> Iterator[RunnerHost]:
    require_docker_tools("nsenter", "unshare")
    base = Path(tempfile.mkdtemp(prefix="fwdd-"))  # short: the docker socket path is limited
    etc, work = base / "etc", base / "docker"
    (etc / "docker").mkdir(parents=True)
    (etc / "docker" / "daemon.json").write_bytes(SEED)
    daemon: DaemonInfo | None = None
    timings: dict[str, float] = {}
    try:
        with isolated_netns("fwdd", ADDRESS) as netns:
            try:
                started = time.monotonic()
                daemon = start_dockerd(netns, work, index=10, etc_docker=etc / "docker", config_file=True)
                timings["dockerd start"] = round(time.monotonic() - started, 2)
                restart = shlex.join([sys.executable, "-m", "tools.lab.docker", "restart", str(work)])
                env = {
                    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": str(base),
                    "FORGEWAY_ETC": str(etc),
                    "FORGEWAY_SYSTEMD": "no",
                    "FORGEWAY_DOCKER_RESTART": f"PYTHONPATH={shlex.quote(str(ROOT))} {restart}",
                    "DOCKER_HOST": daemon.host,
                }
                yield RunnerHost(netns=netns, etc=etc, work=work, env=env, timings=timings)
            finally:
                print("\ntimings (s):", json.dumps(timings))
                if (work / "daemon.json").exists():
                    daemon = DaemonInfo.from_json(json.loads((work / "daemon.json").read_text()))
                if daemon is not None:
                    stop_dockerd(daemon)  # the latest restart's PID
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _ok(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, f"failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    assert done.stderr == "", done.stderr
    return done.stdout.splitlines()


def _listing(root: Path, *, stage: bool = True) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None: a directory); without the stage
    directory (staged_command's own files, which unstaged_command removes) if not ``stage``."""
    paths = sorted(root.rglob("*"))
    if not stage:
        paths = [p for p in paths if not p.relative_to(root).as_posix().startswith("forgeway/stage")]
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in paths}


def _bridge(daemon: DaemonInfo) -> dict[str, Any]:
    out: list[dict[str, Any]] = json.loads(docker(daemon, "network", "inspect", "bridge").stdout)
    return out[0]


def _check_first_up(host: RunnerHost) -> None:
    old = host.daemon
    first = _ok(host.run("up (changed)", _up_command(_ours())))
    assert first[-1] == f"changed docker-daemon: {host.file} (docker restarted)", first
    assert any("has no --validate" in line for line in first), first  # dockerd 20.10
    merged = json.loads(host.file.read_text())
    assert merged["labels"] == ["lab.seeded=yes"] and merged["max-concurrent-downloads"] == 2
    assert merged["mtu"] == 1420 and merged["ipv6"] is True and merged["fixed-cidr-v6"] == BRIDGE_V6
    assert merged["experimental"] is True  # dockerd 20 < 27: ip6tables needs it
    assert host.file.stat().st_mode & 0o777 == 0o644
    state = host.etc / "forgeway" / "docker-daemon"
    assert (state / "daemon.json.orig").read_bytes() == SEED
    owned = json.loads((state / "owned.json").read_text())
    assert set(owned) == set(json.loads(_ours())) | {"experimental"}, owned
    # restarted from outside the script's PID namespace (gone now): it runs and answers
    new = host.daemon
    assert new.pid != old.pid and not _alive(old.pid) and _alive(new.pid)
    assert (new.index, new.config_file, new.etc_docker) == (10, True, host.etc.resolve() / "docker")


def _check_effect(host: RunnerHost) -> None:
    daemon = host.daemon
    assert docker(daemon, "info", "--format", "{{.LoggingDriver}}").stdout.decode().strip() == "json-file"
    bridge = _bridge(daemon)
    assert bridge["EnableIPv6"] is True, bridge
    assert BRIDGE_V6 in [c["Subnet"] for c in bridge["IPAM"]["Config"]], bridge["IPAM"]
    assert bridge["Options"]["com.docker.network.driver.mtu"] == "1420", bridge["Options"]

    started = time.monotonic()
    ensure_image(daemon, BASE)
    host.timings["ensure_image"] = round(time.monotonic() - started, 2)
    created = docker(daemon, "create", BASE, "true").stdout.decode().strip()
    log_config = json.loads(docker(daemon, "inspect", "--format", "{{json .HostConfig.LogConfig}}", created).stdout)
    assert log_config == {"Type": "json-file", "Config": {"max-file": "2", "max-size": "5m"}}, log_config
    docker(daemon, "rm", created)
    probe = docker(daemon, "run", "--rm", BASE, "sh", "-c", "cat /sys/class/net/eth0/mtu /proc/net/if_inet6")
    mtu, *lines = probe.stdout.decode().splitlines()
    assert mtu == "1420", probe.stdout
    eth0 = [ipaddress.IPv6Address(int(line.split()[0], 16)) for line in lines if line.split()[-1] == "eth0"]
    assert any(a in ipaddress.IPv6Network(BRIDGE_V6) for a in eth0), probe.stdout


def _check_rejected(host: RunnerHost) -> None:
    """A value dockerd rejects: 20.10 has no --validate, so the restart fails (dockerd exits
    at once), the previous file comes back and docker runs again with it."""
    before = _listing(host.etc, stage=False)
    bad = json.loads(_ours())
    bad["mtu"] = "big"
    failed = host.run("up (rejected, rolled back)", _up_command(json.dumps(bad)))
    print(f"\nthe rejected up said:\n{failed.stdout}{failed.stderr}")
    assert failed.returncode == 1, failed.stdout
    assert "docker did not come back" in failed.stderr, failed.stderr
    assert "the previous file is back and docker runs again" in failed.stderr, failed.stderr
    assert "mtu" in failed.stderr.split("the daemon said:")[1], failed.stderr  # dockerd's own complaint
    assert _listing(host.etc, stage=False) == before
    assert _alive(host.daemon.pid)
    assert _bridge(host.daemon)["Options"]["com.docker.network.driver.mtu"] == "1420"


def test_up_merges_restarts_once_rolls_back_and_down_restores(host: RunnerHost) -> None:
    argv = Path(f"/proc/{host.daemon.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[0].endswith(b"dockerd") and b"--bip" in argv, argv
    assert b"--default-address-pool" not in argv, argv  # daemon.json's default-address-pools would clash
    assert "seeded" in docker(host.daemon, "info", "--format", "{{json .Labels}}").stdout.decode()
    before = _listing(host.etc)

    _check_first_up(host)
    _check_effect(host)

    # a second up changes nothing and restarts nothing
    after_first, pid = _listing(host.etc), host.daemon.pid
    second = _ok(host.run("up (unchanged)", _up_command(_ours())))
    assert second == [f"unchanged docker-daemon: {host.file}"], second
    assert host.daemon.pid == pid and _alive(pid)
    assert _listing(host.etc) == after_first

    _check_rejected(host)

    # down: the seeded file byte for byte, docker restarted without our keys
    pid = host.daemon.pid
    down = _ok(host.run("down (restored)", DOWN))
    assert down == [f"changed docker-daemon: {host.file} restored (docker restarted)"], down
    assert host.file.read_bytes() == SEED
    assert _listing(host.etc) == before
    assert host.daemon.pid != pid and _alive(host.daemon.pid)
    bridge = _bridge(host.daemon)
    assert bridge["Options"].get("com.docker.network.driver.mtu", "1500") == "1500", bridge["Options"]
    assert bridge["EnableIPv6"] is False, bridge
    assert "seeded" in docker(host.daemon, "info", "--format", "{{json .Labels}}").stdout.decode()

    # down again: nothing to do, nothing restarted
    pid = host.daemon.pid
    again = _ok(host.run("down (no-op)", DOWN))
    assert again == [f"ok docker-daemon: nothing to restore ({host.etc}/forgeway/docker-daemon is absent)"], again
    assert host.daemon.pid == pid and _listing(host.etc) == before

    # a host without daemon.json: up makes one, down leaves none
    host.file.unlink()
    made = _ok(host.run("up (no file before)", _up_command(_ours())))
    assert made[-1] == f"changed docker-daemon: {host.file} (docker restarted)", made
    assert (host.etc / "forgeway" / "docker-daemon" / "daemon.json.absent").exists()
    assert "labels" not in json.loads(host.file.read_text())
    assert host.daemon.pid != pid
    gone = _ok(host.run("down (no file before)", DOWN))
    assert gone[-1].startswith(f"changed docker-daemon: {host.file} removed"), gone
    assert _listing(host.etc) == {k: v for k, v in before.items() if k != "docker/daemon.json"}  # key.json: dockerd's
    assert _alive(host.daemon.pid)


# --- the --validate path, with a stand-in dockerd (Docker 28) --------------------------

FAKE_DOCKERD = """#!/bin/sh
case $1 in
  --version) echo "Docker version 28.0.4, build b8034c0" ;;
  --validate)
    python3 -c 'import json, sys; mtu = json.load(open(sys.argv[1])).get("mtu", 0)
if not isinstance(mtu, int): sys.exit("unable to configure the Docker daemon: mtu must be a number")
print("configuration OK")' "$3" ;;
  *) exit 2 ;;
esac
"""


def test_validate_rejects_before_anything_changes(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dockerd").write_text(FAKE_DOCKERD)
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")  # `docker info` answers
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    etc = tmp_path / "etc"
    restarts = tmp_path / "restarts"
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "FORGEWAY_ETC": str(etc),
        "FORGEWAY_DOCKER_RESTART": f"echo restart >>{shlex.quote(str(restarts))}",
    }

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60, check=False)

    bad = json.loads(_ours())
    bad["mtu"] = "big"
    rejected = run(_up_command(json.dumps(bad)))
    assert rejected.returncode == 1, rejected.stdout
    assert "dockerd rejects the merged daemon.json" in rejected.stderr and "mtu must be a number" in rejected.stderr
    assert not restarts.exists()
    assert not (etc / "docker").exists() and not (etc / "forgeway" / "docker-daemon").exists()

    good = _ok(run(_up_command(_ours())))
    assert good[0] == "ok docker-daemon: dockerd --validate accepts the merged file", good
    assert "experimental" not in json.loads((etc / "docker" / "daemon.json").read_text())  # 28 >= 27
    assert (etc / "forgeway" / "docker-daemon" / "docker-dir.created").exists()
    assert restarts.read_text() == "restart\n"
    _ok(run(DOWN))
    assert restarts.read_text() == "restart\nrestart\n"
    assert list(etc.iterdir()) == []  # the docker directory up made, the state and the stage: all gone


def test_a_lab_host_without_a_restart_command_is_refused(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "FORGEWAY_ETC": str(tmp_path / "etc")}
    done = subprocess.run(
        ["sh", "-c", _up_command(_ours())], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "set FORGEWAY_DOCKER_RESTART" in done.stderr, done.stderr
    assert not (tmp_path / "etc" / "docker").exists()


def test_a_daemon_record_written_before_restart_settings_were_kept_still_loads() -> None:
    old = {
        "netns": "fwl-home", "work": "/w", "socket": "/w/docker.sock", "pid": 42,
        "bip": "172.30.3.1/24", "address_pool": "172.31.48.0/20", "log": "/w/dockerd.log",
    }  # fmt: skip
    info = DaemonInfo.from_json(old)
    assert (info.index, info.extra_args, info.etc_docker, info.config_file, info.supervisor_pid) == (
        3, (), None, False, 0,
    )  # fmt: skip
    assert DaemonInfo.from_json(json.loads(json.dumps(info.to_json()))) == info


def test_the_restart_cli_says_what_is_wrong(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "tools.lab.docker"]
    usage = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (usage.returncode, usage.stderr.strip()) == (2, "usage: python -m tools.lab.docker restart WORK_DIR")
    missing = subprocess.run(
        [*cli, "restart", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith(f"lab_docker restart: no daemon record in {tmp_path}/daemon.json"), missing.stderr
