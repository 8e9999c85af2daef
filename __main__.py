"""forgeway: a self-hosted forge (GitLab) on a home device, reachable through a VPS tunnel.

Load and validate the stack config (every problem reported before anything is
registered), build the components, export the outputs contract (README). Each
component makes its own decisions; this file only hands each one what it needs.
"""

from components.config import load_stack_config
from components.forge import stack_forge
from components.forwarding import PortForwarding, PortForwardingArgs
from components.gitlab import GitLabServer, GitLabServerArgs
from components.hosts import connect_hosts, per_host
from components.outputs import export_all, stack_outputs
from components.pki import ForgeTls, ForgeTlsArgs
from components.registry import Registry, RegistryArgs
from components.runners import RunnerFleet, RunnerFleetArgs
from components.secrets import StackSecrets
from components.segment import TunnelSegmentation, TunnelSegmentationArgs
from components.tunnel import Tunnel, TunnelArgs, tunnel_addresses

config, plain_secrets = load_stack_config()
secrets = StackSecrets(plain_secrets)
forge = stack_forge(config)
addresses = tunnel_addresses(config)

# First, so that its checks fail the run before anything is registered.
tls = ForgeTls(ForgeTlsArgs(forge, config.vps.internet_address, addresses[forge.host], secrets.ca_private_key))

hosts = connect_hosts(config.hosts, secrets.ssh_private_key)
tunnel = Tunnel("tunnel", TunnelArgs.for_forge(config, forge, hosts, secrets.wireguard_private_keys()))
segmentation = TunnelSegmentation("segment", TunnelSegmentationArgs.for_forge(config, forge, hosts, addresses))
forwarding_args = PortForwardingArgs.for_forge(config, forge, hosts, addresses, tunnel.commands)
forwarding = PortForwarding("forwarding", forwarding_args)

registry = Registry("registry", RegistryArgs(config, hosts, tls.ca)) if config.registry.enabled else None
trust = registry.trust if registry is not None else {}
gitlab_args = GitLabServerArgs.from_config(
    config,
    forge,
    hosts,
    addresses,
    tunnel=tunnel.commands,
    forwarding=forwarding.resources,
    certificate=tls.certificate,
    root_password=secrets.gitlab_root_password,
    docker_changes=trust,
)
gitlab = GitLabServer("gitlab", gitlab_args)

runner_names = [h.name for h in config.hosts_with("runner")]
runner_tokens = secrets.runner_tokens(runner_names)
# Registry trust first (the runner pulls through it); the tunnel for the MTU it assumes.
runner_deps = per_host(runner_names, tunnel.commands, trust)
fleet_args = RunnerFleetArgs(config, hosts, runner_tokens, tls.ca_pem, forge.registry_endpoints, runner_deps)
runners = RunnerFleet("runners", fleet_args)

export_all(stack_outputs(config, forge, tunnel, tls.ca, gitlab.root_password))
