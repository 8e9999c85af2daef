"""forgeway's CrossGuard policies (issue 7): guardrails against losing data or opening the network.

Every policy is a ``ResourceValidationPolicy`` or a ``StackValidationPolicy`` whose
validate function is a plain function that filters on ``resource_type``. What a
validator sees, with pulumi_policy 1.21 under the Pulumi engine:

* ``props`` use the engine's camelCase names (``sshOpts``, ``shmSize``), wrapped in
  pulumi_policy's unknown-checking proxies: mappings and sequences, not dicts and
  lists, and reading a value unknown during preview raises (the engine then records
  "can't run policy during preview" instead of a verdict).
* A resource policy sees a resource's *inputs*; a stack policy sees every resource's
  final *outputs* (for a component: what it passed to ``register_outputs``).
* Secret values arrive unwrapped: the engine sends them marked (``KeepSecrets``) but
  pulumi_policy's ``deserialize_properties`` drops the marker before any validator
  runs, so no policy can ask "is this value secret?" (see ``secrets-not-plaintext``).
* ``opts`` carries ``protect`` and ``additional_secret_outputs`` but not
  ``retain_on_delete``: the analyzer protocol has no such field.

Conventions the components follow so these policies can see what they check (README,
"Conventions"):

* ``forgeway.role`` label: volumes ``gitlab-config``, ``gitlab-logs``, ``gitlab-data``,
  ``registry-data`` (forge gitea: ``gitea-data``, ``woodpecker-data``); containers ``gitlab``
  and ``gitlab-runner``.
* Runner containers declare what GitLab enforces server-side with labels
  ``forgeway.runner.access-level=ref_protected`` (naming its UserRunner or token check in
  ``forgeway.runner.registration``) and, to allow the docker socket in jobs,
  ``forgeway.runner.insecure-docker-socket-in-jobs=true``.
* A host's architecture: the ``forgeway:hosts:Host`` component registers ``arch`` and
  its ``<host>-arch`` command carries ``triggers=[arch]``; its docker provider is its
  child ``<host>-docker``.
* Forwarding is nftables NAT rules with literal ports and addresses (forgeway's: the
  ``<vps>-forwarding`` command's ``stdin``); a runner's ``config.toml`` travels in the
  runner container's ``uploads`` (or on a command's ``stdin``), never on a command line.
  The policies find both by content, in every text a resource ships and in what that
  text decodes to (staged base64 files, here-documents), not by a resource's name.
* Secret material in an input the provider does not encrypt is declared with
  ``additional_secret_outputs=[<input>]`` (the provider SDKs do the same for inputs
  their schema marks secret, e.g. pulumi-command's ``connection``).

The pack is :data:`POLICIES`, built here in the order the engine lists them; each
policy's validate function lives in the module of its concern: ``gitlab`` (volumes,
memory, client addresses), ``images``, ``runners`` (with ``runner_config``, the
config.toml reading), ``dind`` (docker-in-docker over TLS), ``ssh``, ``forwarding``, ``registry``, ``secrets``,
``tunnel`` and ``backup``; ``_props`` and ``decoding`` are what they share (resource types, prop
readers, decoded texts). Modules import each other relatively, so the package loads as
``policies.rules`` (tests) and as ``rules`` (``__main__.py`` under the Pulumi CLI).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from ._props import COMMAND, GITLAB_VOLUME_ROLES, REMOTE_IMAGE, ROLE_LABEL
from .backup import backup_repository_off_device, gitlab_backed_up
from .decoding import decoded_texts
from .dind import runner_dind_tls
from .forwarding import PORTS_CONFIG, forwarded_ports, vps_forwarding_ports
from .gitlab import container_memory_limits, gitlab_client_addresses, gitlab_volumes_protected
from .images import image_pin_problem, image_platform_matches_host, images_pinned
from .registry import registry_tls_only
from .runner_config import job_isolation_problems
from .runners import runner_containers_drain, runner_documents, runner_job_isolation, runner_protected_by_gitlab
from .secrets import SecretFinding, secret_material, secrets_not_plaintext
from .ssh import HOST_KEY_CONFIG, ssh_host_keys_pinned, ssh_host_keys_unpinned
from .tunnel import tunnel_segmentation_kept

__all__ = [
    "COMMAND",
    "GITLAB_VOLUME_ROLES",
    "POLICIES",
    "REMOTE_IMAGE",
    "ROLE_LABEL",
    "SecretFinding",
    "decoded_texts",
    "forwarded_ports",
    "image_pin_problem",
    "job_isolation_problems",
    "runner_documents",
    "secret_material",
]


# --- the pack ------------------------------------------------------------------------


POLICIES: list[Any] = [
    ResourceValidationPolicy(
        name="gitlab-volumes-protected",
        description="GitLab's config, logs, data and registry volumes, and Gitea's and Woodpecker's data volumes, "
        "are protected (and retained on delete).",
        validate=gitlab_volumes_protected,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="images-pinned",
        description="Every container image is pinned by a fixed version tag or a digest, never latest or untagged.",
        validate=images_pinned,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="image-platform-matches-host",
        description="An image's platform is the architecture of the host whose docker provider pulls it.",
        validate=image_platform_matches_host,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="runner-job-isolation",
        description="Runner jobs are privileged only on runners GitLab holds ref_protected, get the docker socket "
        "only when explicitly allowed, and never get host paths, capabilities, devices, host namespaces or unconfined "
        "seccomp/AppArmor.",
        validate=runner_job_isolation,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="runner-protected-by-gitlab",
        description="A runner whose jobs run privileged or get the docker socket is held ref_protected by GitLab: "
        "created through the API as a UserRunner with access_level ref_protected, or its hand-made token checked "
        "against GitLab's API before the runner container.",
        validate=runner_protected_by_gitlab,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="runner-dind-tls",
        description="Warns when a runner that allows docker-in-docker (privileged jobs) leaves dind without TLS: "
        "no /certs/client volume shared with its jobs, or an environment that turns TLS off.",
        validate=runner_dind_tls,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="ssh-host-keys-pinned",
        description="Every remote command and docker provider pins the SSH host key.",
        validate=ssh_host_keys_pinned,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=HOST_KEY_CONFIG,
    ),
    ResourceValidationPolicy(
        name="ssh-host-keys-unpinned",
        description="Warns about every SSH connection that does not check the host key (waived or not).",
        validate=ssh_host_keys_unpinned,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="vps-forwarding-ports",
        description="Every NAT rule, in whatever resource, forwards only allowlisted ports to allowlisted ports on a "
        "host behind the tunnel, never an admin SSH port or the docker API.",
        validate=vps_forwarding_ports,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PORTS_CONFIG,
    ),
    ResourceValidationPolicy(
        name="registry-tls-only",
        description="The container registry is served and reached over TLS; plain-HTTP registries are refused.",
        validate=registry_tls_only,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="container-memory-limits",
        description="Containers have memory limits, and GitLab's container has at least 256 MB of shared memory.",
        validate=container_memory_limits,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="runner-containers-drain",
        description="Runner containers stop with SIGQUIT and a grace period, so a replace lets running jobs finish.",
        validate=runner_containers_drain,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="gitlab-client-addresses",
        description="Warns when GitLab cannot tell its clients apart: forwarded connections source-NATed (snat "
        "mode), or a gitlab.rb that trusts or allow-lists more than loopback or switches the login ban off.",
        validate=gitlab_client_addresses,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="tunnel-segmentation-kept",
        description="No resource removes or flushes the tunnel's segmentation table, and no rule in it accepts "
        "from every tunnel peer.",
        validate=tunnel_segmentation_kept,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="gitlab-backed-up",
        description="Warns when GitLab runs but nothing backs it up off the device (backup.enabled is false).",
        validate=gitlab_backed_up,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="backup-repository-off-device",
        description="GitLab's backup repository is never on the device itself: not a local path, not loopback, "
        "not the host the backup runs on.",
        validate=backup_repository_off_device,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="secrets-not-plaintext",
        description="Secret material (passwords, tokens, private keys) never sits in a plain-text input or on a "
        "command line.",
        validate=secrets_not_plaintext,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
]
