"""The forge's guardrails: its volumes (GitLab's, or Gitea's and Woodpecker's) are protected (1), containers have
memory limits and GitLab shared memory (8), and the forge sees its clients' addresses (11)."""

from __future__ import annotations

import ipaddress
import re

from pulumi_policy import ReportViolation, ResourceValidationArgs

from ._props import (
    CONTAINER,
    GITEA_VOLUME_ROLES,
    GITLAB_ROLE,
    GITLAB_VOLUME_ROLES,
    MIN_GITLAB_SHM_MB,
    REMOTE_TYPES,
    ROLE_LABEL,
    VOLUME,
    WOODPECKER_VOLUME_ROLES,
    _kind,
    _labels,
    _number,
    _texts,
)
from .decoding import _with_decoded
from .forwarding import forwarded_ports

# --- 1. GitLab volumes are protected ---------------------------------------------


def gitlab_volumes_protected(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != VOLUME:
        return
    role = _labels(args.props).get(ROLE_LABEL)
    docker_name = str(args.props.get("name") or args.name)
    names = f"{args.name} {docker_name}".lower()
    if role in WOODPECKER_VOLUME_ROLES:
        # A Gitea stack's CI: its pipelines and secrets. By label only: an agent's config
        # volume (its id) is named like it and is no data.
        forge = "Woodpecker"
    else:
        forge = "Gitea" if role in GITEA_VOLUME_ROLES or "gitea" in names else "GitLab"
    if role in GITLAB_VOLUME_ROLES | GITEA_VOLUME_ROLES | WOODPECKER_VOLUME_ROLES:
        what = f"{ROLE_LABEL}={role}"
    elif re.search(r"gitlab|gitea|registry", names):
        # Unlabelled but named like a forge's data: treated as such, data loss is not undone.
        what = f"named like a {forge} volume ({docker_name})"
    else:
        return
    if not args.opts.protect:
        report_violation(
            f"docker volume '{args.name}' ({what}) is not protected, so a replace or destroy deletes "
            f"{forge}'s data: create it with pulumi.ResourceOptions(protect=True, retain_on_delete=True) "
            "(retain_on_delete is invisible to policies; set it too)",
            None,
        )


# --- 8. containers have memory limits; GitLab has shared memory ----------------------


def container_memory_limits(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != CONTAINER:
        return
    memory = _number(args.props.get("memory"))
    if not memory:
        report_violation(
            f"container '{args.name}' has no memory limit, so it can starve the host: set memory=<MB> "
            "(gitlab.memory_limit_mb for GitLab)",
            None,
        )
    role = _labels(args.props).get(ROLE_LABEL)
    names = f"{args.name} {args.props.get('name') or ''}".lower()
    is_gitlab = role == GITLAB_ROLE or (role is None and "gitlab" in names and "runner" not in names)
    shm = _number(args.props.get("shmSize")) or 0
    if is_gitlab and shm < MIN_GITLAB_SHM_MB:
        has = f"shm_size {shm} MB" if shm else "no shm_size (docker's default is 64 MB)"
        report_violation(
            f"GitLab container '{args.name}' has {has}: set shm_size to at least {MIN_GITLAB_SHM_MB} "
            "(GitLab's metrics and puma use /dev/shm)",
            None,
        )


# --- 11. GitLab sees its clients' addresses ------------------------------------------
#
# Advisory: snat is a supported mode (README, "Client addresses"), but what it gives up is
# said where a deploy is reviewed. Two findings, both by content:
# * a ruleset that DNATs public ports and source-NATs them on (masquerade/snat, other than
#   outbound NAT on the interface the DNAT came in on): GitLab sees one client, the VPS;
# * a gitlab.rb that trusts or allow-lists any non-loopback address, trusts every private
#   range (an empty trusted_proxies, gitlabhq config/initializers/trusted_proxies.rb) or
#   switches the failed Git/registry authentication ban off.

_SOURCE_NAT = re.compile(r"\bmasquerade\b|\bsnat\b(?:\s+(?:ip6?|inet))?\s+to\b|-j\s+(?:MASQUERADE|SNAT)\b", re.I)
_IFNAME = re.compile(r"\b(iifname|oifname|-i|-o)\s+\"?([A-Za-z0-9_.@:-]+)\"?")
_RB_LIST = re.compile(
    r"""(?x) (?: gitlab_rails\[\s*['"](trusted_proxies|monitoring_whitelist)['"]\s*\]\s*=
           | ['"](ip_whitelist)['"]\s*=>\s* ) \s* \[([^\]]*)\]"""
)
_RB_BAN = re.compile(r"gitlab_rails\[\s*['\"]rack_attack_git_basic_auth['\"]\s*\]\s*=\s*\{([^}]*)\}")
_RB_BAN_OFF = re.compile(r"['\"]enabled['\"]\s*=>\s*false\b")
_RB_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
_CLIENT_COST = (
    "every internet client reaches GitLab from one address, so its rate limits and audit log see the VPS, "
    "and one client's failed Git HTTPS or registry logins ban that address, and so every internet client, "
    "for the ban time (forgeway never allow-lists it: that would make password guessing unlimited)"
)


def _lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.split("#", 1)[0].strip() for line in joined.splitlines()]


def _source_nats_forwarded(text: str) -> str | None:
    """The source-NAT line of a ruleset that also DNATs public ports, else None."""
    forwarded = forwarded_ports(text).exposures
    if not forwarded:
        return None
    inbound = {m.group(2) for e in forwarded for m in _IFNAME.finditer(e.line) if m.group(1) in ("iifname", "-i")}
    for line in _lines(text):
        if not _SOURCE_NAT.search(line):
            continue
        out = {m.group(2) for m in _IFNAME.finditer(line) if m.group(1) in ("oifname", "-o")}
        if out and out <= inbound:
            continue  # outbound NAT to the internet, not the forwarded connections
        return line
    return None


def _non_loopback(entry: str) -> bool:
    try:
        network = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return True  # a name or a typo: not provably loopback
    return not network.is_loopback


def _gitlab_rb_problems(text: str) -> list[str]:
    problems: list[str] = []
    for m in _RB_LIST.finditer(text):
        key = m.group(1) or m.group(2)
        entries = [a if a is not None else b for a, b in _RB_STRING.findall(m.group(3))]
        wide = [e for e in entries if _non_loopback(e)]
        if key == "trusted_proxies" and not entries:
            problems.append(
                "sets gitlab_rails['trusted_proxies'] = [], so GitLab trusts every private range as a proxy, the "
                "tunnel subnet included: list only '127.0.0.1' and '::1'"
            )
        elif wide and key == "ip_whitelist":
            problems.append(
                f"exempts {wide} from the failed Git/registry login ban (rack_attack_git_basic_auth ip_whitelist): "
                "password guessing from there is unlimited, for every client when it is the VPS tunnel address; "
                "allow-list only '127.0.0.1'"
            )
        elif wide:
            problems.append(
                f"lists {wide} in gitlab_rails['{key}']: only loopback belongs there (the VPS adds no client "
                "address for GitLab to trust, and in snat mode it is every internet client)"
            )
    for m in _RB_BAN.finditer(text):
        if _RB_BAN_OFF.search(m.group(1)):
            problems.append(
                "switches the failed Git/registry login ban off (rack_attack_git_basic_auth enabled => false): "
                "password guessing over Git HTTPS and the registry is unlimited; set 'enabled' => true"
            )
    return problems


def gitlab_client_addresses(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    where = _kind(args.resource_type)
    seen: set[str] = set()
    for path, text in _with_decoded(_texts(args.resource_type, args.props)):
        line = _source_nats_forwarded(text)
        found = (
            [
                f"source-NATs the connections it forwards ({line}): {_CLIENT_COST}; use forwarding.mode: "
                "preserve-source where the GitLab host can take policy routing"
            ]
            if line
            else []
        )
        found += _gitlab_rb_problems(text)
        for problem in found:
            if problem not in seen:  # a text and its decoded copy say the same
                seen.add(problem)
                report_violation(f"{where} '{args.name}' ({path}) {problem}", None)
