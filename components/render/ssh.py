"""SSH client options that pin a host key without writing a known_hosts file.

The docker provider reaches a host over ``ssh://`` by running the local ``ssh``
binary, so host-key pinning has to be expressed as ssh options. OpenSSH's
``KnownHostsCommand`` lets the option list itself carry the pinned key: ssh asks the
command for known hosts, and the command prints exactly one line, the pinned key.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

__all__ = ["SshTarget", "host_key_algorithms", "ssh_destination", "ssh_options", "ssh_url", "url_host"]

# Signature algorithms a server may use for each key type: ssh must offer only those
# of the pinned key, or it could negotiate another key type and fail the check.
_ALGORITHMS = {
    "ssh-ed25519": "ssh-ed25519",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
    "ssh-rsa": "rsa-sha2-512,rsa-sha2-256",
}


@dataclass(frozen=True)
class SshTarget:
    """One SSH endpoint: where to connect, as whom, and the host key to expect."""

    address: str
    port: int
    user: str
    host_key: str | None  # "ssh-ed25519 AAAA..." (authorized_keys form), None = unchecked


def host_key_algorithms(host_key: str) -> str:
    """The HostKeyAlgorithms value for a pinned key (its type decides)."""
    key_type = host_key.split(maxsplit=1)[0]
    return _ALGORITHMS[key_type]


def url_host(address: str) -> str:
    """address as the host part of a URL (RFC 3986/6874): an IPv6 literal in brackets, its
    zone's '%' written %25. docker's ssh:// helper reads the URL with Go's net/url and hands
    ssh the host without brackets (docker/cli cli/connhelper/ssh/ssh.go, SpecFromURL)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # a DNS name or an IPv4 address
    if isinstance(parsed, ipaddress.IPv6Address):
        return f"[{address.replace('%', '%25')}]"
    return address


def ssh_url(target: SshTarget) -> str:
    """``ssh://user@host`` for docker; the port goes in ssh options (-p), not the URL."""
    return f"ssh://{target.user}@{url_host(target.address)}"


def ssh_destination(target: SshTarget) -> str:
    return f"{target.user}@{target.address}"


def _pin_options(target: SshTarget) -> list[str]:
    if target.host_key is None:
        # The stack opted out of pinning (insecure_unpinned_host_keys): accept any key,
        # remember none.
        return [
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]
    key_type, key_b64 = target.host_key.split()[:2]
    return [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"KnownHostsCommand=/bin/echo %H {key_type} {key_b64}",
        "-o",
        f"HostKeyAlgorithms={host_key_algorithms(target.host_key)}",
    ]


def ssh_options(target: SshTarget, jump: SshTarget | None = None) -> list[str]:
    """Options for ``ssh`` (and so for ``docker.Provider(ssh_opts=...)``) to reach target.

    The port is an option (``-p``) because ``ssh://user@host:port`` URLs are parsed by
    docker, while options go to ssh verbatim. A jump host gets its own pinned key through
    an explicit ProxyCommand: ProxyJump would start a second ssh that does not inherit
    ``-o`` options given on the command line.
    """
    opts = ["-o", "BatchMode=yes", "-p", str(target.port), *_pin_options(target)]
    if jump is not None:
        # ssh expands %-tokens in ProxyCommand, so the jump's own tokens are escaped.
        jump_opts = [o.replace("%", "%%") for o in ssh_options(jump)]
        # Brackets let -W take an IPv6 target (ssh reads "[addr]:port").
        # The destination too: an IPv6 zone (fe80::1%eth0) would read as a token.
        inner = ["ssh", *jump_opts, "-W", "[%h]:%p", ssh_destination(jump).replace("%", "%%")]
        opts += ["-o", f"ProxyCommand={shlex.join(inner)}"]
    return opts
