"""Backup: GitLab backed up on a timer, encrypted, off the device, with restic (docs/backup.md).

Its commands, children named after their host:

* ``<gitlab host>-backup-key`` (backup-key.sh): the GitLab host's own ed25519 key under
  /etc/forgeway/backup, made there if missing; it never leaves the host, the command's
  stdout is its public key only.
* ``<vps>-backup-sftp`` (backup-sftp-up.sh, default repository only): the VPS's user
  ``forgeway-backup``, SFTP only and chrooted, whose one authorized key is that public key
  (``restrict``). Its delete keeps the repository (the backups).
* ``<gitlab host>-backup`` (the host-service seam: backup-up.sh/backup-down.sh): the
  scripts, settings, password and environment (stdin only), known_hosts pinning the VPS's
  configured host key, the timer; the repository is initialised when there is none.

The default repository is ``sftp://forgeway-backup@<VPS tunnel address>:<admin SSH port>//restic``:
over the tunnel, to the VPS's own sshd (tunnel segmentation lets the GitLab host reach it).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from components.config import StackConfig
from components.config.backup import Backup as BackupSettings
from components.config.backup import repository_display
from components.forge import Forge
from components.gitlab import CONTAINER_NAME
from components.host_service import HostService, host_service
from components.hosts import Host
from components.scripts import script, script_command
from components.secrets import StackSecrets

__all__ = [
    "SFTP_USER",
    "Backup",
    "BackupArgs",
    "SftpTarget",
    "backup_settings",
    "default_repository",
    "environment_file",
    "known_hosts",
    "settings_file",
    "stack_backup",
]

SFTP_USER = "forgeway-backup"
SFTP_PATH = "/restic"  # inside the chroot (backup-sftp-up.sh: /srv/forgeway-backup/restic)


def default_repository(vps_tunnel_address: ipaddress.IPv4Address | str, admin_ssh_port: int) -> str:
    """The SFTP repository on the VPS, over the tunnel, as restic spells it."""
    return f"sftp://{SFTP_USER}@{vps_tunnel_address}:{admin_ssh_port}/{SFTP_PATH}"


def known_hosts(address: ipaddress.IPv4Address | str, port: int, host_key: str | None) -> str:
    """known_hosts pinning the VPS's configured host key at its tunnel address (empty: no pin)."""
    if host_key is None:
        return ""
    where = str(address) if port == 22 else f"[{address}]:{port}"
    return f"{where} {host_key}\n"


@dataclass(frozen=True)
class BackupArgs:
    settings: BackupSettings  # the backup section
    gitlab: Host  # the GitLab host
    vps: Host  # the VPS (the default repository's host)
    vps_tunnel_address: ipaddress.IPv4Address
    admin_ssh_port: int
    registry: str  # manifest.json's "registry": "included" or why not
    password: pulumi.Output[str]  # secret
    environment: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)  # secret values
    after: Sequence[pulumi.Resource] = ()  # the tunnel and its segmentation on both hosts

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        hosts: Mapping[str, Host],
        addresses: Mapping[str, ipaddress.IPv4Address],
        *,
        password: pulumi.Output[str],
        environment: Mapping[str, pulumi.Output[str]],
        after: Sequence[pulumi.Resource] = (),
    ) -> BackupArgs:
        registry = "included" if cfg.registry.enabled else "no registry (registry.enabled: false)"
        return cls(
            settings=cfg.backup,
            gitlab=hosts[cfg.gitlab_host.name],
            vps=hosts[cfg.vps.name],
            vps_tunnel_address=addresses[cfg.vps.name],
            admin_ssh_port=cfg.admin_ssh_port,
            registry=registry,
            password=password,
            environment=environment,
            after=after,
        )

    @property
    def default(self) -> bool:
        """The repository is the VPS's SFTP user (backup.repository unset)."""
        return self.settings.repository is None

    @property
    def repository(self) -> str:
        if self.settings.repository is not None:
            return self.settings.repository
        return default_repository(self.vps_tunnel_address, self.admin_ssh_port)


@dataclass(frozen=True)
class SftpTarget:
    """Where forgeway-restic's ssh logs in for the default repository."""

    host: str  # the VPS's tunnel address
    port: int  # its admin SSH port
    user: str = SFTP_USER


def backup_settings(
    repository: str, host: str, retention: Sequence[str], registry: str, sftp: SftpTarget | None = None
) -> str:
    """$FORGEWAY_ETC/forgeway/backup/settings as staged (backup-up.sh adds STATE and DOCKER_HOST)."""
    lines = [
        "# forgeway-backup settings, written by backup-up.sh: change the stack config instead",
        f"REPOSITORY={repository}",
        f"REPOSITORY_SHOWN={repository_display(repository)}",
        f"HOST={host}",
        f"CONTAINER={CONTAINER_NAME}",
        f"RETENTION={' '.join(retention)}",
        f"REGISTRY={registry}",
    ]
    if sftp is not None:
        lines += [f"SFTP_HOST={sftp.host}", f"SFTP_PORT={sftp.port}", f"SFTP_USER={sftp.user}"]
    return "\n".join(lines) + "\n"


def settings_file(args: BackupArgs) -> str:
    """The settings of this stack's backups."""
    sftp = SftpTarget(str(args.vps_tunnel_address), args.admin_ssh_port) if args.default else None
    retention = args.settings.retention.restic_args()
    return backup_settings(args.repository, args.gitlab.settings.name, retention, args.registry, sftp)


def environment_file(environment: Mapping[str, str]) -> str:
    """The environment file forgeway-restic sources: one quoted export per variable."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(environment.items()))


def secrets_stdin(password: pulumi.Output[str], environment: Mapping[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    """backup-up.sh's stdin: the password's line, then the environment file. Secret."""
    names = sorted(environment)
    values = pulumi.Output.all(password, *(environment[n] for n in names))
    text = values.apply(lambda v: f"{v[0]}\n" + environment_file(dict(zip(names, v[1:], strict=True))))
    return pulumi.Output.secret(text)


class Backup(pulumi.ComponentResource):
    """The GitLab host's backup key, the VPS's SFTP user (default repository), the timer."""

    key: remote.Command
    sftp: remote.Command | None
    service: remote.Command
    repository: str  # the URL, no credentials (config refuses them)

    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:backup:Backup", name, None, opts)
        gitlab, vps = args.gitlab, args.vps
        g = gitlab.settings.name
        self.repository = repository_display(args.repository)
        self.key = gitlab.command(
            f"{g}-backup-key",
            parent=self,
            create=script_command("backup-key.sh", g),
            delete=script_command("backup-key.sh", "--delete"),
            depends_on=list(args.after),
        )
        after = [*args.after, self.key]
        self.sftp = None
        if args.default:
            sftp = HostService(
                stage="backup-sftp",
                up="backup-sftp-up.sh",
                down="backup-sftp-down.sh",
                args=[self.key.stdout],
                pass_dir=False,
            )
            self.sftp = host_service(vps, f"{vps.settings.name}-backup-sftp", sftp, parent=self, depends_on=after)
            after.append(self.sftp)
        s = args.settings
        service = HostService(
            stage="backup",
            up="backup-up.sh",
            down="backup-down.sh",
            args=[s.schedule, str(s.randomized_delay_minutes), str(s.timeout_minutes)],
            files={
                "forgeway-backup.sh": script("forgeway-backup.sh"),
                "forgeway-restic.sh": script("forgeway-restic.sh"),
                "settings": settings_file(args),
                "known_hosts": known_hosts(args.vps_tunnel_address, args.admin_ssh_port, vps.settings.host_key)
                if args.default
                else "",
            },
        )
        self.service = host_service(
            gitlab,
            f"{g}-backup",
            service,
            parent=self,
            stdin=secrets_stdin(args.password, args.environment),
            depends_on=after,
        )
        self.register_outputs({"repository": self.repository, "schedule": s.schedule})


def stack_backup(
    cfg: StackConfig,
    forge: Forge,
    hosts: Mapping[str, Host],
    addresses: Mapping[str, ipaddress.IPv4Address],
    secrets: StackSecrets,
    *,
    after: Sequence[pulumi.Resource] = (),
) -> Backup | None:
    """The stack's Backup: with backup.enabled and a GitLab forge (config makes the password required)."""
    password = secrets.backup_password
    if not cfg.backup.enabled or forge.kind != "gitlab" or password is None:
        return None
    args = BackupArgs.from_config(
        cfg, hosts, addresses, password=password, environment=secrets.backup_environment(), after=after
    )
    return Backup("backup", args)
