"""The probe: one shell script per host, run as root, that only reads; and its output's parser.

Each part prints ``@@ NAME``, then what it read, then ``@@rc STATUS``: :func:`sections`
turns that into ``{NAME: Section}``. What the parts read is chosen to hold no secret:
``wg show IF latest-handshakes|endpoints|allowed-ips`` (never ``wg show`` whole or
``dump``, which print the private key), hashes of nft listings, ``df``, docker's view of
two containers, GitLab's health endpoints and version file, status.json (no secret, issue
18 contract), the API token's expiry date (never its value), and the registry's served
certificates and the CA dockerd trusts for it (public; s_client's session lines are cut).

The forwarding table is compared on the VPS itself, with its own nft: the program's
ruleset (the text `up` hands forwarding-up.sh) is loaded in a throw-away network
namespace (``unshare -n``, as forwarding-up.sh checks it) and listed stateless
(``nft -s``), as is the live table; the two listings' SHA-256 must be equal. Both
listings come from the same nft, so its formatting cannot differ between them.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from components.gitlab import CONTAINER_NAME as GITLAB_CONTAINER
from components.registry_gc import STATUS as GC_STATUS
from components.runners import RUNNER_CONTAINER

__all__ = [
    "BACKUP_STATUS",
    "GITLAB_VERSION_FILE",
    "REGISTRY_GC_STATUS",
    "REGISTRY_GC_UNIT",
    "ProbeSpec",
    "Section",
    "probe_script",
    "sections",
]

GITLAB_VERSION_FILE = "/opt/gitlab/embedded/service/gitlab-rails/VERSION"  # issue-18 contract, point 1
BACKUP_STATUS = "/var/lib/forgeway/backup/status.json"  # issue-18 contract, point 2
REGISTRY_GC_STATUS = GC_STATUS  # forgeway-registry-gc.sh's (host-files.sh job_*)
REGISTRY_GC_UNIT = "forgeway-registry-gc.service"  # registry-gc-up.sh's install_timer
SAVED_RULESET = "/etc/forgeway/nftables/forgeway.nft"  # forwarding-up.sh's copy of what it loaded
_RULESET_END = "FORGEWAY_DOCTOR_RULESET_END"
_TOKEN_END = "FORGEWAY_DOCTOR_TOKEN_END"  # noqa: S105 (a here-document marker)

# GET https://127.0.0.1PATH inside the GitLab container (127.0.0.1 is on GitLab's monitoring
# allow-list, which /-/liveness and /-/readiness need): omnibus's own curl, else python3 (the
# lab's stand-in has no curl). The body (300 bytes at most), then the status on the last line.
_PY_GET = (
    "import ssl,sys,urllib.request,urllib.error\n"
    "c=ssl._create_unverified_context()\n"
    "try:\n"
    " r=urllib.request.urlopen('https://127.0.0.1'+sys.argv[1],context=c,timeout=10)\n"
    " print(r.read(300).decode(errors='replace'));print(r.status)\n"
    "except urllib.error.HTTPError as e:\n"
    " print(e.read(300).decode(errors='replace'));print(e.code)\n"
    "except Exception as e:\n"
    " print(type(e).__name__, e);print(0)\n"
)

# Read-only: the expiry of root's active personal access token of forgeway's name (the value
# is never read). For `gitlab-rails runner FILE`; TOKEN_NAME comes from gitlab-api-token.rb.
_TOKEN_RUBY = """\
user = User.find_by_username('root')
expires = user && user.personal_access_tokens.active.where(name: %s).maximum(:expires_at)
puts "forgeway-token-expires #{expires || 'none'}"
"""  # noqa: S105 (reads a date, never a token)


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe on one host (from the stack's config and the program's synthesis)."""

    interface: str = "wg0"
    vps: bool = False
    admin_port: int = 0  # vps: the admin SSH port
    ruleset: str = ""  # vps: the program's ruleset text
    ipv6: bool = False  # vps with forwarding.ipv6: table ip6 forgeway and IPv6 forwarding too
    docker: bool = False  # a docker host: disk free of the data root
    gitlab: bool = False  # the GitLab host: container, health, version, backup status
    runner: bool = False  # a runner host: the runner container, gitlab-runner verify
    token_name: str = ""  # gitlab host with runners: the API token whose expiry to read
    registry: tuple[str, ...] = ()  # docker hosts: the registry's endpoints (host:port) to fetch the chain of
    registry_ca: bool = False  # own-ca: also read each endpoint's certs.d ca.crt (public)
    registry_gc: bool = False  # the GitLab host with the registry's garbage collection: its status, its timer


def _part(name: str, body: str) -> str:
    return f"printf '\\n@@ %s\\n' {shlex.quote(name)}\n( {body}\n) </dev/null 2>&1\nprintf '\\n@@rc %s\\n' $?\n"


def probe_script(spec: ProbeSpec) -> str:
    """The shell script (run as root with ``sh -c``) for ``spec``; it changes nothing."""
    wg = shlex.quote(spec.interface)
    parts = [
        "set -u\nexport LC_ALL=C\n",
        _part("now", "date +%s"),
        _part("wg-handshakes", f"wg show {wg} latest-handshakes"),
        _part("wg-endpoints", f"wg show {wg} endpoints"),
        _part("wg-allowed-ips", f"wg show {wg} allowed-ips"),
    ]
    if spec.vps:
        parts += [
            _part("ip-forward", "sysctl -n net.ipv4.ip_forward"),
            _part("admin-port", f"ss -Htln 'sport = :{int(spec.admin_port)}'"),
            *_table_parts("nft", "ip forgeway", spec.ruleset),
            _part("nft-saved", f"sha256sum <{SAVED_RULESET} | cut -d' ' -f1"),
        ]
        if spec.ipv6:
            parts += [
                _part("ipv6-forward", "sysctl -n net.ipv6.conf.all.forwarding"),
                *_table_parts("nft6", "ip6 forgeway", spec.ruleset),
            ]
    if spec.docker:
        parts.append(_part("disk", "root=$(docker info --format '{{.DockerRootDir}}') || exit 1; df -P \"$root\""))
    for endpoint in spec.registry:
        parts += _registry_parts(endpoint, spec.registry_ca)
    if spec.gitlab:
        c = shlex.quote(GITLAB_CONTAINER)
        get = (
            f"if docker exec {c} test -x /opt/gitlab/embedded/bin/curl; then "
            f"docker exec {c} /opt/gitlab/embedded/bin/curl -ksS --max-time 10 -w '\\n%{{http_code}}\\n' "
            f'"https://127.0.0.1/-/$1"; else docker exec {c} python3 -c {shlex.quote(_PY_GET)} "/-/$1"; fi'
        )
        parts += [
            _part(
                "gitlab-state",
                f"docker inspect -f '{{{{.State.Status}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}"
                f"{{{{else}}}}none{{{{end}}}}' {c}",
            ),
            _part("gitlab-version", f"docker exec {c} cat {GITLAB_VERSION_FILE}"),
            _part("gitlab-liveness", f"get() {{ {get}; }}; get liveness"),
            _part("gitlab-readiness", f"get() {{ {get}; }}; get readiness"),
            _status_part("backup-status", BACKUP_STATUS),
        ]
        if spec.registry_gc:
            timer = shlex.quote(REGISTRY_GC_UNIT.replace(".service", ".timer"))
            cron = "/etc/cron.d/" + REGISTRY_GC_UNIT.removesuffix(".service")
            parts += [
                _status_part("registry-gc-status", REGISTRY_GC_STATUS),
                _part(
                    "registry-gc-timer",
                    f"if [ -d /run/systemd/system ]; then systemctl show -p LoadState -p ActiveState {timer}; "
                    f"elif [ -f {cron} ]; then echo cron=present; else echo cron=absent; fi",
                ),
            ]
        if spec.token_name:
            ruby = _TOKEN_RUBY % _ruby_string(spec.token_name)
            parts.append(
                _part(
                    "api-token",
                    f'docker exec -i {c} sh -c \'f=$(mktemp) && cat >"$f" && gitlab-rails runner "$f"; '
                    f"rc=$?; rm -f \"$f\"; exit $rc' <<'{_TOKEN_END}'\n{ruby}{_TOKEN_END}",
                )
            )
    if spec.runner:
        r = shlex.quote(RUNNER_CONTAINER)
        parts += [
            _part("runner-state", f"docker inspect -f '{{{{.State.Status}}}}' {r}"),
            _part("runner-verify", f"docker exec {r} gitlab-runner verify"),
        ]
    return "".join(parts)


def _status_part(name: str, path: str) -> str:
    """A timed job's status.json (no secret), or ``absent`` when it has not run yet."""
    return _part(name, f"if [ -e {path} ]; then cat {path}; else echo absent; fi")


def _table_parts(prefix: str, table: str, ruleset: str) -> list[str]:
    """PREFIX-live: the sha256 of ``nft -s list table TABLE``; PREFIX-expected: the same of the
    program's ``ruleset`` loaded in a scratch network namespace (as forwarding-up.sh checks it)."""
    digest = "sha256sum | cut -d' ' -f1"
    listing = shlex.quote(f'nft -f "$1" >/dev/null && nft -s list table {table}')
    return [
        _part(f"{prefix}-live", f"out=$(nft -s list table {table}) || exit 1; printf '%s\\n' \"$out\" | {digest}"),
        _part(
            f"{prefix}-expected",
            f"f=$(mktemp) || exit 1\ncat >\"$f\" <<'{_RULESET_END}'\n{ruleset.rstrip()}\n{_RULESET_END}\n"
            "# shellcheck disable=SC2016\n"
            f'out=$(unshare -n sh -c {listing} sh "$f"); rc=$?\n'
            'rm -f "$f"; [ $rc -eq 0 ] || { printf \'%s\\n\' "$out"; exit $rc; }\n'
            f"printf '%s\\n' \"$out\" | {digest}",
        ),
    ]


# From s_client's output only the served certificates and its verify/error lines: never the
# session section (its Master-Key is a secret of that connection).
_CHAIN_FILTER = (
    "/-----BEGIN CERTIFICATE-----/ { pem = 1 }\n"
    "pem { print }\n"
    "/-----END CERTIFICATE-----/ { pem = 0; next }\n"
    "!pem && /^(Verify return code:|verify error:|connect:)|:error:|errno=/ { print }\n"
)


def _registry_parts(endpoint: str, own_ca: bool) -> list[str]:
    """The chain the registry serves at ``endpoint`` as this host reaches it (its names and
    route; SNI and the name check as dockerd sends them), and with own-ca the CA dockerd
    trusts for it. openssl's verify line is against the host's default store."""
    name = endpoint.rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(name)
        check = ["-verify_ip", name]
    except ValueError:
        check = ["-servername", name, "-verify_hostname", name]
    s_client = shlex.join(["openssl", "s_client", "-connect", endpoint, *check, "-showcerts"])
    chain = (
        "command -v openssl >/dev/null 2>&1 || { echo 'openssl: not found'; exit 127; }\n"
        f"out=$(timeout 20 {s_client} </dev/null 2>&1); rc=$?\n"
        f"printf '%s\\n' \"$out\" | awk {shlex.quote(_CHAIN_FILTER)}\nexit $rc"
    )
    parts = [_part(f"registry-chain:{endpoint}", chain)]
    if own_ca:
        ca = shlex.quote(f"docker/certs.d/{endpoint}/ca.crt")
        parts.insert(0, _part(f"registry-ca:{endpoint}", f'cat "${{FORGEWAY_ETC:-/etc}}"/{ca}'))
    return parts


def _ruby_string(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"token name {value!r}: expected letters, digits, '_', '.', '-'")
    return f"'{value}'"


@dataclass(frozen=True)
class Section:
    text: str  # what the part printed (stdout and stderr), stripped
    rc: int  # its exit status

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")


_START = re.compile(r"^@@ (\S+)$")
_END = re.compile(r"^@@rc (\d+)$")


def sections(output: str) -> dict[str, Section]:
    """The probe's output as ``{part: Section}``; a part cut short (no ``@@rc``) is left out."""
    found: dict[str, Section] = {}
    name: str | None = None
    lines: list[str] = []
    for line in output.splitlines():
        if (start := _START.match(line)) is not None:
            name, lines = start.group(1), []
        elif (end := _END.match(line)) is not None and name is not None:
            found[name] = Section("\n".join(lines).strip(), int(end.group(1)))
            name = None
        elif name is not None:
            lines.append(line)
    return found
