"""components.config: values checked against the grammar of where they end up.

The bad-config corpus (bad_configs/) holds one refused example per class; these tests
walk each class's edges: what the destination takes must load, what it refuses must
be refused by its key before anything is registered.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Annotated, Any, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from components.config import ConfigError, StackConfig, parse_stack
from components.config.load import model_in
from components.render.ssh import SshTarget, ssh_options, ssh_url, url_host
from tests.unit.config_patches import Config, apply_patch

pytestmark = pytest.mark.unit


def _load(prod: tuple[Config, list[str]], patch: dict[str, Any]) -> StackConfig:
    patched = apply_patch(prod, patch)
    stack, _ = parse_stack(patched.config, patched.secret_keys)
    return stack


def _refused(prod: tuple[Config, list[str]], patch: dict[str, Any]) -> list[tuple[str, str]]:
    patched = apply_patch(prod, patch)
    with pytest.raises(ConfigError) as caught:
        parse_stack(patched.config, patched.secret_keys)
    return [(p.key, p.expected) for p in caught.value.problems]


# --- integers ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 22.0, "22", "0o26", None, [22], {"port": 22}])
def test_an_integer_field_takes_only_an_integer(value: Any, prod: tuple[Config, list[str]]) -> None:
    problems = _refused(prod, {"set": {"forgeway:hosts[0].ssh_port": value}})
    assert [k for k, _ in problems] == ["forgeway:hosts[0].ssh_port"], problems


def _int_fields(model: type[BaseModel], where: str = "") -> Iterator[tuple[str, Any]]:
    """(key, type) of every integer field in the models, nested models included."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        typed: Any = Annotated[annotation, *info.metadata] if info.metadata else annotation
        members = [annotation, *get_args(annotation)]
        if any(m is int or (get_origin(m) is Annotated and get_args(m)[0] is int) for m in members):
            yield f"{where}{name}", typed
        nested = model_in(annotation)
        if nested is not None:
            yield from _int_fields(nested, f"{where}{name}.")


def test_every_integer_field_is_strict() -> None:
    """A field added later with a plain int would coerce true to 1 again: each refuses it."""
    fields = list(_int_fields(StackConfig))
    assert len(fields) >= 15, fields
    for key, typed in fields:
        adapter: TypeAdapter[Any] = TypeAdapter(typed)
        for value in (True, 22.0, "22"):
            with pytest.raises(ValidationError):
                adapter.validate_python(value)
                pytest.fail(f"{key} takes {value!r}: give it the strict Int type (components/config/types.py)")


def test_a_plain_integer_still_loads(prod: tuple[Config, list[str]]) -> None:
    assert _load(prod, {"set": {"forgeway:hosts[0].ssh_port": 2203}}).vps.ssh_port == 2203


# --- interface names and IPv6 zones ------------------------------------------------

GOOD_IFNAMES = ["eth0", "eth0.100", "enp0s31f6", "br-lan", "wg_home", "a", "x" * 15, "bond0.4094"]
BAD_IFNAMES = ["", "x" * 16, "eth0/1", ".", "..", "eth 0", "eth0\n", "-eth0", ".eth0", "eth0:1", "ethé", 'e"0']


@pytest.mark.parametrize("name", GOOD_IFNAMES)
def test_interface_names_the_kernel_takes_load(name: str, prod: tuple[Config, list[str]]) -> None:
    assert _load(prod, {"set": {"forgeway:hosts[0].public_interface": name}}).vps.public_interface == name


@pytest.mark.parametrize("name", BAD_IFNAMES)
def test_interface_names_the_kernel_refuses_are_refused(name: str, prod: tuple[Config, list[str]]) -> None:
    problems = _refused(prod, {"set": {"forgeway:hosts[0].public_interface": name}})
    assert problems == [("forgeway:hosts[0].public_interface", problems[0][1])]
    assert "an interface name" in problems[0][1]


@pytest.mark.parametrize("zone", ["eth0", "eth0.100", "3"])
def test_an_ipv6_zone_that_is_an_interface_name_loads(zone: str, prod: tuple[Config, list[str]]) -> None:
    stack = _load(prod, {"set": {"forgeway:tunnel.endpoint": f"fe80::1%{zone}"}})
    assert stack.tunnel.endpoint == f"fe80::1%{zone}"


@pytest.mark.parametrize("zone", ["eth0\n", "a b", "x" * 16, "eth0/1", "]", "\x00", "é"])
def test_an_ipv6_zone_that_is_no_interface_name_is_refused(zone: str, prod: tuple[Config, list[str]]) -> None:
    problems = _refused(prod, {"set": {"forgeway:hosts[2].address": f"fe80::51%{zone}"}})
    assert [k for k, _ in problems] == ["forgeway:hosts[2].address"], problems


# --- IPv6 in URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("192.168.1.50", "192.168.1.50"),
        ("gitlab.example.org", "gitlab.example.org"),
        ("2001:db8::10", "[2001:db8::10]"),
        ("fe80::1%eth0", "[fe80::1%25eth0]"),
    ],
)
def test_url_host_brackets_ipv6_and_encodes_its_zone(address: str, host: str) -> None:
    assert url_host(address) == host


def test_the_docker_url_of_an_ipv6_host_is_bracketed_and_parses_back(prod: tuple[Config, list[str]]) -> None:
    from urllib.parse import unquote, urlsplit

    stack = _load(prod, {"set": {"forgeway:hosts[1].address": "2001:db8::50"}})
    host = stack.gitlab_host
    url = ssh_url(SshTarget(host.address, host.ssh_port, host.ssh_user, host.host_key))
    assert url == "ssh://forgeway@[2001:db8::50]"
    parts = urlsplit(url)
    assert (parts.username, parts.hostname, parts.port) == ("forgeway", "2001:db8::50", None)
    zoned = urlsplit(ssh_url(SshTarget("fe80::1%eth0", 22, "forgeway", None)))
    assert unquote(zoned.hostname or "") == "fe80::1%eth0" and zoned.port is None


def test_ssh_options_through_an_ipv6_jump_host_bracket_the_target() -> None:
    jump = SshTarget("2001:db8::1", 2202, "admin", None)
    options = ssh_options(SshTarget("2001:db8::50", 22, "forgeway", None), jump)
    proxy = next(o for o in options if o.startswith("ProxyCommand="))
    assert "-W '[%h]:%p' admin@2001:db8::1" in proxy


# --- proxy URLs --------------------------------------------------------------------

GOOD_PROXIES = [
    "http://proxy.lan:3128",
    "https://proxy.example.org",
    "socks5://10.0.0.1:1080",
    "http://[2001:db8::1]:3128",
]
BAD_PROXIES = [
    "http://u:p@proxy.lan:3128",
    "http://u@proxy.lan",
    "http://:p@proxy.lan",
    "proxy.lan:3128",
    "ftp://proxy.lan",
    "http://proxy.lan:0",
    "http://proxy.lan:3128/path",
    "http://proxy.lan?x=1",
    "http://proxy lan",
    "http://proxy.lan\n",
    "http://",
    "http://%41",
    "http://[fe80::1",
    "socks5://[fe80::1%eth0]:1080",
    "http://proxy.lan%2f",
]


@pytest.mark.parametrize("url", GOOD_PROXIES)
def test_a_proxy_url_of_a_host_and_port_loads(url: str, prod: tuple[Config, list[str]]) -> None:
    stack = _load(prod, {"set": {"forgeway:hosts[3].proxy.http_proxy": url}})
    proxy = stack.host("builder").proxy
    assert proxy is not None and proxy.http_proxy == url


@pytest.mark.parametrize("url", BAD_PROXIES)
def test_a_proxy_url_docker_or_its_unit_cannot_take_is_refused(url: str, prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, {"set": {"forgeway:hosts[3].proxy.http_proxy": url}})
    with pytest.raises(ConfigError) as caught:
        parse_stack(patched.config, patched.secret_keys)
    assert [p.key for p in caught.value.problems] == ["forgeway:hosts[3].proxy.http_proxy"]
    assert ":p@" not in str(caught.value), "a proxy password is shown"


def test_a_proxy_section_without_a_url_is_refused(prod: tuple[Config, list[str]]) -> None:
    problems = _refused(prod, {"set": {"forgeway:hosts[3].proxy": {"no_proxy": ["a.lan"]}}})
    assert [k for k, _ in problems] == ["forgeway:hosts[3].proxy"]


# --- WireGuard keys, overlaps, runner tags -----------------------------------------

KEY_A = "YE4pDF6Y7WcEfVq3J1yH6rn4mhU/PKKfk0Wv8cTqG1E="
KEY_B = "kBSqSeAg0Ox95VQBn+8Q2d5cyZGz+Ee6ImgCBXGBHWo="


def test_distinct_wireguard_keys_load_and_a_shared_one_is_refused_without_showing_it(
    prod: tuple[Config, list[str]],
) -> None:
    secret = ["forgeway:wireguard_private_keys"]
    _load(prod, {"set": {secret[0]: {"vps": KEY_A, "jetson": KEY_B}}, "secret": secret})
    patched = apply_patch(
        prod, {"set": {secret[0]: {"vps": KEY_A, "jetson": KEY_B, "builder": KEY_B}}, "secret": secret}
    )
    with pytest.raises(ConfigError) as caught:
        parse_stack(patched.config, patched.secret_keys)
    assert [p.key for p in caught.value.problems] == ["forgeway:wireguard_private_keys.builder"]
    assert KEY_B not in str(caught.value) and KEY_B[:16] not in str(caught.value)


@pytest.mark.parametrize("lan", ["172.16.0.0/16", "172.18.0.0/24", "10.17.0.0/16"])
def test_a_lan_beside_the_default_bridge_loads(lan: str, prod: tuple[Config, list[str]]) -> None:
    assert str(_load(prod, {"set": {"forgeway:hosts[2].lan_networks": [lan]}}).host("pi5").lan_networks[0]) == lan


def test_the_default_bridge_binds_only_hosts_that_run_docker(prod: tuple[Config, list[str]]) -> None:
    stack = _load(prod, {"set": {"forgeway:hosts[0].lan_networks": ["172.17.0.0/24"]}})
    assert str(stack.vps.lan_networks[0]) == "172.17.0.0/24"  # the VPS runs no docker


@pytest.mark.parametrize("tag", ["amd64", "x86-64", "amd64-large", "runner-amd64"])
def test_an_arm64_host_refuses_an_amd64_tag_unless_multiarch(tag: str, prod: tuple[Config, list[str]]) -> None:
    problems = _refused(prod, {"set": {"forgeway:hosts[2].runner.tags": [tag]}})
    assert [k for k, _ in problems] == ["forgeway:hosts[2].runner.tags[0]"]
    multiarch = {
        "forgeway:hosts[2].runner": {"tags": [tag], "multiarch": True},
        "forgeway:runners.binfmt_image": "tonistiigi/binfmt:qemu-v8.1.5",
    }
    assert _load(prod, {"set": multiarch}).host("pi5").runner is not None


def test_thirty_two_tags_load(prod: tuple[Config, list[str]]) -> None:
    tags = [f"t{i}" for i in range(32)]
    runner = _load(prod, {"set": {"forgeway:hosts[2].runner.tags": tags}}).host("pi5").runner
    assert runner is not None and runner.tags == tags


# --- the prune timer's calendar ----------------------------------------------------


@pytest.mark.parametrize("spec", ["hourly", "daily", "*:0/30", "Mon..Fri 03:00", "*-*-* 04:00:00 UTC", "weekly"])
def test_a_prune_schedule_systemd_takes_loads(spec: str, prod: tuple[Config, list[str]]) -> None:
    assert _load(prod, {"set": {"forgeway:runners.prune.on_calendar": spec}}).runners.prune.on_calendar == spec


@pytest.mark.parametrize("spec", ["every hour", "25:00", "daily Europe/Berlin", "@1700000000", "", "hourly;reboot"])
def test_a_prune_schedule_systemd_refuses_or_forgeway_cannot_carry_is_refused(
    spec: str, prod: tuple[Config, list[str]]
) -> None:
    problems = _refused(prod, {"set": {"forgeway:runners.prune.on_calendar": spec}})
    assert [k for k, _ in problems] == ["forgeway:runners.prune.on_calendar"]


def test_a_jump_host_with_an_ipv6_zone_keeps_its_percent_from_ssh_tokens() -> None:
    jump = SshTarget("fe80::1%eth0", 22, "admin", None)
    proxy = next(o for o in ssh_options(SshTarget("10.0.0.5", 22, "forgeway", None), jump) if "ProxyCommand=" in o)
    assert "admin@fe80::1%%eth0" in proxy and "%eth0" not in proxy.replace("%%eth0", "")


# --- paths docker binds --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/srv/gitlab:data", "/srv/a,b", "/srv/a b", "/srv/a\nb", "/srv/é"])
def test_a_path_docker_would_split_is_refused(path: str, prod: tuple[Config, list[str]]) -> None:
    problems = _refused(
        prod, {"set": {"forgeway:gitlab.volume_paths.data": path, "forgeway:hosts[2].docker_socket": path}}
    )
    assert sorted(k for k, _ in problems) == ["forgeway:gitlab.volume_paths.data", "forgeway:hosts[2].docker_socket"]


def test_ordinary_paths_load(prod: tuple[Config, list[str]]) -> None:
    stack = _load(prod, {"set": {"forgeway:gitlab.volume_paths.data": "/mnt/ssd-1/gitlab_data"}})
    assert stack.gitlab.volume_paths.data == "/mnt/ssd-1/gitlab_data"


def test_a_zoned_gitlab_address_goes_into_the_certificate_without_its_zone(prod: tuple[Config, list[str]]) -> None:
    from components.pki import server_names
    from components.tunnel import tunnel_addresses

    stack = _load(
        prod, {"set": {"forgeway:hosts[1].address": "fe80::50%eth0", "forgeway:hosts[0].address": "2001:db8::10"}}
    )
    _, ips = server_names(stack, tunnel_addresses(stack))
    assert "fe80::50" in ips and not any("%" in ip for ip in ips)


def test_two_private_keys_that_differ_only_in_clamped_bits_are_one_key(prod: tuple[Config, list[str]]) -> None:
    """X25519 clears the low 3 bits and the top bit: both strings are one WireGuard identity."""
    raw = bytearray(base64.b64decode(KEY_A))
    raw[0] ^= 0x07
    raw[31] ^= 0x80
    twin = base64.b64encode(bytes(raw)).decode()
    assert twin != KEY_A
    secret = ["forgeway:wireguard_private_keys"]
    problems = _refused(prod, {"set": {secret[0]: {"vps": KEY_A, "pi5": twin}}, "secret": secret})
    assert [k for k, _ in problems] == ["forgeway:wireguard_private_keys.pi5"]
