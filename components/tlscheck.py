"""Checks of the TLS setup that need more than the config: made before anything is registered.

* ``letsencrypt_dns_problems``: Let's Encrypt's HTTP-01 challenge reaches GitLab only if
  every name (GitLab's, the registry's) resolves to the VPS's public address. Looked up
  with the deployer's resolver at preview/up time; what is missing is reported as a
  warning (DNS may be about to change, and the engine cannot see it either), naming each
  name, what it resolved to and what it must resolve to.
* ``uncovered_names``: with ``own-ca``, every name and address clients use must be in
  the server certificate (components.pki.covers, the rule TLS clients apply). The names
  come from the same config, so this guards the code that makes them: a failure is a
  bug, reported as an error naming the missing name before any resource is registered.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence

from components.config import StackConfig
from components.pki import covers

__all__ = ["Resolver", "letsencrypt_dns_problems", "system_resolver", "uncovered_names"]

Resolver = Callable[[str], Sequence[str]]  # a name -> its addresses (empty: does not resolve)


def system_resolver(name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def letsencrypt_dns_problems(cfg: StackConfig, resolve: Resolver = system_resolver) -> list[str]:
    """What keeps Let's Encrypt from reaching GitLab through the VPS, one line each."""
    if cfg.gitlab.tls != "letsencrypt":
        return []
    public = cfg.vps.internet_address
    try:
        wanted = {str(ipaddress.ip_address(public))}
    except ValueError:
        wanted = set(resolve(public))
        if not wanted:
            return [f"the VPS's public_address {public} does not resolve: Let's Encrypt cannot reach it"]
    names = [cfg.gitlab.domain]
    if cfg.registry.enabled and cfg.registry_domain not in names:
        names.append(cfg.registry_domain)
    problems = []
    for name in names:
        found = set(resolve(name))
        if not found:
            problems.append(f"{name} does not resolve; point it at the VPS ({', '.join(sorted(wanted))})")
        elif not found & wanted:
            problems.append(
                f"{name} resolves to {', '.join(sorted(found))}, not to the VPS ({', '.join(sorted(wanted))}): "
                "Let's Encrypt's HTTP-01 challenge would not reach GitLab"
            )
    return problems


def uncovered_names(cert_dns: Iterable[str], cert_ips: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The names in ``wanted`` (host names or addresses clients dial) the certificate misses."""
    names = [*cert_dns, *cert_ips]
    return [host for host in wanted if not covers(names, host)]
