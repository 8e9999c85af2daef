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
hosts = connect_hosts(config.hosts, secrets.ssh_private_key)
tunnel = Tunnel("tunnel", TunnelArgs.for_forge(config, forge, hosts, secrets.wireguard_private_keys()))
segmentation = TunnelSegmentation("segment", TunnelSegmentationArgs.for_forge(config, forge, hosts, addresses))
forwarding_args = PortForwardingArgs.for_forge(config, forge, hosts, addresses, tunnel.commands)
forwarding = PortForwarding("forwarding", forwarding_args)
pulumi.export("forge_host", forge.host)
pulumi.export("forge_address", str(addresses[forge.host]))
pulumi.export("gitlab_modules", sorted(m for m in sys.modules if m.startswith("components") and "gitlab" in m))
