"""A Pulumi program for tests/program/test_forge.py: a second, made-up forge ("gitea",
on a runner host, on other home ports) drives the tunnel, the segmentation and the
forwarding, with no GitLab module imported. It is the seam's contract: adding a forge
does not touch components/tunnel.py, segment.py or forwarding.py.
"""

import sys

import pulumi

from components.config import ForwardedPort, load_stack_config
from components.forge import Forge
from components.forwarding import PortForwarding, PortForwardingArgs
from components.hosts import connect_hosts
from components.render.nftables import forwarding_settings
from components.render.segment import segment_settings
from components.secrets import StackSecrets
from components.segment import TunnelSegmentation, TunnelSegmentationArgs
from components.tunnel import Tunnel, TunnelArgs, tunnel_addresses

config, plain_secrets = load_stack_config()
secrets = StackSecrets(plain_secrets)
host = config.hosts_with("runner")[0]  # not the host with role gitlab
forge = Forge(
    kind="gitea",
    host=host.name,
    domain="git.example.org",
    services=(
        ForwardedPort(service="https", public=443, home=3000),
        ForwardedPort(service="ssh", public=22, home=2022),
    ),
    tls="letsencrypt",
    certificate_names=("git.example.org",),
    lan_address=host.address,
    public_names=("git.example.org",),
    url="https://git.example.org",
    registry_endpoints=("git.example.org:443",),
)
addresses = tunnel_addresses(config)
vps = config.vps.name
hosts = connect_hosts(config, secrets.ssh_private_key)
wg_keys, mode = secrets.wireguard_private_keys(), config.forwarding.mode
tunnel = Tunnel("tunnel", TunnelArgs(config.tunnel, hosts, config.tunnel_endpoint_host, wg_keys, mode, forge.host))
segment = segment_settings(config, addresses, forge_host=forge.host, services=forge.services)
TunnelSegmentation("segment", TunnelSegmentationArgs(segment, hosts))
PortForwarding(
    "forwarding",
    PortForwardingArgs(
        forwarding_settings(config, addresses[forge.host], services=forge.services),
        vps=hosts[vps],
        forge=hosts[forge.host],
        vps_address=addresses[vps],
        vps_tunnel=tunnel.commands[vps],
        forge_tunnel=tunnel.commands[forge.host],
    ),
)
pulumi.export("forge_host", forge.host)
pulumi.export("forge_address", str(addresses[forge.host]))
pulumi.export("gitlab_modules", sorted(m for m in sys.modules if m.startswith("components") and "gitlab" in m))
