"""Runner jobs isolated from their host (4), the reading: what a parsed ``[[runners]]``
entry of config.toml lets its jobs do. ``runners`` finds the entries and reports."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._props import ACCESS_LEVEL_LABEL, DOCKER_SOCKET_LABEL, PROTECTED, ROLE_LABEL, _is_map, _is_seq, _true

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
                f"set privileged = false, or have GitLab hold the runner protected: create it through the API "
                f"with access_level {PROTECTED} (stack config runner.protected: true) and label its gitlab-runner "
                f"container {ACCESS_LEVEL_LABEL}={PROTECTED}",
                gate=ACCESS_LEVEL_LABEL,
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
