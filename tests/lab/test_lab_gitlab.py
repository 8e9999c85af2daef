"""GitLab through the VPS (`make lab`): HTTP, HTTPS, SSH on 22 and the registry, in both
forwarding modes, and its data and SSH host key across a replaced container.

GitLab's image is a stand-in built from Debian (tools/lab/standin_image/): nginx answers
``forgeway-gitlab-standin <port> <client address>`` on HTTPS, redirects HTTP, serves
Debian's docker-registry on 5050 behind TLS and basic auth, and runs an sshd whose host
keys live in the config volume, as omnibus keeps them.
"""

from __future__ import annotations

import time

from tests.lab.make_lab import (
    CLIENT_ADDRESS,
    VPS,
    MakeLab,
    assert_admin_ssh,
    gitlab_ssh_key,
    https,
    ping,
    seen_address,
    ssh_keys_offered,
)
from tests.lab.test_lab_ipv6 import NAME, curl6, ipv6_only_client, sources_seen_by_the_forge, ssh_and_push_over_ipv6
from tools.lab.layout import CLIENT_V6

HOME_TUNNEL6 = "fd77:6179:7761::2"  # the forge host's tunnel IPv6 address (tunnel.ipv6's default prefix)


def test_http_https_ssh_and_registry_reach_gitlab_and_snat_shows_the_tunnel_address(make_lab: MakeLab) -> None:
    # HTTPS verifies against the stack's CA (the certificate names the VPS address too).
    assert seen_address(make_lab) == "10.8.0.1"
    redirect = make_lab.machine("client").execute(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", f"http://{VPS}/"]
    )
    assert redirect.stdout == "301 https://gitlab.forgeway.test/", redirect.stdout + redirect.stderr
    status, _ = https(make_lab, "/v2/", port=5050)
    assert status == 401, "the registry must ask for credentials"
    # Public 22 lands on GitLab's SSH in the container, not on the home device's own sshd.
    assert gitlab_ssh_key(make_lab) in ssh_keys_offered(make_lab)


def test_gitlab_data_and_ssh_host_key_survive_a_replaced_container(make_lab: MakeLab) -> None:
    home = make_lab.machine("home")
    marker = f"forgeway-{time.time_ns()}"
    home.docker("exec", "forgeway-gitlab", "sh", "-c", f"echo {marker} > /var/opt/gitlab/lab-marker")
    old_id = home.docker("inspect", "--format", "{{.Id}}", "forgeway-gitlab").strip()
    ssh_key = gitlab_ssh_key(make_lab)
    # A new image (same files, one more label: another image id): the container's image
    # is a replace-on-change input, as a GitLab upgrade would change it.
    scratch = home.docker("create", "forgeway-lab/gitlab-standin:1.0").strip()
    home.docker("commit", "--change", "LABEL forgeway.lab=upgrade", scratch, "forgeway-lab/gitlab-standin:1.0-lab2")
    home.docker("rm", scratch)
    try:
        moved = make_lab.up("--set", "gitlab.images.amd64=forgeway-lab/gitlab-standin:1.0-lab2")
        assert "replace  docker:index/container:Container home-gitlab" in moved.stderr, moved.stderr
        new_id = home.docker("inspect", "--format", "{{.Id}}", "forgeway-gitlab").strip()
        assert new_id != old_id
        assert home.docker("exec", "forgeway-gitlab", "cat", "/var/opt/gitlab/lab-marker").strip() == marker
        assert seen_address(make_lab, tries=10) == "10.8.0.1"
        assert ssh_key in ssh_keys_offered(make_lab), "GitLab's SSH host key changed with the container"
    finally:
        make_lab.up()  # the lab's own image again


def test_preserve_source_shows_the_client_and_switching_back_removes_the_return_path(make_lab: MakeLab) -> None:
    home = make_lab.machine("home")
    marker = time.time_ns()
    try:
        make_lab.up("--mode", "preserve-source")
        assert seen_address(make_lab) == CLIENT_ADDRESS
        assert ping(home, "198.51.100.1"), "the home LAN must keep working in preserve-source mode"
        assert_admin_ssh(make_lab)  # after an update
        assert "4680" in home.succeed(["ip", "rule"])
        # forwarding.ipv6: home has no IPv6 default route, so its replies find the tunnel by
        # source (ip -6 rule from its tunnel address) beside the mark. An IPv6 client is
        # answered, the forge host sees the client's IPv6 address on wg0, and so does GitLab:
        # the forge host DNATs its tunnel IPv6 address to GitLab's own IPv6 address (table ip6
        # forgeway_forge), no docker-proxy in between (issue 20).
        assert f"from {HOME_TUNNEL6} lookup 4680" in " ".join(home.succeed(["ip", "-6", "rule"]).split())
        # SSH on 22 and a docker push and pull over IPv6 too, IPv4 refused (as in snat mode)
        with ipv6_only_client(make_lab) as sent, sources_seen_by_the_forge(make_lab) as seen:
            answer = curl6(make_lab, f"https://{NAME}/?forgeway-lab-v6-{marker}")
            ssh_and_push_over_ipv6(make_lab)
        assert answer == f"forgeway-gitlab-standin 443 {CLIENT_V6}", answer
        assert sent["to_vps6"] > 0, sent
        assert seen["from_client6"] > 0 and seen["from_vps6"] == 0, seen
        # ... and nginx's access log (omnibus's file) records the client for that request
        log = home.docker("exec", "forgeway-gitlab", "cat", "/var/log/gitlab/nginx/gitlab_access.log")
        (line,) = [line for line in log.splitlines() if f"forgeway-lab-v6-{marker}" in line]
        assert line.startswith(f"{CLIENT_V6} - "), line
    finally:
        back = make_lab.up("--mode", "snat")
    assert "delete   command:remote:Command home-return-path" in back.stderr
    assert "4680" not in home.succeed(["ip", "rule"])
    assert "4680" not in home.succeed(["ip", "-6", "rule"])
    assert seen_address(make_lab) == "10.8.0.1"
