"""`make new-stack STACK=<name>`: a stack of your own, made from the example.

``Pulumi.prod.yaml`` is the example: its ``encryptionsalt`` belongs to the published
passphrase, so ``pulumi stack init prod`` with your own passphrase is refused, and with
the published one you would deploy the example's secrets. This writes
``Pulumi.<name>.yaml`` beside ``Pulumi.yaml`` (where the CLI looks for it) with

* a fresh ``encryptionsalt`` for *your* passphrase (tools/stack/secrets.py, the CLI's
  scheme); ``pulumi stack init <name> --secrets-provider passphrase`` then uses that
  salt rather than making one (pulumi/pulumi ``pkg/secrets/passphrase/manager.go``,
  ``NewPromptingPassphraseSecretsManager``: "If we have a salt, we can just use it");
* the example's shape with ``FILL-IN`` placeholders where it has hosts, host keys and
  domains of its own; the program's config check refuses each one by key, with the
  ``pulumi config set`` that fixes it (components/config/placeholders.py, ``PLACEHOLDER``);
* one secret made here: ``backup_password``, the restic repository password (random,
  encrypted with the new salt's key), since backups are on by default and a password
  that only the device knew would die with it (docs/backup.md); nothing else secret.
  Runner tokens, which only GitLab can make, are reported missing by the same check
  with their ``pulumi config set --secret`` command; the other secrets are optional
  (the ssh-agent, or values the program generates and keeps in the state).

The passphrase comes from PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE, as
the CLI reads it, else it is asked for twice without echo; never from argv. An existing
stack file is never overwritten.

    python -m tools.stack new <name> [--example Pulumi.prod.yaml] [--dir DIR]
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.config import PLACEHOLDER, PROJECT, SECRET_KEYS
from tools.stack.configs import EXAMPLE_PASSPHRASE, ROOT
from tools.stack.secrets import (
    NO_PASSPHRASE,
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    encrypt,
    new_encryption_salt,
    read_passphrase,
)

__all__ = ["main", "new_stack_text", "placeholder_config"]

EXAMPLE = "Pulumi.prod.yaml"
STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Prompt = Callable[[str], str]


def _holds_secure(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"secure"} or any(_holds_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_secure(v) for v in value)
    return False


def _placeholder(what: str) -> str:
    return f"{PLACEHOLDER}: {what}"


def _host(index: int, host: Mapping[str, Any]) -> dict[str, Any]:
    """A host of the example with what only the example's machine has replaced."""
    name = host.get("name", f"hosts[{index}]")
    out = dict(host)
    out["address"] = _placeholder(f"the address or DNS name {name} is reached at over SSH")
    if "host_key" in out:
        out["host_key"] = _placeholder(f"{name}'s SSH host key (ssh-keyscan -t ed25519)")
    if "public_address" in out:
        out["public_address"] = _placeholder("the VPS's public DNS name or address")
    if isinstance(out.get("proxy"), dict):
        out["proxy"] = {
            k: _placeholder(f"your proxy's URL, or delete hosts[{index}].proxy") if k.endswith("_proxy") else v
            for k, v in out["proxy"].items()
        }
    return out


_DOMAINS = {
    f"{PROJECT}:gitlab": "GitLab's DNS name (it points at the VPS)",
    f"{PROJECT}:registry": "the registry's DNS name, or delete it to use GitLab's",
}


def _section(key: str, value: Any) -> Any:
    if key == f"{PROJECT}:hosts" and isinstance(value, list):
        return [_host(i, h) if isinstance(h, dict) else h for i, h in enumerate(value)]
    if key in _DOMAINS and isinstance(value, dict) and "domain" in value:
        return {**value, "domain": _placeholder(_DOMAINS[key])}
    return value


def placeholder_config(example: Mapping[str, Any]) -> dict[str, Any]:
    """The example's config with its secrets left out and FILL-IN where its own hosts,
    host keys and domains were."""
    secret_keys = {f"{PROJECT}:{k}" for k in SECRET_KEYS}
    return {
        key: _section(key, value)
        for key, value in (example.get("config") or {}).items()
        if key not in secret_keys and not _holds_secure(value)
    }


def _runner_names(config: Mapping[str, Any]) -> list[str]:
    hosts = config.get(f"{PROJECT}:hosts") or []
    return [h["name"] for h in hosts if isinstance(h, dict) and "runner" in (h.get("roles") or [])]


def _header(name: str, example: str, runners: Sequence[str]) -> str:
    token_lines = [
        f"#     pulumi config set --secret --path '{PROJECT}:runner_tokens.{r}' <glrt-token>" for r in runners
    ]
    lines = [
        f"# Stack {name} of forgeway, made by `make new-stack STACK={name}` (tools/stack/new.py) from",
        f"# {example}, the example. The encryptionsalt below is this stack's own, for your",
        "# passphrase; nothing secret was copied from the example.",
        "#",
        f"# Before `pulumi preview` (`make preview STACK={name}` lists what is left):",
        f"# - every {PLACEHOLDER} value: pulumi config set --path '<key>' <value> (or edit this file);",
        "# Runners are created through GitLab's API by `pulumi up` itself. Only for a runner made",
        "# by hand in GitLab (checked against its API before deploy; docs/runners.md, 'Tokens'):",
        *token_lines,
        f"# {PROJECT}:backup_password is a fresh random restic password, made here: keep a copy off the",
        f"# device (`pulumi config get {PROJECT}:backup_password`, into your password manager).",
        "# Optional secrets, not set here: ssh_private_key (default: your ssh-agent);",
        "# gitlab_root_password, wireguard_private_keys, ca_private_key (default: generated by",
        "# the program and kept encrypted in the stack's state).",
    ]
    return "\n".join(lines) + "\n"


def new_stack_text(name: str, example_text: str, passphrase: str, example: str = EXAMPLE) -> str:
    """The new stack file's text (the salt is fresh on every call)."""
    doc = yaml.safe_load(example_text) or {}
    config = placeholder_config(doc)
    salt, key = new_encryption_salt(passphrase)
    # Generated, not copied: backups are on by default and need it (docs/backup.md).
    config[f"{PROJECT}:backup_password"] = {"secure": encrypt(key, secrets.token_urlsafe(32))}
    body = yaml.safe_dump(
        {"encryptionsalt": salt, "config": config}, sort_keys=False, default_flow_style=None, width=1000
    )
    text = _header(name, example, _runner_names(config)) + body
    if yaml.safe_load(text) != {"encryptionsalt": salt, "config": config}:  # the header is only comments
        raise ValueError("the new stack file does not read back as written")
    return text


def _passphrase(environ: Mapping[str, str], interactive: bool, prompt: Prompt) -> str:
    if PASSPHRASE_ENV in environ or environ.get(PASSPHRASE_FILE_ENV):
        phrase = read_passphrase(environ)
    elif interactive:
        phrase = prompt("Passphrase for the new stack (it protects its secrets): ")
        if prompt("The passphrase again: ") != phrase:
            raise ValueError("the two passphrases differ; nothing was written")
    else:
        raise ValueError(f"{NO_PASSPHRASE}, or run this in a terminal to be asked for it")
    if not phrase:
        raise ValueError("the passphrase is empty: it would protect nothing; choose one")
    if phrase == EXAMPLE_PASSPHRASE:
        raise ValueError("that is the example stack's published passphrase (README); choose your own")
    return phrase


def new_stack(
    name: str,
    project_dir: Path,
    example: str,
    *,
    environ: Mapping[str, str],
    interactive: bool,
    prompt: Prompt = getpass.getpass,
) -> Path:
    if not STACK_NAME.fullmatch(name):
        raise ValueError(f"stack name {name!r}: letters, digits, '.', '_' and '-' (first a letter or digit)")
    if not (project_dir / "Pulumi.yaml").is_file():
        raise ValueError(f"{project_dir} has no Pulumi.yaml: run this in the forgeway project")
    path = project_dir / f"Pulumi.{name}.yaml"
    if path.exists():
        if path.name == example:
            raise ValueError(
                f"{path.name} is the committed example (its passphrase is published): "
                "pick another name, e.g. make new-stack STACK=home"
            )
        raise ValueError(
            f"{path.name} exists and is never overwritten (its secrets would be lost): "
            "pick another name, or remove it yourself to start over"
        )
    example_path = project_dir / example
    try:
        example_text = example_path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{example_path}: {err.strerror}") from None
    text = new_stack_text(name, example_text, _passphrase(environ, interactive, prompt), example)
    try:
        with path.open("x", encoding="utf-8") as out:  # "x": never clobber one made meanwhile
            out.write(text)
    except FileExistsError:
        raise ValueError(f"{path.name} appeared meanwhile; it is never overwritten") from None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack", description="A stack of your own, made from the example."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="write Pulumi.<name>.yaml from the example, for your passphrase")
    new.add_argument("name", help="the stack's name (not prod: that is the example)")
    new.add_argument("--example", default=EXAMPLE, help=f"the stack file to start from (default: {EXAMPLE})")
    new.add_argument("--dir", type=Path, default=ROOT, help="the project directory (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        path = new_stack(args.name, args.dir, args.example, environ=os.environ, interactive=sys.stdin.isatty())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} (no secret but a fresh backup_password; placeholders marked {PLACEHOLDER})")
    print("next (README, 'Deploy for real'):")
    print(f"  pulumi stack init {args.name} --secrets-provider passphrase   # uses this file's salt")
    print(f"  make preview STACK={args.name}   # lists every key still to fill, then the offline plan")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
