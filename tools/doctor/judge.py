"""Judging each probe part: pure functions of the recorded output (unit-tested with recordings).

Each takes the :class:`~tools.doctor.probe.Section` s it needs and what the program
would deploy, and returns :class:`~tools.doctor.findings.Finding` s; a problem carries
its :class:`~tools.doctor.findings.Repair`. Nothing here runs a command.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tools.doctor.findings import Finding, Repair, Status, replace, restart, start, target
from tools.doctor.probe import BACKUP_STATUS, REGISTRY_GC_STATUS, REGISTRY_GC_UNIT, Section

__all__ = [
    "HANDSHAKE_LIMIT_S",
    "TOKEN_WARN_DAYS",
    "TimedJob",
    "backup",
    "disk",
    "forwarding",
    "gitlab",
    "registry_gc",
    "runner",
    "schedule_period",
    "timed_job",
    "token",
    "tunnel",
]

# WireGuard drops a session's keys after REJECT_AFTER_TIME (180 s) and a sending peer makes
# a new one after REKEY_AFTER_TIME (120 s; the whitepaper, section 6.1): with keepalives
# flowing, no handshake is ever older than that plus one keepalive interval.
HANDSHAKE_LIMIT_S = 180
TOKEN_WARN_DAYS = 30
BACKUP_SLACK = datetime.timedelta(minutes=30 + 360)  # the timer's RandomizedDelaySec and a run's timeout
MISSING = "(missing from the probe's output: the connection dropped or the probe was cut short)"
_SECRETISH = re.compile(r"(runner=|token=|glrt-|glpat-)\S+")


def _clean(text: str) -> str:
    """One line of a tool's own message, with anything token-like masked."""
    return _SECRETISH.sub(lambda m: m.group(1) + "[masked]" if m.group(1).endswith("=") else "[masked]", text)[:200]


def _get(parts: Mapping[str, Section], name: str) -> Section | None:
    return parts.get(name)


# --------------------------------------------------------------------------- the tunnel


@dataclass(frozen=True)
class TunnelContext:
    host: str
    vps: bool
    keepalive: int  # seconds (tunnel.keepalive)
    names: Mapping[str, str]  # tunnel address -> host name
    unit: str  # the tunnel's unit, e.g. forgeway-tunnel@wg0.service
    hub: str = "the VPS"  # the VPS's name: a peer host's one peer (allowed-ips: the whole subnet)


def _peer_name(allowed: str, names: Mapping[str, str]) -> str:
    for prefix in allowed.split():
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            continue
        for address, name in names.items():
            if network.prefixlen == 32 and ipaddress.ip_address(address) in network:
                return name
    return f"a peer with allowed-ips {allowed or '(none)'}"


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition("\t")
        if key:
            out[key] = value.strip()
    return out


def tunnel(parts: Mapping[str, Section], ctx: TunnelContext) -> list[Finding]:
    """Each peer's latest handshake age and endpoint (``wg show IF latest-handshakes|endpoints|allowed-ips``)."""
    handshakes, endpoints, allowed, now = (
        _get(parts, p) for p in ("wg-handshakes", "wg-endpoints", "wg-allowed-ips", "now")
    )
    fix = restart(ctx.host, ctx.unit, "brings the interface and its peers back from the saved config")
    if handshakes is None or endpoints is None or allowed is None or now is None:
        return [Finding(ctx.host, "tunnel", "fail", f"no answer from wg {MISSING}", fix)]
    if not handshakes.ok:
        return [Finding(ctx.host, "tunnel", "fail", f"the interface is down: {_clean(handshakes.first_line)}", fix)]
    now_s = int(now.text)
    limit = HANDSHAKE_LIMIT_S + ctx.keepalive
    by_key_endpoint, by_key_allowed = _pairs(endpoints.text), _pairs(allowed.text)
    findings = []
    peers = _pairs(handshakes.text)
    if not peers:
        return [Finding(ctx.host, "tunnel", "fail", "the interface has no peers", fix)]
    for key, stamp in sorted(peers.items(), key=lambda kv: _peer_name(by_key_allowed.get(kv[0], ""), ctx.names)):
        name = _peer_name(by_key_allowed.get(key, ""), ctx.names) if ctx.vps else ctx.hub
        endpoint = by_key_endpoint.get(key, "(none)")
        seconds = int(stamp) if stamp.isdigit() else 0
        age = "never" if seconds == 0 else f"{max(0, now_s - seconds)} s ago"
        detail = f"peer {name}: handshake {age}, endpoint {endpoint}"
        stale = seconds == 0 or now_s - seconds > limit
        if not ctx.vps and endpoint in ("(none)", ""):
            findings.append(Finding(ctx.host, "tunnel", "fail", f"{detail}: no endpoint for the VPS", fix))
        elif stale:
            # Seen from the VPS, the peer's side is the likelier culprit: it dials out.
            where = ctx.host if not ctx.vps or name not in ctx.names.values() else name
            why = f"{detail}: older than {limit} s (180 s + keepalive {ctx.keepalive} s)"
            findings.append(Finding(ctx.host, "tunnel", "fail", why, restart(where, ctx.unit, fix.note)))
        else:
            findings.append(Finding(ctx.host, "tunnel", "ok", detail))
    return findings


# --------------------------------------------------------------------------- the VPS


@dataclass(frozen=True)
class ForwardingContext:
    host: str
    ruleset: str  # the program's ruleset text
    urn: str  # the forwarding command's URN
    admin_port: int
    unit: str = "forgeway-nftables.service"
    ipv6: bool = False  # forwarding.ipv6: table ip6 forgeway and net.ipv6.conf.all.forwarding too


def _table(parts: Mapping[str, Section], prefix: str, table: str, ctx: ForwardingContext, fix: Repair) -> Finding:
    """Live table ``table`` against the program's (PREFIX-live and PREFIX-expected: two sha256)."""
    item = "forwarding" if prefix == "nft" else "forwarding6"
    live, expected = _get(parts, f"{prefix}-live"), _get(parts, f"{prefix}-expected")
    if expected is None or live is None:
        return Finding(ctx.host, item, "fail", f"no nft listing of table {table} {MISSING}", fix)
    if not expected.ok:
        why = f"the program's ruleset does not load in a scratch namespace here: {_clean(expected.first_line)}"
        return Finding(ctx.host, item, "fail", why, target(ctx.urn, "forwarding-up.sh says why"))
    if not live.ok:
        return Finding(ctx.host, item, "fail", f"table {table} is missing: {_clean(live.first_line)}", fix)
    if live.text != expected.text:
        why = f"table {table} differs from the program's (sha256 {live.text[:12]}, program's {expected.text[:12]})"
        return Finding(ctx.host, item, "fail", why, fix)
    return Finding(ctx.host, item, "ok", f"table {table} is the program's (sha256 {live.text[:12]})")


def _sysctl(parts: Mapping[str, Section], name: str, key: str, host: str, fix: Repair) -> Finding:
    """A forwarding sysctl that must be 1 (part ``name``: ``sysctl -n KEY``)."""
    found = _get(parts, name)
    if found is not None and found.ok and found.text == "1":
        return Finding(host, name.replace("-", "_"), "ok", f"{key} = 1")
    value = found.first_line if found is not None else MISSING
    return Finding(host, name.replace("-", "_"), "fail", f"{key} is {value!r}, not 1", fix)


def forwarding(parts: Mapping[str, Section], ctx: ForwardingContext) -> list[Finding]:
    """Table ip forgeway as the program renders it (hashes of two nft listings), ip_forward, the
    admin port; with forwarding.ipv6 table ip6 forgeway and IPv6 forwarding the same way."""
    saved = _get(parts, "nft-saved")
    program_sha = hashlib.sha256(ctx.ruleset.encode()).hexdigest()
    saved_is_program = saved is not None and saved.ok and saved.text == program_sha
    # A host whose saved file is the program's: its boot unit loads it again (both tables,
    # and both sysctls: forwarding-up.sh --boot). Else `up` must send the program's text
    # (the command's stdin changed: an update runs create again).
    fix = (
        restart(ctx.host, ctx.unit, "loads the saved ruleset, which is the program's")
        if saved_is_program
        else target(ctx.urn, "the saved ruleset is not the program's: `up` sends it again")
    )
    findings = [_table(parts, "nft", "ip forgeway", ctx, fix)]
    findings.append(_sysctl(parts, "ip-forward", "net.ipv4.ip_forward", ctx.host, fix))
    if ctx.ipv6:
        findings.append(_table(parts, "nft6", "ip6 forgeway", ctx, fix))
        findings.append(_sysctl(parts, "ipv6-forward", "net.ipv6.conf.all.forwarding", ctx.host, fix))
    admin = _get(parts, "admin-port")
    if admin is not None and admin.ok and "LISTEN" in admin.text:
        findings.append(Finding(ctx.host, "admin-ssh", "ok", f"tcp {ctx.admin_port} listens"))
    else:
        why = f"nothing listens on tcp {ctx.admin_port}, the admin SSH port (doctor came in another way)"
        findings.append(Finding(ctx.host, "admin-ssh", "fail", why, restart(ctx.host, "ssh.service")))
    return findings


# --------------------------------------------------------------------------- docker hosts


def disk(parts: Mapping[str, Section], host: str, threshold: int, prune_unit: str | None) -> list[Finding]:
    """Use of docker's data root file system (``df -P``) against ``threshold`` percent."""
    part = _get(parts, "disk")
    if part is None or not part.ok:
        why = f"docker's data root could not be read: {_clean(part.first_line) if part else MISSING}"
        return [Finding(host, "disk", "fail", why, restart(host, "docker.service"))]
    fields = part.text.splitlines()[-1].split()
    used = int(fields[4].rstrip("%"))
    free_mib = int(fields[3]) // 1024
    detail = f"{fields[5]}: {used}% used, {free_mib} MiB free (threshold {threshold}%)"
    if used < threshold:
        return [Finding(host, "disk", "ok", detail)]
    fix = (
        start(host, prune_unit, "prunes unused images and build cache older than runners.prune.keep_hours")
        if prune_unit
        else start(host, "docker-system-prune", "no prune timer here: free space by hand (docker system df)")
    )
    return [Finding(host, "disk", "fail" if used >= 95 else "warn", detail, fix)]


# --------------------------------------------------------------------------- GitLab


def _http(part: Section | None) -> tuple[int, str]:
    """(status, body) of a GET: the status is the last line."""
    if part is None or not part.ok:
        return 0, _clean(part.first_line) if part else MISSING
    lines = part.text.splitlines()
    status = lines[-1].strip() if lines else "0"
    return (int(status) if status.isdigit() else 0), " ".join(lines[:-1]).strip()


def gitlab(parts: Mapping[str, Section], host: str, container_urn: str) -> list[Finding]:
    """The container's state, /-/liveness, /-/readiness and the version file."""
    fix = replace(container_urn, "a new container on the same volumes")
    state = _get(parts, "gitlab-state")
    if state is None or not state.ok or not state.text.startswith("running"):
        shown = _clean(state.first_line) if state else MISSING
        return [Finding(host, "gitlab", "fail", f"the container is not running: {shown}", fix)]
    version_part = _get(parts, "gitlab-version")
    version = version_part.first_line if version_part is not None and version_part.ok else "unknown"
    findings = []
    for probe in ("liveness", "readiness"):
        status, body = _http(_get(parts, f"gitlab-{probe}"))
        if status == 200:
            findings.append(Finding(host, f"gitlab {probe}", "ok", f"/-/{probe} 200 (GitLab {version})"))
        else:
            health = state.text.split()[-1]
            level: Status = "warn" if health == "starting" else "fail"
            why = f"/-/{probe} answered {status or 'nothing'}: {body[:120]} (container health: {health})"
            findings.append(Finding(host, f"gitlab {probe}", level, why, fix))
    return findings


def runner(parts: Mapping[str, Section], host: str, container_urn: str, registration_urn: str | None) -> list[Finding]:
    """The runner container running, and ``gitlab-runner verify`` inside it."""
    state = _get(parts, "runner-state")
    if state is None or not state.ok or state.first_line != "running":
        shown = _clean(state.first_line) if state else MISSING
        return [
            Finding(host, "runner", "fail", f"the runner container is not running: {shown}", replace(container_urn))
        ]
    verify = _get(parts, "runner-verify")
    if verify is None:
        return [Finding(host, "runner", "fail", f"gitlab-runner verify: {MISSING}", replace(container_urn))]
    text = verify.text
    if verify.rc in (126, 127) or "executable file not found" in text:
        return [Finding(host, "runner", "info", "running; this image has no gitlab-runner verify (not checked)")]
    failed = verify.rc != 0 or re.search(r"is removed|ERROR|FATAL|is not valid|forbidden", text, re.IGNORECASE)
    if not failed:
        return [Finding(host, "runner", "ok", "running; gitlab-runner verify: the runner is valid")]
    line = next((ln for ln in text.splitlines() if re.search(r"removed|ERROR|FATAL", ln)), verify.first_line)
    fix: Repair = (
        replace(registration_urn, "a new runner in GitLab; its token reaches config.toml and the container")
        if registration_urn
        else replace(container_urn, "the token is runner_tokens' (set by hand): put a valid one there first")
    )
    return [Finding(host, "runner", "fail", f"gitlab-runner verify: {_clean(line)}", fix)]


# --------------------------------------------------------------------------- backups and the token


def schedule_period(schedule: str) -> datetime.timedelta:  # noqa: PLR0911 (a table of cases)
    """The longest gap between two runs of a systemd OnCalendar ``schedule`` (an upper bound)."""
    text = schedule.strip().lower()
    named = {"minutely": 60, "hourly": 3600, "daily": 86400, "weekly": 7 * 86400, "monthly": 31 * 86400}
    if text in named:
        return datetime.timedelta(seconds=named[text])
    if text in ("quarterly",):
        return datetime.timedelta(days=92)
    if text in ("yearly", "annually", "semiannually"):
        return datetime.timedelta(days=366 if text != "semiannually" else 184)
    words = text.split()
    day_names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    date = words[1] if words and words[0][:3] in day_names and len(words) > 1 else words[0] if words else ""
    if words and words[0][:3] in day_names and "," not in words[0] and ".." not in words[0]:
        return datetime.timedelta(days=7)
    if re.fullmatch(r"\*-\*-\d+(\s.*)?", date) or re.fullmatch(r"\*-\*-\d+", date):
        return datetime.timedelta(days=31)
    if date.count(":") >= 1 and date.startswith("*:"):
        return datetime.timedelta(hours=1)
    return datetime.timedelta(days=1)


def _when(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _age(delta: datetime.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


@dataclass(frozen=True)
class TimedJob:
    """A timed job's status.json as doctor judges it (host-files.sh's job_* contract: result
    ok, failed, skipped or running; started, finished, error; the job's own fields)."""

    item: str  # the finding's item: backup, registry-gc
    noun: str  # what one run is called in the details: backup, collection
    status: str  # the status file's path on the host
    unit: str  # the service one run is (the repair starts it)
    schedule: str  # its timer's OnCalendar
    allowed: datetime.timedelta  # how old the last finished run may be (and how long one may run)
    ok_detail: Callable[[Mapping[str, object]], str]  # what an ok run's status adds ("snapshot ...")
    level: Status = "fail"  # the status of a failed last run


def timed_job(part: Section | None, host: str, job: TimedJob, now: datetime.datetime) -> list[Finding]:  # noqa: PLR0911
    """The last run of ``job`` from its status.json: its result, and its age against
    ``job.allowed``; every problem names the unit that runs one now."""
    fix = start(host, job.unit, f"one {job.noun} now; its log: journalctl -u {job.unit}")

    def problem(level: Status, why: str, repair: Repair = fix) -> list[Finding]:
        return [Finding(host, job.item, level, why, repair)]

    if part is None or not part.ok:
        return problem(
            "warn", f"{job.status} could not be read: {MISSING if part is None else _clean(part.first_line)}"
        )
    if part.text == "absent":
        return [Finding(host, job.item, "info", f"no {job.noun} has run here ({job.status} does not exist)")]
    try:
        status = json.loads(part.text)
    except ValueError:
        return problem("warn", f"{job.status} is not JSON")
    if not isinstance(status, dict):
        return problem("warn", f"{job.status} is not a JSON object")
    result = status.get("result")
    started, finished = _when(status.get("started")), _when(status.get("finished"))
    if result == "failed":
        error = _clean(str(status.get("error") or "no error given"))
        return problem(job.level, f"the last {job.noun} failed ({status.get('started')}): {error}")
    if result == "running":
        if started is not None and now - started > job.allowed:
            allows = f"schedule {job.schedule!r} allows {_age(job.allowed)}"
            why = f"a {job.noun} has been running for {_age(now - started)} ({allows})"
            return problem("warn", why, restart(host, job.unit, f"see journalctl -u {job.unit} first"))
        return [Finding(host, job.item, "ok", f"a {job.noun} is running (since {status.get('started')})")]
    if result not in ("ok", "skipped") or finished is None:
        return problem("warn", f"status.json says result {result!r}, finished {status.get('finished')!r}")
    age = now - finished
    if result == "skipped":
        why = _clean(str(status.get("error") or "no reason given"))
        detail = f"the last {job.noun} was skipped, {_age(age)} ago: {why}"
        level: Status = "info"
    else:
        detail, level = f"last {job.noun} ok, {_age(age)} ago, {job.ok_detail(status)}", "ok"
    if age > job.allowed:
        return problem("warn", f"{detail}: older than schedule {job.schedule!r} allows ({_age(job.allowed)})")
    return [Finding(host, job.item, level, detail)]


def backup(
    part: Section | None, host: str, schedule: str, now: datetime.datetime, slack: datetime.timedelta = BACKUP_SLACK
) -> list[Finding]:
    """status.json (issue-18 contract): its result, and its age against the schedule (plus
    ``slack``: how late a run may start and how long it may take)."""
    job = TimedJob(
        "backup", "backup", BACKUP_STATUS, "forgeway-backup.service", schedule, schedule_period(schedule) + slack,
        lambda s: f"snapshot {str(s.get('snapshot'))[:8]}, GitLab {s.get('gitlab_version')}",
    )  # fmt: skip
    return timed_job(part, host, job, now)


def _size(value: object) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "an unknown number of bytes"
    return f"{value / 2**20:.1f} MiB" if abs(value) >= 2**20 else f"{int(value)} bytes"


def _freed(status: Mapping[str, object]) -> str:
    freed = status.get("freed_bytes")
    if isinstance(freed, (int, float)) and not isinstance(freed, bool) and freed < 0:
        # Pushes that land during the collection add bytes: honest, but not "freed".
        return f"freed nothing: pushes during the run added {_size(-freed)}"
    return f"freed {_size(freed)}"


def registry_gc(
    parts: Mapping[str, Section], host: str, schedule: str, now: datetime.datetime, up: Repair
) -> list[Finding]:
    """The registry's garbage collection (components/registry_gc.py): its last run, which may
    be two periods of its schedule old, and the space it freed; and its timer active (``up``:
    the staged install that brings a removed timer back)."""
    job = TimedJob(
        "registry-gc", "collection", REGISTRY_GC_STATUS, REGISTRY_GC_UNIT, schedule, 2 * schedule_period(schedule),
        _freed, level="warn",
    )  # fmt: skip
    findings = timed_job(_get(parts, "registry-gc-status"), host, job, now)
    timer = _get(parts, "registry-gc-timer")
    state = dict(line.partition("=")[::2] for line in timer.text.splitlines()) if timer is not None else {}
    name = REGISTRY_GC_UNIT.replace(".service", ".timer")
    if timer is None or not timer.ok:
        why = f"its timer could not be read: {MISSING if timer is None else _clean(timer.first_line)}"
        findings.append(Finding(host, "registry-gc timer", "warn", why, up))
    elif state.get("cron") == "present":
        findings.append(
            Finding(host, "registry-gc timer", "ok", "no systemd here: cron.d/forgeway-registry-gc runs it")
        )
    elif state.get("cron") == "absent" or state.get("LoadState") != "loaded":
        why = f"{name} is not installed (LoadState {state.get('LoadState', 'none')}; no cron file either)"
        findings.append(Finding(host, "registry-gc timer", "warn", why, up))
    elif state.get("ActiveState") != "active":
        why = f"{name} is {state.get('ActiveState', 'unknown')}: no collection runs"
        findings.append(Finding(host, "registry-gc timer", "warn", why, start(host, name, "the schedule runs again")))
    else:
        findings.append(Finding(host, "registry-gc timer", "ok", f"{name} is active"))
    return findings


def token(part: Section | None, host: str, token_urn: str, token_name: str, now: datetime.datetime) -> list[Finding]:
    """The API token's expiry date, read with ``gitlab-rails runner`` (never its value)."""
    fix = replace(token_urn, "a new token value: the program seeds it for TOKEN_DAYS and revokes the old one")
    match = re.search(r"forgeway-token-expires (\S+)", part.text) if part is not None else None
    if match is None:
        why = "its expiry could not be read" + (f": {_clean(part.first_line)}" if part is not None else "")
        return [Finding(host, "api-token", "info", why)]
    if match.group(1) == "none":
        return [Finding(host, "api-token", "fail", f"root has no active token {token_name!r}", fix)]
    expires = _when(match.group(1))
    if expires is None:
        return [Finding(host, "api-token", "info", f"unknown expiry {match.group(1)!r}")]
    days = (expires - now).days
    detail = f"{token_name} expires {expires.date().isoformat()} (in {days} days)"
    if days < 0:
        return [Finding(host, "api-token", "fail", f"{token_name} expired on {expires.date().isoformat()}", fix)]
    if days <= TOKEN_WARN_DAYS:
        return [Finding(host, "api-token", "warn", detail, fix)]
    return [Finding(host, "api-token", "ok", detail)]
