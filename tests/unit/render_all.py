"""Render every host-bound file of a loaded stack and read each back with its own parser:
``nft -c`` (in a scratch user and network namespace), ``ruby -c``, tomllib, json,
``systemd-analyze calendar``; the WireGuard file line by line as ``wg`` reads it.
An assertion names the file and what its reader refused (test_config_hostile.py uses it).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
import tempfile
import tomllib
from urllib.parse import urlsplit

import pytest

from components.config import StackConfig
from components.docker_host import client_files, daemon_json_for
from components.gitlab import memory_limit_mb
from components.hosts import _target
from components.pki import server_names
from components.registry import registry_endpoints, registry_trust
from components.render.gitlab import render_gitlab_rb, settings_from_config
from components.render.nftables import (
    HomeRoutingSettings,
    forwarding_settings,
    render_forwarding,
    render_home_routing,
)
from components.render.segment import render_segment, segment_settings
from components.render.ssh import ssh_options, ssh_url
from components.render.wgconf import DEFAULT_INTERFACE, TunnelHost, endpoint_interface, peer_interface, tunnel_files
from components.runners import RunnerDefaults, _view
from components.scripts import script_command
from components.tunnel import tunnel_addresses


def _public_key(name: str) -> str:
    """A key per host (32 bytes in base64): the renderers check only the form and that peers differ."""
    return base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (tools/ci/apt-packages.txt)")
    return path


@functools.cache
def _nft_ok(text: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(text)
        f.flush()
        done = subprocess.run(
            [_tool("unshare"), "-rn", _tool("nft"), "-c", "-f", f.name], capture_output=True, text=True, check=False
        )
    return "" if done.returncode == 0 else done.stderr


@functools.cache
def _ruby_ok(text: str) -> str:
    done = subprocess.run([_tool("ruby"), "-c"], input=text, capture_output=True, text=True, check=False)
    return "" if done.returncode == 0 else done.stderr


@functools.cache
def _calendar_ok(spec: str) -> bool:
    done = subprocess.run(
        [_tool("systemd-analyze"), "calendar", "--", spec], capture_output=True, text=True, check=False
    )
    return done.returncode == 0


_ENV_LINE = re.compile(r"^(#[^\n]*|[A-Z_]+=[\x21-\x7e]*|)$")
_WG_LINE = re.compile(r"^(#[^\n]*|\[(Interface|Peer)\]|[A-Za-z]+ = [\x21-\x7e][\x20-\x7e]*|)$")


def _wg_ok(text: str) -> bool:
    """wg's config reader: a line is a comment, a section, `Key = value` or empty;
    a value is one line of printable ASCII (wg strips whitespace inside values)."""
    return all(_WG_LINE.match(line) for line in text.split("\n"))


def render_everything(cfg: StackConfig) -> None:
    addresses = tunnel_addresses(cfg)
    server_names(cfg, addresses)
    vps, gitlab = cfg.vps, cfg.gitlab_host
    peers = [h for h in cfg.hosts if h.name != vps.name]
    files = tunnel_files(
        endpoint_interface(
            tunnel=cfg.tunnel,
            address=addresses[vps.name],
            peers=[TunnelHost(h.name, _public_key(h.name), addresses[h.name]) for h in peers],
        )
    )
    for host in peers:
        files |= tunnel_files(
            peer_interface(
                tunnel=cfg.tunnel,
                address=addresses[host.name],
                vps=TunnelHost(vps.name, _public_key(vps.name), addresses[vps.name]),
                endpoint_host=cfg.tunnel.endpoint or vps.public_address or vps.address,
                any_source=cfg.forwarding.mode == "preserve-source" and "gitlab" in host.roles,
            )
        )
    for name, text in files.items():
        if name.endswith(".env"):  # tunnel-up.sh's KEY=value lines, read without a shell
            assert all(_ENV_LINE.match(line) for line in text.split("\n")), f"{name}:\n{text}"
        else:
            assert _wg_ok(text), f"{name} is not a file wg reads:\n{text}"

    ruleset = render_forwarding(forwarding_settings(cfg, addresses[gitlab.name], DEFAULT_INTERFACE))
    assert f'"{vps.public_interface}"' in ruleset, "the ruleset does not name the configured public interface"
    assert not (problem := _nft_ok(ruleset)), f"nft -c refuses the VPS ruleset:\n{problem}"
    if cfg.forwarding.mode == "preserve-source":
        home = render_home_routing(HomeRoutingSettings(DEFAULT_INTERFACE, addresses[vps.name]))
        assert not (problem := _nft_ok(home.nftables)), f"nft -c refuses the home ruleset:\n{problem}"
    segmentation = segment_settings(cfg, addresses, DEFAULT_INTERFACE)
    for host in cfg.hosts:
        table = render_segment(segmentation, host.name)
        assert not (problem := _nft_ok(table)), f"nft -c refuses {host.name}'s segmentation table:\n{problem}"

    gitlab_rb = render_gitlab_rb(settings_from_config(cfg, str(addresses[vps.name]), cfg.gitlab.letsencrypt_emails))
    assert not (problem := _ruby_ok(gitlab_rb.text)), f"ruby -c refuses gitlab.rb:\n{problem}"
    assert cfg.gitlab.domain in gitlab_rb.text
    memory_limit_mb(cfg)

    endpoints, shared = registry_endpoints(cfg), RunnerDefaults.of(cfg)
    for host in cfg.hosts_with("runner"):
        toml = tomllib.loads(
            _view(shared, host, "glrt-0123456789", 2, endpoints=endpoints, own_ca=cfg.gitlab.tls == "own-ca")
        )
        assert toml["runners"][0]["name"] == host.name
        json.loads(json.dumps(daemon_json_for(cfg, host)))
    for host in cfg.hosts:
        trust = registry_trust(cfg, None)
        if {"gitlab", "runner"} & set(host.roles) and trust is not None and endpoints and host.proxy is not None:
            client_files(trust, host, None)
        jump = cfg.host(host.jump_host) if host.jump_host else None
        ssh_options(_target(host), _target(jump) if jump else None)
        url = urlsplit(ssh_url(_target(host)))
        assert url.scheme == "ssh" and url.hostname, url
        if ":" in host.address:
            ipaddress.ip_address(host.address)  # an IPv6 host travels bracketed
        script_command("check-arch.sh", host.arch, host.name)
    assert _calendar_ok(cfg.runners.prune.on_calendar), cfg.runners.prune.on_calendar
