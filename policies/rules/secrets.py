"""Secrets are never plain values (9): secret material in plain-text inputs and command
lines, decoded where it is encoded."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from ._props import _COMMAND_LINES, REMOTE_TYPES, _is_map, _is_seq, _kind, _text
from .decoding import decoded_texts

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
# A setting that describes a secret instead of holding it (gitlab-api-token.rb's TOKEN_NAME,
# TOKEN_SCOPES, TOKEN_DAYS: the token's name, scopes and lifetime).
_DESCRIBES_A_SECRET = re.compile(r"_(?:name|scopes|days)$", re.IGNORECASE)
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


# NAME_FILE=/absolute/path: the docker-secrets convention (Gitea's GITEA__s__KEY__FILE,
# POSTGRES_PASSWORD_FILE) of a variable naming the file its secret is read from.
_FILE_PATH = re.compile(r"/[A-Za-z0-9_./-]+")


def _names_a_file(name: str, value: str) -> bool:
    return name.upper().endswith("_FILE") and bool(_FILE_PATH.fullmatch(value.strip()))


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
            if not _DESCRIBES_A_SECRET.search(match.group(1)):
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
            if _names_a_file(assignment.group(1), assignment.group(2)):
                return  # NAME_FILE=/path: where the secret is read from, not the secret (Gitea's __FILE)
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
