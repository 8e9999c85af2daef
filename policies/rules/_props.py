"""What every policy reads: the resource types and labels forgeway's components use, and
readers for props (pulumi_policy's proxies: mappings and sequences, not dicts and lists)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeGuard
from urllib.parse import urlsplit

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
GITEA_VOLUME_ROLES = frozenset({"gitea-data"})  # components/gitea.py: /data (forge: gitea)
WOODPECKER_VOLUME_ROLES = frozenset({"woodpecker-data"})  # components/woodpecker.py: its server's data
GITLAB_ROLE = "gitlab"
RUNNER_ROLE = "gitlab-runner"
# What GitLab holds for a runner (its access_level, ref_protected or not_protected), and the
# logical name of the resource of the stack that makes it so: its gitlab UserRunner, or the
# local command that checked a hand-made token's runner (components/runner_registration.py).
ACCESS_LEVEL_LABEL = "forgeway.runner.access-level"
REGISTRATION_LABEL = "forgeway.runner.registration"
PROTECTED = "ref_protected"
USER_RUNNER = "gitlab:index/userRunner:UserRunner"
LOCAL_COMMAND = "command:local:Command"
DOCKER_SOCKET_LABEL = "forgeway.runner.insecure-docker-socket-in-jobs"


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
