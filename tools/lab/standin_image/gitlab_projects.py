"""Projects, their Git repositories, SSH keys, uploads and instance CI variables of the GitLab stand-in.

Served by gitlab_api.py (the calls and their scopes are in its docstring); stored as GitLab
stores them, so gitlab_backup.py backs them up from the same places:

* repositories: bare Git repositories in hashed storage,
  ``/var/opt/gitlab/git-data/repositories/@hashed/<h[0:2]>/<h[2:4]>/<h>.git`` (``h`` the
  SHA-256 of the project id), owned by ``git``; served over SSH by gitlab-shell (below);
* SSH keys: root's, in the state; ``/var/opt/gitlab/.ssh/authorized_keys`` (git, 0600) gets
  one line per key, ``command="<gitlab-shell> key-<id>",no-port-forwarding,...`` as
  GitLab writes it, rewritten on every change and by a restore;
* uploads: ``/var/opt/gitlab/gitlab-rails/uploads/@hashed/<h[0:2]>/<h[2:4]>/<h>/<secret>/<name>``;
* instance CI variables: the value encrypted under db_key_base (gitlab_secrets.py); one
  that cannot be decrypted answers 500, as GitLab does.

gitlab-shell (``/opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell key-<id>``, run
by sshd as ``git``) asks the backend ``POST /api/v4/internal/allowed`` (with the shell
secret, ``/var/opt/gitlab/gitlab-rails/etc/gitlab_shell_secret``) and runs git-upload-pack
or git-receive-pack on the repository: so SSH Git, as on GitLab, needs puma up.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from tools.lab.standin_image import gitlab_db as db
    from tools.lab.standin_image import gitlab_secrets as gs
else:
    import gitlab_db as db
    import gitlab_secrets as gs

DATA = Path("/var/opt/gitlab")
REPOSITORIES = DATA / "git-data" / "repositories"
UPLOADS = DATA / "gitlab-rails" / "uploads"
AUTHORIZED_KEYS = DATA / ".ssh" / "authorized_keys"
SHELL = "/opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell"
SHELL_SECRET = DATA / "gitlab-rails" / "etc" / "gitlab_shell_secret"
INTERNAL_URL = "http://127.0.0.1:8080/api/v4/internal/allowed"
GIT_COMMANDS = {"git-upload-pack": "download", "git-upload-archive": "download", "git-receive-pack": "push"}
_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+")
_VAR_KEY = re.compile(r"[A-Za-z0-9_]{1,255}")
NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."

Json = dict[str, Any]


def disk_hash(project_id: int) -> str:
    return hashlib.sha256(str(project_id).encode()).hexdigest()


def hashed(project_id: int) -> str:
    h = disk_hash(project_id)
    return f"@hashed/{h[:2]}/{h[2:4]}/{h}"


def repository(project_id: int) -> Path:
    return REPOSITORIES / f"{hashed(project_id)}.git"


def chown_git(path: Path) -> None:
    subprocess.run(["chown", "-R", "git:git", str(path)], check=True)


def init_repository(project_id: int) -> Path:
    path = repository(project_id)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(path)], check=True)
        chown_git(REPOSITORIES)
    return path


# --------------------------------------------------------------------------- projects


def projects(state: Json) -> dict[str, Json]:
    """Every project by id (text): the fixed forgeway-lab/app (gitlab_db.PROJECTS) and those made by the API."""
    made = state.setdefault("projects", {})
    return {**{str(k): v for k, v in db.PROJECTS.items()}, **made}


def find_project(state: Json, ident: str) -> Json:
    ident = unquote(ident)
    for project in projects(state).values():
        if ident in (str(project["id"]), project["path_with_namespace"]):
            return project
    raise db.not_found("Project")


def project_view(project: Json, host: str) -> Json:
    full = project["path_with_namespace"]
    namespace = full.rsplit("/", 1)[0]
    empty = (
        not any((repository(project["id"]) / "refs" / "heads").rglob("*"))
        and not (repository(project["id"]) / "packed-refs").exists()
    )
    return {
        "id": project["id"], "name": project["name"], "path": project["path"], "path_with_namespace": full,
        "name_with_namespace": project["name_with_namespace"], "description": project.get("description"),
        "visibility": project.get("visibility", "private"), "default_branch": None if empty else "main",
        "empty_repo": empty, "created_at": project.get("created_at", "2024-01-01T00:00:00.000Z"),
        "ssh_url_to_repo": f"git@{host}:{full}.git", "http_url_to_repo": f"https://{host}/{full}.git",
        "web_url": f"https://{host}/{full}",
        "namespace": {"id": project.get("namespace_id", 1), "name": namespace, "path": namespace,
                      "kind": "user" if namespace == "root" else "group", "full_path": namespace},
    }  # fmt: skip


def create_project(state: Json, params: Json, host: str) -> Json:
    name = str(params.get("name") or params.get("path") or "").strip()
    if not name:
        raise db.bad_request("name, path are missing, at least one parameter must be provided")
    path = str(params.get("path") or re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-"))
    namespace, namespace_name = "root", "Administrator"
    if str(params.get("namespace_id", "")) in ("1", "forgeway-lab"):
        namespace, namespace_name = "forgeway-lab", "forgeway-lab"
    full = f"{namespace}/{path}"
    if any(p["path_with_namespace"] == full for p in projects(state).values()):
        raise db.bad_request({"name": ["has already been taken"], "path": ["has already been taken"]})
    ident = max([1, *(int(k) for k in projects(state))]) + 1
    project = {
        "id": ident, "name": name, "path": path, "path_with_namespace": full,
        "name_with_namespace": f"{namespace_name} / {name}", "description": params.get("description"),
        "visibility": params.get("visibility", "private"), "created_at": db.now(),
        "namespace_id": 1 if namespace == "forgeway-lab" else 2,
    }  # fmt: skip
    state["projects"][str(ident)] = project
    init_repository(ident)
    return project_view(project, host)


# --------------------------------------------------------------------------- SSH keys


def write_authorized_keys(state: Json) -> None:
    """/var/opt/gitlab/.ssh/authorized_keys from root's keys, as GitLab keeps it (git, 0600)."""
    AUTHORIZED_KEYS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = [
        f'command="{SHELL} key-{k["id"]}",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty {k["key"]}'
        for k in state.get("keys", [])
    ]
    partial = AUTHORIZED_KEYS.with_name(".authorized_keys.new")
    partial.write_text("".join(f"{line}\n" for line in lines))
    partial.chmod(0o600)
    os.replace(partial, AUTHORIZED_KEYS)
    subprocess.run(["chown", "-R", "git:git", str(AUTHORIZED_KEYS.parent)], check=True)


def add_key(state: Json, params: Json) -> Json:
    text = " ".join(str(params.get("key", "")).split())
    match = _KEY.match(text)
    if not params.get("title") or match is None:
        raise db.bad_request({"key": ["is invalid"]} if params.get("title") else "title is missing")
    keys = state.setdefault("keys", [])
    if any(k["key"].split()[:2] == match.group(0).split()[:2] for k in keys):
        raise db.bad_request({"key": ["has already been taken"], "fingerprint_sha256": ["has already been taken"]})
    key = {
        "id": db.next_id_of(state, "key"), "title": params["title"], "key": text, "created_at": db.now(),
        "expires_at": params.get("expires_at"), "usage_type": params.get("usage_type", "auth_and_signing"),
    }  # fmt: skip
    keys.append(key)
    write_authorized_keys(state)
    return key


# --------------------------------------------------------------------------- uploads


def upload(state: Json, project: Json, params: Json) -> Json:
    file = params.get("file")
    if not isinstance(file, dict):
        raise db.bad_request("file is missing")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(file["filename"])) or "file"
    secret = secrets.token_hex(16)
    target = UPLOADS / hashed(project["id"]) / secret / name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.partial")
    partial.write_bytes(file["content"])
    os.replace(partial, target)  # whole or absent: a backup never sees half of it
    ident = db.next_id_of(state, "upload")
    state.setdefault("uploads", []).append(
        {"id": ident, "project_id": project["id"], "secret": secret, "filename": name, "size": len(file["content"])}
    )
    alt = name.rsplit(".", 1)[0]
    url = f"/uploads/{secret}/{name}"
    markdown = (
        f"![{alt}]({url})"
        if mimetypes.guess_type(name)[0] in ("image/png", "image/jpeg", "image/gif")
        else (f"[{name}]({url})")
    )
    return {"id": ident, "alt": alt, "url": url, "full_path": f"/-/project/{project['id']}/uploads/{secret}/{name}",
            "markdown": markdown}  # fmt: skip


_WEB_UPLOAD = re.compile(
    r"^/(?:-/project/(?P<id>\d+)|(?P<full>[^/]+/[^/]+))/uploads/(?P<secret>[0-9a-f]{32})/(?P<name>[^/]+)$"
)


def web_upload(state: Json, path: str) -> tuple[bytes, str] | None:
    """The bytes and type of the upload at ``/<namespace>/<project>/uploads/<secret>/<name>`` (or /-/project/<id>)."""
    match = _WEB_UPLOAD.match(path)
    if match is None:
        return None
    try:
        project = find_project(state, match["id"] or match["full"])
    except db.ApiError:
        return None
    target = UPLOADS / hashed(project["id"]) / match["secret"] / unquote(match["name"])
    if not target.is_file():
        return None
    return target.read_bytes(), mimetypes.guess_type(target.name)[0] or "application/octet-stream"


# --------------------------------------------------------------------------- instance CI variables


def variable_view(state: Json, variable: Json, key: bytes | None) -> Json:
    try:
        value = gs.decrypt(key, variable["encrypted_value"])
    except (gs.DecryptError, ValueError) as err:
        print(f"OpenSSL::Cipher::CipherError (instance variable {variable['key']}): {err}", flush=True)
        raise db.ApiError(500) from err
    return {"key": variable["key"], "variable_type": variable["variable_type"], "value": value,
            "protected": variable["protected"], "masked": variable["masked"], "raw": variable["raw"],
            "description": variable["description"]}  # fmt: skip


def _bool(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def create_variable(state: Json, params: Json, key: bytes | None) -> Json:
    name = str(params.get("key", ""))
    if "value" not in params or not name:
        raise db.bad_request("key is missing" if not name else "value is missing")
    if not _VAR_KEY.fullmatch(name):
        raise db.bad_request({"key": ["can contain only letters, digits and '_'."]})
    variables = state.setdefault("ci_variables", {})
    if name in variables:
        raise db.bad_request({"key": [f"({name}) has already been taken"]})
    if key is None:
        raise db.ApiError(500)
    variable = {
        "key": name, "variable_type": params.get("variable_type", "env_var"),
        "protected": _bool(params.get("protected")), "masked": _bool(params.get("masked")),
        "raw": _bool(params.get("raw")), "description": params.get("description"),
        "encrypted_value": gs.encrypt(key, str(params["value"])),
    }  # fmt: skip
    variables[name] = variable
    return variable_view(state, variable, key)


def find_variable(state: Json, name: str) -> Json:
    variable = state.get("ci_variables", {}).get(unquote(name))
    if variable is None:
        raise db.not_found("Variable")
    return dict(variable)


def undecryptable(state: Json, key: bytes | None) -> list[str]:
    """The instance CI variables ``key`` cannot decrypt (gitlab:doctor:secrets)."""
    bad = []
    for name, variable in sorted(state.get("ci_variables", {}).items()):
        try:
            gs.decrypt(key, variable["encrypted_value"])
        except (gs.DecryptError, ValueError):
            bad.append(name)
    return bad


# --------------------------------------------------------------------------- gitlab-shell and its internal API


def allowed(state: Json, params: Json, shell_secret: str | None) -> Json:
    """POST /internal/allowed: may key ``key_id`` do ``action`` on ``project``; where its repository is."""
    if not shell_secret or params.get("secret_token") != shell_secret:
        raise db.ApiError(401)
    if not any(str(k["id"]) == str(params.get("key_id")) for k in state.get("keys", [])):
        raise db.ApiError(403, {"status": False, "message": "Could not find the given key"})
    try:
        project = find_project(state, str(params.get("project", "")).strip("/").removesuffix(".git"))
    except db.ApiError:
        raise db.ApiError(404, {"status": False, "message": NOT_FOUND}) from None
    path = init_repository(project["id"])
    return {
        "status": True, "gl_repository": f"project-{project['id']}", "gl_project_path": project["path_with_namespace"],
        "gl_username": "root", "repository_path": str(path),
    }  # fmt: skip


def shell(argv: list[str]) -> int:
    """gitlab-shell key-<id>: the forced command of every key line in authorized_keys."""
    key_id = argv[0].removeprefix("key-") if argv else ""
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if not original:
        print("Welcome to GitLab, @root!")
        return 0
    parts = original.split(None, 1)
    if len(parts) != 2 or parts[0] not in GIT_COMMANDS:
        print("remote: \nremote: " + "=" * 72 + "\nremote: \nremote: Disallowed command\n", file=sys.stderr)
        return 1
    command, project = parts[0], parts[1].strip().strip("'\"")
    body = json.dumps({"key_id": key_id, "project": project, "action": GIT_COMMANDS[command], "protocol": "ssh",
                       "secret_token": SHELL_SECRET.read_text().strip()}).encode()  # fmt: skip
    request = urllib.request.Request(INTERNAL_URL, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (a fixed local URL)
            repository_path = json.loads(answer.read())["repository_path"]
    except urllib.error.HTTPError as err:
        message = json.loads(err.read() or b"{}").get("message", NOT_FOUND)
        rule = "remote: " + "=" * 72
        print(f"remote: \n{rule}\nremote: \nremote: {message}\nremote: \n{rule}\nremote: ", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"remote: \nremote: ERROR: Internal API unreachable ({err})\n", file=sys.stderr)
        return 1
    os.execvp(command, [command, repository_path])  # noqa: S606 (GitLab's own git commands)


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
