"""`python -m tools.doctor --stack NAME [--json]` (`make doctor [STACK=...]`).

Per host, over the program's own SSH connection (tools/hostssh.py) and as root, one
read-only probe (tools/doctor/probe.py); the answers are judged (tools/doctor/judge.py)
against the program's own synthesis (tools/doctor/expected.py):

- every host: the tunnel, each peer's latest handshake age and its endpoint;
- the VPS: table ip forgeway equal to the program's (a hash of nft's listing of each),
  net.ipv4.ip_forward, the admin SSH port listening; with forwarding.ipv6 table ip6
  forgeway and net.ipv6.conf.all.forwarding the same way;
- the GitLab host: the container, /-/liveness and /-/readiness, the version file,
  the last backup (status.json) and the API token's expiry; the registry's garbage
  collection (its status.json, its timer) where the program has it;
- runner hosts: the runner container and ``gitlab-runner verify``;
- docker hosts: disk use of docker's data root against runners.prune.threshold_percent
  (``--disk-threshold`` to judge against another), and the registry's TLS at each of its
  endpoints as that host's dockerd trusts it: the served chain verified, days left of the
  certificate (``--cert-days``) and of the CA (tools/doctor/registry.py).

Exit status (monitoring plugins' convention): 0 all well, 1 a warning, 2 a problem,
3 doctor could not run (the stack's config, the passphrase). Every problem names its
repair. No secret is printed: secret config values are masked in anything shown.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from components.config import StackConfig
from components.forge import stack_forge
from components.tunnel import INTERFACE, tunnel_addresses
from tools.doctor import judge
from tools.doctor.expected import Expected, synthesize_expected, token_spec
from tools.doctor.findings import EXIT, Finding, Repair, overall, restart, staged_up
from tools.doctor.probe import ProbeSpec, probe_script, sections
from tools.doctor.registry import CERT_WARN_DAYS, RegistryContext, follows_from, registry_tls

__all__ = ["diagnose", "main", "probe_specs", "render_text"]

PROBE_TIMEOUT_S = 240  # gitlab-rails runner alone takes a minute on a small device
TUNNEL_UNIT = f"forgeway-tunnel@{INTERFACE}.service"  # tunnel-up.sh's boot unit
PRUNE_UNIT = "forgeway-docker-prune.service"  # docker-prune-up.sh's, on runner hosts
# components/registry_gc.py RegistryGc: its host service's stage and up script
REGISTRY_GC_STAGE, REGISTRY_GC_UP = "registry-gc", "registry-gc-up.sh"


class Runner(Protocol):
    """What doctor needs of tools.hostssh.HostRunner."""

    def run(self, command: str, *, stdin: str | bytes | None = None, timeout: float = 600) -> Any: ...

    def close(self) -> None: ...


def probe_specs(expected: Expected) -> dict[str, ProbeSpec]:
    """What to probe on each host of the stack."""
    cfg = expected.config
    has_runners = bool(cfg.hosts_with("runner"))
    token_name = token_spec()[0] if has_runners else ""
    forge = stack_forge(cfg)
    endpoints = forge.registry_endpoints if cfg.registry.enabled else ()
    specs = {}
    for host in cfg.hosts:
        roles = set(host.roles)
        docker = bool(roles & {"gitlab", "runner"})
        specs[host.name] = ProbeSpec(
            interface=INTERFACE,
            vps="vps" in roles,
            admin_port=cfg.admin_ssh_port if "vps" in roles else 0,
            ruleset=expected.ruleset if "vps" in roles else "",
            ipv6="vps" in roles and cfg.forwarding.ipv6,
            docker=bool(roles & {"gitlab", "runner"}),
            gitlab="gitlab" in roles,
            runner="runner" in roles,
            token_name=token_name if "gitlab" in roles else "",
            registry=endpoints if docker else (),
            registry_ca=forge.tls == "own-ca",
            registry_gc="gitlab" in roles and expected.registry_gc,
        )
    return specs


def _registry_contexts(expected: Expected, host: str, cert_days: int) -> list[RegistryContext]:
    cfg = expected.config
    if not cfg.registry.enabled:
        return []
    forge = stack_forge(cfg)
    cert_urn, ca_urn = expected.urn(f"{forge.kind}-tls-cert"), expected.urn("ca-cert")
    gitlab_urn = expected.urn(f"{forge.host}-gitlab")
    own_ca = forge.tls == "own-ca"
    return [
        RegistryContext(host, endpoint, own_ca, cert_urn, ca_urn, gitlab_urn, forge.host, cert_days)
        for endpoint in forge.registry_endpoints
    ]


def _registry_gc_up(cfg: StackConfig, host: str) -> Repair:
    """components/registry_gc.py's up, staged on the GitLab host, with its arguments."""
    gc = cfg.registry.garbage_collection
    note = "installs again the timer the last `pulumi up` staged here"
    return staged_up(host, REGISTRY_GC_STAGE, REGISTRY_GC_UP, (gc.schedule, str(gc.timeout_minutes)), note)


def diagnose(
    expected: Expected,
    outputs: Mapping[str, str | None],
    now: datetime.datetime,
    disk_threshold: int | None = None,
    cert_days: int = CERT_WARN_DAYS,
) -> list[Finding]:
    """Findings from each host's probe output (None: the host could not be reached);
    ``disk_threshold`` (percent) instead of runners.prune.threshold_percent; ``cert_days``:
    warn when the registry's certificate has fewer days left."""
    cfg = expected.config
    threshold = cfg.runners.prune.threshold_percent if disk_threshold is None else disk_threshold
    names = {str(address): name for name, address in tunnel_addresses(cfg).items()}
    findings: list[Finding] = []
    token_name = token_spec()[0]
    for host in cfg.hosts:
        output = outputs.get(host.name)
        if output is None:
            why = "could not be reached over SSH as the program connects (see the message above)"
            fix = restart(host.name, "ssh.service", "from the host's console, if the host is up")
            findings.append(Finding(host.name, "ssh", "fail", why, fix))
            continue
        parts = sections(output)
        vps = "vps" in host.roles
        ctx = judge.TunnelContext(host.name, vps, cfg.tunnel.keepalive, names, TUNNEL_UNIT, cfg.vps.name)
        findings += judge.tunnel(parts, ctx)
        if vps:
            urn = expected.urn(f"{host.name}-forwarding")
            findings += judge.forwarding(
                parts,
                judge.ForwardingContext(host.name, expected.ruleset, urn, cfg.admin_ssh_port, ipv6=cfg.forwarding.ipv6),
            )
        if "gitlab" in host.roles:
            findings += judge.gitlab(parts, host.name, expected.urn(f"{host.name}-gitlab"))
            if cfg.hosts_with("runner"):
                findings += judge.token(
                    parts.get("api-token"), host.name, expected.urn("gitlab-api-token-value"), token_name, now
                )
            if expected.backup_schedule:
                status, schedule = parts.get("backup-status"), expected.backup_schedule
                findings += judge.backup(status, host.name, schedule, now, expected.backup_slack)
            if expected.registry_gc:
                findings += judge.registry_gc(parts, host.name, cfg.registry.garbage_collection.schedule, now,
                                              _registry_gc_up(cfg, host.name))  # fmt: skip
        if "runner" in host.roles:
            registration = expected.urns.get(f"{host.name}-runner-registration")
            findings += judge.runner(parts, host.name, expected.urn(f"{host.name}-runner"), registration)
        if {"gitlab", "runner"} & set(host.roles):
            prune = PRUNE_UNIT if "runner" in host.roles else None
            findings += judge.disk(parts, host.name, threshold, prune)
            findings += [registry_tls(parts, ctx, now) for ctx in _registry_contexts(expected, host.name, cert_days)]
    return follows_from(findings, cfg.vps.name, cfg.gitlab_host.name)


def _mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret value, and every line of a multi-line one, shown as [secret]."""
    pieces = {*secrets, *(line for s in secrets for line in s.splitlines() if len(line.strip()) >= 6)}
    for secret in sorted(pieces, key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    return text


def _masked(findings: list[Finding], secrets: Sequence[str]) -> list[Finding]:
    """The findings with secrets masked in what they say (before JSON escapes any of it)."""
    out = []
    for f in findings:
        repair = f.repair and dataclasses.replace(f.repair, note=_mask(f.repair.note, secrets))
        out.append(dataclasses.replace(f, detail=_mask(f.detail, secrets), repair=repair))
    return out


_MARK = {"ok": "ok", "info": "info", "warn": "WARN", "fail": "FAIL"}


def render_text(expected: Expected, findings: list[Finding], now: datetime.datetime) -> str:
    hosts = list(dict.fromkeys(f.host for f in findings))
    lines = [f"forgeway doctor: stack {expected.stack}, {len(hosts)} hosts, {now:%Y-%m-%dT%H:%M:%SZ}"]
    for host in hosts:
        lines.append(host)
        for f in (f for f in _masked(findings, expected.secrets) if f.host == host):
            lines.append(f"  {_MARK[f.status]:<5} {f.item:<18} {f.detail}")
            if f.repair is not None:
                lines.append(f"  {'':<5} {'':<18} repair: {f.repair.text}")
    problems = [f for f in findings if f.status in ("warn", "fail")]
    worst = overall(findings)
    if problems:
        fails = sum(f.status == "fail" for f in problems)
        lines.append(
            f"{len(problems)} problem(s): {fails} failing, {len(problems) - fails} warning (exit {EXIT[worst]})"
        )
    else:
        lines.append("all well (exit 0)")
    return _mask("\n".join(lines) + "\n", expected.secrets)


def render_json(expected: Expected, findings: list[Finding], now: datetime.datetime) -> str:
    worst = overall(findings)
    document = {
        "stack": expected.stack,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": worst,
        "exit": EXIT[worst],
        "findings": [f.as_json() for f in _masked(findings, expected.secrets)],
    }
    return _mask(json.dumps(document, indent=1) + "\n", expected.secrets)


def _connect(raw: Mapping[str, Any], secret_keys: Sequence[str]) -> Callable[[str], Runner]:
    from tools.hostssh import HostRunner, connection_from_config

    return lambda name: HostRunner(connection_from_config(raw, secret_keys, host=name))


def run_probes(
    expected: Expected, connect: Callable[[str], Runner], log: Callable[[str], None]
) -> dict[str, str | None]:
    """Each host's probe output, the hosts in parallel (None: unreachable, said on ``log``)."""
    specs = probe_specs(expected)

    def one(name: str) -> str | None:
        runner = connect(name)
        try:
            done = runner.run(probe_script(specs[name]), timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # HostSshError: a timeout, no such host
            log(f"doctor: {name}: {_mask(str(exc), expected.secrets)}")
            return None
        finally:
            runner.close()
        if done.returncode == 255 or "@@ now" not in done.stdout:
            log(f"doctor: {name}: ssh failed: {_mask(done.stderr.strip()[-300:], expected.secrets)}")
            return None
        return str(done.stdout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(specs) or 1) as pool:
        futures = {name: pool.submit(one, name) for name in specs}
        return {name: future.result() for name, future in futures.items()}


def main(argv: Sequence[str] | None = None, connect: Callable[[str], Runner] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="lab", help="the stack (Pulumi.<stack>.yaml); default lab")
    parser.add_argument("--json", action="store_true", help="one JSON document, for monitoring")
    parser.add_argument(
        "--record", type=Path, metavar="DIR", help="also write each host's probe output to DIR/HOST.txt (no secret)"
    )
    parser.add_argument(
        "--disk-threshold",
        type=int,
        metavar="PERCENT",
        help="disk use to warn at (default runners.prune.threshold_percent)",
    )
    parser.add_argument(
        "--cert-days",
        type=int,
        default=CERT_WARN_DAYS,
        metavar="DAYS",
        help=f"warn when the registry's certificate has fewer days left (default {CERT_WARN_DAYS})",
    )
    args = parser.parse_args(argv)
    from components.config import ConfigError
    from tools.applier.plan import PlanError, load_stack_config

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        raw, secret_keys, _ = load_stack_config(args.stack)
        expected = synthesize_expected(args.stack, raw, secret_keys)
    except (PlanError, ConfigError) as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 3
    outputs = run_probes(expected, connect or _connect(raw, secret_keys), log)
    if args.record is not None:
        args.record.mkdir(parents=True, exist_ok=True)
        for name, output in outputs.items():
            (args.record / f"{name}.txt").write_text(_mask(output or "", expected.secrets))
    now = datetime.datetime.now(datetime.UTC)
    findings = diagnose(expected, outputs, now, args.disk_threshold, args.cert_days)
    sys.stdout.write((render_json if args.json else render_text)(expected, findings, now))
    return EXIT[overall(findings)]
