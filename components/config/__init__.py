"""The whole stack config as pydantic models, and the one loader that reads it.

Every problem in a stack's config is reported at once, before any resource is
registered: each line names the full key (``forgeway:hosts[2].arch``), the value given
(``[secret]`` for secret keys) and what is expected.

The package, by concern (each option declared once, as in a NixOS module):

- ``types``: the field types and their validators (``Arch``, ``Port``, ``Address``, ...);
- ``host`` and ``sections``: the section models, each field with its type, default and
  description, and the values derived from them as properties next to them;
- ``secrets``: the keys set with ``pulumi config set --secret``;
- ``checks``: the rules that span fields or sections;
- ``problems``, ``placeholders``, ``load`` and ``yaml_numbers``: reading a stack and
  reporting what is wrong with it.
"""

from __future__ import annotations

from components.config.host import MAX_RUNNER_TAGS, Host, ProxySettings, RunnerSettings
from components.config.load import REMOVED_KEYS, load_stack_config, parse_stack, stack_file_problems
from components.config.placeholders import PLACEHOLDER
from components.config.problems import ConfigError, Problem
from components.config.secrets import SECRET_KEYS, SecretKey, fix_command
from components.config.sections import (
    SECTIONS,
    AddressPool,
    ForwardedPort,
    Forwarding,
    Gitea,
    GiteaDatabase,
    GitLab,
    Prune,
    Registry,
    Runners,
    StackConfig,
    Tunnel,
    VolumePaths,
    Woodpecker,
)
from components.config.types import (
    PROJECT,
    Arch,
    Become,
    ForgeKind,
    ForwardingMode,
    PullPolicy,
    Role,
    Service,
    SmallDevice,
    TlsMode,
    TunnelImplementation,
    VolumeRole,
)

__all__ = [
    "MAX_RUNNER_TAGS",
    "PLACEHOLDER",
    "PROJECT",
    "REMOVED_KEYS",
    "SECRET_KEYS",
    "SECTIONS",
    "AddressPool",
    "Arch",
    "Become",
    "ConfigError",
    "ForgeKind",
    "ForwardedPort",
    "Forwarding",
    "ForwardingMode",
    "GitLab",
    "Gitea",
    "GiteaDatabase",
    "Host",
    "Problem",
    "ProxySettings",
    "Prune",
    "PullPolicy",
    "Registry",
    "Role",
    "RunnerSettings",
    "Runners",
    "SecretKey",
    "Service",
    "SmallDevice",
    "StackConfig",
    "TlsMode",
    "Tunnel",
    "TunnelImplementation",
    "VolumePaths",
    "VolumeRole",
    "Woodpecker",
    "fix_command",
    "load_stack_config",
    "parse_stack",
    "stack_file_problems",
]
