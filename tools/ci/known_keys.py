"""Regenerate components/render/known_keys/: the keys the real programs know, from their source.

forgeway's stand-ins accept whatever forgeway renders, so the rendered files are checked
(tests/unit/test_known_keys.py) against key lists taken from each program's own source at the
pinned version. This script makes those lists: key names only, never the sources' text.

    python -m tools.ci.known_keys gitlab-rb   OMNIBUS_GIT_DIR  18.5.1+ce.0
    python -m tools.ci.known_keys runner-toml RUNNER_GIT_DIR   v18.5.0
    python -m tools.ci.known_keys daemon-json MOBY_GIT_DIR     v20.10.24

Each reads ``git show REF:PATH`` from a clone (or bare mirror) of the program's repository
and writes ``components/render/known_keys/<kind>-<version>.txt`` whose header names the
repository, ref, commit and paths.

Key forms (one per line, ``#`` lines are the header):

* gitlab.rb: ``external_url``, ``nginx['listen_port']``, ``patroni['postgresql']['x']``, and
  ``attr['hash']['sub']`` for each key of a hash the template shows with identifier keys.
* config.toml and daemon.json: dotted paths (``runners.docker.image``); arrays of tables and
  lists of objects are transparent (``default-address-pools.base``). A key with children
  listed is a table whose keys are all known; one without is a free-form map or a value.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GoStruct",
    "gitlab_rb_keys",
    "go_case_strings",
    "go_keys",
    "go_string_consts",
    "go_structs",
    "main",
]

OUT_DIR = Path(__file__).resolve().parent.parent.parent / "components" / "render" / "known_keys"

# ---------------------------------------------------------------- gitlab.rb.template

# `# nginx['listen_port'] = nil`, `#gitlab_rails['env'] = {`, `# patroni['postgresql']['x'] = 8`
_ATTR = re.compile(r"^#? ?([a-z][a-z0-9_]*)((?:\['[A-Za-z0-9_]+'\])+)\s*=")
# `# registry_external_url 'https://...'`, `# roles ['...']`: top-level methods of gitlab.rb
_METHOD = re.compile(r"^#? ?([a-z][a-z_]*) (?:['\"]|\[')")
# a hash literal's key at its first level: `#   'enabled' => false,`
_HASH_KEY = re.compile(r"^#\s*['\"]([^'\"]+)['\"]\s*=>")
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
# The template's "Registry NGINX" section: "All the settings defined in the "GitLab Nginx"
# section are also available in this ... section, using the key `registry_nginx`."
_NGINX_ALIAS = re.compile(r'All the settings defined in the "GitLab Nginx" section.*?using the key `([a-z_]+)`', re.S)


def gitlab_rb_keys(template: str) -> set[str]:
    """Every attribute and top-level setting the template names (commented or not)."""
    keys: set[str] = set()
    lines = template.splitlines()
    for i, line in enumerate(lines):
        attr = _ATTR.match(line)
        if attr:
            key = attr.group(1) + attr.group(2)
            keys.add(key)
            if line.rstrip().endswith("{"):
                keys |= {f"{key}['{sub}']" for sub in _hash_keys(lines[i + 1 :])}
            continue
        method = _METHOD.match(line)
        if method:
            keys.add(method.group(1))
    for alias in _NGINX_ALIAS.findall(template.replace("\n##! ", " ")):
        keys |= {alias + k[len("nginx") :] for k in keys if k.startswith("nginx[")}
    return keys


def _hash_keys(following: Sequence[str]) -> list[str]:
    """First-level keys of a commented hash literal, if all are identifiers (a schema);
    none for free-form maps (environment variables, HTTP headers)."""
    depth, found = 1, []
    for line in following:
        if not line.startswith("#"):
            break
        if depth == 1:
            key = _HASH_KEY.match(line)
            if key:
                found.append(key.group(1))
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
        if depth <= 0:
            break
    return found if found and all(_IDENTIFIER.match(k) for k in found) else []


# ---------------------------------------------------------------- Go struct tags


@dataclass(frozen=True)
class GoField:
    name: str  # "" for an embedded field
    type: str  # as written: *DockerConfig, []*RunnerConfig, registry.ServiceOptions
    tag: str  # the struct tag, without backticks


@dataclass(frozen=True)
class GoStruct:
    package: str
    fields: tuple[GoField, ...]


# Embedded types that hold no configuration (a lock beside the fields).
_KEYLESS = frozenset({"sync.Mutex", "sync.RWMutex"})
_TYPE_START = re.compile(r"^type (\w+) struct \{\s*$")
_TAG_PART = re.compile(r'(\w+):"((?:[^"\\]|\\.)*)"')


def go_structs(source: str) -> dict[str, GoStruct]:
    """The top-level struct types of one Go file, by name (fields one per line, as gofmt writes)."""
    package = re.search(r"^package (\w+)", source, re.M)
    pkg = package.group(1) if package else ""
    structs: dict[str, GoStruct] = {}
    lines = iter(source.splitlines())
    for line in lines:
        start = _TYPE_START.match(line)
        if not start:
            continue
        fields: list[GoField] = []
        depth = 0
        for body in lines:
            if depth == 0 and body.startswith("}"):
                break
            text = body.strip()
            if depth > 0 or not text or text.startswith("//"):
                depth += text.count("{") - text.count("}") if depth > 0 else 0
                continue
            pre, tick, rest = text.partition("`")
            tag = rest.rpartition("`")[0] if tick else ""
            pre = pre.split("//")[0].strip()
            if pre.endswith("{"):  # an inline struct: a value we do not descend into
                depth = 1
            words = pre.split(None, 1)
            if len(words) == 1:
                fields.append(GoField("", words[0], tag))
            elif words:
                for name in words[0].rstrip(",").split(","):
                    fields.append(GoField(name.strip(), words[1], tag))
        structs[start.group(1)] = GoStruct(pkg, tuple(fields))
    return structs


def _tag_name(tag: str, key: str) -> str | None:
    """The name a struct tag gives for encoding ``key``; None when absent."""
    parts: list[tuple[str, str]] = _TAG_PART.findall(tag)
    for k, v in parts:
        if k == key:
            return v.split(",")[0]
    return None


def _element(go_type: str) -> str:
    """The struct a field's value holds: pointers, slices and arrays are transparent."""
    t = go_type.strip()
    while True:
        if t.startswith("*"):
            t = t[1:]
        elif t.startswith("[]"):
            t = t[2:]
        elif t.startswith("[") and "]" in t:
            t = t.split("]", 1)[1]
        else:
            return t


def go_keys(
    structs: Mapping[str, Mapping[str, GoStruct]],
    root: tuple[str, str],
    encoding: str,
    substitutes: Mapping[str, tuple[str, str]] | None = None,
) -> set[str]:
    """Dotted key paths a Go decoder (``encoding``: json or toml) reads into ``root`` (package, type).

    ``structs`` maps package name to its structs. Embedded fields without a tag name are
    flattened (encoding/json and BurntSushi/toml both do); untagged fields use the Go name;
    ``-`` and unexported fields are skipped. ``substitutes`` names the struct a type decodes as
    when it has its own UnmarshalJSON (docker's PoolsOpt reads a list of NetworkToSplit)."""
    substitutes = substitutes or {}
    keys: set[str] = set()

    def lookup(package: str, go_type: str) -> tuple[str, str] | None:
        name = _element(go_type)
        if name in substitutes:
            return substitutes[name]
        pkg, _, short = name.rpartition(".")
        pkg = pkg or package
        return (pkg, short) if short in structs.get(pkg, {}) else None

    def walk(where: tuple[str, str], prefix: str, seen: frozenset[tuple[str, str]]) -> None:
        struct = structs[where[0]][where[1]]
        for f in struct.fields:
            named = _tag_name(f.tag, encoding)
            if named == "-":
                continue
            inner = lookup(where[0], f.type)
            if not f.name and not named:
                if inner is None and _element(f.type) in _KEYLESS:
                    continue
                if inner is None:  # its keys would be missing without a word: load its file
                    raise SystemExit(f"{where[1]} embeds {f.type}, a struct in no file given")
                if inner not in seen:
                    walk(inner, prefix, seen | {inner})
                continue
            if not named and not f.name[:1].isupper():
                continue
            key = prefix + (named or f.name or _element(f.type).rpartition(".")[2])
            keys.add(key)
            if inner is not None and inner not in seen:
                walk(inner, key + ".", seen | {inner})

    walk(root, "", frozenset({root}))
    return keys


def go_case_strings(source: str, function: str, consts: Mapping[str, str]) -> set[str]:
    """The string labels of the ``case`` clauses in ``function`` (literals, or constants
    resolved through ``consts``: ``logger.AttrEnv`` -> ``env``)."""
    body = re.search(rf"^func {re.escape(function)}\(.*?^}}", source, re.M | re.S)
    if body is None:
        raise SystemExit(f"no func {function} in the source")
    found: set[str] = set()
    for labels in re.findall(r"^\s*case (.*):", body.group(0), re.M):
        for written in labels.split(","):
            label = written.strip()
            if label.startswith('"'):
                found.add(label.strip('"'))
            else:
                found.add(consts[label.rpartition(".")[2]])
    return found


def go_string_consts(source: str) -> dict[str, str]:
    """``Name = "value"`` constants of a Go file."""
    return dict(re.findall(r'^\s*(\w+)\s*(?:string\s*)?=\s*"([^"]*)"', source, re.M))


# ---------------------------------------------------------------- git and output


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _show(repo: Path, ref: str, path: str) -> str:
    return _git(repo, "show", f"{ref}:{path}")


def _write(kind: str, version: str, header: Iterable[str], keys: Iterable[str]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{kind}-{version}.txt"
    text = "".join(f"# {h}\n" for h in header) + "".join(f"{k}\n" for k in sorted(set(keys)))
    out.write_text(text)
    return out


def _header(program: str, repo_name: str, *, ref: str, commit: str, paths: Iterable[str], command: str) -> list[str]:
    return [
        f"Keys {program} knows, extracted by tools/ci/known_keys.py (names only).",
        f"source: {repo_name} at {ref} (commit {commit})",
        *(f"path: {p}" for p in paths),
        f"regenerate: python -m tools.ci.known_keys {command} <git dir> {ref}",
    ]


def _gitlab_rb(repo: Path, ref: str, version: str, repo_name: str) -> Path:
    path = "files/gitlab-config-template/gitlab.rb.template"
    commit = _git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
    header = _header("omnibus-gitlab's gitlab.rb", repo_name, ref=ref, commit=commit, paths=[path], command="gitlab-rb")
    header.append("registry_nginx, pages_nginx, mattermost_nginx also take every nginx key (the template says so)")
    return _write("gitlab_rb", version, header, gitlab_rb_keys(_show(repo, ref, path)))


def _load(repo: Path, ref: str, paths: Iterable[str]) -> dict[str, dict[str, GoStruct]]:
    by_package: dict[str, dict[str, GoStruct]] = {}
    for path in paths:
        for name, struct in go_structs(_show(repo, ref, path)).items():
            by_package.setdefault(struct.package, {})[name] = struct
    return by_package


def _runner_toml(repo: Path, ref: str, version: str, repo_name: str) -> Path:
    structs = [
        "common/config.go",
        "helpers/docker/credentials.go",  # embedded in [runners.docker]: host, tls_verify...
        "referees/referees.go",
        "common/config/runner/monitoring.go",
    ]
    flags = "helpers/featureflags/flags.go"
    commit = _git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
    keys = go_keys(_load(repo, ref, structs), ("common", "Config"), "toml")
    ff = set(re.findall(r'string = "(FF_[A-Z0-9_]+)"', _show(repo, ref, flags)))
    keys |= {f"runners.feature_flags.{name}" for name in ff}
    header = _header(
        "gitlab-runner's config.toml", repo_name, ref=ref, commit=commit, paths=[*structs, flags], command="runner-toml"
    )
    header.append("sections from the toml tags of common.Config; runners.feature_flags.* from the FF_ constants")
    return _write("runner_config_toml", version.lstrip("v"), header, keys)


# daemon.json: where each moby version keeps what dockerd (Linux) reads, and what the
# json-file log driver accepts.
_MOBY_LAYOUTS: Mapping[str, Mapping[str, Sequence[str]]] = {
    "20.10": {
        "structs": [
            "daemon/config/config.go",
            "daemon/config/config_common_unix.go",
            "daemon/config/config_unix.go",
            "daemon/config/builder.go",
            "registry/config.go",
            "vendor/github.com/docker/libnetwork/ipamutils/utils.go",
        ],
        "logopts": ["daemon/logger/jsonfilelog/jsonfilelog.go"],
    },
    "29": {
        "structs": [
            "daemon/config/config.go",
            "daemon/config/config_linux.go",
            "daemon/config/builder.go",
            "daemon/pkg/registry/config.go",
            "daemon/libnetwork/ipamutils/utils.go",
        ],
        "logopts": ["daemon/logger/jsonfilelog/jsonfilelog.go", "daemon/logger/loginfo.go"],
    },
}


def _daemon_json(repo: Path, ref: str, version: str, repo_name: str) -> Path:
    layout = _MOBY_LAYOUTS["20.10" if version.startswith("20.10") else "29"]
    commit = _git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
    structs = _load(repo, ref, layout["structs"])
    keys = go_keys(structs, ("config", "Config"), "json", {"opts.PoolsOpt": ("ipamutils", "NetworkToSplit")})
    sources = [_show(repo, ref, p) for p in layout["logopts"]]
    consts: dict[str, str] = {}
    for text in sources[1:]:
        consts.update(go_string_consts(text))
    keys |= {f"log-opts.{o}" for o in go_case_strings(sources[0], "ValidateLogOpt", consts)}
    header = _header(
        "dockerd's daemon.json (Linux)",
        repo_name,
        ref=ref,
        commit=commit,
        paths=[*layout["structs"], *layout["logopts"]],
        command="daemon-json",
    )
    header.append("json tags from config.Config; log-opts.* are the json-file driver's (ValidateLogOpt)")
    return _write("daemon_json", version, header, keys)


def main(argv: Sequence[str] | None = None) -> int:
    kinds = {"gitlab-rb": _gitlab_rb, "runner-toml": _runner_toml, "daemon-json": _daemon_json}
    names = {"gitlab-rb": "omnibus-gitlab", "runner-toml": "gitlab-runner", "daemon-json": "moby/moby"}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(kinds))
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("ref", help="the tag of the pinned version, e.g. 18.5.1+ce.0, v18.5.0, v20.10.24")
    parser.add_argument("--repo-name", help="how the header names the repository")
    args = parser.parse_args(argv)
    version = re.sub(r"^(docker-)?v", "", args.ref).split("+")[0]
    out = kinds[args.kind](args.git_dir, args.ref, version, args.repo_name or names[args.kind])
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
