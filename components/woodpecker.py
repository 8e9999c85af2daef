"""Woodpecker CI for a Gitea stack (``woodpecker`` section, forge gitea; docs/gitea.md).

What it registers (``<forge>`` the forge host, ``<runner>`` each runner host):

* ``<forge>-woodpecker-oauth``: a command (components/scripts/woodpecker-oauth.sh) that
  makes Woodpecker's OAuth2 application through Gitea's API, from inside the Gitea
  container, with the admin token (GiteaServer.admin_token) on stdin only; recreated on
  every create (Gitea shows a client secret once, at creation) and deleted on delete. Its
  stdout, the client id and secret, is a secret output.
* ``<forge>-woodpecker-agent-secret``: ``RandomPassword``, shared by server and agents.
* ``<forge>-woodpecker-server-image``, ``<forge>-woodpecker-data`` (``/var/lib/woodpecker``,
  protected and retained) and ``<forge>-woodpecker-server``: the server container. Its
  secrets (client, secret, agent secret, TLS key) are files uploaded root-only (0600)
  named by ``*_FILE`` variables; its https port is the ``ci`` forwarded service's home
  port, its gRPC port (``woodpecker.grpc_port``) binds the tunnel address only.
* ``<runner>-woodpecker-agent-image``, ``<runner>-woodpecker-agent-config`` (its agent id)
  and ``<runner>-woodpecker-agent``: one agent per runner host, on the host's docker
  socket, with the arch label, the agent secret as a file, and jobs given the registry
  trust the GitLab runners' jobs get (JOBS_DIR/certs.d, read-only); the tunnel MTU comes
  to job networks from the host's daemon.json (components/docker_host.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pulumi_command import remote

from components.config import Host as HostConfig
from components.config import StackConfig, Woodpecker
from components.docker_host import DockerHost
from components.forge import Forge, woodpecker_url
from components.gitea import ADMIN_READY_TIMEOUT
from components.gitea import CONTAINER_NAME as GITEA_CONTAINER
from components.hosts import Host
from components.pki import ServerCertificate
from components.render.buildkitd import JOB_CERTS_D, JOBS_DIR
from components.render.runner_config import SOCKET_INSIDE
from components.runners import runner_host_base
from components.scripts import script_command
from components.stack_base import StackBase

__all__ = [
    "AGENT_CONTAINER",
    "AGENT_SECRET_FILE",
    "APP_NAME",
    "SERVER_CONTAINER",
    "Woodpecker",
    "WoodpeckerCi",
    "WoodpeckerCiArgs",
    "agent_env",
    "server_env",
]

SERVER_CONTAINER = "forgeway-woodpecker-server"
AGENT_CONTAINER = "forgeway-woodpecker-agent"
DATA_VOLUME = f"{SERVER_CONTAINER}-data"
DATA_MOUNT = "/var/lib/woodpecker"
APP_NAME = "forgeway-woodpecker"  # the OAuth2 application's name in Gitea
SECRETS_DIR = "/etc/forgeway"
CLIENT_FILE = f"{SECRETS_DIR}/gitea_client"
SECRET_FILE = f"{SECRETS_DIR}/gitea_secret"
AGENT_SECRET_FILE = f"{SECRETS_DIR}/agent_secret"
CERT_FILE = f"{SECRETS_DIR}/tls.crt"
KEY_FILE = f"{SECRETS_DIR}/tls.key"
CA_FILE = f"{SECRETS_DIR}/ca.crt"  # the stack CA: the server calls Gitea's API over https
HTTPS_PORT = 443  # WOODPECKER_SERVER_ADDR_TLS's default: the server serves TLS with its cert and key
AGENT_CONFIG_DIR = "/etc/woodpecker"  # the agent's id (agent.conf): a new container is the same agent
AGENT_MEMORY_MB = 256  # the agent process; steps are containers of their own
PRIVATE = "0600"


def server_env(
    *, host_url: str, gitea_url: str, admin: str, grpc_port: int, privileged_plugins: Sequence[str]
) -> list[str]:
    """The server's environment: settings only; every secret is a ``*_FILE`` path."""
    env = {
        "WOODPECKER_HOST": host_url,
        "WOODPECKER_GITEA": "true",
        "WOODPECKER_GITEA_URL": gitea_url,
        "WOODPECKER_GITEA_CLIENT_FILE": CLIENT_FILE,
        "WOODPECKER_GITEA_SECRET_FILE": SECRET_FILE,
        "WOODPECKER_AGENT_SECRET_FILE": AGENT_SECRET_FILE,
        "WOODPECKER_ADMIN": admin,
        # Sign-ups closed: only WOODPECKER_ADMIN logs in until an admin adds users.
        "WOODPECKER_OPEN": "false",
        "WOODPECKER_SERVER_CERT": CERT_FILE,
        "WOODPECKER_SERVER_KEY": KEY_FILE,
        "WOODPECKER_GRPC_ADDR": f":{grpc_port}",
        # Set and empty: no plugin image is privileged by default (2.x had a list); privileged
        # steps only in repositories an admin marks trusted, or the images listed here.
        "WOODPECKER_PLUGINS_PRIVILEGED": ",".join(privileged_plugins),
        "SSL_CERT_FILE": CA_FILE,  # Gitea's certificate is of the stack CA
    }
    return [f"{k}={v}" for k, v in env.items()]


def agent_env(*, server: str, host_name: str, arch: str, own_ca: bool) -> list[str]:
    """One agent's environment: the server over the tunnel, the secret as a file, the arch label."""
    env = {
        "WOODPECKER_SERVER": server,
        "WOODPECKER_AGENT_SECRET_FILE": AGENT_SECRET_FILE,
        "WOODPECKER_BACKEND": "docker",
        "WOODPECKER_HOSTNAME": host_name,
        "WOODPECKER_AGENT_LABELS": f"platform=linux/{arch}",
        "WOODPECKER_MAX_WORKFLOWS": "1",
    }
    if own_ca:
        # What GitLab's runners give jobs (render/runner_config.py): the registries' CA, read-only.
        env["WOODPECKER_BACKEND_DOCKER_VOLUMES"] = f"/{JOBS_DIR}/certs.d:{JOB_CERTS_D}:ro"
    return [f"{k}={v}" for k, v in env.items()]


@dataclass(frozen=True)
class WoodpeckerCiArgs:
    section: Woodpecker
    url: str  # WOODPECKER_HOST
    forge: Forge
    forge_host: Host
    tunnel_address: ipaddress.IPv4Address  # the forge host's: the server's ports bind it
    admin_username: str
    admin_token: pulumi.Output[str]  # secret: Gitea's admin token (gitea-admin.sh)
    gitea_ready: pulumi.Resource  # the admin command: Gitea answers and the token exists
    certificate: ServerCertificate
    ca_pem: pulumi.Output[str]
    runner_hosts: Sequence[HostConfig]
    hosts: Mapping[str, Host]
    docker: Mapping[str, DockerHost]
    depends_on: Mapping[str, Sequence[pulumi.Resource]]  # per runner host: its wg0

    @classmethod
    def from_base(
        cls, base: StackBase, admin_token: pulumi.Output[str], gitea_ready: pulumi.Resource
    ) -> WoodpeckerCiArgs:
        cfg: StackConfig = base.config
        section, url = cfg.woodpecker, woodpecker_url(cfg)
        if section is None or url is None or base.tls.certificate is None or base.tls.ca_pem is None:
            raise ValueError("woodpecker: needs the woodpecker section, a ci forwarded port and gitea.tls own-ca")
        return cls(
            section=section,
            url=url,
            forge=base.forge,
            forge_host=base.hosts[base.forge.host],
            tunnel_address=base.addresses[base.forge.host],
            admin_username=cfg.gitea_section.admin_username,
            admin_token=admin_token,
            gitea_ready=gitea_ready,
            certificate=base.tls.certificate,
            ca_pem=base.tls.ca_pem,
            runner_hosts=cfg.hosts_with("runner"),
            hosts=base.hosts,
            docker=base.docker_hosts,
            depends_on=base.tunnel_first,
        )


def _line(text: str, index: int) -> str:
    """Line ``index`` of woodpecker-oauth.sh's stdout. The script exits non-zero unless it
    prints both lines, so a short stdout is only a preview's (or the mock monitor's) empty one."""
    lines = text.strip().splitlines()
    return lines[index].strip() if len(lines) == 2 else ""


class WoodpeckerCi(pulumi.ComponentResource):
    """The Woodpecker server on the forge host and an agent on every runner host."""

    oauth: remote.Command
    server: docker.Container
    agents: dict[str, docker.Container]

    def __init__(self, name: str, args: WoodpeckerCiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:woodpecker:WoodpeckerCi", name, None, opts)
        wp, host = args.section, args.forge_host
        if host.docker is None:
            raise ValueError(f"host '{host.settings.name}' runs the forge but has no docker provider")
        prefix = f"{host.settings.name}-woodpecker"
        self.oauth = host.command(
            f"{prefix}-oauth",
            parent=self,
            create=script_command(
                "woodpecker-oauth.sh",
                "up",
                GITEA_CONTAINER,
                APP_NAME,
                f"{args.url}/authorize",
                str(ADMIN_READY_TIMEOUT),
            ),
            delete=script_command("woodpecker-oauth.sh", "down", GITEA_CONTAINER, APP_NAME, args.admin_username),
            stdin=args.admin_token,
            depends_on=[args.gitea_ready],
            additional_secret_outputs=["stdin", "stdout"],
        )
        client: pulumi.Output[str] = pulumi.Output.secret(self.oauth.stdout.apply(lambda out: _line(out, 0)))
        client_secret: pulumi.Output[str] = pulumi.Output.secret(self.oauth.stdout.apply(lambda out: _line(out, 1)))
        agent_secret: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomPassword(
                f"{prefix}-agent-secret", length=48, special=False, opts=pulumi.ResourceOptions(parent=self)
            ).result
        )
        on_host = pulumi.ResourceOptions(parent=self, provider=host.docker, depends_on=list(host.preflight))
        image = docker.RemoteImage(
            f"{prefix}-server-image",
            name=wp.server_images[host.settings.arch],
            platform=f"linux/{host.settings.arch}",
            keep_locally=True,
            opts=on_host,
        )
        volume = docker.Volume(
            f"{prefix}-data",
            name=DATA_VOLUME,
            labels=[docker.VolumeLabelArgs(label="forgeway.role", value="woodpecker-data")],
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(protect=True, retain_on_delete=True)),
        )
        ci = args.forge.service("ci")
        if ci is None:
            raise ValueError("woodpecker: no ci entry in forwarding.ports")
        bind = str(args.tunnel_address)
        # The server calls Gitea's API at its public URL (the browser's redirects need that
        # URL); its name resolves to the VPS, so point it at the tunnel address beside it
        # where Gitea listens on the same port (https home port = public port).
        https = args.forge.service("https")
        same_port = https is not None and https.home_port == https.public
        gitea_host = [docker.ContainerHostArgs(host=args.forge.domain, ip=bind)] if same_port else None
        self.server = docker.Container(
            f"{prefix}-server",
            name=SERVER_CONTAINER,
            image=image.image_id,
            restart="unless-stopped",
            memory=wp.memory_limit_mb,
            memory_swap=2 * wp.memory_limit_mb,
            envs=server_env(
                host_url=args.url,
                gitea_url=args.forge.url,
                admin=args.admin_username,
                grpc_port=wp.grpc_port,
                privileged_plugins=wp.privileged_plugins,
            ),
            # By internal port, as the provider reads them back (forge_nat.py published_ports).
            ports=[
                docker.ContainerPortArgs(internal=internal, external=external, ip=bind, protocol="tcp")
                for internal, external in sorted([(HTTPS_PORT, ci.home_port), (wp.grpc_port, wp.grpc_port)])
            ],
            hosts=gitea_host,
            volumes=[docker.ContainerVolumeArgs(volume_name=volume.name, container_path=DATA_MOUNT)],
            uploads=[
                docker.ContainerUploadArgs(file=CLIENT_FILE, content=client, permissions=PRIVATE),
                docker.ContainerUploadArgs(file=SECRET_FILE, content=client_secret, permissions=PRIVATE),
                docker.ContainerUploadArgs(file=AGENT_SECRET_FILE, content=agent_secret, permissions=PRIVATE),
                docker.ContainerUploadArgs(file=CERT_FILE, content=args.certificate.chain_pem),
                docker.ContainerUploadArgs(
                    file=KEY_FILE,
                    content=pulumi.Output.secret(args.certificate.private_key_pem),
                    permissions=PRIVATE,
                ),
                docker.ContainerUploadArgs(file=CA_FILE, content=args.ca_pem),
            ],
            labels=[docker.ContainerLabelArgs(label="forgeway.role", value="woodpecker-server")],
            opts=pulumi.ResourceOptions.merge(
                on_host,
                pulumi.ResourceOptions(depends_on=[self.oauth], additional_secret_outputs=["uploads"]),
            ),
        )
        server = f"{args.tunnel_address}:{wp.grpc_port}"
        self.agents = {
            h.name: self._agent(h, args, agent_secret, server, prefix_opts=self.server) for h in args.runner_hosts
        }
        self.register_outputs({"url": args.url})

    def _agent(
        self,
        host_cfg: HostConfig,
        args: WoodpeckerCiArgs,
        agent_secret: pulumi.Output[str],
        server: str,
        *,
        prefix_opts: pulumi.Resource,
    ) -> docker.Container:
        name, host = host_cfg.name, args.hosts[host_cfg.name]
        base = runner_host_base(
            self, host_cfg, host, args.docker[name], args.depends_on.get(name, ()),
            prefix="woodpecker-agent", image=args.section.agent_images[host_cfg.arch],
            volume=f"{AGENT_CONTAINER}-config", role="woodpecker-agent-config",
        )  # fmt: skip
        on_host, image, volume = base.on_host, base.image, base.volume
        return docker.Container(
            f"{name}-woodpecker-agent",
            name=AGENT_CONTAINER,
            image=image.image_id,
            restart="unless-stopped",
            memory=AGENT_MEMORY_MB,
            memory_swap=2 * AGENT_MEMORY_MB,
            envs=agent_env(server=server, host_name=name, arch=host_cfg.arch, own_ca=True),
            volumes=[
                docker.ContainerVolumeArgs(volume_name=volume.name, container_path=AGENT_CONFIG_DIR),
                docker.ContainerVolumeArgs(host_path=host_cfg.docker_socket, container_path=SOCKET_INSIDE),
            ],
            uploads=[docker.ContainerUploadArgs(file=AGENT_SECRET_FILE, content=agent_secret, permissions=PRIVATE)],
            labels=[
                docker.ContainerLabelArgs(label="forgeway.role", value="woodpecker-agent"),
                docker.ContainerLabelArgs(label="forgeway.woodpecker.arch", value=host_cfg.arch),
            ],
            opts=pulumi.ResourceOptions.merge(
                on_host, pulumi.ResourceOptions(depends_on=[prefix_opts], additional_secret_outputs=["uploads"])
            ),
        )
