"""Runner jobs isolated from their host (4), the finding: every runner config.toml and
``gitlab-runner register`` a resource ships; and runner containers drain their jobs on a
replace (10). What an entry lets its jobs do is read in ``runner_config``."""

from __future__ import annotations

import posixpath
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from ._props import (
    _COMMAND_LINES,
    ACCESS_LEVEL_LABEL,
    CONTAINER,
    COPY_FILE,
    COPY_TO_REMOTE,
    DOCKER_SOCKET_LABEL,
    LOCAL_COMMAND,
    PROTECTED,
    REGISTRATION_LABEL,
    REMOTE_TYPES,
    ROLE_LABEL,
    RUNNER_ROLE,
    RUNNER_STOP_SIGNAL,
    USER_RUNNER,
    VOLUME,
    _is_map,
    _is_seq,
    _kind,
    _labels,
    _number,
    _provider_address,
    _strings,
    _text,
    _texts,
    _true,
)
from .decoding import _with_decoded
from .runner_config import _RUNNER_TABLE, _folded, _folded_strings, job_isolation_problems


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


def _gate_open(labels: Mapping[str, str], label: str) -> bool:
    value = labels.get(label)
    return value == PROTECTED if label == ACCESS_LEVEL_LABEL else _true(value)


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
        """True if every runner container on the host declares label=true (the access level:
        ref_protected), None if unknowable yet."""
        if None in undecided or address in undecided:
            return None
        found = declarations.get(address or "", [])
        return bool(found) and all(_gate_open(labels, label) for labels in found)

    for r in args.resources:
        try:
            _check_runner_configs(r, declared, role_volumes, report_violation)
        except UnknownValueError:
            continue  # unknown during preview: checked when the update knows it


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


# --- 4b. what GitLab holds: privileged and socket runners are protected there --------


def _guarantor_problem(by_name: Mapping[str, Any], name: str) -> str | None:
    """Why the resource a runner container names does not make GitLab hold it ref_protected."""
    r = by_name.get(name)
    if r is None:
        return f"names '{name}' as its registration, which is not in the stack"
    if r.resource_type == USER_RUNNER:
        level = r.props.get("accessLevel")
        return None if level == PROTECTED else f"is created by UserRunner '{name}' with access_level {level!r}"
    if r.resource_type == LOCAL_COMMAND:
        env = r.props.get("environment")
        wanted = env.get("FORGEWAY_REQUIRE_PROTECTED") if _is_map(env) else None
        return None if wanted == "true" else f"has its hand token checked by '{name}' without requiring ref_protected"
    return f"names '{name}' ({_kind(r.resource_type)}), neither a gitlab UserRunner nor a token check"


def runner_protected_by_gitlab(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """A runner container whose config.toml runs privileged jobs or hands jobs the docker
    socket (or that says ref_protected) rests on a resource that makes GitLab hold it
    ref_protected: a gitlab UserRunner with access_level ref_protected, or, for a hand-made
    token, the local command that checks the runner's access_level in GitLab's API before the
    container (FORGEWAY_REQUIRE_PROTECTED=true). A label of our own is not enough: with
    authentication tokens GitLab alone decides which jobs a runner gets."""
    by_name = {r.name: r for r in args.resources}
    for r in args.resources:
        if r.resource_type != CONTAINER:
            continue
        try:
            labels = _labels(r.props)
            if labels.get(ROLE_LABEL) != RUNNER_ROLE:
                continue
            dangerous = [
                problem.what
                for _, document, _ in runner_documents(r)
                for runner in _runner_entries(document or {})
                for problem in job_isolation_problems(runner)
                if problem.gate in (ACCESS_LEVEL_LABEL, DOCKER_SOCKET_LABEL)
            ]
            if not dangerous and labels.get(ACCESS_LEVEL_LABEL) != PROTECTED:
                continue
            reason = "; ".join(dangerous) or f"is labelled {ACCESS_LEVEL_LABEL}={PROTECTED}"
            name = labels.get(REGISTRATION_LABEL, "")
            problem = _guarantor_problem(by_name, name) if name else f"has no {REGISTRATION_LABEL} label"
            if problem is not None:
                report_violation(
                    f"runner container '{r.name}' {reason}, so GitLab must hold its runner ref_protected, but it "
                    f"{problem}: create the runner through the API (a runner host without runner_tokens, with "
                    "runner.protected: true), or have the hand token checked against GitLab's API",
                    r.urn,
                )
        except UnknownValueError:
            continue  # unknown during preview: checked when the update knows it
