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
* Forwarding is nftables NAT rules with literal ports and addresses (forgeway's: the
  ``<vps>-forwarding`` command's ``stdin``); a runner's ``config.toml`` travels in the
  runner container's ``uploads`` (or on a command's ``stdin``), never on a command line.
  The policies find both by content, in every text a resource ships and in what that
  text decodes to (staged base64 files, here-documents), not by a resource's name.
* Secret material in an input the provider does not encrypt is declared with
  ``additional_secret_outputs=[<input>]`` (the provider SDKs do the same for inputs
  their schema marks secret, e.g. pulumi-command's ``connection``).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import ipaddress
import json
import posixpath
import re
import shlex
import tomllib
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    "decoded_texts",
    "forwarded_ports",
    "image_pin_problem",
    "job_isolation_problems",
    "runner_documents",
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
# Ports on the GitLab host a forwarding may land on: forwarding.ports' default home ports.
DEFAULT_ALLOWED_HOME_PORTS = (80, 443, 2222, 5050)
MIN_GITLAB_SHM_MB = 256
_COMMAND_LINES = ("create", "update", "delete")  # a remote command's inputs that are command lines
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


# --- decoding what a resource ships encoded -----------------------------------------
#
# components/scripts staged_command ships files as base64 arguments on the command line
# (stage.sh decodes them on the host), and a user can do the same by hand: `echo BLOB |
# base64 -d`, gzip inside base64, hex for `xxd -r -p`, printf escapes. What a host would
# decode, the policies read decoded too.

_B64_BLOB = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_BLOB = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){16,}(?![0-9A-Fa-f])")
_PRINTF_ESCAPE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|0?[0-7]{3})")
_STAGED_NAME = re.compile(r"['\"]?([A-Za-z0-9_][A-Za-z0-9_.+-]{0,100})['\"]?\s+['\"]?$")
_NOT_FILE_NAMES = frozenset({"echo", "printf", "print", "cat", "base64", "then", "do", "else", "in"})
_MAX_DECODED = 1 << 20  # a gzip bomb stops here
_DECODE_DEPTH = 3


def _readable(data: bytes) -> str | None:
    """Bytes as text when they are text (a decoded script, key or config), else None."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
                data = unzipped.read(_MAX_DECODED)
        except (OSError, EOFError, zlib.error):
            return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return text if printable >= 0.95 * len(text) else None


def _b64_blob(blob: str) -> str | None:
    body = blob.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return _readable(base64.b64decode(body + "=" * (-len(body) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _printf_unescaped(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        code = m.group(0)[1:]
        return chr(int(code[1:], 16) if code[0] == "x" else int(code, 8))

    return _PRINTF_ESCAPE.sub(one, text)


def decoded_texts(text: str, depth: int = _DECODE_DEPTH) -> Iterator[tuple[str, str]]:
    """``(what it was, decoded text)`` for every encoded text inside ``text``, nested ones too.

    Base64 (standard or URL-safe, padded or not; a word right before it names a staged
    file), gzip inside base64, hex, and printf-style escapes (``\\x2d``, ``\\055``).
    """
    if depth <= 0:
        return
    found: list[tuple[str, str]] = []
    for m in _B64_BLOB.finditer(text):
        decoded = _b64_blob(m.group(0))
        if decoded is not None:
            name = _STAGED_NAME.search(text, max(0, m.start() - 110), m.start())
            staged = name is not None and name.group(1) not in _NOT_FILE_NAMES
            found.append((f"staged file '{name.group(1)}'" if name and staged else "a base64 blob", decoded))
    for m in _HEX_BLOB.finditer(text):
        decoded = _readable(bytes.fromhex(m.group(0)))
        if decoded is not None:
            found.append(("a hex blob", decoded))
    if len(_PRINTF_ESCAPE.findall(text)) >= 8:
        found.append(("escaped text", _printf_unescaped(text)))
    for what, decoded in found:
        yield what, decoded
        for inner, deeper in decoded_texts(decoded, depth - 1):
            yield f"{inner} inside {what}", deeper


_HEREDOC = re.compile(
    r"<<-?[ \t]*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1[^\n]*\n(.*?)\n[ \t]*\2[ \t]*$", re.DOTALL | re.MULTILINE
)


def _with_decoded(texts: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Each ``(path, text)``, the files a script writes from here-documents, and what is encoded in them."""
    for path, text in texts:
        parts = [(path, text)] + [(f"{path}, heredoc {m.group(2)}", m.group(3)) for m in _HEREDOC.finditer(text)]
        yield from parts
        for where, part in parts:
            for what, decoded in decoded_texts(part):
                yield f"{where}, {what} decoded", decoded


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


# --- 4. runner jobs: isolated from their host ----------------------------------------
#
# gitlab-runner reads config.toml with BurntSushi/toml into Go structs (gitlab-runner
# common/config.go), and that decoder falls back to a case-insensitive match of key to
# field (BurntSushi/toml decode.go, unifyStruct: strings.EqualFold), so `Privileged = true`
# is privileged. The parsed document is read here with keys folded, and a key spelled
# twice counts if any spelling is unsafe. The register flags and env names below are the
# `long:` and `env:` tags of DockerConfig in common/config.go.

# Executors whose jobs run in a container built from [runners.docker]; any other runs jobs
# in the runner container itself (which holds the host's docker socket and the token) or
# elsewhere, unchecked.
_DOCKER_EXECUTORS = frozenset({"docker", "docker-windows", "docker+machine", "docker-autoscaler"})
# What forgeway binds into jobs itself, read-only (components/render/buildkitd.py JOBS_DIR).
_FORGEWAY_JOB_DIR = "/etc/docker/forgeway-jobs"
_SAFE_SECURITY_OPTS = frozenset({"no-new-privileges", "apparmor=docker-default", "seccomp=builtin"})
_HOST_NAMESPACE_KEYS = ("network_mode", "ipcmode", "userns_mode")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")  # docker's rule for a named volume
_RUNNER_TABLE = re.compile(r"""(?im)^\s*(?:\[\[?\s*["']?runners\b|["']?runners["']?\s*=)""")


def _folded(table: Mapping[str, Any], key: str) -> list[Any]:
    """Every value under ``key`` in any letter case, as gitlab-runner's decoder reads it."""
    return [v for k, v in table.items() if str(k).casefold() == key]


def _folded_tables(table: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [v for v in _folded(table, key) if _is_map(v)]


def _folded_strings(table: Mapping[str, Any], key: str) -> list[str]:
    found: list[str] = []
    for value in _folded(table, key):
        found += [str(v) for v in value] if _is_seq(value) else [str(value)]
    return [v for v in found if v]


def _bind_source(spec: str) -> str | None:
    """The host path of a docker volume spec (``/src:/dst[:mode]``); None for a named volume or a bare path.

    Docker reads a source that is not a volume name as a host path."""
    parts = spec.split(":")
    if len(parts) < 2:
        return None  # `/cache`: an anonymous volume at that container path
    return None if _VOLUME_NAME.fullmatch(parts[0]) else parts[0]


def _is_forgeway_job_bind(spec: str, source: str) -> bool:
    mode = spec.split(":")[2:]
    path = posixpath.normpath(source)
    return (path == _FORGEWAY_JOB_DIR or path.startswith(_FORGEWAY_JOB_DIR + "/")) and "ro" in mode


def _is_docker_socket(spec: str, source: str) -> bool:
    """A docker socket: named docker.sock, or any other socket (a rootless or relocated daemon's,
    hosts[].docker_socket) bound where docker clients look for it."""
    name = posixpath.basename(posixpath.normpath(source))
    parts = spec.split(":")
    target = posixpath.basename(posixpath.normpath(parts[1])) if len(parts) > 1 else ""
    return name == "docker.sock" or (name.endswith(".sock") and target == "docker.sock")


def _security_opt_safe(opt: str) -> bool:
    key, sep, value = opt.strip().casefold().replace(":", "=", 1).partition("=")
    if key == "no-new-privileges":
        return True
    return f"{key}{sep}{value}" in _SAFE_SECURITY_OPTS


@dataclass(frozen=True)
class JobIsolationProblem:
    """One way a runner's jobs reach their host: ``gate`` is the label that may allow it, if any."""

    what: str
    fix: str
    gate: str | None = None


DockerSettings = Mapping[str, Sequence[Any]]  # [runners.docker] keys, folded, each with every spelling's value


def _docker_settings(runner: Mapping[str, Any]) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for section in _folded_tables(runner, "docker"):
        for k, v in section.items():
            merged.setdefault(str(k).casefold(), []).append(v)
    return merged


def _values(docker: DockerSettings, key: str) -> list[str]:
    """A setting's non-empty strings, whether it is written as one value or a list."""
    found: list[str] = []
    for value in docker.get(key, []):
        if _is_seq(value):
            found += [str(v) for v in value]
        elif _is_map(value):
            found += [f"{k}={v}" for k, v in value.items()]
        else:
            found.append(str(value))
    return [v for v in found if v.strip()]


def _executor_problems(runner: Mapping[str, Any]) -> list[JobIsolationProblem]:
    # No executor at all: gitlab-runner finds none and runs nothing.
    others = sorted({e for e in _folded_strings(runner, "executor") if e.casefold() not in _DOCKER_EXECUTORS})
    if not others:
        return []
    return [
        JobIsolationProblem(
            f"uses executor {', '.join(repr(e) for e in others)}, which runs jobs outside a job container "
            "(in the runner container, with the host's docker socket and the runner token, or elsewhere unchecked)",
            'set executor = "docker"',
        )
    ]


def _privilege_problems(docker: DockerSettings) -> list[JobIsolationProblem]:
    problems = []
    privileged = [k for k in ("privileged", "services_privileged") if any(_true(v) for v in _values(docker, k))]
    if privileged:
        problems.append(
            JobIsolationProblem(
                f"runs privileged jobs ({', '.join(f'{k} = true' for k in privileged)})",
                f"set privileged = false, or make the runner protected in GitLab and label its gitlab-runner "
                f"container {PROTECTED_ONLY_LABEL}=true (stack config runner.protected_only: true)",
                gate=PROTECTED_ONLY_LABEL,
            )
        )
    added = _values(docker, "cap_add")
    if added:
        problems.append(
            JobIsolationProblem(f"adds capabilities to jobs (cap_add = {added})", "remove cap_add (cap_drop is fine)")
        )
    for key in ("security_opt", "services_security_opt"):
        weak = [o for o in _values(docker, key) if not _security_opt_safe(o)]
        if weak:
            problems.append(
                JobIsolationProblem(
                    f"weakens or replaces the default confinement ({key} = {weak})",
                    f"remove them from {key} (only no-new-privileges, apparmor=docker-default and "
                    "seccomp=builtin keep jobs confined)",
                )
            )
    for key in ("devices", "services_devices", "device_cgroup_rules"):
        found = _values(docker, key)
        if found:
            problems.append(JobIsolationProblem(f"gives jobs host devices ({key} = {found})", f"remove {key}"))
    for key in _HOST_NAMESPACE_KEYS:
        shared = [v for v in _values(docker, key) if re.match(r"\s*(?:host\s*$|container:)", v, re.IGNORECASE)]
        if shared:
            problems.append(
                JobIsolationProblem(
                    f"shares a namespace with the host or another container ({key} = {shared[0]!r})",
                    f"remove {key} (jobs get their own; FF_NETWORK_PER_BUILD gives each its network)",
                )
            )
    return problems


def _volume_problems(docker: DockerSettings, role_volumes: Mapping[str, str]) -> list[JobIsolationProblem]:
    problems: list[JobIsolationProblem] = []
    sockets: list[str] = []
    binds: list[str] = []
    owned: list[str] = []
    for spec in _values(docker, "volumes"):
        source = _bind_source(spec)
        if source is None:
            name = spec.split(":")[0] if ":" in spec else ""
            if name in role_volumes:
                owned.append(f"{spec} ({ROLE_LABEL}={role_volumes[name]})")
        elif not _is_forgeway_job_bind(spec, source):
            (sockets if _is_docker_socket(spec, source) else binds).append(spec)
    if sockets:
        problems.append(
            JobIsolationProblem(
                f"mounts the docker socket into jobs ({', '.join(sockets)}), which gives every job root on the host",
                f"remove it from [runners.docker] volumes (use docker:dind as a service), or allow it loudly with "
                f"the label {DOCKER_SOCKET_LABEL}=true on the gitlab-runner container",
                gate=DOCKER_SOCKET_LABEL,
            )
        )
    if binds:
        problems.append(
            JobIsolationProblem(
                f"binds host paths into jobs ({', '.join(binds)}), so a job reads or writes the host",
                "remove the host paths from [runners.docker] volumes (a bare container path such as /cache "
                "is a volume, not a host path)",
            )
        )
    if owned:
        problems.append(
            JobIsolationProblem(
                f"mounts forgeway's own volumes into jobs ({', '.join(owned)})",
                "remove them from [runners.docker] volumes (jobs get their own volumes)",
            )
        )
    drivers = {
        "volumes_from": _values(docker, "volumes_from"),
        "volume_driver": [v for v in _values(docker, "volume_driver") if v.strip().casefold() != "local"],
        "volume_driver_ops": _values(docker, "volume_driver_ops"),
    }
    for key, found in drivers.items():
        if found:
            problems.append(
                JobIsolationProblem(
                    f"mounts what jobs should not reach ({key} = {found}: another container's volumes, or a "
                    "driver that binds host paths)",
                    f"remove {key}",
                )
            )
    return problems


def job_isolation_problems(
    runner: Mapping[str, Any], role_volumes: Mapping[str, str] | None = None
) -> list[JobIsolationProblem]:
    """What in one parsed ``[[runners]]`` entry gives its jobs the host, as gitlab-runner would run it.

    ``role_volumes`` maps the docker volumes of the stack that carry a ``forgeway.role``
    (GitLab's data, the runner's own config with its token) to that role.
    """
    docker = _docker_settings(runner)
    return [
        *_executor_problems(runner),
        *_privilege_problems(docker),
        *_volume_problems(docker, role_volumes or {}),
    ]


def _destined_runner_config(r: Any, path: str) -> bool:
    """True where gitlab-runner will read the text as its config.toml, parsed or not."""
    if r.resource_type == CONTAINER:
        m = re.match(r"uploads\[(\d+)\]", path)
        uploads = r.props.get("uploads")
        if m is None or not _is_seq(uploads) or int(m.group(1)) >= len(uploads):
            return False
        upload = uploads[int(m.group(1))]
        file = str(upload.get("file", "")) if _is_map(upload) else ""
        runner = _labels(r.props).get(ROLE_LABEL) == RUNNER_ROLE or "gitlab-runner" in file
        return runner and posixpath.basename(file).casefold() == "config.toml"
    if path.startswith("stdin"):
        scripts = " ".join(_text(r.props.get(k)) or "" for k in ("create", "update"))
        return "config.toml" in scripts.casefold()
    if path == "source":
        return posixpath.basename(str(r.props.get("remotePath") or "")).casefold() == "config.toml"
    return "staged file 'config.toml'" in path


def _runner_texts(r: Any) -> Iterator[tuple[str, str]]:
    """A resource's texts, and a container's env values (a config.toml an entrypoint writes from $NAME)."""
    yield from _texts(r.resource_type, r.props)
    if r.resource_type == CONTAINER:
        for i, env in enumerate(_strings(r.props.get("envs"))):
            name, eq, value = env.partition("=")
            if eq and value and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                yield f"envs[{i}] value", value


def runner_documents(r: Any) -> Iterator[tuple[str, Mapping[str, Any] | None, str]]:
    """``(input path, parsed document or None, parse error)`` of each runner config.toml a resource carries."""
    parsed: list[str] = []
    unparsed: list[tuple[str, str]] = []
    for path, text in _with_decoded(_runner_texts(r)):
        registered = _registered_runners(text) if "gitlab-runner" in text or r.resource_type == CONTAINER else []
        if registered and r.resource_type == CONTAINER:
            registered = [_with_register_env(runner, r.props) for runner in registered]
        if registered:
            yield f"{path}, {_REGISTERED}", {"runners": registered}, ""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            if _destined_runner_config(r, path) or _RUNNER_TABLE.search(text):
                unparsed.append((path, f"it does not parse: {exc}"))
            continue
        if _folded(document, "runners"):
            parsed.append(path)
            yield path, document, ""
    for path, error in unparsed + list(_unread_runner_configs(r)):
        if not any(p.startswith(f"{path},") for p in parsed):  # not what the command decodes and writes
            yield path, None, error


def _unread_runner_configs(r: Any) -> Iterator[tuple[str, str]]:
    """A config.toml copied from a file the policy cannot read (a FileAsset, an upload's local source)."""
    unread = "its content is a file outside the program's inputs"
    if r.resource_type in (COPY_TO_REMOTE, COPY_FILE):
        target = str(r.props.get("remotePath") or "")
        if posixpath.basename(target).casefold() == "config.toml" and _text(r.props.get("source")) is None:
            yield "source", unread
    uploads = r.props.get("uploads") if r.resource_type == CONTAINER else None
    for i, upload in enumerate(uploads if _is_seq(uploads) else []):
        if _is_map(upload) and upload.get("source") and _destined_runner_config(r, f"uploads[{i}].source"):
            yield f"uploads[{i}].source", unread


def _with_register_env(runner: dict[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """What a container's env adds to its ``register``: RUNNER_EXECUTOR, DOCKER_<KEY> (gitlab-runner's flag envs)."""
    for env in _strings(props.get("envs")):
        name, _, value = env.partition("=")
        if name == "RUNNER_EXECUTOR":
            runner["executor"] = value
        elif name.startswith("DOCKER_"):
            key = name.removeprefix("DOCKER_").lower()
            runner["docker"].setdefault(_REGISTER_ALIASES.get(key, key), []).append(value)
    return runner


_REGISTER_BOOLEANS = frozenset({"privileged", "services_privileged", "disable_cache", "tls_verify", "oom_kill_disable"})
_REGISTER_ALIASES = {"userns": "userns_mode", "ipc_mode": "ipcmode"}  # --docker-userns, DOCKER_IPC_MODE
_REGISTERED = "gitlab-runner register flags"


def _register_flags(words: Sequence[str]) -> dict[str, Any]:
    """``gitlab-runner register --executor X --docker-KEY VALUE ...`` as the runner entry it writes."""
    docker: dict[str, list[str]] = {}
    runner: dict[str, Any] = {"name": "(registered)", "docker": docker}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        flag, eq, value = word.partition("=")
        if flag == "--name" and not eq and i < len(words):
            runner["name"] = words[i]
        if flag == "--executor":
            if not eq and i < len(words):
                value, i = words[i], i + 1
            runner["executor"] = value
        elif flag.startswith("--docker-"):
            key = flag.removeprefix("--docker-").replace("-", "_")
            key = _REGISTER_ALIASES.get(key, key)
            if not eq and key in _REGISTER_BOOLEANS:
                value = "true"
            elif not eq and i < len(words) and not words[i].startswith("--"):
                value, i = words[i], i + 1
            docker.setdefault(key, []).append(value)
    return runner


def _registered_runners(text: str) -> list[dict[str, Any]]:
    """The runner entries each ``gitlab-runner register`` in a script or command writes."""
    found = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if "register" not in line or "--" not in line:
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        if "register" in words:
            found.append(_register_flags(words[words.index("register") + 1 :]))
    return found


def _runner_entries(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries: list[Mapping[str, Any]] = []
    for value in _folded(document, "runners"):
        entries += [v for v in value if _is_map(v)] if _is_seq(value) else [value] if _is_map(value) else []
    return entries


def _resource_address(r: Any) -> str | None:
    if r.resource_type in REMOTE_TYPES:
        connection = r.props.get("connection")
        host = connection.get("host") if _is_map(connection) else None
        return host if isinstance(host, str) else None
    return _provider_address(r.provider.props if r.provider is not None else None)


def _check_runner_configs(
    r: Any,
    declared: Callable[[str | None, str], bool | None],
    role_volumes: Mapping[str, str],
    report_violation: ReportViolation,
) -> None:
    if r.resource_type not in REMOTE_TYPES and r.resource_type != CONTAINER:
        return
    address = _resource_address(r)
    on_host = f"host {address}" if address else "an unknown host"
    on_command_line = False
    for path, document, error in runner_documents(r):
        where = f"{_kind(r.resource_type)} '{r.name}' ({path})"
        registered = path.endswith(_REGISTERED)  # flags, not a config.toml (the token: secrets-not-plaintext)
        if (
            r.resource_type in REMOTE_TYPES
            and path.startswith(_COMMAND_LINES)
            and not registered
            and not on_command_line
        ):
            on_command_line = True
            report_violation(
                f"{where} puts a runner config.toml on a command line, where logs and errors show it "
                "(with its token): send it on stdin",
                r.urn,
            )
        if document is None and not path.startswith(_COMMAND_LINES):
            report_violation(
                f"{where} carries a runner config.toml the policy cannot read ({error}), so it cannot judge "
                "what its jobs may do: render it with TOML that parses, as a string input",
                r.urn,
            )
        for i, runner in enumerate(_runner_entries(document or {})):
            names = _folded_strings(runner, "name")
            name = names[0] if names else f"runners[{i}]"
            for problem in job_isolation_problems(runner, role_volumes):
                if problem.gate is not None and declared(address, problem.gate) is not False:
                    continue
                report_violation(f"runner '{name}' in {where} on {on_host} {problem.what}: {problem.fix}", r.urn)


def runner_job_isolation(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    # What each host's gitlab-runner containers declare, by the address their provider reaches.
    declarations: dict[str, list[dict[str, str]]] = {}
    undecided: set[str | None] = set()  # hosts (None: some host) whose declarations are unknown in preview
    role_volumes: dict[str, str] = {}  # forgeway's labelled docker volumes, which jobs must not mount
    for r in args.resources:
        if r.resource_type == VOLUME:
            try:
                role, volume = _labels(r.props).get(ROLE_LABEL), r.props.get("name")
            except UnknownValueError:
                continue
            if role and isinstance(volume, str):
                role_volumes[volume] = role
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
            _check_runner_configs(r, declared, role_volumes, report_violation)
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


# --- 6. forwarding exposes only allowed ports, to the tunnel --------------------------
#
# A forwarding is found by what a resource carries, not by its name: every nftables NAT
# statement (dnat, redirect, tproxy) in any text a remote command, copy or container
# ships, decoded where it is encoded. Forwarding in other tools (iptables, firewalld,
# socat) cannot be read and is refused.

_NFT_SERVICES = {"ssh": 22, "http": 80, "https": 443, "domain": 53, "smtp": 25, "ftp": 21, "telnet": 23}
# The NAT statements (`dnat to ...`, `dnat ip to ...`, `tproxy to ...`, `redirect [to :port]`), not
# the conntrack match `ct status dnat`.
_DNAT = re.compile(r"(?<!status )\b(?:dnat|tproxy)\s+(?:(?:ip6?|inet)\s+)?(?:to|addr)\b")
# `redirect` is also an English word: a statement only as a rule's first word or after an nft match.
_REDIRECT = re.compile(
    r"(?:^|\b(?:dport|sport|iifname|oifname|daddr|saddr|l4proto|counter|accept|meta|mark)\b.*?)"
    r"\s?(?<![\w-])(redirect)(?=\s+to\b|\s*$|\s*[;}]|\s+comment\b)"
)
_OTHER_FORWARDERS = re.compile(
    r"-j\s+(?:DNAT|REDIRECT|TPROXY|NETMAP)\b|--jump\s+(?:DNAT|REDIRECT|TPROXY|NETMAP)\b|--to-destination\b"
    r"|--add-forward-port\b|\bforward-port\b|\bsocat\b.*\b(?:TCP|UDP|SCTP)[46]?-LISTEN\b|\bipvsadm\b"
    # nft without a NAT statement: stateless rewrites of the destination, fwd/dup to another host,
    # and the JSON syntax (`nft -j`), which this reader does not parse.
    r"|\b(?:ip6?\s+daddr|(?:tcp|udp|sctp|dccp|th)\s+dport)\s+set\b|\b(?:fwd|dup)\s+(?:(?:ip6?|inet)\s+)?to\b"
    r"|\"(?:dnat|redirect|tproxy|fwd|dup)\"\s*:"
    # ssh port forwards (-L/-R [bind:]port:host:port, -D [bind:]port): a listener that relays
    r"|\bssh\b.*\s-[A-Za-z]*(?:[LR]\s*(?:\S+:)?\d+:\S+:\d+|D\s*(?:\S+:)?\d+\b)",
    re.IGNORECASE,
)
_ADMIN_FACT = re.compile(r"^\s*#\s*forgeway-admin-ssh-port\s+(\d+)\s*$", re.MULTILINE)
_DPORT = re.compile(r"\b(?:tcp|udp|sctp|dccp|th)\s+dport\s+(!=\s*)?(\{[^}]*\}|\S+)")
_MAP_KEYS = re.compile(r"\bdport\s+map\s+\{([^}]*)\}")
_ANY_MAP = re.compile(r"\bmap\s+\{([^}]*)\}")
_TARGET = re.compile(r"\bto\s+(\S+)")

PortRange = tuple[int, int]


@dataclass(frozen=True)
class Exposure:
    """One public port range and where it lands: ``address`` None is the host itself (redirect)."""

    line: str
    public: PortRange
    address: str | None
    home: PortRange


@dataclass(frozen=True)
class Forwarded:
    """Public ports a ruleset forwards (inclusive ranges), where each lands, and what could not be read."""

    ranges: tuple[PortRange, ...]
    unreadable: tuple[str, ...]
    exposures: tuple[Exposure, ...] = ()


def _port(word: str) -> int:
    word = word.strip()
    port = _NFT_SERVICES.get(word) or int(word)
    if not 0 < port < 65536:
        raise ValueError(word)
    return port


def _port_spec(spec: str) -> tuple[list[PortRange], list[str]]:
    ranges: list[PortRange] = []
    bad: list[str] = []
    for raw in spec.strip().strip("{}").split(","):
        element = raw.strip()
        if not element:
            continue
        lo, sep, hi = element.partition("-")
        try:
            first = _port(lo)
            last = _port(hi) if sep else first
            ranges.append((first, last))
        except ValueError:
            bad.append(element)
    return ranges, bad


def _address_port(target: str) -> tuple[str, PortRange | None]:
    """``10.8.0.2:2222``, ``[fd00::2]:443``, ``10.8.0.2``, ``fd00::2``, ``:2222``: the address and port range."""
    target = target.strip().rstrip(";")
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.+))?", target)
    if bracketed:
        address, port = bracketed.group(1), bracketed.group(2)
    elif target.count(":") > 1:
        address, port = target, None  # a bare IPv6 address
    else:
        address, _, port = target.partition(":")
        port = port or None
    if port is None:
        return address, None
    ranges, bad = _port_spec(port)
    if bad or len(ranges) != 1:
        raise ValueError(port)
    return address, ranges[0]


def _map_value(value: str) -> tuple[str, PortRange | None]:
    """A map's value: ``10.8.0.2 . 443`` (address . port) or an address with an optional port."""
    concatenated = re.fullmatch(r"\s*(\S+)\s+\.\s+(\S+)\s*", value)
    if concatenated:
        ranges, bad = _port_spec(concatenated.group(2))
        if bad or len(ranges) != 1:
            raise ValueError(value)
        return concatenated.group(1), ranges[0]
    return _address_port(value)


class _Unreadable(ValueError):
    """A NAT statement the policy cannot verify; the message says why."""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _map_exposures(line: str, entries: str) -> list[Exposure]:
    """``dnat to tcp dport map { 443 : 10.8.0.2 . 443 }``: public ports are the keys."""
    found: list[Exposure] = []
    for entry in (e.strip() for e in entries.split(",")):
        if not entry:
            continue
        key, sep, value = entry.partition(":")
        keys, bad = _port_spec(key)
        if bad or not sep or len(keys) != 1:
            raise _Unreadable(f"map entry '{entry}' is not 'port : address . port'")
        try:
            address, home = _map_value(value)
        except ValueError:
            raise _Unreadable(f"map entry '{entry}' has no literal target") from None
        if not _is_ip(address):
            raise _Unreadable(f"map entry '{entry}' has no literal target address")
        found.append(Exposure(line, keys[0], address, home or keys[0]))
    return found


def _exposures(line: str, match_part: str, target: str, redirect: bool) -> list[Exposure]:
    """What one NAT statement exposes; raises _Unreadable when that cannot be read."""
    dport_map = _MAP_KEYS.search(target)
    if dport_map:
        return _map_exposures(line, dport_map.group(1))
    match = _DPORT.search(match_part)
    if match is None:
        raise _Unreadable("no destination port: it forwards every port")
    if match.group(1):
        raise _Unreadable("a negated port match forwards every other port")
    public, bad = _port_spec(match.group(2))
    if bad:
        raise _Unreadable("; ".join(f"port '{b}' is not a literal port" for b in bad))
    if _ANY_MAP.search(target):
        raise _Unreadable("a target map other than 'dport map' cannot be checked")
    to = _TARGET.search(target)
    try:
        address, home = _address_port(to.group(1)) if to else ("", None)
    except ValueError:
        raise _Unreadable(f"target '{to.group(1) if to else ''}' is not a literal address and port") from None
    if not redirect and not _is_ip(address):
        raise _Unreadable(f"target '{address}' is not a literal address")
    return [Exposure(line, p, None if redirect else address, home or p) for p in public]


def forwarded_ports(ruleset: str) -> Forwarded:
    """What every NAT statement in a ruleset (or script) exposes, and the forwarding it cannot read."""
    text = re.sub(r"\\\n", " ", ruleset)
    exposures: list[Exposure] = []
    unreadable: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        statement = _DNAT.search(line) or _REDIRECT.search(line)
        if statement is None:
            if _OTHER_FORWARDERS.search(line):
                unreadable.append(f"'{line}' (forwarding outside nftables, which the policy cannot read)")
            continue
        start = statement.start(1) if statement.re is _REDIRECT else statement.start()
        try:
            exposures += _exposures(line, line[:start], line[start:], statement.re is _REDIRECT)
        except _Unreadable as why:
            unreadable.append(f"'{line}' ({why})")
    return Forwarded(tuple(e.public for e in exposures), tuple(unreadable), tuple(exposures))


def _admin_ports(props: Mapping[str, Any], texts: Sequence[str]) -> set[int]:
    """The host's admin SSH port: the one the command connects on, and the one a ruleset names."""
    connection = props.get("connection")
    port = _number(connection.get("port")) if _is_map(connection) else None
    return {port or 22} | {int(p) for text in texts for p in _ADMIN_FACT.findall(text)}


def _span(r: PortRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


# Documentation ranges stand in for public addresses in examples and the lab (a VPS's "public"
# address 203.0.113.10); Python calls them private, so they are named here.
_PUBLIC_STAND_INS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global or any(ip.version == n.version and ip in n for n in _PUBLIC_STAND_INS)


def _address_problem(e: Exposure, to: str) -> str | None:
    """Why an exposure's target is not a host behind the tunnel, or None."""
    fix = "forward only to the GitLab host's tunnel address (forwarding.ports)"
    if e.address is None:
        return f"redirects {to} to this host's own port {_span(e.home)} ('{e.line}'), exposing a local service: {fix}"
    try:
        ip = ipaddress.ip_address(e.address)
    except ValueError:
        return f"forwards {to} to '{e.address}', which is not a literal address ('{e.line}'): {fix}"
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip.is_reserved:
        return f"forwards {to} to {ip}, an address of this host or of no host ('{e.line}'): {fix}"
    if _is_public(ip):
        return f"forwards {to} to the public address {ip}, which makes this host a relay ('{e.line}'): {fix}"
    return None


def _target_problem(e: Exposure, allowed_home: set[int]) -> str | None:
    """Why where an exposure lands is not an allowed port on a host behind the tunnel, or None."""
    to = f"public port {_span(e.public)}"
    problem = _address_problem(e, to)
    home = set(range(e.home[0], e.home[1] + 1))
    if problem is None and home & set(DOCKER_API_PORTS):
        problem = (
            f"forwards {to} to {e.address} port {_span(e.home)}, a docker API port (2375/2376), which gives the "
            "internet root on that host: remove it from forwarding.ports"
        )
    if problem is None and not home <= allowed_home:
        problem = (
            f"forwards {to} to {e.address} port {_span(e.home)}, which is not in the home-port allowlist "
            f"{sorted(allowed_home)} (the GitLab host's own SSH must never be reachable from the internet): "
            "change forwarding.ports[].home, or add the port to the policy config allowedHomePorts"
        )
    return problem


def _exposure_problem(e: Exposure, admin_ports: set[int], allowed: set[int], allowed_home: set[int]) -> str | None:
    ports = _span(e.public)
    span = set(range(e.public[0], e.public[1] + 1))
    admin = sorted(span & admin_ports)
    if admin:
        return (
            f"forwards port {ports}, {'which includes ' if e.public[0] != e.public[1] else ''}the admin SSH port "
            f"{admin[0]}: forwarding it locks the admin out; move sshd to another port (hosts[].ssh_port) or "
            "forward git SSH elsewhere"
        )
    if span & set(DOCKER_API_PORTS):
        return (
            f"forwards port {ports}, a docker API port (2375/2376), which gives the internet root on the home "
            "device: remove it from forwarding.ports"
        )
    if not span <= allowed:
        return (
            f"forwards port {ports}, which is not in the allowlist {sorted(allowed)}: remove it from "
            "forwarding.ports, or add it to the policy config allowedPorts"
        )
    return _target_problem(e, allowed_home)


def _published_port_problems(props: Mapping[str, Any], allowed_home: set[int]) -> Iterator[str]:
    """A container's ``ports``: docker DNATs each to the container, so each lands on a home port."""
    ports = props.get("ports")
    for i, port in enumerate(ports if _is_seq(ports) else []):
        if not _is_map(port):
            continue
        external, ip = _number(port.get("external")), str(port.get("ip") or "")
        where = f"ports[{i}] publishes port {external or 'a random port'} on {ip or 'every address'}"
        if external is None:
            yield f"{where}, which the policy cannot check: set ports[].external"
            continue
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if address is None or address.is_unspecified or _is_public(address):
            yield (
                f"{where}, which reaches it from every network that host is on: publish on the one address that "
                "needs it (the GitLab host's tunnel address: ports[].ip)"
            )
        elif external in DOCKER_API_PORTS:
            yield f"{where}, a docker API port (2375/2376): do not publish it"
        elif not address.is_loopback and external not in allowed_home:
            yield (
                f"{where}, which is not in the home-port allowlist {sorted(allowed_home)}: publish another port, "
                "or add it to the policy config allowedHomePorts"
            )


def vps_forwarding_ports(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    config = args.get_config()
    allowed = {int(p) for p in config.get("allowedPorts", DEFAULT_ALLOWED_PORTS)}
    allowed_home = {int(p) for p in config.get("allowedHomePorts", DEFAULT_ALLOWED_HOME_PORTS)}
    if args.resource_type == CONTAINER:
        for problem in _published_port_problems(args.props, allowed_home):
            report_violation(f"container '{args.name}' {problem}", None)
    texts = list(_with_decoded(_texts(args.resource_type, args.props)))
    found = [(path, forwarded_ports(text)) for path, text in texts]
    found = [(path, f) for path, f in found if f.exposures or f.unreadable]
    if not found:
        return
    admin_ports = _admin_ports(args.props, [text for _, text in texts])
    seen: set[str] = set()
    for path, forwarded in found:
        where = f"forwarding in {_kind(args.resource_type)} '{args.name}' ({path})"
        problems = [
            f"has a NAT rule the policy cannot verify: {line}: match literal ports and forward to literal "
            "addresses with nftables"
            for line in forwarded.unreadable
        ]
        problems += [p for e in forwarded.exposures if (p := _exposure_problem(e, admin_ports, allowed, allowed_home))]
        for problem in problems:
            if problem not in seen:  # a ruleset and its decoded copy say the same
                seen.add(problem)
                report_violation(f"{where} {problem}", None)


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
# Unquoted, as a shell or env file writes it (`DB_PASSWORD=hunter2`, `export API_TOKEN=x`) and as a
# program takes it (`--password=x`, `--registration-token x`): a literal, not `$VAR` or `$(cat)`.
_SHELL_SETTING = re.compile(
    r"""(?ix) (?<![a-z0-9_.\-])
    ( [a-z0-9_]{0,40}? (?:password|passwd|passphrase|token|secret|private_key|api_key) )
    =([^\s'"$`;&|()<>{}\\][^\s'"`;&|()<>]{0,500})"""
)
_SECRET_FLAG = re.compile(
    r"""(?ix) (?<![a-z0-9_.\-]) --
    ( [a-z0-9-]{0,40}? (?:password|passwd|passphrase|token|secret|private-key|api-key) )
    (?:=|[ \t]{1,8}) ['"]? ([^\s'"$`;&|()<>{}\\-][^\s'"`;&|()<>]{0,500})"""
)


# `PrivateKey = x` (WireGuard, INI), `password: x` (YAML), unquoted, the name ending in the secret word
# (`password_file: /path` names a file, not a secret).
_INI_SETTING = re.compile(
    r"""(?imx) ^[ \t]{0,16}
    ( [a-z0-9_.\-]{0,40}? (?:password|passwd|passphrase|token|secret|private_?key|preshared_?key|api_?key) )
    [ \t]{0,8}[:=][ \t]{0,8} ([^\s'"$`#;{\[][^\s]{0,500}) [ \t]*$"""
)
# `https://user:pass@host` (a proxy or registry URL), `PRIVATE-TOKEN: x` / `Authorization: Bearer x` headers.
_URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.\-]{1,20}://[^\s/:@'\"]{1,100}:([^\s/@'\"$]{1,200})@", re.IGNORECASE)
_AUTH_HEADER = re.compile(
    r"\b(private-token|job-token|deploy-token|authorization)[ \t]{0,4}:[ \t]{0,4}(?:(?:bearer|basic|token)[ \t]+)?"
    r"([^\s'\"$]{8,500})",
    re.IGNORECASE,
)
_SECRET_KEY_END = re.compile(r"(?:password|passwd|passphrase|token|secret|privatekey|presharedkey|apikey|accesskey)$")


def _document_findings(text: str) -> Iterator[str]:
    """Secret-named keys with literal values in text that parses as TOML or JSON, however it is spelled
    (multi-line strings, escapes, inline tables)."""
    document: Any = None
    for parse in (json.loads, tomllib.loads) if text.lstrip()[:1] in ("{", "[") else (tomllib.loads,):
        try:
            document = parse(text)
            break
        except ValueError:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
            continue
    stack: list[Any] = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                key = re.sub(r"[^a-z0-9]", "", str(k).lower())
                named = _SECRET_KEY_END.search(key) or key == "auth"  # docker's config.json: base64 user:password
                if isinstance(v, str) and v.strip() and not v.startswith("$") and named:
                    yield f"a literal value for '{k}'"
                else:
                    stack.append(v)
        elif isinstance(value, list):
            stack.extend(value)


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
    for pattern in (_TEXT_SETTING, _SHELL_SETTING, _SECRET_FLAG, _INI_SETTING):
        for match in pattern.finditer(text):
            yield f"a literal value for '{match.group(1)}'"
    if _URL_CREDENTIALS.search(text):
        yield "a password in a URL (user:password@)"
    for match in _AUTH_HEADER.finditer(text):
        yield f"a literal {match.group(1)} header"
    yield from _document_findings(text)


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
        if assignment:  # NAME={"json": ...}: the value is a document of its own
            found = list(dict.fromkeys([*found, *_document_findings(assignment.group(2))]))
        if found:
            findings.append(SecretFinding(prop, path, " and ".join(found)))
        # What the host decodes (a staged file, `echo BLOB | base64 -d`) is as plain as the text.
        for what, decoded in decoded_texts(text):
            found = list(dict.fromkeys(_text_findings(decoded)))
            if found:
                findings.append(SecretFinding(prop, f"{path} ({what}, decoded)", " and ".join(found)))

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


# --- 11. GitLab sees its clients' addresses ------------------------------------------
#
# Advisory: snat is a supported mode (README, "Client addresses"), but what it gives up is
# said where a deploy is reviewed. Two findings, both by content:
# * a ruleset that DNATs public ports and source-NATs them on (masquerade/snat, other than
#   outbound NAT on the interface the DNAT came in on): GitLab sees one client, the VPS;
# * a gitlab.rb that trusts or allow-lists any non-loopback address, trusts every private
#   range (an empty trusted_proxies, gitlabhq config/initializers/trusted_proxies.rb) or
#   switches the failed Git/registry authentication ban off.

_SOURCE_NAT = re.compile(r"\bmasquerade\b|\bsnat\b(?:\s+(?:ip6?|inet))?\s+to\b|-j\s+(?:MASQUERADE|SNAT)\b", re.I)
_IFNAME = re.compile(r"\b(iifname|oifname|-i|-o)\s+\"?([A-Za-z0-9_.@:-]+)\"?")
_RB_LIST = re.compile(
    r"""(?x) (?: gitlab_rails\[\s*['"](trusted_proxies|monitoring_whitelist)['"]\s*\]\s*=
           | ['"](ip_whitelist)['"]\s*=>\s* ) \s* \[([^\]]*)\]"""
)
_RB_BAN = re.compile(r"gitlab_rails\[\s*['\"]rack_attack_git_basic_auth['\"]\s*\]\s*=\s*\{([^}]*)\}")
_RB_BAN_OFF = re.compile(r"['\"]enabled['\"]\s*=>\s*false\b")
_RB_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
_CLIENT_COST = (
    "every internet client reaches GitLab from one address, so its rate limits and audit log see the VPS, "
    "and one client's failed Git HTTPS or registry logins ban that address, and so every internet client, "
    "for the ban time (forgeway never allow-lists it: that would make password guessing unlimited)"
)


def _lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.split("#", 1)[0].strip() for line in joined.splitlines()]


def _source_nats_forwarded(text: str) -> str | None:
    """The source-NAT line of a ruleset that also DNATs public ports, else None."""
    forwarded = forwarded_ports(text).exposures
    if not forwarded:
        return None
    inbound = {m.group(2) for e in forwarded for m in _IFNAME.finditer(e.line) if m.group(1) in ("iifname", "-i")}
    for line in _lines(text):
        if not _SOURCE_NAT.search(line):
            continue
        out = {m.group(2) for m in _IFNAME.finditer(line) if m.group(1) in ("oifname", "-o")}
        if out and out <= inbound:
            continue  # outbound NAT to the internet, not the forwarded connections
        return line
    return None


def _non_loopback(entry: str) -> bool:
    try:
        network = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return True  # a name or a typo: not provably loopback
    return not network.is_loopback


def _gitlab_rb_problems(text: str) -> list[str]:
    problems: list[str] = []
    for m in _RB_LIST.finditer(text):
        key = m.group(1) or m.group(2)
        entries = [a if a is not None else b for a, b in _RB_STRING.findall(m.group(3))]
        wide = [e for e in entries if _non_loopback(e)]
        if key == "trusted_proxies" and not entries:
            problems.append(
                "sets gitlab_rails['trusted_proxies'] = [], so GitLab trusts every private range as a proxy, the "
                "tunnel subnet included: list only '127.0.0.1' and '::1'"
            )
        elif wide and key == "ip_whitelist":
            problems.append(
                f"exempts {wide} from the failed Git/registry login ban (rack_attack_git_basic_auth ip_whitelist): "
                "password guessing from there is unlimited, for every client when it is the VPS tunnel address; "
                "allow-list only '127.0.0.1'"
            )
        elif wide:
            problems.append(
                f"lists {wide} in gitlab_rails['{key}']: only loopback belongs there (the VPS adds no client "
                "address for GitLab to trust, and in snat mode it is every internet client)"
            )
    for m in _RB_BAN.finditer(text):
        if _RB_BAN_OFF.search(m.group(1)):
            problems.append(
                "switches the failed Git/registry login ban off (rack_attack_git_basic_auth enabled => false): "
                "password guessing over Git HTTPS and the registry is unlimited; set 'enabled' => true"
            )
    return problems


def gitlab_client_addresses(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    where = _kind(args.resource_type)
    seen: set[str] = set()
    for path, text in _with_decoded(_texts(args.resource_type, args.props)):
        line = _source_nats_forwarded(text)
        found = (
            [
                f"source-NATs the connections it forwards ({line}): {_CLIENT_COST}; use forwarding.mode: "
                "preserve-source where the GitLab host can take policy routing"
            ]
            if line
            else []
        )
        found += _gitlab_rb_problems(text)
        for problem in found:
            if problem not in seen:  # a text and its decoded copy say the same
                seen.add(problem)
                report_violation(f"{where} '{args.name}' ({path}) {problem}", None)


# --- 12. the tunnel's segmentation is kept ------------------------------------------
#
# Default deny between tunnel peers lives in table inet forgeway_segment on every host
# (components/render/segment.py). A drop in it is final whatever other tables accept,
# so what undoes it is removing or flushing it, or an accept in it that does not say
# from whom. Found by content in every text a resource ships, decoded, comments aside.

_SEGMENT_DEFINED = re.compile(r"^[ \t]*table[ \t]+inet[ \t]+forgeway_segment[ \t]*\{", re.MULTILINE)
_SEGMENT_REMOVED = re.compile(
    r"\b(?:delete|flush|destroy)[ \t]+(?:table|chain)[ \t]+inet[ \t]+forgeway_segment\b|\bflush[ \t]+ruleset\b"
)
# An accept that names its sources or its state (replies, DNATed flows), what is not the
# tunnel, or a ping (tunnel health).
_SEGMENT_ACCEPT_SCOPED = re.compile(
    r"\bip6?[ \t]+saddr\b|\bct[ \t]+(?:state|status)\b|\biifname[ \t]+!="
    r"|\bicmp[ \t]+type[ \t]+echo-request[ \t]+accept\b"
)


def _segment_problems(path: str, text: str) -> list[str]:
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    defined = _SEGMENT_DEFINED.search(code)
    problems = []
    if not path.startswith("delete"):  # a delete may take it away: that is its teardown
        for found in _SEGMENT_REMOVED.finditer(code):
            # forgeway's own file deletes the table and defines it again, in one transaction
            if defined and found.start() < defined.start() and "ruleset" not in found.group(0):
                continue
            problems.append(
                f"removes the tunnel's segmentation ('{found.group(0)}'): every tunnel peer then reaches every "
                "other and the VPS's admin SSH; leave table inet forgeway_segment to forgeway (tunnel.admin_peers "
                "opens SSH for named hosts)"
            )
    if defined:
        body = code[defined.end() :]
        for line in body.splitlines():
            rule = line.strip()
            if (
                re.search(r"\baccept\b", rule)
                and not rule.startswith("type ")
                and not _SEGMENT_ACCEPT_SCOPED.search(rule)
            ):
                problems.append(
                    f"accepts from every tunnel peer in table inet forgeway_segment ('{rule}'): name the sources "
                    "(ip saddr), as forgeway's rules do, or list the host in tunnel.admin_peers"
                )
        if not re.search(r"\bdrop\b", body):
            problems.append("defines table inet forgeway_segment without a drop: the tunnel is not segmented")
    return problems


def tunnel_segmentation_kept(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    where = _kind(args.resource_type)
    seen: set[str] = set()
    for path, text in _with_decoded(_texts(args.resource_type, args.props)):
        for problem in _segment_problems(path, text):
            if problem not in seen:  # a text and its decoded copy say the same
                seen.add(problem)
                report_violation(f"{where} '{args.name}' ({path}) {problem}", None)


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
        },
        "allowedHomePorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            "default": list(DEFAULT_ALLOWED_HOME_PORTS),
            "description": "Ports on the GitLab host a forwarding may land on (2375/2376 never are)",
        },
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
        description="Runner jobs are privileged only on protected-only runners, get the docker socket only when "
        "explicitly allowed, and never get host paths, capabilities, devices, host namespaces or unconfined "
        "seccomp/AppArmor.",
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
        description="Every NAT rule, in whatever resource, forwards only allowlisted ports to allowlisted ports on a "
        "host behind the tunnel, never an admin SSH port or the docker API.",
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
        name="gitlab-client-addresses",
        description="Warns when GitLab cannot tell its clients apart: forwarded connections source-NATed (snat "
        "mode), or a gitlab.rb that trusts or allow-lists more than loopback or switches the login ban off.",
        validate=gitlab_client_addresses,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    ResourceValidationPolicy(
        name="tunnel-segmentation-kept",
        description="No resource removes or flushes the tunnel's segmentation table, and no rule in it accepts "
        "from every tunnel peer.",
        validate=tunnel_segmentation_kept,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="secrets-not-plaintext",
        description="Secret material (passwords, tokens, private keys) never sits in a plain-text input or on a "
        "command line.",
        validate=secrets_not_plaintext,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
]
