"""forgeway: self-hosted GitLab on a home device, reachable through a VPS tunnel.

Load and validate the stack config (every problem reported before anything is
registered), build the components, export the outputs contract (README).
"""

import os

import pulumi

from components.config import load_stack_config
from components.docker_host import DockerHost, docker_changes, docker_host_args
from components.forwarding import PortForwarding, PortForwardingArgs
from components.gitlab import GitLabServer, GitLabServerArgs
from components.hosts import connect_hosts
from components.outputs import export_all, stack_outputs
from components.pki import (
    CertificateAuthority,
    CertificateAuthorityArgs,
    ServerCertificate,
    ServerCertificateArgs,
    server_names,
)
from components.registry import registry_endpoints, registry_trust
from components.runners import RunnerDefaults, RunnerFleet, RunnerFleetArgs
from components.secrets import StackSecrets
from components.segment import TunnelSegmentation, TunnelSegmentationArgs
from components.tlscheck import letsencrypt_dns_problems, uncovered_names
from components.tunnel import (
    TunnelEndpoint,
    TunnelEndpointArgs,
    TunnelPeer,
    TunnelPeerArgs,
    TunnelPeerInfo,
    WireGuardKey,
    WireGuardKeyArgs,
    tunnel_addresses,
)

config, plain_secrets = load_stack_config()
secrets = StackSecrets(plain_secrets)
addresses = tunnel_addresses(config)

# TLS checks that need more than the config, before anything is registered.
# (FORGEWAY_NO_DNS=1: the test harness never lets the program query DNS.)
for problem in [] if os.environ.get("FORGEWAY_NO_DNS") == "1" else letsencrypt_dns_problems(config):
    pulumi.log.warn(f"gitlab.tls=letsencrypt: {problem}")
certificate_names = server_names(config, addresses)
if config.gitlab.tls == "own-ca":
    wanted = [config.gitlab.domain, *(endpoint.rsplit(":", 1)[0] for endpoint in registry_endpoints(config))]
    if missing := uncovered_names(*certificate_names, wanted):
        raise RuntimeError(f"the server certificate would not cover {', '.join(missing)} (a forgeway bug: report it)")

hosts = connect_hosts(config, secrets.ssh_private_key)
wireguard_keys = {
    name: WireGuardKey(f"{name}-wg", WireGuardKeyArgs(supplied=secrets.wireguard_private_key(name))) for name in hosts
}

# The tunnel: the VPS listens, every other host dials it.
vps = config.vps
peers = [h for h in config.hosts if h.name != vps.name]
info = {h.name: TunnelPeerInfo(h.name, addresses[h.name], wireguard_keys[h.name].public_key) for h in config.hosts}
tunnel = TunnelEndpoint(
    "tunnel",
    TunnelEndpointArgs(
        hosts[vps.name], config.tunnel, addresses[vps.name], wireguard_keys[vps.name], [info[h.name] for h in peers]
    ),
)
tunnel_peers = {
    h.name: TunnelPeer(
        f"{h.name}-tunnel",
        TunnelPeerArgs(
            hosts[h.name],
            config.tunnel,
            addresses[h.name],
            wireguard_keys[h.name],
            vps=info[vps.name],
            endpoint_host=config.tunnel_endpoint_host,
            # preserve-source: forwarded packets reach GitLab with the client's address.
            any_source=config.forwarding.mode == "preserve-source" and "gitlab" in h.roles,
        ),
    )
    for h in peers
}

# Default deny between tunnel peers, enforced on the VPS and on each peer (README, "Who accepts what").
segmentation = TunnelSegmentation("segment", TunnelSegmentationArgs(config, hosts, addresses))

# The public ports, through the tunnel to the GitLab host.
gitlab_host = config.gitlab_host
forwarding = PortForwarding(
    "forwarding",
    PortForwardingArgs(
        config,
        hosts[vps.name],
        hosts[gitlab_host.name],
        addresses[vps.name],
        addresses[gitlab_host.name],
        vps_tunnel=tunnel.command,
        gitlab_tunnel=tunnel_peers[gitlab_host.name].command,
    ),
)

ca = (
    CertificateAuthority("ca", CertificateAuthorityArgs(f"forgeway CA {config.gitlab.domain}", secrets.ca_private_key))
    if config.gitlab.tls == "own-ca"
    else None
)
# own-ca: one server certificate for every name and address clients use (GitLab and registry).
certificate = None
if ca is not None:
    dns_names, ip_addresses = certificate_names
    certificate = ServerCertificate("gitlab-tls", ServerCertificateArgs(ca, dns_names[0], dns_names, ip_addresses))

# The registry over TLS; every docker host's trust of it, proxy, daemon.json, prune, binfmt.
registry = registry_trust(config, ca.cert_pem if ca is not None else None) if config.registry.enabled else None
runner_hosts = config.hosts_with("runner")
tunnel_first = {h.name: [tunnel_peers[h.name].command] for h in runner_hosts}  # the MTU daemon.json assumes
docker_hosts = {
    name: DockerHost(f"{name}-docker-host", args)
    for name, args in docker_host_args(config, hosts, registry, tunnel_first).items()
}

gitlab = GitLabServer(
    "gitlab",
    GitLabServerArgs(
        config,
        hosts[gitlab_host.name],
        tunnel_address=addresses[gitlab_host.name],
        vps_tunnel_address=addresses[vps.name],
        certificate=certificate,
        root_password=secrets.gitlab_root_password,
        # The container's ports bind the tunnel address: wg0 must exist first. With Let's
        # Encrypt its first boot answers the HTTP-01 challenge through the forwarding.
        depends_on=[
            tunnel_peers[gitlab_host.name].command,
            *(forwarding.resources if config.gitlab.tls == "letsencrypt" else []),
        ],
        docker_changes=docker_changes(docker_hosts, gitlab_host.name),
    ),
)

# The runner fleet: a gitlab-runner on every runner host.
runners = RunnerFleet(
    "runners",
    RunnerFleetArgs(
        RunnerDefaults.of(config),
        runner_hosts,
        hosts,
        docker_hosts,
        tokens={h.name: token for h in runner_hosts if (token := secrets.runner_token(h.name)) is not None},
        ca_pem=ca.cert_pem if ca is not None else None,
        registry_endpoints=registry_endpoints(config),
        depends_on=tunnel_first,
    ),
)

export_all(stack_outputs(config, wireguard_keys, ca, gitlab.root_password))
