"""gitlab.rb: checked by Ruby itself, syntax (`ruby -c`) and meaning (evaluated with stubs)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.render.gitlab import (
    GitLabSettings,
    render_gitlab_rb,
    ruby_str,
    settings_from_config,
    shared_buffers_mb,
    small_device_enabled,
)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden" / "gitlab"

# Evaluates a gitlab.rb with every top-level name (nginx, gitlab_rails, external_url, ...)
# stubbed as a hash or a setter, records any call to system/exec/backticks, and prints
# what was set as JSON: a test reads the values Ruby saw, not our text.
HARNESS = r"""
require 'json'
$settings = Hash.new { |h, k| h[k] = {} }
$calls = []
module Kernel
  def system(*a) = ($calls << a; nil)
  def exec(*a) = ($calls << a; nil)
  def spawn(*a) = ($calls << a; nil)
  def `(a) = ($calls << [a]; '')
end
def method_missing(name, *args)
  args.empty? ? $settings[name.to_s] : ($settings[name.to_s] = args.first)
end
eval(File.read(ARGV[0]), binding, ARGV[0])
puts JSON.generate({ 'settings' => $settings, 'calls' => $calls })
"""


def base(**changes: Any) -> GitLabSettings:
    s = GitLabSettings(
        domain="gitlab.example.org",
        https_public_port=443,
        ssh_public_port=22,
        forwarding_mode="snat",
        vps_tunnel_address="10.8.0.1",
        http_public_port=80,
        registry_domain="registry.example.org",
        registry_public_port=5050,
    )
    return dataclasses.replace(s, **changes)


def _ruby() -> str:
    path = shutil.which("ruby")
    if path is None:
        pytest.fail("ruby is not installed: apt-get install ruby (tools/ci/apt-packages.txt)")
    return path


def ruby_check(tmp_path: Path, text: str) -> None:
    f = tmp_path / "gitlab.rb"
    f.write_text(text)
    done = subprocess.run([_ruby(), "-c", str(f)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ruby -c rejected gitlab.rb:\n{done.stderr}\n{text}"


def ruby_eval(tmp_path: Path, text: str) -> dict[str, Any]:
    ruby_check(tmp_path, text)
    f, h = tmp_path / "gitlab.rb", tmp_path / "harness.rb"
    f.write_text(text)
    h.write_text(HARNESS)
    done = subprocess.run([_ruby(), str(h), str(f)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"evaluating gitlab.rb failed:\n{done.stderr}\n{text}"
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["calls"] == [], f"gitlab.rb ran commands: {result['calls']}"
    settings: dict[str, Any] = result["settings"]
    return settings


# --- quoting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["plain", "it's", "back\\slash", "\\'", "'; system('x') #", "#{system('x')}", "a\\", "ünïcode ✓", ""],
)
def test_ruby_str_round_trips_through_ruby(value: str) -> None:
    done = subprocess.run([_ruby(), "-e", f"print({ruby_str(value)})"], capture_output=True, text=True, check=True)
    assert done.stdout == value


@pytest.mark.parametrize("value", ["a\nb", "nul\x00", "eot\x04", "sub\x1a", "del\x7f"])
def test_ruby_str_refuses_control_characters(value: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        ruby_str(value)


def test_hostile_domain_stays_inside_its_literals(tmp_path: Path) -> None:
    evil = "gitlab.example.org'; system('x') #"
    got = ruby_eval(tmp_path, render_gitlab_rb(base(domain=evil, tls="own-ca")).text)
    assert got["external_url"] == f"https://{evil}"
    assert got["nginx"]["ssl_certificate"] == f"/etc/gitlab/ssl/{evil}.crt"
    assert got["registry_nginx"]["ssl_certificate"] == "/etc/gitlab/ssl/registry.example.org.crt"


def test_hostile_registry_domain_and_email_stay_inside_their_literals(tmp_path: Path) -> None:
    evil = "r.example.org\\'; `x` #"
    s = base(registry_domain=evil, tls="letsencrypt", letsencrypt_emails=("a'b@example.org",))
    got = ruby_eval(tmp_path, render_gitlab_rb(s).text)
    assert got["registry_external_url"] == f"https://{evil}:5050"
    assert got["letsencrypt"]["contact_emails"] == ["a'b@example.org"]


# --- ports and URLs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "url"), [(443, "https://gitlab.example.org"), (8443, "https://gitlab.example.org:8443")]
)
def test_external_url_carries_the_forwarded_https_port(tmp_path: Path, public: int, url: str) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(https_public_port=public)).text)
    assert got["external_url"] == url
    # nginx keeps listening where the container port is published, whatever the public port.
    assert (got["nginx"]["listen_port"], got["nginx"]["listen_https"]) == (443, True)


def test_ssh_and_registry_use_the_public_ports(tmp_path: Path) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(ssh_public_port=2222, registry_public_port=5443)).text)
    assert got["gitlab_rails"]["gitlab_shell_ssh_port"] == 2222
    assert got["registry_external_url"] == "https://registry.example.org:5443"
    assert (got["registry_nginx"]["listen_port"], got["registry_nginx"]["listen_https"]) == (5050, True)


def test_registry_defaults_to_the_gitlab_domain(tmp_path: Path) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(registry_domain=None)).text)
    assert got["registry_external_url"] == "https://gitlab.example.org:5050"


def test_registry_disabled(tmp_path: Path) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(registry_enabled=False, registry_public_port=None)).text)
    assert "registry_external_url" not in got
    assert got["registry"]["enable"] is False


def test_registry_without_a_forwarded_port_is_refused() -> None:
    with pytest.raises(ValueError, match="service registry"):
        render_gitlab_rb(base(registry_public_port=None))


def test_external_url_override_must_match_the_forwarded_port() -> None:
    assert (
        "external_url 'https://git.example.org:8443'"
        in render_gitlab_rb(base(https_public_port=8443, external_url="https://git.example.org:8443")).text
    )
    with pytest.raises(ValueError, match="forwarded https port 443"):
        render_gitlab_rb(base(external_url="https://gitlab.example.org:8443"))
    with pytest.raises(ValueError, match="https://"):
        render_gitlab_rb(base(external_url="http://gitlab.example.org"))


# --- TLS ---------------------------------------------------------------------------


def test_letsencrypt(tmp_path: Path) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(tls="letsencrypt")).text)
    assert got["letsencrypt"] == {"enable": True, "auto_renew": True}
    assert "ssl_certificate" not in got["nginx"]


def test_letsencrypt_needs_public_port_80() -> None:
    with pytest.raises(ValueError, match="public port 80"):
        render_gitlab_rb(base(tls="letsencrypt", http_public_port=8080))


def test_own_ca_points_nginx_at_the_staged_certificates(tmp_path: Path) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(tls="own-ca")).text)
    assert got["letsencrypt"] == {"enable": False}
    assert got["nginx"]["ssl_certificate"] == "/etc/gitlab/ssl/gitlab.example.org.crt"
    assert got["nginx"]["ssl_certificate_key"] == "/etc/gitlab/ssl/gitlab.example.org.key"
    assert got["registry_nginx"]["ssl_certificate_key"] == "/etc/gitlab/ssl/registry.example.org.key"


# --- forwarding mode ---------------------------------------------------------------


LOOPBACK_ONLY = {
    "trusted_proxies": ["127.0.0.1", "::1"],
    "monitoring_whitelist": ["127.0.0.0/8", "::1/128"],
    "rack_attack_git_basic_auth": {
        "enabled": True,
        "ip_whitelist": ["127.0.0.1"],
        "maxretry": 30,
        "findtime": 180,
        "bantime": 3600,
    },
}


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_only_loopback_is_trusted_or_allow_listed_in_either_mode(tmp_path: Path, mode: str) -> None:
    """README, "Client addresses": the ban is on for every address but loopback, and nothing
    but the container's own nginx/workhorse is a proxy (an empty trusted_proxies would make
    GitLab trust every private range, the tunnel's included)."""
    got = ruby_eval(tmp_path, render_gitlab_rb(base(forwarding_mode=mode)).text)
    rails = got["gitlab_rails"]
    assert {k: rails.get(k) for k in LOOPBACK_ONLY} == LOOPBACK_ONLY
    assert got["nginx"]["proxy_set_headers"] == {"X-Forwarded-For": "$remote_addr"}


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
@pytest.mark.parametrize("address", ["10.8.0.1", "10.99.0.1", "fd00:8::1"])
def test_the_vps_tunnel_address_is_never_trusted_nor_exempt_from_the_ban(
    tmp_path: Path, mode: str, address: str
) -> None:
    text = render_gitlab_rb(base(forwarding_mode=mode, vps_tunnel_address=address)).text
    got = ruby_eval(tmp_path, text)
    rails = got["gitlab_rails"]
    ban = rails["rack_attack_git_basic_auth"]
    listed = [*rails["trusted_proxies"], *rails["monitoring_whitelist"], *ban["ip_whitelist"]]
    assert address not in listed
    assert ban["enabled"] is True
    # Only the snat comment names it; no setting does.
    assert [line for line in text.splitlines() if address in line and not line.startswith("#")] == []


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_nginx_takes_no_client_address_from_a_header(tmp_path: Path, mode: str) -> None:
    got = ruby_eval(tmp_path, render_gitlab_rb(base(forwarding_mode=mode)).text)
    for section in ("nginx", "registry_nginx"):
        assert not [k for k in got.get(section, {}) if k.startswith("real_ip")], got[section]


def test_snat_says_in_gitlab_rb_what_it_gives_up() -> None:
    snat = render_gitlab_rb(base(forwarding_mode="snat")).text
    assert "# snat: every internet client arrives from 10.8.0.1; it is not allow-listed" in snat
    assert "snat" not in render_gitlab_rb(base(forwarding_mode="preserve-source")).text


def test_snat_refuses_a_tunnel_address_that_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        render_gitlab_rb(base(vps_tunnel_address="10.8.0.1'; system('x')"))


# --- small-device profile ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "arch", "memory", "on"),
    [
        ("on", "amd64", 65536, True),
        ("off", "arm64", 4096, False),
        ("auto", "arm64", 4096, True),
        ("auto", "arm64", 8192, True),
        ("auto", "arm64", 8193, False),
        ("auto", "arm64", None, True),
        ("auto", "amd64", 2048, False),
    ],
)
def test_small_device_switch(mode: str, arch: str, memory: int | None, on: bool) -> None:
    assert small_device_enabled(mode, arch, memory) is on


@pytest.mark.parametrize(("budget", "mb"), [(None, 256), (2048, 256), (4096, 256), (8192, 512), (65536, 1024)])
def test_shared_buffers_rule(budget: int | None, mb: int) -> None:
    assert shared_buffers_mb(budget) == mb


def test_profile_on_sets_and_reports_the_figures(tmp_path: Path) -> None:
    rendered = render_gitlab_rb(base(small_device=True, memory_budget_mb=4096))
    got = ruby_eval(tmp_path, rendered.text)
    assert got["puma"]["worker_processes"] == 0
    assert got["sidekiq"]["concurrency"] == 5
    assert got["postgresql"]["shared_buffers"] == "256MB"
    assert got["prometheus_monitoring"]["enable"] is False
    for name in (
        "prometheus",
        "alertmanager",
        "node_exporter",
        "redis_exporter",
        "postgres_exporter",
        "gitlab_exporter",
    ):
        assert got[name]["enable"] is False, name
    assert got["gitlab_rails"]["env"] == {"MALLOC_CONF": "dirty_decay_ms:1000,muzzy_decay_ms:1000"}
    assert rendered.figures == {
        "puma['worker_processes']": 0,
        "sidekiq['concurrency']": 5,
        "postgresql['shared_buffers']": "256MB",
        "prometheus_monitoring['enable']": False,
        "MALLOC_CONF": "dirty_decay_ms:1000,muzzy_decay_ms:1000",
    }


def test_profile_on_with_8_gb_raises_sidekiq_and_buffers() -> None:
    figures = render_gitlab_rb(base(small_device=True, memory_budget_mb=8192)).figures
    assert figures["sidekiq['concurrency']"] == 10
    assert figures["postgresql['shared_buffers']"] == "512MB"


def test_profile_off_leaves_omnibus_defaults(tmp_path: Path) -> None:
    rendered = render_gitlab_rb(base(small_device=False))
    got = ruby_eval(tmp_path, rendered.text)
    assert rendered.figures == {}
    for name in ("puma", "sidekiq", "postgresql", "prometheus_monitoring"):
        assert name not in got, name


# --- from the stack config, and the golden files ----------------------------------


def test_prod_stack_renders_valid_ruby(tmp_path: Path) -> None:
    from components.config import parse_stack
    from tests.stacks import prod_stack

    cfg, _ = parse_stack(*prod_stack())
    s = settings_from_config(cfg, "10.8.0.1")
    assert s.small_device == small_device_enabled(
        cfg.gitlab.small_device, cfg.gitlab_host.arch, cfg.gitlab_host.memory_mb
    )
    got = ruby_eval(tmp_path, render_gitlab_rb(s).text)
    https = cfg.forwarding.port("https")
    assert https is not None
    assert got["external_url"].endswith(cfg.gitlab.domain if https.public == 443 else f":{https.public}")


GOLDEN_CASES = {
    "snat-own-ca-small": base(forwarding_mode="snat", tls="own-ca", small_device=True, memory_budget_mb=4096),
    "preserve-source-letsencrypt": base(
        forwarding_mode="preserve-source",
        tls="letsencrypt",
        https_public_port=443,
        letsencrypt_emails=("ops@example.org",),
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str, tmp_path: Path) -> None:
    text = render_gitlab_rb(GOLDEN_CASES[name]).text
    ruby_check(tmp_path, text)
    assert text == (GOLDEN / f"{name}.rb").read_text(), f"regenerate tests/unit/golden/gitlab/{name}.rb if intended"
