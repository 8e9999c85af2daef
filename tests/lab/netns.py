"""Lab hosts: Linux network namespaces that each run their own ``sshd``.

The lab tier tests the program against real SSH servers without any machine but this
one. Each :class:`LabHost` is a network namespace with its own sshd, host key and
authorized client key, so the program connects to it exactly as it does in production.

Topology (no bridge, no forwarding, no default route anywhere)::

    root namespace                          fw-<name>-<rand>  (a public host)
    fwr<rand>  198.51.100.X  <---- veth ---->  eth0  203.0.113.X

    fw-<a>-<rand>  (host A)                 fw-<b>-<rand>  (host B, added with via=A)
    fwp<rand>  198.51.100.Y  <---- veth ---->  eth0  203.0.113.Y

* A public host's veth runs from the root namespace, where the tests (and so ssh,
  docker, pulumi) run. Each end has one /32 address and a /32 route to the other end:
  the host namespace has no default route and reaches nothing else.
* A private host (``via=A``) is linked to A's namespace only. The root namespace gets
  an ``unreachable`` route for its address, so a direct attempt fails at once with
  "No route to host" instead of leaking to the machine's real default route, and going
  through A (an SSH jump) is the only way in. Namespaces do not forward packets.
* Every host address has a /32 route in the root namespace (to its veth, or
  unreachable). Adding it is how a lab claims the address: the kernel refuses a second
  one, so labs of test runs that overlap cannot take the same address. A link's far end
  has the host's number in the link network, so it is unique too.
* Addresses are documentation ranges only, so nothing here sends a packet anywhere but
  to a namespace of the lab: hosts in 203.0.113.0/24 (TEST-NET-3), link ends in
  198.51.100.0/24 (TEST-NET-2). IPv6 hosts work the same way: hosts in
  2001:db8:0:113::/64, link ends in 2001:db8:0:100::/64 (/128 each, no DAD).
* Each sshd runs in a PID namespace of its own (``unshare --pid``), whose init it is:
  it reaps the per-connection processes it orphans, and when it is stopped the kernel
  kills whatever of it is left.

:class:`Lab` builds its hosts with :class:`tools.lab.namespaces.Namespaces`, the lab's
one builder of namespace topologies; a host is acted on through :mod:`tools.lab.machine`
(``LabHost.machine``). Over 400 lines on purpose: the hosts' addressing, the sshd
lifecycle and the cleanup stack that undoes them in order are one piece.

Everything a :class:`Lab` creates (processes, namespaces, veths, routes, its temporary
directory) is pushed on a cleanup stack as soon as it exists; :meth:`Lab.close` unwinds
it, stops processes by PID, and may be called twice or after a failed ``add_host``.

Side effect left behind on purpose: ``/run/sshd`` (sshd's compiled-in privilege
separation directory, normally made by the ssh service) is created if missing and never
removed, as an sshd of the system or of another lab may be using it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tools.lab import layout as _layout
from tools.lab.docker import DaemonInfo
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.machine import ROOT_NAMESPACE as _DEPLOYER
from tools.lab.machine import CommandFailed, Machine
from tools.lab.namespaces import Namespaces, netns_pids

__all__ = [
    "HOST_NETWORK",
    "HOST_NETWORK6",
    "LINK_NETWORK",
    "LINK_NETWORK6",
    "REQUIRED_TOOLS",
    "Lab",
    "LabHost",
    "generate_key",
    "host_env",
    "isolated_netns",
    "missing_lab_tools",
    "require_docker_tools",
    "require_lab_tools",
    "scratch_dockerd",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HOST_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
LINK_NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
HOST_NETWORK6 = ipaddress.IPv6Network("2001:db8:0:113::/64")
LINK_NETWORK6 = ipaddress.IPv6Network("2001:db8:0:100::/64")
_HOST_NETWORKS: dict[int, IPNetwork] = {4: HOST_NETWORK, 6: HOST_NETWORK6}
_LINK_NETWORKS: dict[int, IPNetwork] = {4: LINK_NETWORK, 6: LINK_NETWORK6}
# The host numbers `make lab` claims in the root namespace (tools/lab/network.py: routes
# to its internet hosts, the client and the CGNAT; the deployer's own addresses, whose
# number a Lab host's link end would take): a Lab never takes them, so the lab tier runs
# `make lab`'s tests and the other lab modules at once (make test's two workers) and
# `make lab` never finds one of its addresses taken.
_MAKE_LAB_NUMBERS = frozenset(
    int(address.rsplit(".", 1)[1])
    for address in (
        _layout.CLIENT, _layout.CGNAT_WAN, _layout.DEPLOYER_INTERNET, _layout.DEPLOYER_LAN,
        *(host.address for host in _layout.HOSTS if host.segment != "v6only"),  # IPv4 addresses
    )
)  # fmt: skip
# Addresses given out when add_host is not told one: host numbers 10..254 (IPv4) but
# `make lab`'s, or 10..65535 (IPv6) of the host network.
_AUTO_HOSTS = {4: [n for n in range(10, 255) if n not in _MAKE_LAB_NUMBERS], 6: range(10, 0x10000)}

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself, so it must be started by absolute path
PRIVSEP_DIR = Path("/run/sshd")
APT_PACKAGES_FILE = "tools/ci/apt-packages.txt"

# tool -> Debian package that ships it
REQUIRED_TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
    "ssh-agent": "openssh-client",
    "ssh-add": "openssh-client",
    "nft": "nftables",
    "wg": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "pgrep": "procps",
    "unshare": "util-linux",
    "sudo": "sudo",
}

_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
_COMMAND_TIMEOUT = 30.0
_READY_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


# --------------------------------------------------------------------------- preflight


def missing_lab_tools() -> list[str]:
    """Tools of :data:`REQUIRED_TOOLS` not found here (``sshd`` must be :data:`SSHD`)."""
    missing = []
    for tool in REQUIRED_TOOLS:
        found = Path(SSHD).is_file() if tool == "sshd" else shutil.which(tool, path=_SEARCH_PATH)
        if not found:
            missing.append(tool)
    return missing


def require_lab_tools() -> None:
    """Raise RuntimeError, saying what is wrong and how to fix it, unless the lab can run.

    The lab tier never skips: a machine without its tools fails it loudly.
    """
    problems = []
    missing = missing_lab_tools()
    if missing:
        packages = sorted({REQUIRED_TOOLS[tool] for tool in missing})
        problems.append(
            "missing tools: "
            + ", ".join(f"{tool} (Debian package {REQUIRED_TOOLS[tool]})" for tool in missing)
            + ". Install them with `make setup`, or as root: "
            + f"apt-get update && apt-get install -y {' '.join(packages)}"
            + f" (the full list is {APT_PACKAGES_FILE})"
        )
    if os.geteuid() != 0:
        problems.append(
            "not running as root: the lab creates network namespaces, veth links and routes, "
            "and starts sshd; run the lab tier as root"
        )
    if problems:
        raise RuntimeError("the lab test tier cannot run here:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------- helpers


def require_docker_tools(*extra: str) -> None:
    """Fail loudly (never skip) when the docker lab tests' tools are missing."""
    wanted = {
        "dockerd": Path("/usr/sbin/dockerd").is_file(),
        "debootstrap": shutil.which("debootstrap", path="/usr/sbin:/usr/bin") is not None,
        "docker": shutil.which("docker", path="/usr/local/bin:/usr/bin") is not None,
        **{tool: shutil.which(tool) is not None for tool in extra},
    }
    missing = [tool for tool, ok in wanted.items() if not ok]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: install tools/ci/apt-packages.txt (make setup)")


@contextlib.contextmanager
def scratch_dockerd(prefix: str, address: str, index: int) -> Iterator[DaemonInfo]:
    """A dockerd (tools/lab/docker.py) in an isolated namespace ``prefix-*`` whose eth0 is
    ``address``, its state in a temp directory: stopped by PID and removed on exit."""
    require_docker_tools()
    scratch = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        with isolated_netns(prefix, address) as netns:
            info = None
            try:
                info = start_dockerd(netns, scratch / "docker", index=index)
                yield info
            finally:
                if info is not None:
                    stop_dockerd(info)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def host_env(host_dir: Path) -> dict[str, str]:
    """The FORGEWAY_* variables that give a namespace host its own state directories."""
    dirs = {
        "FORGEWAY_ETC": host_dir / "etc",
        "FORGEWAY_RUN": host_dir / "run",
        "FORGEWAY_WG_SOCKET_DIR": host_dir / "wg",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    return {**{k: str(v) for k, v in dirs.items()}, "FORGEWAY_SYSTEMD": "no"}


@contextlib.contextmanager
def isolated_netns(prefix: str, address: str) -> Iterator[str]:
    """A namespace ``<prefix>-<random>`` with an eth0 at ``address`` whose veth peer stays
    inside it: no link out of the namespace. Deleted on exit; a process still running in
    it is killed and the exit fails naming it (tests stop theirs by PID first)."""
    with Namespaces(prefix) as made:
        host = made.add("", name=f"{prefix}-{secrets.token_hex(4)}")
        assert host.netns is not None
        made.link(host, "eth0", None, "eth0p")
        made.address(host, "eth0", f"{address}/24")
        made.address(host, "eth0p")
        yield host.netns
        pids = netns_pids(host.netns)
        assert not pids, f"processes left in {host.netns}: {pids}"


def generate_key(path: Path, key_type: str = "ed25519") -> str:
    """Make a passphrase-less keypair at ``path`` (+ ``.pub``); return ``"<type> <base64>"``."""
    if key_type not in _KEY_TYPES:
        raise ValueError(f"key type {key_type!r} is not one of {_KEY_TYPES}")
    _DEPLOYER.succeed(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "", "-f", str(path)])
    key_type_name, key_b64 = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{key_type_name} {key_b64}"


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process by PID, SIGKILL it if it has not exited in time, reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT)


def _child_pid(parent: int) -> int | None:
    """The PID of the (only) child of ``parent``, or None while it has none."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == parent:
            return int(stat.parent.name)
    return None


def _stop_sshd(proc: subprocess.Popen[bytes], sshd_pid: int | None) -> None:
    """Stop our sshd by PID; as init of its PID namespace it takes every session with it.

    ``proc`` is ``unshare``, which exits when sshd does. Should that not happen, killing
    ``unshare`` makes the kernel SIGKILL sshd too (``--kill-child``).
    """
    if sshd_pid is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sshd_pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(_STOP_TIMEOUT)
    _stop_process(proc)


def _delete_root_link(name: str) -> None:
    if Path("/sys/class/net", name).exists():
        _DEPLOYER.succeed(["ip", "link", "delete", name])


def _ip(netns: str | None, ip: IPAddress) -> list[str]:
    """``ip -4``/``ip -6``, in ``netns`` (None: the root namespace)."""
    return ["ip", f"-{ip.version}", *([] if netns is None else ["-n", netns])]


def _host_prefix(ip: IPAddress) -> str:
    return f"{ip}/{ip.max_prefixlen}"


def _root_routes(ip: IPAddress) -> list[dict[str, object]]:
    routes: list[dict[str, object]] = json.loads(
        _DEPLOYER.succeed([*_ip(None, ip), "-j", "route", "show", _host_prefix(ip)]) or "[]"
    )
    return routes


def _delete_unreachable_route(ip: IPAddress) -> None:
    if any(route.get("type") == "unreachable" for route in _root_routes(ip)):
        _DEPLOYER.succeed([*_ip(None, ip), "route", "delete", "unreachable", _host_prefix(ip)])


def _link_address(ip: IPAddress) -> IPAddress:
    """The address of the far end of host ``ip``'s link: same host number, link network.

    Unique as long as host addresses are, which the root namespace's routes enforce.
    """
    host_network, link_network = _HOST_NETWORKS[ip.version], _LINK_NETWORKS[ip.version]
    return link_network[int(ip) - int(host_network.network_address)]


def _claim(candidates: Iterable[IPAddress], route_add: Callable[[IPAddress], list[str]]) -> IPAddress:
    """The first candidate whose root-namespace route ``route_add`` could add.

    The kernel refuses a second route to the same /32 (/128), so that route is what
    keeps two labs running at once (two test runs) from using one address.
    """
    taken = []
    for ip in candidates:
        cmd = route_add(ip)
        result = _DEPLOYER.execute(cmd, timeout=_COMMAND_TIMEOUT)
        if result.returncode == 0:
            return ip
        if "File exists" not in result.stderr:
            raise CommandFailed(_DEPLOYER.name, cmd, result, "expected 0")
        taken.append(str(ip))
    raise RuntimeError(f"addresses already routed in the root namespace (another lab running?): {taken}")


def _link_end(netns: str | None, interface: str, local: IPAddress, remote: IPAddress | None) -> None:
    """Give one veth end the address ``local`` and a route to ``remote``, and bring it up."""
    ip = _ip(netns, local)
    nodad = ["nodad"] if local.version == 6 else []  # usable at once, not "tentative"
    _DEPLOYER.succeed([*ip, "addr", "add", _host_prefix(local), "dev", interface, *nodad])
    _DEPLOYER.succeed([*ip, "link", "set", interface, "up"])
    if remote is not None:
        _DEPLOYER.succeed([*ip, "route", "add", _host_prefix(remote), "dev", interface])


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class LabHost:
    """One namespace host and everything a test needs to reach it over SSH."""

    name: str
    netns: str  # network namespace: fw-<name>-<random>
    address: str  # where sshd listens: in 203.0.113.0/24 (or 2001:db8:0:113::/64)
    port: int
    host_key: str  # "ssh-ed25519 AAAA..." (authorized_keys form, no comment)
    client_key: Path  # private key authorized for root (passphrase-less)
    sshd_pid: int
    work_dir: Path  # keys, sshd_config, sshd.log
    via: str | None = None  # name of the only host that can reach this one, if any
    other_host_keys: tuple[str, ...] = ()  # further host keys sshd offers (other types)

    @property
    def machine(self) -> Machine:
        """This host as a Machine: its namespace, and (``inside``) its sshd's mounts and
        network, with the FORGEWAY_* directories its SSH sessions get."""
        sshd_pid = self.sshd_pid
        return Machine(
            self.name, self.netns, leader=lambda: sshd_pid, nsenter_flags=("-m", "-n"), env=host_env(self.work_dir)
        )


class Lab:
    """A set of namespace hosts, torn down by :meth:`close` (or by leaving ``with``)."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self._token = secrets.token_hex(3)
        self._cleanups: list[tuple[str, Callable[[], None]]] = []
        self.hosts: dict[str, LabHost] = {}
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"fw-lab-{self._token}-", dir=base_dir))
        self._push(f"remove {self.work_dir}", lambda: shutil.rmtree(self.work_dir, ignore_errors=True))
        self._agent_socket: Path | None = None
        self._keys_in_agent: set[Path] = set()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _push(self, what: str, action: Callable[[], None]) -> None:
        self._cleanups.append((what, action))

    def close(self) -> None:
        """Undo everything, newest first; go on past errors and report them all at the end."""
        errors = []
        while self._cleanups:
            what, action = self._cleanups.pop()
            try:
                action()
            except Exception as exc:  # every step must get its chance
                errors.append(f"{what}: {exc}")
        if errors:
            raise RuntimeError("lab cleanup failed:\n  " + "\n  ".join(errors))

    # ----------------------------------------------------------------------- hosts

    def add_host(
        self,
        name: str,
        address: str | None = None,
        *,
        port: int = 22,
        via: LabHost | None = None,
        host_key_types: Iterable[str] = ("ed25519",),
        ip_version: int = 4,
        extra_env: Mapping[str, str] | None = None,
        accept_env: Iterable[str] = (),
    ) -> LabHost:
        """Create namespace ``fw-<name>-<random>`` with sshd listening on ``address:port``.

        Without ``address``, the lab takes a free one (of ``ip_version``, or of ``via``'s
        version), which lets test runs overlap. Without ``via`` the host is linked to the
        root namespace. With ``via=A`` it is linked to A's namespace only, so it can be
        reached only by jumping through A. ``host_key_types`` are the host keys sshd gets:
        the first is ``host_key``, the others are ``other_host_keys``. ``extra_env`` adds
        variables to every SSH session's environment (sshd ``SetEnv``), e.g.
        ``DOCKER_HOST`` of the host's own dockerd socket. ``accept_env`` are the names
        sshd takes from a client's env requests (``AcceptEnv``; none by default, as sshd).
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"host name {name!r} must match {_NAME.pattern}")
        if name in self.hosts:
            raise ValueError(f"host {name!r} is already in this lab")
        if via is not None and self.hosts.get(via.name) != via:
            raise ValueError(f"via host {via.name!r} is not a host of this lab")
        key_types = tuple(host_key_types)
        if not key_types:
            raise ValueError("a host needs at least one host key type")
        extra = dict(extra_env or {})
        for key, value in extra.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or re.search(r"[\s\"'\\]", value):
                raise ValueError(f"extra_env {key}={value!r}: a name, and a value without blanks or quotes")
        accepted = tuple(accept_env)
        for pattern in accepted:
            if not re.fullmatch(r"[A-Za-z0-9_*?]+", pattern):
                raise ValueError(f"accept_env {pattern!r}: a variable name or pattern")
        candidates = self._candidates(address, via, ip_version)

        netns = f"fw-{name}-{secrets.token_hex(3)}"
        namespace = Namespaces("fw")
        # Kills what sshd left in the namespace, then deletes it (and so its veth ends).
        self._push(f"delete namespace {netns}", namespace.close)
        namespace.add(name, name=netns)
        ip = self._link_to_root(netns, candidates) if via is None else self._link_to_host(netns, candidates, via)

        host_dir = self.work_dir / name
        host_dir.mkdir()
        host_keys = [host_dir / f"ssh_host_{key_type}_key" for key_type in key_types]
        host_key_lines = [generate_key(path, key_type) for path, key_type in zip(host_keys, key_types, strict=True)]
        client_key = host_dir / "client_ed25519"
        (host_dir / "authorized_keys").write_text(generate_key(client_key) + "\n")
        config = host_dir / "sshd_config"
        config.write_text(self._sshd_config(host_dir, str(ip), port, host_keys, extra, accept_env=accepted))

        proc, sshd_pid = self._start_sshd(netns, config, host_dir / "sshd.log")
        self._wait_ready(
            proc,
            address=str(ip),
            port=port,
            host_key=host_key_lines[0],
            log=host_dir / "sshd.log",
            probe_netns=None if via is None else via.netns,
        )
        host = LabHost(
            name=name,
            netns=netns,
            address=str(ip),
            port=port,
            host_key=host_key_lines[0],
            client_key=client_key,
            sshd_pid=sshd_pid,
            work_dir=host_dir,
            via=None if via is None else via.name,
            other_host_keys=tuple(host_key_lines[1:]),
        )
        self.hosts[name] = host
        return host

    def _candidates(self, address: str | None, via: LabHost | None, ip_version: int) -> list[IPAddress]:
        """The addresses add_host may claim: the one it was given, or the free-looking ones."""
        used = {ipaddress.ip_address(host.address) for host in self.hosts.values()}
        if address is None:
            version = ip_version if via is None else ipaddress.ip_address(via.address).version
            network = _HOST_NETWORKS[version]
            return [network[n] for n in _AUTO_HOSTS[version] if network[n] not in used]
        ip = ipaddress.ip_address(address)
        network = _HOST_NETWORKS[ip.version]
        if ip not in network or ip in (network.network_address, network.broadcast_address):
            raise ValueError(f"host address {address} is not a host address of {network}")
        if via is not None and ipaddress.ip_address(via.address).version != ip.version:
            raise ValueError(f"{address} cannot be linked to {via.address}: not the same IP version")
        if ip in used:
            raise ValueError(f"address {address} is already used in this lab")
        return [ip]

    def _link_to_root(self, netns: str, candidates: list[IPAddress]) -> IPAddress:
        root_if = f"fwr{secrets.token_hex(4)}"
        _DEPLOYER.succeed(["ip", "link", "add", root_if, "type", "veth", "peer", "name", "eth0", "netns", netns])
        self._push(f"delete veth {root_if}", lambda: _delete_root_link(root_if))
        _DEPLOYER.succeed(["ip", "link", "set", root_if, "up"])
        # The route to the host, which goes with the veth, is also the claim on its address.
        ip = _claim(candidates, lambda c: [*_ip(None, c), "route", "add", _host_prefix(c), "dev", root_if])
        local = _link_address(ip)
        _link_end(None, root_if, local, None)
        _link_end(netns, "eth0", ip, local)
        return ip

    def _link_to_host(self, netns: str, candidates: list[IPAddress], via: LabHost) -> IPAddress:
        # The root namespace must never send the address out of the real interface: an
        # unreachable route, which is also the claim on the address.
        ip = _claim(candidates, lambda c: [*_ip(None, c), "route", "add", "unreachable", _host_prefix(c)])
        self._push(f"delete unreachable route {ip}", lambda: _delete_unreachable_route(ip))
        local = _link_address(ip)
        via_if = f"fwp{secrets.token_hex(4)}"
        # The veth lives in the two namespaces only: deleting either namespace deletes it.
        Namespaces.link(via.machine, via_if, Machine(netns, netns), "eth0")
        _link_end(via.netns, via_if, local, ip)
        _link_end(netns, "eth0", ip, local)
        return ip

    @staticmethod
    def _sshd_config(
        host_dir: Path,
        address: str,
        port: int,
        host_keys: list[Path],
        extra_env: Mapping[str, str] | None = None,
        *,
        accept_env: Iterable[str] = (),
    ) -> str:
        env = {**host_env(host_dir), **(extra_env or {})}
        lines = [
            f"ListenAddress {address}",
            f"Port {port}",
            *(f"HostKey {path}" for path in host_keys),
            f"AuthorizedKeysFile {host_dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            f"PidFile {host_dir / 'sshd.pid'}",  # says 1: the PID inside sshd's PID namespace
            "StrictModes no",
            "AllowTcpForwarding yes",  # the default, spelled out: jumps (-W) need it
            "LogLevel VERBOSE",
            # Namespace hosts share one filesystem: each gets its own /etc, /run and
            # WireGuard socket directory for forgeway's scripts (see their headers).
            # extra_env (add_host) joins them, e.g. DOCKER_HOST of the host's dockerd.
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
            *([f"AcceptEnv {' '.join(accept_env)}"] if accept_env else []),
        ]
        return "\n".join(lines) + "\n"

    def _start_sshd(self, netns: str, config: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
        """Start sshd in ``netns`` and in a PID namespace of its own; return (unshare, sshd PID).

        sshd is the init of its PID namespace, so it reaps the per-connection processes
        it orphans (a client that hangs up during key exchange leaves one) and, when it
        exits, the kernel kills whatever of it is left: nothing outlives the host.
        ``ip netns exec`` execs ``unshare`` (no fork), which forks sshd and waits for it.
        """
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        cmd = ["unshare", "--pid", "--kill-child", SSHD, "-D", "-f", str(config), "-E", str(log)]
        proc = subprocess.Popen(
            Machine(netns, netns).argv(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sshd_pid: int | None = None
        self._push(f"stop sshd in {netns}", lambda: _stop_sshd(proc, sshd_pid))
        deadline = time.monotonic() + _READY_TIMEOUT
        while (sshd_pid := _child_pid(proc.pid)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text() if log.exists() else "(no log)"
                raise RuntimeError(f"sshd in {netns} did not start (status {proc.poll()}):\n{text}")
            time.sleep(0.01)
        return proc, sshd_pid

    @staticmethod
    def _wait_ready(
        proc: subprocess.Popen[bytes],
        *,
        address: str,
        port: int,
        host_key: str,
        log: Path,
        probe_netns: str | None,
    ) -> None:
        """Wait until sshd answers on address:port with host_key (seen from probe_netns)."""
        keyscan = ["ssh-keyscan", "-T", "2", "-t", host_key.split(maxsplit=1)[0], "-p", str(port), address]
        prober = _DEPLOYER if probe_netns is None else Machine(probe_netns, probe_netns)
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                text = log.read_text() if log.exists() else "(no log)"
                raise RuntimeError(f"sshd for {address}:{port} exited with status {proc.returncode}:\n{text}")
            scan = prober.execute(keyscan, timeout=_COMMAND_TIMEOUT)
            offered = {" ".join(line.split()[1:3]) for line in scan.stdout.splitlines() if not line.startswith("#")}
            if host_key in offered:
                break
            if offered:
                raise RuntimeError(f"{address}:{port} answers with another host key: {offered}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {address}:{port} did not answer in {_READY_TIMEOUT}s: {scan.stderr}")
            time.sleep(0.05)

    # ----------------------------------------------------------------------- keys and agent

    def spare_host_key(self, key_type: str = "ed25519") -> str:
        """A freshly generated public key that no lab host has: the "wrong" pin."""
        path = self.work_dir / f"spare_{key_type}_{secrets.token_hex(4)}"
        return generate_key(path, key_type)

    def agent_env(self, *hosts: LabHost) -> dict[str, str]:
        """``{"SSH_AUTH_SOCK": ...}`` of an ssh-agent of this lab holding the hosts' client keys.

        An agent is how an ``ssh`` started by a ProxyCommand (a jump) gets an identity:
        it inherits the environment, but none of the outer ssh's ``-i``/``-F``/``-o``.
        The agent is started once per lab and stopped, by PID, by :meth:`close`.
        """
        if self._agent_socket is None:
            socket_path = self.work_dir / "agent.sock"
            proc = subprocess.Popen(
                ["ssh-agent", "-D", "-a", str(socket_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._push(f"stop ssh-agent {proc.pid}", lambda: _stop_process(proc))
            deadline = time.monotonic() + _READY_TIMEOUT
            while not socket_path.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ssh-agent did not create {socket_path}")
                time.sleep(0.02)
            self._agent_socket = socket_path
        env = {"SSH_AUTH_SOCK": str(self._agent_socket)}
        for host in hosts:
            if host.client_key not in self._keys_in_agent:
                _DEPLOYER.succeed(["ssh-add", "-q", str(host.client_key)], env=env)
                self._keys_in_agent.add(host.client_key)
        return env
