"""forgeway: a self-hosted forge (GitLab) on a home device, reachable through a VPS tunnel.

Load and validate the stack config (every problem reported before anything is
registered), build the components, export the outputs contract (README). Each
component makes its own decisions; this file only hands each one what it needs.
"""

from components.backup import stack_backup
from components.config import load_stack_config
from components.docker_host import DockerHost, docker_changes, docker_host_args
from components.forge import stack_forge
from components.forwarding import PortForwarding, PortForwardingArgs
from components.gitlab import CONTAINER_NAME, GitLabServer, GitLabServerArgs
from components.hosts import connect_hosts, per_host
from components.outputs import export_all, stack_outputs
from components.pki import ForgeTls, ForgeTlsArgs
from components.registry import registry_trust
from components.registry_gc import stack_registry_gc
from components.runner_registration import RunnerRegistration, RunnerRegistrationArgs
from components.runners import RunnerDefaults, RunnerFleet, RunnerFleetArgs
from components.secrets import StackSecrets
from components.segment import TunnelSegmentation, TunnelSegmentationArgs
from components.tunnel import Tunnel, TunnelArgs, tunnel_addresses
from components.upgrade import guard_upgrades, target_version

config, plain_secrets = load_stack_config()
gitlab_version = target_version(config)  # a config error (no version said) before anything is registered
secrets = StackSecrets(plain_secrets)
forge = stack_forge(config)
addresses = tunnel_addresses(config)

# First, so that its checks fail the run before anything is registered.
tls = ForgeTls(ForgeTlsArgs.for_stack(config, forge, addresses, secrets.ca_private_key))

hosts = connect_hosts(config.hosts, secrets.ssh_private_key)
# GitLab moved only along its upgrade stops: a refused upgrade changes no host (docs/gitlab.md).
guard_upgrades(config, hosts, gitlab_version, container=CONTAINER_NAME)
tunnel = Tunnel("tunnel", TunnelArgs.for_forge(config, forge, hosts, secrets.wireguard_private_keys()))
segmentation = TunnelSegmentation("segment", TunnelSegmentationArgs.for_forge(config, forge, hosts, addresses))
forwarding_args = PortForwardingArgs.for_forge(config, forge, hosts, addresses, tunnel.commands)
forwarding = PortForwarding("forwarding", forwarding_args)

# Every docker host's registry trust, proxy, daemon.json, prune and binfmt; after its wg0 (the MTU).
runner_hosts = config.hosts_with("runner")
tunnel_first = per_host([h.name for h in runner_hosts], tunnel.commands)
docker_args = docker_host_args(config, hosts, registry_trust(config, tls.ca_pem), tunnel_first)
docker_hosts = {name: DockerHost(f"{name}-docker-host", args) for name, args in docker_args.items()}
gitlab_args = GitLabServerArgs.from_config(
    config,
    forge,
    hosts,
    addresses,
    tunnel=tunnel.commands,
    forwarding=forwarding.resources,
    certificate=tls.certificate,
    root_password=secrets.gitlab_root_password,
    docker_changes=docker_changes(docker_hosts),
)
gitlab = GitLabServer("gitlab", gitlab_args)

# Each runner created through GitLab's API (or a runner_tokens override checked against it).
hand_tokens = secrets.runner_tokens([h.name for h in runner_hosts])
registration_args = RunnerRegistrationArgs.from_config(
    config, forge, hosts, gitlab.container, hand_tokens, tls.ca_pem, forwarding.resources
)
registration = RunnerRegistration("runner-registration", registration_args)
ready = {name: [*tunnel_first.get(name, []), *registration.ready[name]] for name in registration.ready}
fleet_args = RunnerFleetArgs(
    RunnerDefaults.of(config), runner_hosts, hosts, docker_hosts, registration.tokens, tls.ca_pem,
    forge.registry_endpoints, ready, registration=registration.names,
)  # fmt: skip
runners = RunnerFleet("runners", fleet_args)

# GitLab's backups off the device (docs/backup.md): after the tunnel and segmentation of both ends.
backup_after = per_host([config.gitlab_host.name, config.vps.name], tunnel.commands, segmentation.commands)
backup = stack_backup(config, forge, hosts, addresses, secrets, after=[c for cs in backup_after.values() for c in cs])
registry_gc = stack_registry_gc(config, forge, hosts, after=[gitlab.container])  # docs/gitlab.md

export_all(stack_outputs(config, forge, tunnel, tls.ca, gitlab.root_password, backup=backup))
