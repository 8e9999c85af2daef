"""Shell scripts that run on hosts, kept as files so shellcheck and bash -n read them."""

from __future__ import annotations

import base64
import gzip
import shlex
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

__all__ = [
    "HOST_ENV",
    "LIBRARY",
    "MAX_ARGUMENT",
    "SOURCE_LINE",
    "become_command",
    "decode_staged",
    "encode_staged",
    "script",
    "script_command",
    "staged_command",
    "unstaged_command",
]

_DIR = Path(__file__).parent

# Linux's MAX_ARG_STRLEN (32 pages of 4 KiB): the longest single argument execve takes. sshd
# runs a remote command as ONE argument of `sh -c`, and become_command wraps it in another,
# so a command longer than this fails on the host with "Argument list too long".
MAX_ARGUMENT = 131072


# How a host script sources the shared library (host-files.sh, beside it in this folder).
LIBRARY = "host-files.sh"
SOURCE_LINE = '. "$(dirname "$0")/host-files.sh"'


@cache
def script(name: str) -> str:
    """A script's text as it travels to a host: the library inlined where it is sourced,
    so the script runs alone (``sh -c``, a staged file, a saved copy)."""
    text = (_DIR / name).read_text()
    if SOURCE_LINE not in text.splitlines():
        return text
    library = (_DIR / LIBRARY).read_text()
    inlined = f"# --- {LIBRARY}, inlined by components/scripts script() ---\n{library}# --- end of {LIBRARY} ---"
    return "\n".join(inlined if line == SOURCE_LINE else line for line in text.splitlines()) + "\n"


def script_command(name: str, *args: str) -> str:
    """A command line that runs a script with arguments, every value quoted.

    The script travels inline (``sh -c``) so a host needs no copy of it; it must
    not hold secrets, which go on stdin.
    """
    return shlex.join(["sh", "-c", script(name), name, *args])


# The variables host scripts read from the login session's environment: where a host
# keeps its files and how it restarts docker (a test lab gives each namespace host its
# own, by sshd SetEnv), and which docker daemon the scripts ask (docker's own variable;
# the docker provider's `docker system dial-stdio` reads it too). sudo's env_reset
# drops them, so become_command hands on those that are set.
HOST_ENV = (
    "DOCKER_HOST",
    "FORGEWAY_DOCKER_RESTART",
    "FORGEWAY_ETC",
    "FORGEWAY_RUN",
    "FORGEWAY_SYSTEMD",
    "FORGEWAY_WG_SOCKET_DIR",
)


def become_command(command: str, become: str, refused: str = "", keep: Sequence[str] = HOST_ENV) -> str:
    """``command`` (a shell command line) run as root the way ``become`` says.

    ``none``: as it is. ``sudo``: ``sudo -n -- env VAR=... sh -c COMMAND``: never asks
    for a password (a missing sudo right fails at once instead of hanging), hands stdin
    through unchanged, and sets only those of ``keep`` that the login session has set
    (``${VAR+...}``: an unset variable stays unset for the script's defaults). The
    values are expanded on the host; none is a secret, and secrets stay on stdin.
    ``refused`` is printed (stderr, exit 1) when sudo refuses first, instead of sudo's
    own "a password is required".
    """
    if become == "none":
        return command
    if become != "sudo":
        raise ValueError(f"become {become!r}: expected sudo or none")
    for name in keep:
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"{name!r} is not an environment variable name")
    env = " ".join(f'${{{name}+"{name}=${name}"}}' for name in keep)
    run = f"sudo -n -- env {env} sh -c {shlex.quote(command)}"
    if not refused:
        return run
    return f"{{ sudo -n true 2>/dev/null || {{ echo {shlex.quote(refused)} >&2; exit 1; }}; }} && {run}"


def _stage_dir(stage: str) -> str:
    return f'"${{FORGEWAY_ETC:-/etc}}/forgeway/stage/"{shlex.quote(stage)}'


def unstaged_command(stage: str, command: str) -> str:
    """``command`` (a delete), then remove what staged_command left for ``stage``."""
    return (
        f"{command} && rm -rf {_stage_dir(stage)}"
        ' && { rmdir "${FORGEWAY_ETC:-/etc}/forgeway/stage" "${FORGEWAY_ETC:-/etc}/forgeway" 2>/dev/null || true; }'
    )


def staged_command(
    stage: str, files: Mapping[str, str], entry: str, args: Sequence[str], *, pass_dir: bool = True
) -> str:
    """Ship ``files`` to the host's stage directory, then run ``entry`` (one of them) there.

    The directory is ``$FORGEWAY_ETC/forgeway/stage/<stage>`` (FORGEWAY_ETC defaults to
    /etc; the lab gives every namespace host its own) and is passed to ``entry`` after
    ``args`` (unless ``pass_dir`` is false). Files travel base64-encoded as quoted
    arguments; stdin is left for secrets or for what the entry reads.
    """
    if entry not in files:
        raise ValueError(f"entry {entry!r} is not among the staged files")
    pairs = [part for name, text in sorted(files.items()) for part in (name, encode_staged(text))]
    stage_dir = _stage_dir(stage)
    command = (
        f'd={stage_dir} && {shlex.join(["sh", "-c", script("stage.sh"), "stage.sh"])} "$d" {shlex.join(pairs)}'
        f' && sh "$d"/{shlex.quote(entry)} {shlex.join(args)}' + (' "$d"' if pass_dir else "")
    )
    # become_command quotes it once more (a few hundred bytes of sudo and env around it).
    if len(shlex.quote(command)) + 1024 > MAX_ARGUMENT:
        raise ValueError(
            f"stage {stage!r}: its command is {len(command)} bytes, and a host runs one argument of at most "
            f"{MAX_ARGUMENT} (Linux's MAX_ARG_STRLEN): stage fewer or smaller files"
        )
    return command


def encode_staged(text: str) -> str:
    """A staged file as it travels: gzip (about a quarter of a script's size, so a command
    stays far below MAX_ARGUMENT), then base64. ``mtime=0``: the same text gives the same
    command on every run, so an unchanged service does not run again."""
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()


def decode_staged(blob: str) -> str:
    """What stage.sh writes on the host for ``blob`` (``base64 -d | gzip -dc``)."""
    return gzip.decompress(base64.b64decode(blob, validate=True)).decode()
