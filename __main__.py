"""forgeway: a self-hosted forge (GitLab or Gitea) on a home device, reachable through a VPS tunnel.

Load and validate the stack config (every problem reported before anything is
registered), build the components, export the outputs contract (README). Each
component makes its own decisions; this file only hands each one what it needs.
"""

from components.config import load_stack_config
from components.docker_host import DockerHost, docker_host_args
from components.forge import stack_forge
from components.forge_switch import guard_forge_switch
from components.forwarding import PortForwarding, PortForwardingArgs
from components.gitea import gitea_stack
from components.gitlab import CONTAINER_NAME
from components.gitlab_stack import gitlab_stack
from components.hosts import connect_hosts, per_host
from components.outputs import export_all
from components.pki import ForgeTls, ForgeTlsArgs
from components.registry import registry_trust
from components.secrets import StackSecrets
from components.segment import TunnelSegmentation, TunnelSegmentationArgs
from components.stack_base import StackBase
from components.tunnel import Tunnel, TunnelArgs, tunnel_addresses
from components.upgrade import guard_upgrades, target_version

config, plain_secrets = load_stack_config()
forge = stack_forge(config)
# GitLab's version: a config error (no version said) before anything is registered.
gitlab_version = target_version(config) if forge.kind == "gitlab" else None
secrets = StackSecrets(plain_secrets)
addresses = tunnel_addresses(config)

# First, so that its checks fail the run before anything is registered.
tls = ForgeTls(ForgeTlsArgs.for_stack(config, forge, addresses, secrets.ca_private_key))

hosts = connect_hosts(config.hosts, secrets.ssh_private_key)
# GitLab moved only along its upgrade stops: a refused upgrade changes no host (docs/gitlab.md).
if gitlab_version is not None:
    guard_upgrades(config, hosts, gitlab_version, container=CONTAINER_NAME)
guard_forge_switch(config, forge, hosts)  # another forge's data is not switched away from by accident
tunnel = Tunnel("tunnel", TunnelArgs.for_forge(config, forge, hosts, secrets.wireguard_private_keys()))
segmentation = TunnelSegmentation("segment", TunnelSegmentationArgs.for_forge(config, forge, hosts, addresses))
forwarding_args = PortForwardingArgs.for_forge(config, forge, hosts, addresses, tunnel.commands)
forwarding = PortForwarding("forwarding", forwarding_args)

# Every docker host's registry trust, proxy, daemon.json, prune and binfmt; after its wg0 (the MTU).
runner_hosts = config.hosts_with("runner")
tunnel_first = per_host([h.name for h in runner_hosts], tunnel.commands)
docker_args = docker_host_args(config, hosts, registry_trust(config, tls.ca_pem), tunnel_first)
docker_hosts = {name: DockerHost(f"{name}-docker-host", args) for name, args in docker_args.items()}
base = StackBase(
    config, forge, secrets, hosts, addresses, tls, tunnel, segmentation, forwarding, docker_hosts, tunnel_first
)
# The forge's own part: its container and what hangs off it (components/gitlab_stack.py, gitea.py).
export_all(gitea_stack(base) if forge.kind == "gitea" else gitlab_stack(base))
