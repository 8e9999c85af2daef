"""GiteaServer: the Gitea container on the forge host (``forge: gitea``, docs/gitea.md).

What it registers (children of the component, ``<host>`` the forge host):

* ``<host>-gitea-image``: ``RemoteImage`` of ``gitea.images[<host arch>]`` for platform
  ``linux/<arch>`` (gitea/gitea is multi-arch; a digest per arch pins each).
* ``<host>-gitea-data``: ``Volume`` ``forgeway-gitea-data`` at ``/data`` (app.ini, the
  repositories, the SQLite database, the packages/registry blobs, the SSH host keys), with
  ``protect`` and ``retain_on_delete`` and the label ``forgeway.role=gitea-data``.
* ``<host>-gitea-secret-key``, ``<host>-gitea-internal-token``: ``RandomPassword``.
* ``<host>-gitea-tls-key`` (own-ca): a command writing the server key into the data volume
  as the git user's 0600 file (components/scripts/gitea-tls-key.sh, the key on stdin).
* ``<host>-gitea``: the ``Container``. Its settings are ``GITEA__section__KEY`` variables,
  which the image's setup writes into app.ini on every start (environment-to-ini); the
  secrets are ``GITEA__section__KEY__FILE`` variables naming files uploaded root-only
  (0600) under :data:`SECRETS_DIR`, read by that setup as root: no secret is in the env,
  ``docker inspect`` or a command line. Published ports bind the host's tunnel IPv4
  address only, never two addresses (issue 20, components/forge_nat.py published_ports):
  https, the http redirect (and ACME's HTTP-01 answer) and SSH, each forwarded service's
  home port onto the container's port.
* With tunnel.ipv6 or ``gitea.publish_on_lan``: ``<host>-gitea-network``, Gitea's own
  dual-stack docker network ``forgeway-gitea`` (``gitea.container_subnet``/
  ``container_subnet6``), the container at its .2/::2, and ``<host>-gitea-nat``: the forge
  host's ``table ip6/ip forgeway_forge`` DNATs the tunnel IPv6 and LAN addresses to them
  (as GitLab's, components/forge_nat.py), so Gitea sees the client's own address.
* ``<host>-gitea-admin-password``: ``RandomPassword`` (a secret output of the stack).
* ``<host>-gitea-admin``: a command (components/scripts/gitea-admin.sh) that creates the
  admin user with ``gitea admin user create`` and mints an admin token with ``gitea admin
  user generate-access-token --raw``; the password goes on its stdin only. Its stdout, the
  token, is a secret output (:attr:`GiteaServer.admin_token`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pulumi_command import remote

from components.config import Gitea, StackConfig
from components.config.checks.forge import gitea_image_version
from components.docker_host import docker_changes
from components.forge import Forge
from components.forge_nat import ForgeNat, ForgeNetwork, forge_reach, published_ports
from components.gitlab import forge_container_basics, go_duration
from components.hosts import Host
from components.outputs import stack_outputs
from components.pki import ServerCertificate
from components.render.forge_nat import PortMap
from components.scripts import script_command
from components.stack_base import StackBase
from components.tunnel import tunnel_addresses6

__all__ = [
    "CONTAINER_NAME",
    "CONTAINER_PORTS",
    "DATA_VOLUME",
    "HEALTHCHECK",
    "SECRETS_DIR",
    "GiteaServer",
    "GiteaServerArgs",
    "GiteaSettings",
    "gitea_env",
    "gitea_settings",
    "gitea_stack",
]

CONTAINER_NAME = "forgeway-gitea"
DATA_VOLUME = f"{CONTAINER_NAME}-data"
DATA_MOUNT = "/data"
HTTPS_PORT = 3000  # Gitea's HTTP_PORT default, served as https (PROTOCOL=https)
REDIRECT_PORT = 3080  # PORT_TO_REDIRECT: http -> https, and ACME's HTTP-01 challenge
GIT_UID = 1000  # USER_UID of the gitea/gitea image: who owns /data and runs `gitea web`
# Read by the image's setup (s6 gitea/setup, as root) through GITEA__..._FILE variables.
SECRETS_DIR = "/etc/forgeway"
CERT_FILE = f"{SECRETS_DIR}/tls.crt"  # public: the chain, 0644
KEY_FILE = f"{DATA_MOUNT}/forgeway/tls.key"  # the git user's, 0600 (gitea-tls-key.sh)
ACME_DIRECTORY = f"{DATA_MOUNT}/forgeway/acme"
# Gitea's own health endpoint (GET /api/healthz); curl is in the image.
HEALTHCHECK = ("CMD", "curl", "-fsk", "--max-time", "10", f"https://localhost:{HTTPS_PORT}/api/healthz")
HEALTHCHECK_START_PERIOD = go_duration(120)
ADMIN_READY_TIMEOUT = 900  # seconds gitea-admin.sh waits for the health check
PRIVATE = "0600"


@dataclass(frozen=True)
class GiteaSettings:
    """What app.ini says, from the config and the forge: pure values, no Pulumi."""

    domain: str
    root_url: str  # with a trailing slash, as Gitea writes it
    ssh_port: int  # the public SSH port (clone URLs)
    ssh_listen_port: int  # where SSH listens inside the container
    tls: str  # own-ca or letsencrypt
    acme_email: str | None
    database: str  # sqlite or postgres
    db_host: str | None  # host:port (postgres)
    db_name: str
    db_user: str
    packages: bool  # the container registry (registry.enabled)
    webhook_hosts: tuple[str, ...]  # [webhook] ALLOWED_HOST_LIST

    def container_ports(self) -> dict[str, int]:
        """The container's port of each service the VPS may forward."""
        return {"https": HTTPS_PORT, "http": REDIRECT_PORT, "ssh": self.ssh_listen_port}


CONTAINER_PORTS = ("https", "http", "ssh")  # the services Gitea publishes (its registry is on https)


def gitea_settings(cfg: StackConfig, forge: Forge, webhook_hosts: Sequence[str] = ()) -> GiteaSettings:
    """Gitea's settings for this stack. ``webhook_hosts``: hosts Gitea may deliver webhooks
    to besides the internet (Woodpecker's, when it runs on the forge's side)."""
    gitea: Gitea = cfg.gitea_section
    ssh = forge.service("ssh")
    db = gitea.database
    return GiteaSettings(
        domain=gitea.domain,
        root_url=f"{forge.url}/",
        ssh_port=ssh.public if ssh is not None else 22,
        ssh_listen_port=gitea.ssh_listen_port,
        tls=gitea.tls,
        acme_email=gitea.acme_email,
        database=db.type,
        db_host=f"{db.host}:{db.port}" if db.type == "postgres" and db.host is not None else None,
        db_name=db.name,
        db_user=db.user,
        packages=cfg.registry.enabled,
        webhook_hosts=("external", *webhook_hosts),
    )


def gitea_env(s: GiteaSettings, *, db_password_file: str | None) -> list[str]:
    """The container's environment: GITEA__section__KEY settings (environment-to-ini) and the
    image's own SSH_LISTEN_PORT (its sshd_config template); secrets only as ``__FILE`` paths."""
    env: dict[str, str] = {
        "USER_UID": str(GIT_UID),
        "USER_GID": str(GIT_UID),
        "SSH_LISTEN_PORT": str(s.ssh_listen_port),
        "GITEA__server__DOMAIN": s.domain,
        "GITEA__server__ROOT_URL": s.root_url,
        "GITEA__server__SSH_DOMAIN": s.domain,
        "GITEA__server__SSH_PORT": str(s.ssh_port),
        "GITEA__server__SSH_LISTEN_PORT": str(s.ssh_listen_port),
        "GITEA__server__PROTOCOL": "https",
        "GITEA__server__HTTP_PORT": str(HTTPS_PORT),
        "GITEA__server__REDIRECT_OTHER_PORT": "true",
        "GITEA__server__PORT_TO_REDIRECT": str(REDIRECT_PORT),
        "GITEA__security__INSTALL_LOCK": "true",
        "GITEA__security__SECRET_KEY__FILE": f"{SECRETS_DIR}/secret_key",
        "GITEA__security__INTERNAL_TOKEN__FILE": f"{SECRETS_DIR}/internal_token",
        # Accounts are made by the admin: an internet-facing forge takes no sign-ups.
        "GITEA__service__DISABLE_REGISTRATION": "true",
        "GITEA__webhook__ALLOWED_HOST_LIST": ",".join(s.webhook_hosts),
        "GITEA__packages__ENABLED": "true" if s.packages else "false",
    }
    if s.tls == "letsencrypt":
        env |= {
            "GITEA__server__ENABLE_ACME": "true",
            "GITEA__server__ACME_ACCEPTTOS": "true",
            "GITEA__server__ACME_DIRECTORY": ACME_DIRECTORY,
            "GITEA__server__ACME_EMAIL": s.acme_email or "",
        }
    else:
        env |= {"GITEA__server__CERT_FILE": CERT_FILE, "GITEA__server__KEY_FILE": KEY_FILE}
    if s.database == "postgres":
        if db_password_file is None or s.db_host is None:
            raise ValueError("gitea.database postgres: a host and the gitea_db_password secret are needed")
        env |= {
            "GITEA__database__DB_TYPE": "postgres",
            "GITEA__database__HOST": s.db_host,
            "GITEA__database__NAME": s.db_name,
            "GITEA__database__USER": s.db_user,
            "GITEA__database__PASSWD__FILE": db_password_file,
        }
    else:
        env |= {"GITEA__database__DB_TYPE": "sqlite3", "GITEA__database__PATH": f"{DATA_MOUNT}/gitea/gitea.db"}
    return [f"{key}={value}" for key, value in env.items()]


def _port_maps(services: Sequence[tuple[str, int]], container_ports: Mapping[str, int]) -> tuple[PortMap, ...]:
    """Each forwarded service Gitea serves: its home port onto the container's port."""
    return tuple(
        PortMap(service, home, container_ports[service]) for service, home in services if service in container_ports
    )


def _random(name: str, length: int, parent: pulumi.Resource) -> pulumi.Output[str]:
    value = random.RandomPassword(
        name,
        length=length,
        special=False,
        min_lower=2,
        min_upper=2,
        min_numeric=2,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return pulumi.Output.secret(value.result)


@dataclass(frozen=True)
class GiteaServerArgs:
    """What Gitea needs: its section, app.ini's settings, the forge, its host and what it waits for."""

    section: Gitea
    settings: GiteaSettings
    forge: Forge
    host: Host
    tunnel_address: ipaddress.IPv4Address
    tunnel: pulumi.Resource  # the host's wg0: the ports bind its address
    forwarding: Sequence[pulumi.Resource] = ()  # letsencrypt: the HTTP-01 answer goes through it
    certificate: ServerCertificate | None = None  # own-ca
    db_password: pulumi.Output[str] | None = None  # postgres: the gitea_db_password secret
    docker_changes: Sequence[pulumi.Resource] = ()
    tunnel_address6: ipaddress.IPv6Address | None = None

    @classmethod
    def from_base(cls, base: StackBase) -> GiteaServerArgs:
        """The fields from the config, the forge and the forge host's shared parts (its wg0,
        its tunnel addresses, its registry trust, the forwarding and the server certificate)."""
        cfg, forge = base.config, base.forge
        changes = docker_changes(base.docker_hosts)
        return cls(
            section=cfg.gitea_section,
            # Gitea's webhooks go to Woodpecker's name (its own, or Gitea's own).
            settings=gitea_settings(cfg, forge, webhook_hosts=forge.certificate_names[1:]),
            forge=forge,
            host=base.hosts[forge.host],
            tunnel_address=base.addresses[forge.host],
            tunnel=base.tunnel.commands[forge.host],
            forwarding=base.forwarding.resources,
            certificate=base.tls.certificate,
            db_password=base.secrets.gitea_db_password,
            docker_changes=[changes[forge.host]] if forge.host in changes else [],
            tunnel_address6=tunnel_addresses6(cfg).get(forge.host),
        )


class GiteaServer(pulumi.ComponentResource):
    """Gitea's image, volume, secrets, container and admin user on the forge host."""

    image: docker.RemoteImage
    volume: docker.Volume
    container: docker.Container
    admin: remote.Command
    admin_password: pulumi.Output[str]
    admin_token: pulumi.Output[str]
    forge: Forge
    network: ForgeNetwork | None  # tunnel.ipv6 or publish_on_lan: Gitea's own network
    nat: ForgeNat | None  # ... and the forge host's DNAT to it

    def __init__(self, name: str, args: GiteaServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:gitea:GiteaServer", name, None, opts)
        gitea, host, settings = args.section, args.host, args.host.settings
        self.forge = args.forge
        if host.docker is None:
            raise ValueError(f"host '{settings.name}' runs the forge but has no docker provider")
        prefix = f"{settings.name}-gitea"
        on_host = pulumi.ResourceOptions(parent=self, provider=host.docker, depends_on=list(host.preflight))
        self.image = docker.RemoteImage(
            f"{prefix}-image",
            name=gitea.images[settings.arch],
            platform=f"linux/{settings.arch}",
            keep_locally=True,
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[*args.docker_changes])),
        )
        path = gitea.data_path
        self.volume = docker.Volume(
            f"{prefix}-data",
            name=DATA_VOLUME,
            labels=[docker.VolumeLabelArgs(label="forgeway.role", value="gitea-data")],
            driver_opts={"type": "none", "o": "bind", "device": path} if path else None,
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(protect=True, retain_on_delete=True)),
        )
        secret_key = _random(f"{prefix}-secret-key", 64, self)
        internal_token = _random(f"{prefix}-internal-token", 64, self)
        uploads = [
            docker.ContainerUploadArgs(file=f"{SECRETS_DIR}/secret_key", content=secret_key, permissions=PRIVATE),
            docker.ContainerUploadArgs(
                file=f"{SECRETS_DIR}/internal_token", content=internal_token, permissions=PRIVATE
            ),
        ]
        db_password_file = None
        if args.db_password is not None:
            db_password_file = f"{SECRETS_DIR}/db_password"
            uploads.append(
                docker.ContainerUploadArgs(
                    file=db_password_file, content=pulumi.Output.secret(args.db_password), permissions=PRIVATE
                )
            )
        waits: list[pulumi.Resource] = [args.tunnel, *args.docker_changes]
        if args.settings.tls == "letsencrypt":
            waits += list(args.forwarding)
        if args.certificate is not None:
            uploads.append(docker.ContainerUploadArgs(file=CERT_FILE, content=args.certificate.chain_pem))
            waits.append(
                host.command(
                    f"{prefix}-tls-key",
                    parent=self,
                    create=script_command("gitea-tls-key.sh", DATA_VOLUME, str(GIT_UID)),
                    stdin=pulumi.Output.secret(args.certificate.private_key_pem),
                    depends_on=[self.volume],
                    additional_secret_outputs=["stdin"],
                )
            )
        ports = _port_maps([(p.service, p.home_port) for p in args.forge.services], args.settings.container_ports())
        # One host address per port (the tunnel IPv4 one); the tunnel IPv6 and LAN addresses
        # reach Gitea through the forge host's DNAT to its own network (components/forge_nat.py).
        reach = forge_reach(prefix, CONTAINER_NAME, host, gitea, ports=ports, tunnel6=args.tunnel_address6, parent=self)
        self.network, self.nat = reach.network, reach.nat
        labels = {"forgeway.role": "gitea"}
        version = gitea.version or gitea_image_version(gitea.images[settings.arch])
        if version is not None:
            labels["forgeway.gitea-version"] = version
        self.container = docker.Container(
            prefix,
            name=CONTAINER_NAME,
            image=self.image.image_id,
            hostname=gitea.domain,
            envs=gitea_env(args.settings, db_password_file=db_password_file),
            ports=published_ports(ports, str(args.tunnel_address)),
            networks_advanced=reach.networks_advanced,
            volumes=[docker.ContainerVolumeArgs(volume_name=self.volume.name, container_path=DATA_MOUNT)],
            uploads=uploads,
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            **forge_container_basics(gitea.memory_limit_mb, HEALTHCHECK, HEALTHCHECK_START_PERIOD),
            destroy_grace_seconds=60,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=host.docker,
                depends_on=[*host.preflight, *waits],
                additional_secret_outputs=["uploads"],
            ),
        )
        self.admin_password = _random(f"{prefix}-admin-password", 32, self)
        self.admin = host.command(
            f"{prefix}-admin",
            parent=self,
            create=script_command(
                "gitea-admin.sh", CONTAINER_NAME, gitea.admin_username, gitea.admin_address, str(ADMIN_READY_TIMEOUT)
            ),
            stdin=self.admin_password,
            depends_on=[self.container],
            additional_secret_outputs=["stdin", "stdout"],
        )
        self.admin_token = pulumi.Output.secret(self.admin.stdout.apply(lambda out: out.strip()))
        self.register_outputs({"image": self.image.image_id})


def gitea_stack(base: StackBase) -> dict[str, Any]:
    """Gitea's part of the program (``forge: gitea``); the stack's outputs. Runner hosts keep
    what every docker host gets (registry trust, MTU, proxy, prune), and a Woodpecker agent
    with a ``woodpecker`` section (components/woodpecker.py)."""
    gitea = GiteaServer("gitea", GiteaServerArgs.from_base(base))
    if base.config.woodpecker is not None:
        # Imported here: components/woodpecker.py builds on this module's names.
        from components.woodpecker import WoodpeckerCi, WoodpeckerCiArgs

        WoodpeckerCi("woodpecker", WoodpeckerCiArgs.from_base(base, gitea.admin_token, gitea.admin))
    return stack_outputs(base.config, base.forge, base.tunnel, base.tls.ca, gitea.admin_password)
