"""forgeway's CrossGuard policies (issue 7): guardrails against losing data or opening the network.

Every policy is a ``ResourceValidationPolicy`` or a ``StackValidationPolicy`` whose
validate function is a plain function that filters on ``resource_type``. What a
validator sees, with pulumi_policy 1.21 under the Pulumi engine:

* ``props`` use the engine's camelCase names (``sshOpts``, ``shmSize``), wrapped in
  pulumi_policy's unknown-checking proxies: mappings and sequences, not dicts and
  lists, and reading a value unknown during preview raises (the engine then records
  "can't run policy during preview" instead of a verdict).
* A resource policy sees a resource's *inputs*; a stack policy sees every resource's
  final *outputs* (for a component: what it passed to ``register_outputs``).
* Secret values arrive unwrapped: the engine sends them marked (``KeepSecrets``) but
  pulumi_policy's ``deserialize_properties`` drops the marker before any validator
  runs, so no policy can ask "is this value secret?" (see ``secrets-not-plaintext``).
* ``opts`` carries ``protect`` and ``additional_secret_outputs`` but not
  ``retain_on_delete``: the analyzer protocol has no such field.

Conventions the components follow so these policies can see what they check (README,
"Conventions"):

* ``forgeway.role`` label: volumes ``gitlab-config``, ``gitlab-logs``, ``gitlab-data``,
  ``registry-data``; containers ``gitlab`` and ``gitlab-runner``.
* Runner containers declare what GitLab enforces server-side with labels
  ``forgeway.runner.protected-only=true`` and, to allow the docker socket in jobs,
  ``forgeway.runner.insecure-docker-socket-in-jobs=true``.
* A host's architecture: the ``forgeway:hosts:Host`` component registers ``arch`` and
  its ``<host>-arch`` command carries ``triggers=[arch]``; its docker provider is its
  child ``<host>-docker``.
* The VPS forwarding is a ``command:remote:Command`` named ``<vps>-forwarding`` whose
  ``stdin`` is the nftables ruleset; a runner's ``config.toml`` travels on a command's
  ``stdin`` (or in a container's ``uploads``), never on a command line.
* Secret material in an input the provider does not encrypt is declared with
  ``additional_secret_outputs=[<input>]`` (the provider SDKs do the same for inputs
  their schema marks secret, e.g. pulumi-command's ``connection``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

__all__ = [
    "COMMAND",
    "GITLAB_VOLUME_ROLES",
    "POLICIES",
    "REMOTE_IMAGE",
    "ROLE_LABEL",
    "SecretFinding",
    "forwarded_ports",
    "image_pin_problem",
    "secret_material",
]

# --- resource types and conventions ----------------------------------------------

VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_PROVIDER = "pulumi:providers:docker"
COMMAND = "command:remote:Command"
COPY_TO_REMOTE = "command:remote:CopyToRemote"
COPY_FILE = "command:remote:CopyFile"
REMOTE_TYPES = frozenset({COMMAND, COPY_TO_REMOTE, COPY_FILE})
HOST = "forgeway:hosts:Host"

ROLE_LABEL = "forgeway.role"
GITLAB_VOLUME_ROLES = frozenset({"gitlab-config", "gitlab-logs", "gitlab-data", "registry-data"})
GITLAB_ROLE = "gitlab"
RUNNER_ROLE = "gitlab-runner"
PROTECTED_ONLY_LABEL = "forgeway.runner.protected-only"
DOCKER_SOCKET_LABEL = "forgeway.runner.insecure-docker-socket-in-jobs"

DEFAULT_ALLOWED_PORTS = (80, 443, 22, 5050)
DOCKER_API_PORTS = (2375, 2376)
MIN_GITLAB_SHM_MB = 256
RUNNER_STOP_SIGNAL = "SIGQUIT"

# --- reading props -----------------------------------------------------------------


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


def _is_seq(value: Any) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _text(value: Any) -> str | None:
    """A string, or the text of a StringAsset (deserialized assets keep ``.text``)."""
    if isinstance(value, str):
        return value
    text = getattr(value, "text", None)
    return text if isinstance(text, str) else None


def _strings(value: Any) -> list[str]:
    """A list of strings from a sequence or a JSON-encoded one (provider inputs are JSON text)."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return [value]
        value = decoded
    if _is_seq(value):
        return [str(v) for v in value]
    return []


def _labels(props: Mapping[str, Any]) -> dict[str, str]:
    """Docker labels: a list of ``{label, value}`` on the wire; a mapping is accepted too."""
    raw = props.get("labels")
    found: dict[str, str] = {}
    if _is_map(raw):
        found.update({str(k): str(v) for k, v in raw.items()})
    elif _is_seq(raw):
        for item in raw:
            if _is_map(item) and "label" in item:
                found[str(item["label"])] = str(item.get("value", ""))
    return found


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(float(value))  # numbers travel as floats
    except (TypeError, ValueError):
        return None


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in {"true", "yes", "1"})


def _kind(resource_type: str) -> str:
    """A short, readable name for a resource type in messages."""
    return {
        VOLUME: "docker volume",
        CONTAINER: "container",
        REMOTE_IMAGE: "RemoteImage",
        DOCKER_PROVIDER: "docker provider",
        COMMAND: "remote command",
        COPY_TO_REMOTE: "remote copy",
        COPY_FILE: "remote copy",
    }.get(resource_type, resource_type)


def _provider_address(props: Mapping[str, Any] | None) -> str | None:
    """The address a docker provider reaches over ``ssh://user@address``."""
    if props is None:
        return None
    host = props.get("host")
    if not isinstance(host, str) or not host.startswith("ssh://"):
        return None
    return urlsplit(host).hostname


def _b64_text(encoded: Any) -> str | None:
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        return base64.b64decode(encoded).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None


def _container_texts(props: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for i, env in enumerate(_strings(props.get("envs"))):
        yield f"envs[{i}]", env
    for key in ("command", "entrypoints"):
        words = _strings(props.get(key))
        if words:
            yield key, " ".join(words)
    uploads = props.get("uploads")
    for i, upload in enumerate(uploads if _is_seq(uploads) else []):
        if not _is_map(upload):
            continue
        for key, text in (
            ("content", _text(upload.get("content"))),
            ("contentBase64", _b64_text(upload.get("contentBase64"))),
        ):
            if text:
                yield f"uploads[{i}].{key}", text


def _texts(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every text a resource carries to a host, as ``(input path, text)``."""
    if resource_type in REMOTE_TYPES:
        for key in ("stdin", "create", "update", "delete", "source"):
            text = _text(props.get(key))
            if text:
                yield key, text
    elif resource_type == CONTAINER:
        yield from _container_texts(props)


# --- 1. GitLab volumes are protected ---------------------------------------------


def gitlab_volumes_protected(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != VOLUME:
        return
    role = _labels(args.props).get(ROLE_LABEL)
    docker_name = str(args.props.get("name") or args.name)
    if role in GITLAB_VOLUME_ROLES:
        what = f"{ROLE_LABEL}={role}"
    elif re.search(r"gitlab|registry", f"{args.name} {docker_name}", re.IGNORECASE):
        # Unlabelled but named like GitLab's data: treated as such, data loss is not undone.
        what = f"named like a GitLab volume ({docker_name})"
    else:
        return
    if not args.opts.protect:
        report_violation(
            f"docker volume '{args.name}' ({what}) is not protected, so a replace or destroy deletes "
            "GitLab's data: create it with pulumi.ResourceOptions(protect=True, retain_on_delete=True) "
            "(retain_on_delete is invisible to policies; set it too)",
            None,
        )


# --- 2. images are pinned ----------------------------------------------------------

_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FLOATING_TAGS = frozenset(
    {
        "latest",
        "stable",
        "edge",
        "nightly",
        "rc",
        "main",
        "master",
        "lts",
        "beta",
        "alpha",
        "dev",
        "develop",
        "current",
        "mainline",
        "testing",
        "unstable",
        "canary",
        "next",
    }
)


def image_pin_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it is (digest, image id, version tag)."""
    ref = ref.strip()
    if _IMAGE_ID.fullmatch(ref) or _DIGEST.search(ref):
        return None
    if "@" in ref:
        return "its digest is not a sha256 digest"
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or "/" in tag:
        return "it has no tag, so it floats to 'latest'"
    low = tag.lower()
    checks = (
        (
            low in _FLOATING_TAGS or "latest" in re.split(r"[-_.]", low),
            f"tag '{tag}' is an alias that moves to new releases",
        ),
        (not re.search(r"\d", tag), f"tag '{tag}' names no version"),
        (
            re.fullmatch(r"v?\d+", low) is not None,
            f"tag '{tag}' names only a major version, which moves with every release",
        ),
    )
    return next((problem for failed, problem in checks if failed), None)


def images_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == REMOTE_IMAGE:
        field, ref = "name", args.props.get("name")
    elif args.resource_type == CONTAINER:
        field, ref = "image", args.props.get("image")
    else:
        return
    if not isinstance(ref, str):
        return
    problem = image_pin_problem(ref)
    if problem:
        report_violation(
            f"{_kind(args.resource_type)} '{args.name}': {field} '{ref}' is not pinned: {problem}; "
            "pin a fixed version tag (e.g. gitlab/gitlab-ce:18.5.1-ce.0) or a digest (name@sha256:...)",
            None,
        )


# --- 3. an image's platform is its host's architecture ----------------------------

_ARCH_ALIASES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64"}


def _arch(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return _ARCH_ALIASES.get(value.strip().lower(), value.strip().lower())


def _platform_arch(platform: str) -> str | None:
    parts = platform.strip().lower().split("/")
    return _arch(parts[1]) if len(parts) >= 2 else _arch(parts[0])


@dataclass(frozen=True)
class _HostArch:
    host: str
    arch: str | None


def _host_arch(provider: Any, resources: Sequence[Any]) -> _HostArch | None:
    """The host behind a docker provider and its architecture.

    First the ``forgeway:hosts:Host`` parent's registered ``arch`` output (what a stack
    policy sees under the engine), then the host's ``<host>-arch`` command, whose
    ``triggers[0]`` is the architecture the host was checked to have.
    """
    by_urn = {r.urn: r for r in resources}
    provider_resource = by_urn.get(provider.urn)
    parent = getattr(provider_resource, "parent", None)
    host_name: str | None = None
    if parent is not None and parent.resource_type == HOST:
        host_name = parent.name
        arch = _arch(parent.props.get("arch"))
        if arch:
            return _HostArch(parent.name, arch)
    elif provider.name.endswith("-docker"):
        host_name = provider.name.removesuffix("-docker")
    if host_name is None:
        return None
    for r in resources:
        if r.resource_type == COMMAND and r.name == f"{host_name}-arch":
            triggers = r.props.get("triggers")
            if _is_seq(triggers) and len(triggers) > 0:
                return _HostArch(host_name, _arch(triggers[0]))
    return _HostArch(host_name, None)


def _check_image_platform(r: Any, resources: Sequence[Any], report_violation: ReportViolation) -> None:
    if r.resource_type not in (REMOTE_IMAGE, CONTAINER):
        return
    platform = r.props.get("platform")
    if r.resource_type == CONTAINER and not platform:
        return  # a container runs what its image is; the RemoteImage is checked
    kind = _kind(r.resource_type)
    found = _host_arch(r.provider, resources) if r.provider is not None else None
    if found is None or found.arch is None:
        via = f"provider '{r.provider.name}'" if r.provider is not None else "the default docker provider"
        report_violation(
            f"{kind} '{r.name}' is pulled through {via}, whose host architecture is unknown: "
            "pull images through a Host's docker provider (`<host>-docker`, child of a forgeway:hosts:Host "
            "that registers `arch` and has a `<host>-arch` check)",
            r.urn,
        )
        return
    want = f"linux/{found.arch}"
    if not isinstance(platform, str) or not platform.strip():
        report_violation(
            f"{kind} '{r.name}' has no platform, so the daemon picks one: "
            f"set platform='{want}' (host '{found.host}' is {found.arch})",
            r.urn,
        )
    elif _platform_arch(platform) != found.arch:
        report_violation(
            f"{kind} '{r.name}' has platform '{platform}' but runs on host '{found.host}', "
            f"which is {found.arch}: set platform='{want}' and choose the {found.arch} image",
            r.urn,
        )


def image_platform_matches_host(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for r in args.resources:
        try:
            _check_image_platform(r, args.resources, report_violation)
        except UnknownValueError:
            continue  # unknown during preview: checked when the update knows it


# --- 4. runner jobs: privileged only when protected-only, no docker socket ----------


def _runner_configs(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(input path, text)`` of each runner config.toml a resource carries."""
    for path, text in _texts(resource_type, props):
        if re.search(r"^\s*\[\[runners\]\]", text, re.MULTILINE):
            yield path, text


def _resource_address(r: Any) -> str | None:
    if r.resource_type in REMOTE_TYPES:
        connection = r.props.get("connection")
        host = connection.get("host") if _is_map(connection) else None
        return host if isinstance(host, str) else None
    return _provider_address(r.provider.props if r.provider is not None else None)


def _executor_settings(runner: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(k, v) for k, v in runner.items() if k in ("docker", "kubernetes", "docker_autoscaler") and _is_map(v)]


def _check_runner_configs(
    r: Any, declared: Callable[[str | None, str], bool | None], report_violation: ReportViolation
) -> None:
    if r.resource_type not in REMOTE_TYPES and r.resource_type != CONTAINER:
        return
    for path, text in _runner_configs(r.resource_type, r.props):
        where = f"{_kind(r.resource_type)} '{r.name}' ({path})"
        if r.resource_type in REMOTE_TYPES and path in ("create", "update", "delete"):
            report_violation(
                f"{where} puts a runner config.toml on a command line, where logs and errors show it "
                "(with its token): send it on stdin",
                r.urn,
            )
            continue
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            report_violation(f"{where} carries a runner config.toml that does not parse ({exc}): fix it", r.urn)
            continue
        address = _resource_address(r)
        on_host = f"host {address}" if address else "an unknown host"
        runners = document.get("runners")
        for i, runner in enumerate(runners if isinstance(runners, list) else []):
            if not isinstance(runner, dict):
                continue
            name = runner.get("name") or f"runners[{i}]"
            for executor, settings in _executor_settings(runner):
                privileged = settings.get("privileged") is True or settings.get("services_privileged") is True
                if privileged and declared(address, PROTECTED_ONLY_LABEL) is False:
                    report_violation(
                        f"runner '{name}' in {where} on {on_host} runs privileged {executor} jobs but is not "
                        f"declared protected-only: set privileged = false, or make the runner protected in "
                        f"GitLab and label its gitlab-runner container {PROTECTED_ONLY_LABEL}=true "
                        "(stack config runner.protected_only: true)",
                        r.urn,
                    )
                mounts = [str(v) for v in settings.get("volumes", []) if "docker.sock" in str(v)]
                if mounts and declared(address, DOCKER_SOCKET_LABEL) is False:
                    report_violation(
                        f"runner '{name}' in {where} on {on_host} mounts the docker socket into jobs "
                        f"({', '.join(mounts)}), which gives every job root on the host: remove it from "
                        f"[runners.{executor}] volumes (use docker:dind as a service), or allow it loudly "
                        f"with the label {DOCKER_SOCKET_LABEL}=true on the gitlab-runner container",
                        r.urn,
                    )


def runner_job_isolation(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    # What each host's gitlab-runner containers declare, by the address their provider reaches.
    declarations: dict[str, list[dict[str, str]]] = {}
    undecided: set[str | None] = set()  # hosts (None: some host) whose declarations are unknown in preview
    for r in args.resources:
        if r.resource_type != CONTAINER:
            continue
        try:
            address = _resource_address(r)
        except UnknownValueError:
            undecided.add(None)
            continue
        try:
            labels = _labels(r.props)
        except UnknownValueError:
            undecided.add(address)
            continue
        if labels.get(ROLE_LABEL) == RUNNER_ROLE and address:
            declarations.setdefault(address, []).append(labels)

    def declared(address: str | None, label: str) -> bool | None:
        """True if every runner container on the host declares label=true, None if unknowable yet."""
        if None in undecided or address in undecided:
            return None
        found = declarations.get(address or "", [])
        return bool(found) and all(_true(labels.get(label)) for labels in found)

    for r in args.resources:
        try:
            _check_runner_configs(r, declared, report_violation)
        except UnknownValueError:
            continue  # unknown during preview: checked when the update knows it


# --- 5. remote connections pin the host key -----------------------------------------


def _ssh_option(options: Sequence[str], key: str) -> str | None:
    """The value ssh uses for an ``-o`` option: the first one given wins."""
    i = 0
    while i < len(options):
        word = options[i]
        if word == "-o" and i + 1 < len(options):
            spec, i = options[i + 1], i + 2
        elif word.startswith("-o") and len(word) > 2:
            spec, i = word[2:], i + 1
        else:
            i += 1
            continue
        name, _, value = spec.strip().replace("=", " ", 1).partition(" ")
        if name.lower() == key.lower():
            return value.strip()
    return None


def _ssh_pin_problems(options: Sequence[str], hop: str) -> list[str]:
    problems = []
    strict = _ssh_option(options, "StrictHostKeyChecking")
    if (strict or "").lower() != "yes":
        problems.append(f"{hop} runs ssh with StrictHostKeyChecking={strict or 'unset'}")
    if _ssh_option(options, "ProxyJump"):
        problems.append(f"{hop} uses ProxyJump, whose ssh does not get these -o options")
    proxy = _ssh_option(options, "ProxyCommand")
    if proxy:
        try:
            words = shlex.split(proxy)
        except ValueError:
            words = []
        if words and words[0].rsplit("/", 1)[-1] == "ssh":
            problems += _ssh_pin_problems(words[1:], "its jump host (ProxyCommand)")
    return problems


def _unpinned_connections(args: ResourceValidationArgs) -> list[str]:
    """What in a resource connects over SSH without checking the host key."""
    found = []
    if args.resource_type in REMOTE_TYPES:
        connection = args.props.get("connection")
        if not _is_map(connection):
            return []
        host = connection.get("host", "?")
        if not connection.get("hostKey"):
            found.append(f"{_kind(args.resource_type)} '{args.name}' connects to {host} without connection.hostKey")
        proxy = connection.get("proxy")
        if _is_map(proxy) and not proxy.get("hostKey"):
            found.append(
                f"{_kind(args.resource_type)} '{args.name}' reaches {host} through jump host "
                f"{proxy.get('host', '?')} without connection.proxy.hostKey"
            )
    elif args.resource_type == DOCKER_PROVIDER:
        host = args.props.get("host")
        if isinstance(host, str) and host.startswith("ssh://"):
            options = _strings(args.props.get("sshOpts"))
            for problem in _ssh_pin_problems(options, "it"):
                found.append(f"docker provider '{args.name}' ({host}): {problem}")
    return found


_PIN_FIX = (
    "pin the host key: set hosts[].host_key (`ssh-keyscan -t ed25519 -p PORT ADDRESS`), which sets "
    "connection.host_key and ssh_opts StrictHostKeyChecking=yes with the key"
)


def ssh_host_keys_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != DOCKER_PROVIDER:
        return
    if _true(args.get_config().get("allowUnpinnedHostKeys", False)):
        return  # waived: ssh-host-keys-unpinned reports each one as a warning
    for problem in _unpinned_connections(args):
        report_violation(
            f"{problem}: {_PIN_FIX}; or waive this with the policy config allowUnpinnedHostKeys: true",
            None,
        )


def ssh_host_keys_unpinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != DOCKER_PROVIDER:
        return
    for problem in _unpinned_connections(args):
        report_violation(f"warning: {problem}, so a machine in the middle can impersonate it: {_PIN_FIX}", None)


# --- 6. the VPS forwards only allowed ports ----------------------------------------

_NFT_SERVICES = {"ssh": 22, "http": 80, "https": 443, "domain": 53, "smtp": 25, "ftp": 21, "telnet": 23}
# The dnat statement (`dnat to ...`, `dnat ip to ...`, `dnat ip addr . port to ...`), not the
# conntrack match `ct status dnat`.
_DNAT = re.compile(r"(?<!status )\bdnat\s+(?:(?:ip6?|inet)\s+)?(?:to|addr)\b")
_ADMIN_FACT = re.compile(r"^\s*#\s*forgeway-admin-ssh-port\s+(\d+)\s*$", re.MULTILINE)
_DPORT = re.compile(r"\b(?:tcp|udp|sctp|dccp|th)\s+dport\s+(!=\s*)?(\{[^}]*\}|\S+)")
_MAP_KEYS = re.compile(r"\bdport\s+map\s+\{([^}]*)\}")


@dataclass(frozen=True)
class Forwarded:
    """Public ports a ruleset DNATs (inclusive ranges), and what could not be read."""

    ranges: tuple[tuple[int, int], ...]
    unreadable: tuple[str, ...]


def _port_spec(spec: str) -> tuple[list[tuple[int, int]], list[str]]:
    ranges: list[tuple[int, int]] = []
    bad: list[str] = []
    for raw in spec.strip().strip("{}").split(","):
        element = raw.strip()
        if not element:
            continue
        lo, sep, hi = element.partition("-")
        try:
            first = _NFT_SERVICES.get(lo.strip()) or int(lo)
            last = (_NFT_SERVICES.get(hi.strip()) or int(hi)) if sep else first
            ranges.append((first, last))
        except ValueError:
            bad.append(element)
    return ranges, bad


def forwarded_ports(ruleset: str) -> Forwarded:
    """The destination ports of every ``dnat`` rule in an nftables ruleset."""
    text = re.sub(r"\\\n", " ", ruleset)
    ranges: list[tuple[int, int]] = []
    unreadable: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        statement = _DNAT.search(line)
        if statement is None:
            continue
        match_part, target = line[: statement.start()], line[statement.start() :]
        mapped = _MAP_KEYS.search(target)
        if mapped:
            keys = ",".join(entry.split(":", 1)[0] for entry in mapped.group(1).split(","))
            found, bad = _port_spec(keys)
        else:
            match = _DPORT.search(match_part)
            if match is None:
                unreadable.append(f"'{line}' (no destination port: it forwards every port)")
                continue
            if match.group(1):
                unreadable.append(f"'{line}' (a negated port match forwards every other port)")
                continue
            found, bad = _port_spec(match.group(2))
        ranges += found
        unreadable += [f"'{line}' (port '{b}' is not a literal port)" for b in bad]
    return Forwarded(tuple(ranges), tuple(unreadable))


def _admin_ports(props: Mapping[str, Any], ruleset: str) -> set[int]:
    """The VPS admin SSH port: the one the command connects on, and the one the ruleset names."""
    connection = props.get("connection")
    port = _number(connection.get("port")) if _is_map(connection) else None
    return {port or 22} | {int(p) for p in _ADMIN_FACT.findall(ruleset)}


def vps_forwarding_ports(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != COMMAND or not args.name.endswith("-forwarding"):
        return
    ruleset = _text(args.props.get("stdin")) or ""
    allowed = {int(p) for p in args.get_config().get("allowedPorts", DEFAULT_ALLOWED_PORTS)}
    admin_ports = _admin_ports(args.props, ruleset)
    forwarded = forwarded_ports(ruleset)
    where = f"VPS forwarding '{args.name}'"
    for line in forwarded.unreadable:
        report_violation(f"{where} has a DNAT rule the policy cannot verify: {line}: match literal ports", None)
    for lo, hi in forwarded.ranges:
        ports = str(lo) if lo == hi else f"{lo}-{hi}"
        span = set(range(lo, hi + 1))
        admin = sorted(span & admin_ports)
        if admin:
            report_violation(
                f"{where} forwards port {ports}, {'which includes ' if lo != hi else ''}the VPS admin SSH port "
                f"{admin[0]}: forwarding it locks "
                "the admin out; move sshd to another port (hosts[].ssh_port) or forward git SSH elsewhere",
                None,
            )
        elif span & set(DOCKER_API_PORTS):
            report_violation(
                f"{where} forwards port {ports}, a docker API port (2375/2376), which gives the internet root "
                "on the home device: remove it from forwarding.ports",
                None,
            )
        elif not span <= allowed:
            report_violation(
                f"{where} forwards port {ports}, which is not in the allowlist {sorted(allowed)}: remove it from "
                "forwarding.ports, or add it to the policy config allowedPorts",
                None,
            )


# --- 7. the registry is served over TLS ---------------------------------------------

_PLAIN_REGISTRY_URL = re.compile(r"registry_external_url\b[\s(]*['\"]http://")
_INSECURE_REGISTRIES = re.compile(r"[\"']insecure-registries[\"']\s*:\s*\[\s*[\"']")
_INSECURE_FLAG = re.compile(r"--insecure-registry\b")


def registry_tls_only(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_PROVIDER:
        auths = args.props.get("registryAuth")
        if isinstance(auths, str):
            try:
                auths = json.loads(auths)
            except ValueError:
                auths = []
        for auth in auths if _is_seq(auths) else []:
            address = auth.get("address") if _is_map(auth) else None
            if isinstance(address, str) and address.lower().startswith("http://"):
                report_violation(
                    f"docker provider '{args.name}' logs in to registry {address} over plain HTTP: "
                    "use the registry's https:// address (GitLab's registry is served over TLS)",
                    None,
                )
        return
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    where = _kind(args.resource_type)
    for path, text in _texts(args.resource_type, args.props):
        if _PLAIN_REGISTRY_URL.search(text):
            report_violation(
                f"{where} '{args.name}' ({path}) sets registry_external_url to an http:// URL, serving the "
                "registry in plain text: use https:// (gitlab.tls own-ca or letsencrypt)",
                None,
            )
        if _INSECURE_REGISTRIES.search(text) or _INSECURE_FLAG.search(text):
            report_violation(
                f"{where} '{args.name}' ({path}) configures a docker daemon with insecure-registries, which "
                "pulls and pushes without TLS: remove it and trust the stack CA in /etc/docker/certs.d instead",
                None,
            )


# --- 8. containers have memory limits; GitLab has shared memory ----------------------


def container_memory_limits(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != CONTAINER:
        return
    memory = _number(args.props.get("memory"))
    if not memory:
        report_violation(
            f"container '{args.name}' has no memory limit, so it can starve the host: set memory=<MB> "
            "(gitlab.memory_limit_mb for GitLab)",
            None,
        )
    role = _labels(args.props).get(ROLE_LABEL)
    names = f"{args.name} {args.props.get('name') or ''}".lower()
    is_gitlab = role == GITLAB_ROLE or (role is None and "gitlab" in names and "runner" not in names)
    shm = _number(args.props.get("shmSize")) or 0
    if is_gitlab and shm < MIN_GITLAB_SHM_MB:
        has = f"shm_size {shm} MB" if shm else "no shm_size (docker's default is 64 MB)"
        report_violation(
            f"GitLab container '{args.name}' has {has}: set shm_size to at least {MIN_GITLAB_SHM_MB} "
            "(GitLab's metrics and puma use /dev/shm)",
            None,
        )


# --- 9. secrets are never plain values ---------------------------------------------

_SECRET_NAME = re.compile(r"password|passwd|passphrase|token|secret|privatekey|apikey|accesskey")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_GITLAB_TOKEN = re.compile(r"\b(?:glrt|glpat|gldt|glptt|glft|glimt|glagent|gloas|glcbt|glsoat)-[0-9A-Za-z_-]{20,}")
_REGISTRATION_TOKEN = re.compile(r"\bGR1348941[0-9A-Za-z_-]{20,}")
_ENV_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
# `gitlab_rails['initial_root_password'] = 'x'`, `password = "x"` (TOML), `"token": "x"` (JSON). Matching
# starts only where a name starts and every repeat is bounded, so long scripts stay linear.
_TEXT_SETTING = re.compile(
    r"""(?ix) (?<![a-z0-9_.\-])
    ( [a-z0-9_.\-]{0,40}? (?:password|passwd|passphrase|token|secret|private_key|api_key) [a-z0-9_.\-]{0,40} )
    ['"]?\]?[ \t]{0,8}[:=][ \t]{0,8}['"]([^'"$\s][^'"\n]{0,500})['"]"""
)
_COMMAND_LINES = ("create", "update", "delete")


def _secret_named(name: str) -> bool:
    return bool(_SECRET_NAME.search(re.sub(r"[^a-z0-9]", "", name.lower())))


@dataclass(frozen=True)
class SecretFinding:
    """Secret material at an input path: ``prop`` is the top-level input holding it."""

    prop: str
    path: str
    what: str


def _text_findings(text: str) -> Iterator[str]:
    if _PRIVATE_KEY.search(text):
        yield "a private key"
    if _GITLAB_TOKEN.search(text) or _REGISTRATION_TOKEN.search(text):
        yield "a GitLab token"
    for match in _TEXT_SETTING.finditer(text):
        yield f"a literal value for '{match.group(1)}'"


def secret_material(props: Mapping[str, Any]) -> list[SecretFinding]:
    """Every place in a resource's inputs that holds secret material, declared or not.

    Secret material is a non-empty string under a secret-named key (password, token,
    private key, secret, passphrase), a ``NAME=value`` entry with a secret-named NAME
    (container ``envs``), a private key or GitLab token anywhere in text, or a
    secret-named setting with a literal value in rendered text (gitlab.rb, TOML, JSON).
    """
    findings: list[SecretFinding] = []

    def walk(prop: str, path: str, value: Any, key: str | None) -> None:
        if _is_map(value):
            for k, v in value.items():
                walk(prop, f"{path}.{k}", v, str(k))
            return
        if _is_seq(value):
            for i, v in enumerate(value):
                walk(prop, f"{path}[{i}]", v, None)
            return
        text = _text(value)
        if not text:
            return
        if key is not None and _secret_named(key):
            findings.append(SecretFinding(prop, path, f"a secret-named input ({key})"))
            return
        assignment = _ENV_ASSIGNMENT.match(text) if key is None else None
        if assignment and _secret_named(assignment.group(1)) and assignment.group(2).strip():
            findings.append(SecretFinding(prop, path, f"a secret-named variable ({assignment.group(1)})"))
            return
        found = list(dict.fromkeys(_text_findings(text)))
        if found:
            findings.append(SecretFinding(prop, path, " and ".join(found)))

    for name, value in props.items():
        walk(str(name), str(name), value, str(name))
    return findings


def secrets_not_plaintext(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    declared = set(args.opts.additional_secret_outputs or [])
    kind = _kind(args.resource_type)
    for finding in secret_material(args.props):
        if args.resource_type in REMOTE_TYPES and finding.prop in _COMMAND_LINES:
            report_violation(
                f"{kind} '{args.name}' has {finding.what} in {finding.path}: a command line shows up in logs, "
                "error messages and the host's process list; send the secret on stdin "
                "(declared with additional_secret_outputs=['stdin'])",
                None,
            )
        elif finding.prop not in declared:
            report_violation(
                f"{kind} '{args.name}' has {finding.what} in {finding.path}, an input kept in plain text: pass it "
                f"as pulumi.Output.secret(...) and declare additional_secret_outputs=['{finding.prop}'] "
                "(or deliver it on a command's stdin, declared the same way)",
                None,
            )


# --- 10. runner containers drain their jobs on a replace --------------------------


def runner_containers_drain(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """A runner container (label forgeway.role=gitlab-runner) stops with SIGQUIT, gitlab-runner's
    graceful stop, and has a grace period: the docker provider's delete (and so every replace,
    e.g. a config.toml change) stops with the container's signal and destroyGraceSeconds as the
    timeout, 0 when unset (terraform-provider-docker resource_docker_container_funcs.go)."""
    if args.resource_type != CONTAINER or _labels(args.props).get(ROLE_LABEL) != RUNNER_ROLE:
        return
    signal = _text(args.props.get("stopSignal"))
    if signal != RUNNER_STOP_SIGNAL:
        has = f"stops with {signal}" if signal else "has no stop_signal (it stops with its image's)"
        report_violation(
            f"runner container '{args.name}' {has}: set stop_signal=\"{RUNNER_STOP_SIGNAL}\", gitlab-runner's "
            "graceful stop, so a replace or delete lets its running jobs finish",
            None,
        )
    if not _number(args.props.get("destroyGraceSeconds")):
        report_violation(
            f"runner container '{args.name}' has no grace period, so a replace or delete (any config.toml change) "
            "kills its running jobs at once: set destroy_grace_seconds (runners.stop_grace_seconds > 0)",
            None,
        )


# --- the pack ------------------------------------------------------------------------

_HOST_KEY_CONFIG = PolicyConfigSchema(
    properties={
        "allowUnpinnedHostKeys": {
            "type": "boolean",
            "default": False,
            "description": "Waive the pin (the stack's insecure_unpinned_host_keys): unpinned connections "
            "are then reported only as warnings by ssh-host-keys-unpinned",
        }
    }
)
_PORTS_CONFIG = PolicyConfigSchema(
    properties={
        "allowedPorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            "default": list(DEFAULT_ALLOWED_PORTS),
            "description": "Public ports the VPS may forward (the admin SSH port and 2375/2376 never are)",
        }
    }
)

POLICIES: list[Any] = [
    ResourceValidationPolicy(
        name="gitlab-volumes-protected",
        description="GitLab's config, logs, data and registry volumes are protected (and retained on delete).",
        validate=gitlab_volumes_protected,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="images-pinned",
        description="Every container image is pinned by a fixed version tag or a digest, never latest or untagged.",
        validate=images_pinned,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="image-platform-matches-host",
        description="An image's platform is the architecture of the host whose docker provider pulls it.",
        validate=image_platform_matches_host,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="runner-job-isolation",
        description="Runner jobs are privileged only on protected-only runners and never get the docker socket "
        "unless explicitly allowed.",
        validate=runner_job_isolation,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="ssh-host-keys-pinned",
        description="Every remote command and docker provider pins the SSH host key.",
        validate=ssh_host_keys_pinned,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_HOST_KEY_CONFIG,
    ),
    ResourceValidationPolicy(
        name="ssh-host-keys-unpinned",
        description="Warns about every SSH connection that does not check the host key (waived or not).",
        validate=ssh_host_keys_unpinned,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="vps-forwarding-ports",
        description="The VPS forwards only allowlisted ports, never its admin SSH port or the docker API.",
        validate=vps_forwarding_ports,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_PORTS_CONFIG,
    ),
    ResourceValidationPolicy(
        name="registry-tls-only",
        description="The container registry is served and reached over TLS; plain-HTTP registries are refused.",
        validate=registry_tls_only,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="container-memory-limits",
        description="Containers have memory limits, and GitLab's container has at least 256 MB of shared memory.",
        validate=container_memory_limits,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="runner-containers-drain",
        description="Runner containers stop with SIGQUIT and a grace period, so a replace lets running jobs finish.",
        validate=runner_containers_drain,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="secrets-not-plaintext",
        description="Secret material (passwords, tokens, private keys) never sits in a plain-text input or on a "
        "command line.",
        validate=secrets_not_plaintext,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
]
