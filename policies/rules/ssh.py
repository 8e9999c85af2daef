"""Remote connections pin the SSH host key (5), and the advisory twin that warns about
every unpinned one; with the pin's config schema."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from pulumi_policy import PolicyConfigSchema, ReportViolation, ResourceValidationArgs

from ._props import DOCKER_PROVIDER, REMOTE_TYPES, _is_map, _kind, _strings, _true

# --- 5. remote connections pin the host key -----------------------------------------


def _ssh_option(options: Sequence[str], key: str) -> str | None:
    """The value ssh uses for an ``-o`` option: the first one given wins."""
    i = 0
    while i < len(options):
        word = options[i]
        if word == "-o" and i + 1 < len(options):
            spec, i = options[i + 1], i + 2
        elif word.startswith("-o") and len(word) > 2:
            spec, i = word[2:], i + 1
        else:
            i += 1
            continue
        name, _, value = spec.strip().replace("=", " ", 1).partition(" ")
        if name.lower() == key.lower():
            return value.strip()
    return None


def _ssh_pin_problems(options: Sequence[str], hop: str) -> list[str]:
    problems = []
    strict = _ssh_option(options, "StrictHostKeyChecking")
    if (strict or "").lower() != "yes":
        problems.append(f"{hop} runs ssh with StrictHostKeyChecking={strict or 'unset'}")
    if _ssh_option(options, "ProxyJump"):
        problems.append(f"{hop} uses ProxyJump, whose ssh does not get these -o options")
    proxy = _ssh_option(options, "ProxyCommand")
    if proxy:
        try:
            words = shlex.split(proxy)
        except ValueError:
            words = []
        if words and words[0].rsplit("/", 1)[-1] == "ssh":
            problems += _ssh_pin_problems(words[1:], "its jump host (ProxyCommand)")
    return problems


def _unpinned_connections(args: ResourceValidationArgs) -> list[str]:
    """What in a resource connects over SSH without checking the host key."""
    found = []
    if args.resource_type in REMOTE_TYPES:
        connection = args.props.get("connection")
        if not _is_map(connection):
            return []
        host = connection.get("host", "?")
        if not connection.get("hostKey"):
            found.append(f"{_kind(args.resource_type)} '{args.name}' connects to {host} without connection.hostKey")
        proxy = connection.get("proxy")
        if _is_map(proxy) and not proxy.get("hostKey"):
            found.append(
                f"{_kind(args.resource_type)} '{args.name}' reaches {host} through jump host "
                f"{proxy.get('host', '?')} without connection.proxy.hostKey"
            )
    elif args.resource_type == DOCKER_PROVIDER:
        host = args.props.get("host")
        if isinstance(host, str) and host.startswith("ssh://"):
            options = _strings(args.props.get("sshOpts"))
            for problem in _ssh_pin_problems(options, "it"):
                found.append(f"docker provider '{args.name}' ({host}): {problem}")
    return found


_PIN_FIX = (
    "pin the host key: set hosts[].host_key (`ssh-keyscan -t ed25519 -p PORT ADDRESS`), which sets "
    "connection.host_key and ssh_opts StrictHostKeyChecking=yes with the key"
)


def ssh_host_keys_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != DOCKER_PROVIDER:
        return
    if _true(args.get_config().get("allowUnpinnedHostKeys", False)):
        return  # waived: ssh-host-keys-unpinned reports each one as a warning
    for problem in _unpinned_connections(args):
        report_violation(
            f"{problem}: {_PIN_FIX}; or waive this with the policy config allowUnpinnedHostKeys: true",
            None,
        )


def ssh_host_keys_unpinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != DOCKER_PROVIDER:
        return
    for problem in _unpinned_connections(args):
        report_violation(f"warning: {problem}, so a machine in the middle can impersonate it: {_PIN_FIX}", None)


HOST_KEY_CONFIG = PolicyConfigSchema(
    properties={
        "allowUnpinnedHostKeys": {
            "type": "boolean",
            "default": False,
            "description": "Waive the pin (the stack's insecure_unpinned_host_keys): unpinned connections "
            "are then reported only as warnings by ssh-host-keys-unpinned",
        }
    }
)
