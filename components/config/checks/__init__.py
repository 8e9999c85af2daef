"""The cross-checks: rules that span fields or sections, run on a parsed config.

Each check is a plain function from the config to its problems, documented once, in its
docstring; ``CROSS_CHECKS`` lists each with the sections it needs whole. The secret
checks (secrets.py) also see the secret values.
"""

from __future__ import annotations

from collections.abc import Callable

from components.config.checks.arch import check_images, check_runner_tags
from components.config.checks.backup import check_backup_repository
from components.config.checks.forge import check_forge
from components.config.checks.hosts import check_admin_peers, check_host_links, check_roles
from components.config.checks.networks import (
    check_docker_overlaps,
    check_forge_network,
    check_ipv6,
    check_networks,
    check_runner_networks,
)
from components.config.checks.ports import check_host_ports, check_ports
from components.config.checks.secrets import check_secrets, duplicate_wireguard_keys, missing_runner_tokens
from components.config.checks.woodpecker import check_woodpecker
from components.config.problems import Problem
from components.config.sections import StackConfig

__all__ = ["CROSS_CHECKS", "Check", "check_secrets", "duplicate_wireguard_keys", "missing_runner_tokens"]

Check = Callable[[StackConfig], list[Problem]]

# Each check with the sections it needs whole: with a section invalid, the check is
# skipped (its field errors are already reported) rather than guessing from a part.
CROSS_CHECKS: tuple[tuple[frozenset[str], Check], ...] = (
    (frozenset({"hosts"}), check_roles),
    (frozenset({"forge", "gitlab", "gitea", "forwarding", "registry", "backup"}), check_forge),
    (frozenset({"hosts"}), check_host_links),
    (frozenset({"hosts", "tunnel"}), check_admin_peers),
    (frozenset({"forge", "forwarding", "registry", "gitlab", "gitea", "tunnel"}), check_ports),
    (frozenset({"hosts", "forwarding"}), check_host_ports),
    (frozenset({"tunnel"}), check_networks),
    (frozenset({"forge", "hosts", "gitlab", "gitea", "runners"}), check_images),
    (frozenset({"hosts", "tunnel", "runners"}), check_runner_networks),
    (frozenset({"hosts", "tunnel"}), check_docker_overlaps),
    (frozenset({"forge", "hosts", "tunnel", "gitlab", "gitea"}), check_forge_network),
    (frozenset({"hosts"}), check_runner_tags),
    (frozenset({"hosts", "tunnel", "backup"}), check_backup_repository),
    (frozenset({"hosts", "tunnel", "forwarding", "runners"}), check_ipv6),
    (frozenset({"forge", "hosts", "forwarding", "gitea", "woodpecker"}), check_woodpecker),
)
