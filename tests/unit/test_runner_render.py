"""Pure renderers of the runner hosts: config.toml (parsed back with tomllib) and daemon.json
(with the merge the host runs, components/scripts/daemon_merge.py)."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from components.render.docker_daemon import (
    LEGACY_IPV6,
    OWNED_KEYS,
    DaemonSettings,
    host_ipv6_prefixes,
    render_daemon_json,
)
from components.render.runner_config import (
    CA_PATH,
    DIND_CERTS_CLIENT,
    RunnerSettingsView,
    job_volumes,
    registration,
    render_config_toml,
)
from components.scripts import daemon_merge

pytestmark = pytest.mark.unit
MERGE = Path(daemon_merge.__file__)

HOSTILE = 'pi"5\\\n\t\x7f\u00e9\U0001f600 ] = "x'


def _view(**changes: object) -> RunnerSettingsView:
    base = RunnerSettingsView(
        name="pi5",
        url="https://gitlab.example.org",
        token="glrt-" + "a" * 20,
        arch="arm64",
        concurrent=4,
        default_image="debian:12.8-slim",
        tags=("pi5",),
    )
    return RunnerSettingsView(**{**base.__dict__, **changes})


def test_config_toml_parses_back_with_every_value_intact() -> None:
    view = _view(name=HOSTILE, url="https://gitlab.example.org:8443/", job_memory_mb=2048, mtu=1420, ipv6=True)
    parsed = tomllib.loads(render_config_toml(view))
    (runner,) = parsed["runners"]
    assert parsed["concurrent"] == 4
    assert runner["name"] == HOSTILE and runner["token"] == view.token and runner["url"] == view.url
    assert runner["executor"] == "docker"
    docker = runner["docker"]
    assert docker["privileged"] is False and docker["pull_policy"] == ["if-not-present"]
    assert docker["memory"] == "2048m" and docker["network_mtu"] == 1420 and docker["enable_ipv6"] is True
    assert runner["feature_flags"]["FF_NETWORK_PER_BUILD"] is True
    assert "/var/run/docker.sock:/var/run/docker.sock" not in docker["volumes"]
    assert "tls-ca-file" not in runner


def test_own_ca_is_trusted_by_the_runner_and_docker_in_docker() -> None:
    parsed = tomllib.loads(render_config_toml(_view(ca_registries=("gitlab.example.org:5050",))))
    (runner,) = parsed["runners"]
    assert runner["tls-ca-file"] == CA_PATH
    # jobs and their services: forgeway's job directory on the host (docker-client-up.sh's)
    assert "/etc/docker/forgeway-jobs/certs.d:/etc/docker/certs.d:ro" in runner["docker"]["volumes"]
    assert "/etc/docker/forgeway-jobs/buildkitd.toml:/etc/forgeway/buildkitd.toml:ro" in runner["docker"]["volumes"]


# gitlab-runner's Linux volume parser: [SOURCE:]DESTINATION[:MODE], neither path with a ':'
# (so certs.d's <host>:<port> directories can only be bound by a parent directory).
_VOLUME = re.compile(r"^(?:(?P<source>/[^:]*):)?(?P<destination>/[^:]*)(?::(?P<mode>ro|rw))?$")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ca_registries": ("gitlab.example.org:5050", "10.8.0.1:5050")},
        {"docker_socket_in_jobs": True},
        {"privileged": True, "ca_registries": ("gitlab.example.org:5050",)},
    ],
)
def test_every_job_volume_is_one_the_runner_can_parse(changes: dict[str, object]) -> None:
    volumes = tomllib.loads(render_config_toml(_view(**changes)))["runners"][0]["docker"]["volumes"]
    assert volumes == job_volumes(_view(**changes))
    for volume in volumes:
        assert _VOLUME.fullmatch(volume), f"{volume!r} is not [SOURCE:]DESTINATION[:ro|rw] without ':' in a path"


def test_privileged_and_socket_only_as_asked_and_registration_says_protected() -> None:
    view = _view(privileged=True, protected_only=True, docker_socket_in_jobs=True, helper_image="h:arm64-v18.5.0")
    docker = tomllib.loads(render_config_toml(view))["runners"][0]["docker"]
    assert docker["privileged"] is True and docker["helper_image"] == "h:arm64-v18.5.0"
    assert "/var/run/docker.sock:/var/run/docker.sock" in docker["volumes"]
    assert registration(view) == {"tag_list": ["arm64", "pi5"], "run_untagged": False, "access_level": "ref_protected"}
    assert registration(_view())["access_level"] == "not_protected"


def test_privileged_runners_share_dinds_client_certificates_with_the_job() -> None:
    """docker:dind (DOCKER_TLS_CERTDIR=/certs) writes its client certificates to /certs/client;
    the volume is shared by the job and its services, so the job reaches dind over TLS (2376)."""
    volumes = tomllib.loads(render_config_toml(_view(privileged=True, protected_only=True)))["runners"][0]["docker"][
        "volumes"
    ]
    assert DIND_CERTS_CLIENT == "/certs/client" and volumes.count(DIND_CERTS_CLIENT) == 1
    assert DIND_CERTS_CLIENT not in job_volumes(_view())  # no dind without privileged: nothing to share


@pytest.mark.parametrize("socket", ["/var/run/docker.sock", "/run/user/1000/docker.sock", "/srv/dk/docker.sock"])
def test_jobs_get_the_hosts_configured_socket_where_the_runner_has_it(socket: str) -> None:
    """hosts[].docker_socket: the runner container has it at /var/run/docker.sock
    (components/runners.py) and starts jobs through that; a job allowed the socket gets the
    same host socket, at the same place."""
    docker = tomllib.loads(render_config_toml(_view(docker_socket=socket, docker_socket_in_jobs=True)))["runners"][0][
        "docker"
    ]
    assert docker["host"] == "unix:///var/run/docker.sock"
    binds = [v for v in docker["volumes"] if v.endswith(":/var/run/docker.sock")]
    assert binds == [f"{socket}:/var/run/docker.sock"]


def test_no_socket_in_jobs_unless_asked_whatever_the_hosts_socket() -> None:
    docker = tomllib.loads(render_config_toml(_view(docker_socket="/run/user/1000/docker.sock")))["runners"][0][
        "docker"
    ]
    assert docker["host"] == "unix:///var/run/docker.sock"
    assert not [v for v in docker["volumes"] if "docker.sock" in v]


def test_daemon_json_holds_only_owned_keys() -> None:
    plain = render_daemon_json(DaemonSettings(address_pools=[("172.28.0.0/14", 24)]))
    assert plain == {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "default-address-pools": [{"base": "172.28.0.0/14", "size": 24}],
    }
    bridge, pool = host_ipv6_prefixes(ipaddress.IPv6Network("fd00:f0e5:7a1b::/48"), 1)
    full = render_daemon_json(
        DaemonSettings(
            address_pools=[("172.28.0.0/14", 24)],
            mtu=1420,
            ipv6_bridge=bridge,
            ipv6_pool=pool,
            registry_mirrors=["https://mirror.example.org"],
        )
    )
    assert set(full) <= OWNED_KEYS
    assert (bridge, pool) == ("fd00:f0e5:7a1b:100::/64", "fd00:f0e5:7a1b:180::/57")
    assert not ipaddress.ip_network(bridge).overlaps(ipaddress.ip_network(pool))
    assert full["mtu"] == 1420 and full["ipv6"] is True and full["fixed-cidr-v6"] == bridge and full["ip6tables"]
    assert {"base": pool, "size": 64} in full["default-address-pools"]


def test_ipv6_prefix_runs_out_of_host_slices_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no /56 left for runner host number 2"):
        host_ipv6_prefixes(ipaddress.IPv6Network("fd00:1:2:300::/56"), 1)


def test_merge_keeps_foreign_keys_drops_keys_no_longer_set_and_adds_experimental_for_old_daemons() -> None:
    current = {"data-root": "/srv/docker", "mtu": 1500, "registry-mirrors": ["https://old.example.org"]}
    ours = {"mtu": 1420, "ipv6": True, "ip6tables": True}
    merged = daemon_merge.merge(current, ours, ["registry-mirrors", "mtu"], 20)
    assert merged == {"data-root": "/srv/docker", "mtu": 1420, "ipv6": True, "ip6tables": True, "experimental": True}
    assert "experimental" not in daemon_merge.merge(current, ours, [], 27)
    assert LEGACY_IPV6["below_major"] == daemon_merge.LEGACY_IPV6_BELOW_MAJOR


def test_merge_cli_is_stable_and_refuses_a_broken_file(tmp_path: Path) -> None:
    current, ours, owned = tmp_path / "daemon.json", tmp_path / "ours.json", tmp_path / "owned.json"
    current.write_text('{"data-root": "/srv/docker"}')
    ours.write_text(json.dumps({"mtu": 1420}))
    owned.write_text("[]")
    argv = [sys.executable, str(MERGE), str(current), str(ours), str(owned), "20"]
    first = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    current.write_text(first)
    assert subprocess.run(argv, capture_output=True, text=True, check=True).stdout == first  # converged
    current.write_text("{not json")
    broken = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert broken.returncode != 0 and "refusing to change it" in broken.stderr


def test_host_cores_reads_the_arch_checks_line() -> None:
    from components.runners import host_cores

    assert host_cores("amd64\ncores 4\n") == 4
    assert host_cores("arm64\n") == 1  # an older check said nothing: one job at a time
    assert host_cores("arm64\ncores 0\n") == 1
