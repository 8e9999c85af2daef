"""forgeway: self-hosted GitLab on a home device, reachable through a VPS tunnel.

Load and validate the stack config (every problem reported before anything is
registered), build the components, export the outputs contract (README).
"""

from components.config import load_stack_config
from components.hosts import connect_hosts
from components.outputs import export_all, stack_outputs
from components.pki import CertificateAuthority, CertificateAuthorityArgs
from components.secrets import StackSecrets
from components.tunnel import WireGuardKey, WireGuardKeyArgs

config, plain_secrets = load_stack_config()
secrets = StackSecrets(plain_secrets)

hosts = connect_hosts(config, secrets.ssh_private_key)
wireguard_keys = {
    name: WireGuardKey(f"{name}-wg", WireGuardKeyArgs(supplied=secrets.wireguard_private_key(name))) for name in hosts
}
ca = (
    CertificateAuthority("ca", CertificateAuthorityArgs(f"forgeway CA {config.gitlab.domain}", secrets.ca_private_key))
    if config.gitlab.tls == "own-ca"
    else None
)

export_all(stack_outputs(config, wireguard_keys, ca))
