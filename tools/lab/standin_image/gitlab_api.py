#!/usr/bin/python3
"""GitLab's REST API, the part forgeway uses, in the lab image forgeway-lab/gitlab-standin.

One file, copied into the image under several names (tools/lab/images.py), which pick
what it does:

* ``/opt/gitlab/embedded/service/gitlab-rails/api.py serve``: the backend (omnibus's puma,
  started by the wrapper as service ``puma``) on 127.0.0.1:8080; nginx proxies
  ``/api/v4/`` and ``/-/health`` to it over the container's TLS, as omnibus does.
* ``/opt/gitlab/bin/gitlab-rails`` (and ``/usr/bin/gitlab-rails``, where omnibus links
  it): ``gitlab-rails runner <FILE> create|revoke`` seeds or revokes root's personal
  access token. It does not run Ruby: it reads FILE's marker lines (the issue-17
  contract) ``TOKEN_NAME = '<name>'``, ``TOKEN_SCOPES = %w[<scopes>]``,
  ``TOKEN_DAYS = <n>``, checks FILE reads the token with ``STDIN.read`` and acts on
  ``ARGV[0]``, and takes the token on stdin (stripped). It refuses, as GitLab's model
  validations would (``Validation failed: ...``, exit 1): no or unknown scopes
  (:data:`SCOPES`), an expiry not in 1..365 days (``require_personal_access_token_expiry``
  is on by default, and 365 days is the limit on every 17.x/18.x, 400 only with the
  ``buffered_token_expiration_limit`` flag: the stand-in keeps the stricter), a value
  another token already has. Stricter than GitLab (whose ``set_token`` takes any
  string): at least 20 printable characters without spaces (the length of the random
  part of GitLab's own tokens; a header must carry it). ``create`` and ``revoke`` do
  what the contract's file (components/scripts/gitlab-api-token.rb) does on GitLab, so
  the lab meets what GitLab would: an active token with the same value and scopes is
  left alone; else every active token of that name is revoked and the new one made,
  which GitLab refuses when any token, even a revoked one, has that value (the unique
  index on ``token_digest``: ``PG::UniqueViolation``; the revocations stay); ``revoke``
  revokes every active token of that name. Like rails, which needs PostgreSQL, it fails while the backend is down
  (``PG::ConnectionBad``): wait until the container is healthy. It prints one line,
  never the token.
* ``/opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell key-<id>``: the forced
  command of authorized_keys (gitlab_projects.py).
* ``api.py sidekiq``: the wrapper's service ``sidekiq``, a process that waits (no job here
  needs it; ``gitlab-ctl stop sidekiq`` has something to stop).
* ``/opt/gitlab/bin/gitlab-standin-job`` (lab only, no GitLab counterpart; a pipeline
  would make these): ``gitlab-standin-job queue --ref REF [--protected] [--tag T]...
  [--project ID] [--seconds N] [--name NAME]`` queues a pending job and prints its id;
  ``gitlab-standin-job show ID`` prints it as JSON (``status`` pending, running, success
  or failed; ``runner_id``: the runner that took it); ``gitlab-standin-job list``, all.

The API (docs.gitlab.com/api: users, personal_access_tokens, runners; the runner API of
lib/api/ci/runner.rb). A token comes as ``PRIVATE-TOKEN``, ``Authorization: Bearer``,
or the ``private_token``/``access_token`` parameter. Unknown token: 401
``{"message": "401 Unauthorized"}``; revoked or expired: 401 ``invalid_token`` with
GitLab's description; a scope the endpoint does not allow: 403 ``insufficient_scope``
naming the scopes that would do (WWW-Authenticate too). Only user ``root`` (id 1, an
administrator) exists; group 1 ``forgeway-lab`` (project 1 ``forgeway-lab/app``, for group
and project runners) and root's own namespace ``root`` are the only namespaces (others: 404).

* ``GET /user`` (read_user, read_api, api); ``GET /personal_access_tokens/self`` (any);
  ``GET /version`` and ``/metadata`` (those or ai_features): the image's version
  (gitlab_secrets.py: ``17.11.3``; ``enterprise`` true for ``-ee``).
* ``POST /user/runners`` (create_runner, api): ``runner_type`` (instance_type,
  group_type + group_id, project_type + project_id), description, paused, locked,
  run_untagged (default true), tag_list, access_level (not_protected default,
  ref_protected), maximum_timeout (>= 600), maintenance_note; 201 ``{id, token:
  glrt-..., token_expires_at: null}``.
* ``GET /runners/all`` (manage_runner, read_api, api): the short form GitLab lists (no
  access_level: ask each ``/runners/:id``), ``type`` and ``paused`` filters, ``page``/``per_page``.
* ``GET/PUT/DELETE /runners/:id`` (GET: manage_runner, read_api, api; PUT and DELETE:
  manage_runner, api): GitLab's runner details (``active`` = not paused, ``is_shared``,
  ``groups``/``projects``); 404 ``Runner Not Found``; DELETE 204.
* ``POST /runners/verify`` and ``POST /jobs/request`` (runner token in the JSON body):
  403 for an unknown token, as GitLab. jobs/request answers 204 when nothing fits, and
  always to a paused runner; else 201 with the oldest pending job the runner may take:
  the job's project in the runner's scope, **no unprotected ref for a ref_protected
  runner**, every tag of the job in the runner's tag_list, an untagged job only to a
  run_untagged runner. ``PUT /jobs/:id`` (the job's token) sets success or failed.

The issue-18 drill's data (gitlab_projects.py; read_api allows every GET, as lib/api/api.rb):

* ``POST /projects`` (api): ``name`` (``path`` defaults to it, lower case), ``visibility``
  (private default), ``namespace_id`` (1: forgeway-lab; default root's); 201 GitLab's
  project: ``id``, ``path_with_namespace`` ``root/<path>``, ``ssh_url_to_repo``
  ``git@<host>:root/<path>.git``, ``http_url_to_repo``, ``web_url``, ``namespace``,
  ``empty_repo``; 400 when the path is taken. ``GET /projects``, ``GET /projects/:id``
  (id or URL-encoded path; api, read_api).
* ``POST /user/keys`` (api): ``title``, ``key`` (an OpenSSH public key), ``expires_at``,
  ``usage_type``; 201 ``{id, title, key, created_at, expires_at, usage_type}``; 400
  ``{"message": {"key": ["has already been taken"], ...}}``. ``GET /user/keys``. Every key
  is a line of /var/opt/gitlab/.ssh/authorized_keys running gitlab-shell, so its holder
  reaches the repositories as ``git``: ``git push ssh://git@<host>/root/<path>.git main``,
  ``git clone git@<host>:root/<path>.git`` (an unknown project: GitLab's "could not be found").
* ``POST /projects/:id/uploads`` (api), multipart field ``file``: 201 ``{id, alt, url:
  /uploads/<32 hex>/<name>, full_path: /-/project/<id>/uploads/<secret>/<name>, markdown}``;
  fetched back over HTTPS at ``/<namespace>/<project>/uploads/<secret>/<name>`` or at
  ``full_path``, with a token of any scope (the stand-in's sign-in) unless the project is
  public; else 404.
* ``POST /admin/ci/variables`` (api): ``key``, ``value``, ``variable_type`` (env_var),
  ``protected``, ``masked``, ``raw``, ``description``; 201 ``{key, variable_type, value,
  protected, masked, raw, description}``; 400 when the key is taken. ``GET
  /admin/ci/variables`` and ``GET /admin/ci/variables/:key`` (api, read_api): 200 the same;
  404 ``Variable Not Found``; **500** ``{"message": "500 Internal Server Error"}`` when the
  db_key_base puma read from /etc/gitlab/gitlab-secrets.json at its start cannot decrypt
  the value (a restore without the original secrets), as GitLab answers.
* ``POST /internal/allowed``: gitlab-shell's (the shell secret in the body), no token.

The calls, as the lab makes them (tests/lab/test_gitlab_backup_standin.py; a key's ``+``
must not reach a form unencoded: send JSON, or ``--data-urlencode``)::

    echo "$TOKEN" | docker exec -i gitlab gitlab-rails runner /etc/gitlab/forgeway/token.rb create
    curl -H "PRIVATE-TOKEN: $TOKEN" -d name=drill https://$HOST/api/v4/projects
    curl -H "PRIVATE-TOKEN: $TOKEN" -d title=lab --data-urlencode "key@id_ed25519.pub" \\
        https://$HOST/api/v4/user/keys
    git push ssh://git@$HOST/root/drill.git main
    curl -H "PRIVATE-TOKEN: $TOKEN" -F file=@notes.txt https://$HOST/api/v4/projects/2/uploads
    curl -H "PRIVATE-TOKEN: $TOKEN" https://$HOST/root/drill/uploads/<secret>/notes.txt
    curl -H "PRIVATE-TOKEN: $TOKEN" -d key=DRILL_SECRET -d value=marker https://$HOST/api/v4/admin/ci/variables
    curl -H "PRIVATE-TOKEN: $TOKEN" https://$HOST/api/v4/admin/ci/variables/DRILL_SECRET

State is one JSON file in the data volume (``/var/opt/gitlab/gitlab-rails/forgeway-
standin.json``, 0600, locked per change), as GitLab's database lives there: a new
container on the same volumes keeps tokens, runners and jobs. Tokens are kept as
SHA-256 digests, as GitLab keeps ``token_digest``. Only the standard library is used
(python3-minimal and libpython3-stdlib).

Split by concern: gitlab_db.py (the state file, token rules, API errors), gitlab_ci.py
(runners and the job queue), gitlab_projects.py (projects, repositories, keys, uploads, CI
variables, gitlab-shell), gitlab_secrets.py (version, gitlab-secrets.json, the encryption),
this file (HTTP and the command lines); the modules sit beside it in the repository and in
/opt/gitlab/embedded/service/gitlab-rails/. gitlab-backup and gitlab-rake: gitlab_backup.py;
gitlab-ctl: gitlab_ctl.py.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

SERVICE_DIR = "/opt/gitlab/embedded/service/gitlab-rails"  # gitlab_db.py and gitlab_ci.py in the image
if TYPE_CHECKING:
    from tools.lab.standin_image import gitlab_ci as ci
    from tools.lab.standin_image import gitlab_db as db
    from tools.lab.standin_image import gitlab_projects as gp
    from tools.lab.standin_image import gitlab_secrets as gs
else:  # beside this file (the repository, the backend) or in SERVICE_DIR (gitlab-rails, gitlab-standin-job)
    sys.path[:0] = [str(Path(__file__).resolve().parent), SERVICE_DIR]
    import gitlab_ci as ci
    import gitlab_db as db
    import gitlab_projects as gp
    import gitlab_secrets as gs

LISTEN = ("127.0.0.1", 8080)  # omnibus's puma port; nginx proxies to it

# --------------------------------------------------------------------------- HTTP


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(f"^/api/v4{path}$"), name)
    for method, path, name in (
        ("GET", "/user", "user"),
        ("GET", "/personal_access_tokens/self", "token_self"),
        ("GET", "/version", "version"),
        ("GET", "/metadata", "metadata"),
        ("POST", "/user/runners", "runner_create"),
        ("GET", "/runners/all", "runner_list"),
        ("GET", r"/runners/(?P<id>[^/]+)", "runner_get"),
        ("PUT", r"/runners/(?P<id>[^/]+)", "runner_put"),
        ("DELETE", r"/runners/(?P<id>[^/]+)", "runner_delete"),
        ("POST", "/runners/verify", "verify"),
        ("POST", "/jobs/request", "jobs_request"),
        ("PUT", r"/jobs/(?P<id>\d+)", "job_update"),
        ("POST", "/projects", "project_create"),
        ("GET", "/projects", "project_list"),
        ("GET", r"/projects/(?P<id>[^/]+)", "project_get"),
        ("POST", r"/projects/(?P<id>[^/]+)/uploads", "upload"),
        ("POST", "/user/keys", "key_create"),
        ("GET", "/user/keys", "key_list"),
        ("POST", "/admin/ci/variables", "variable_create"),
        ("GET", "/admin/ci/variables", "variable_list"),
        ("GET", r"/admin/ci/variables/(?P<id>[^/]+)", "variable_get"),
        ("POST", "/internal/allowed", "internal_allowed"),
    )
]
# The scopes lib/api allows per endpoint (allow_access_with_scope; api always).
READ_USER = ("api", "read_api", "read_user")
ALLOWED = {
    "user": READ_USER, "token_self": (), "version": (*READ_USER, "ai_features"),
    "metadata": (*READ_USER, "ai_features"), "runner_create": ("api", "create_runner"),
    "runner_get": ("api", "manage_runner", "read_api"), "runner_list": ("api", "manage_runner", "read_api"),
    "runner_put": ("api", "manage_runner"),
    "runner_delete": ("api", "manage_runner"),
    # lib/api/api.rb: read_api allows every GET; the rest needs api
    "project_create": ("api",), "project_list": ("api", "read_api"), "project_get": ("api", "read_api"),
    "upload": ("api",), "key_create": ("api",), "key_list": ("api", "read_api"),
    "variable_create": ("api",), "variable_list": ("api", "read_api"), "variable_get": ("api", "read_api"),
}  # fmt: skip
DB_KEY: bytes | None = None  # db_key_base's first 32 bytes, read once at start as puma reads its secrets


def handle(  # noqa: PLR0911, PLR0912 (a dispatcher: one return an endpoint)
    state: db.Json, name: str, match: re.Match[str], params: db.Json, token: str | None
) -> tuple[int, db.Json | list[db.Json] | None]:
    """One API call on ``state``: (status, JSON body or None for no content)."""
    if name == "verify":
        runner = ci.runner_by_token(state, params)
        return 200, {"id": runner["id"], "token": params["token"], "token_expires_at": None}
    if name == "jobs_request":
        runner = ci.runner_by_token(state, params)
        job = None if runner["paused"] else ci.request_job(state, runner)
        return (201, job) if job is not None else (204, None)
    if name == "job_update":
        ci.update_job(state, match["id"], params)
        return 200, None
    if name == "internal_allowed":
        return 200, gp.allowed(state, params, _shell_secret())
    pat = db.authenticate(state, token, ALLOWED[name])
    if name.startswith(("project_", "upload", "key_", "variable_")):
        return _projects_call(state, name, match, params)
    if name == "user":
        return 200, {**db.ROOT, "state": "active", "locked": False, "avatar_url": None, "web_url": "/root",
                     "created_at": "2024-01-01T00:00:00.000Z", "bot": False, "is_admin": True}  # fmt: skip
    if name == "token_self":
        return 200, db.token_view(pat)
    if name in ("version", "metadata"):
        version = gs.version()
        return 200, {"version": version, "revision": "forgeway-standin", "enterprise": gs.edition(version) == "ee"}
    if name == "runner_create":
        return 201, ci.create_runner(state, params)
    if name == "runner_list":
        return 200, ci.list_runners(state, params)
    runner = ci.find_runner(state, match["id"])
    if name == "runner_get":
        return 200, ci.runner_view(runner)
    if name == "runner_put":
        keys = ("description", "active", "paused", "tag_list", "run_untagged", "locked", "access_level",
                "maximum_timeout", "maintenance_note")  # fmt: skip
        if not any(k in params for k in keys):
            raise db.bad_request(f"{', '.join(keys)} are missing, at least one parameter must be provided")
        changed = dict(runner)
        ci.runner_settings(params, changed)
        runner.update(changed)
        return 200, ci.runner_view(runner)
    del state["runners"][match["id"]]  # runner_delete
    return 204, None


def _projects_call(  # noqa: PLR0911 (a dispatcher: one return an endpoint)
    state: db.Json, name: str, match: re.Match[str], params: db.Json
) -> tuple[int, db.Json | list[db.Json] | None]:
    """Projects, keys, uploads and instance CI variables (gitlab_projects.py)."""
    host = params.pop("__host__", "gitlab")
    if name == "project_create":
        return 201, gp.create_project(state, params, host)
    if name == "project_list":
        return 200, [gp.project_view(p, host) for _, p in sorted(gp.projects(state).items(), key=lambda kv: int(kv[0]))]
    if name == "project_get":
        return 200, gp.project_view(gp.find_project(state, match["id"]), host)
    if name == "upload":
        return 201, gp.upload(state, gp.find_project(state, match["id"]), params)
    if name == "key_create":
        return 201, gp.add_key(state, params)
    if name == "key_list":
        return 200, list(state.get("keys", []))
    if name == "variable_create":
        return 201, gp.create_variable(state, params, DB_KEY)
    if name == "variable_list":
        return 200, [gp.variable_view(state, v, DB_KEY) for _, v in sorted(state.get("ci_variables", {}).items())]
    return 200, gp.variable_view(state, gp.find_variable(state, match["id"]), DB_KEY)  # variable_get


def _shell_secret() -> str | None:
    try:
        return gp.SHELL_SECRET.read_text().strip() or None
    except OSError:
        return None


def _multipart(content_type: str, raw: bytes) -> db.Json:
    """multipart/form-data fields; a file field is {"filename", "content"}."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: db.Json = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        fields[name] = {"filename": filename, "content": content} if filename is not None else content.decode()
    return fields


class Handler(BaseHTTPRequestHandler):
    server_version = "nginx"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        # X-Forwarded-For: the client, as nginx saw it; never a query (a token may be in it)
        client = self.headers.get("X-Forwarded-For", self.client_address[0])
        sys.stdout.write(f"{client} {self.command} {urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}\n")
        sys.stdout.flush()

    def _answer(self, status: int, body: db.Json | list[db.Json] | None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _params(self, query: str) -> db.Json:
        params: db.Json = {k: v[-1] for k, v in parse_qs(query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return params
        if (self.headers.get("Content-Type") or "").startswith("multipart/form-data"):
            return {**params, **_multipart(self.headers["Content-Type"], raw)}
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise db.bad_request("the body must be a JSON object")
            return {**params, **body}
        form = parse_qs(raw.decode())
        for key, values in form.items():
            params[key.removesuffix("[]")] = values if key.endswith("[]") else values[-1]
        return params

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        if self.command == "GET" and parts.path == "/-/health":
            data = b"GitLab OK\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            if self.command == "GET" and not parts.path.startswith("/api/"):
                self._web(parts.path, parts.query)
                return
            route = next(((n, m) for meth, p, n in ROUTES if meth == self.command and (m := p.match(parts.path))), None)
            if route is None:
                raise db.ApiError(404, {"error": "404 Not Found"})
            params = self._params(parts.query)
            token = self._token(params)
            params["__host__"] = (self.headers.get("Host") or "gitlab").split(":")[0]
            with db.database() as state:
                status, body = handle(state, route[0], route[1], params, token)
        except db.ApiError as err:
            self._answer(err.status, err.body, err.headers)
            return
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            self._answer(400, {"error": "the request body is not valid"})
            return
        self._answer(status, body)

    def _token(self, params: db.Json) -> str | None:
        bearer = self.headers.get("Authorization", "")
        return (self.headers.get("PRIVATE-TOKEN") or (bearer[7:] if bearer.startswith("Bearer ") else None)
                or params.get("private_token") or params.get("access_token"))  # fmt: skip

    def _web(self, path: str, query: str) -> None:
        """An upload by its web path: a private project's needs a token (any scope), as GitLab needs a sign-in."""
        params: db.Json = {k: v[-1] for k, v in parse_qs(query).items()}
        with db.database() as state:
            found = gp.web_upload(state, path)
            project = path.split("/uploads/", 1)[0].strip("/").removeprefix("-/project/")
            if found is not None and gp.find_project(state, project).get("visibility") != "public":
                try:
                    db.authenticate(state, self._token(params), ())
                except db.ApiError:
                    found = None  # GitLab sends the anonymous to sign in; nothing of the file either way
        if found is None:
            raise db.ApiError(404, {"message": "404 Not Found"})
        data, kind = found
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch


def serve() -> int:
    global DB_KEY  # noqa: PLW0603 (read once, as puma reads secrets.yml at boot)
    DB_KEY = gs.db_key(gs.load_secrets())
    if DB_KEY is None:
        print(f"WARNING: no gitlab_rails.db_key_base in {gs.SECRETS_JSON}: encrypted values cannot be read", flush=True)
    with db.database() as state:
        gp.write_authorized_keys(state)  # the file exists (0600) before the first request
    server = ThreadingHTTPServer(LISTEN, Handler)
    server.daemon_threads = True
    print(f"forgeway GitLab API stand-in listening on {LISTEN[0]}:{LISTEN[1]}", flush=True)
    server.serve_forever()
    return 0


# --------------------------------------------------------------------------- command lines


def backend_up() -> bool:
    try:
        with socket.create_connection(LISTEN, timeout=2):
            return True
    except OSError:
        return False


def rails(argv: list[str], stdin: str) -> int:
    """``gitlab-rails runner <FILE> create|revoke``: root's token from the contract's file."""
    if len(argv) != 3 or argv[0] != "runner":
        print("usage (stand-in): gitlab-rails runner <FILE> create|revoke, the token on stdin", file=sys.stderr)
        return 1
    path, action = Path(argv[1]), argv[2]
    if not path.is_file():
        print("Please specify a valid ruby command or the path of a script to run.\n"
              f"Run 'bin/rails runner -h' for help.\n\nundefined local variable or method for {argv[1]!r}",
              file=sys.stderr)  # fmt: skip
        return 1
    if not backend_up():
        print('PG::ConnectionBad: connection to server on socket "/var/opt/gitlab/postgresql/.s.PGSQL.5432" '
              "failed: No such file or directory (the stand-in's backend is not up: wait until GitLab is healthy)",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        name, scopes, days = db.token_spec(path.read_text())
        if action not in ("create", "revoke"):
            raise db.Invalid(f"ARGV[0] must be create or revoke, not {action!r}")
    except db.Invalid as err:
        print(f"{path}: {err}", file=sys.stderr)
        return 1
    with db.database() as state:  # what a failed create revoked stays revoked, as on GitLab
        try:
            line = (
                db.seed_token(state, name, scopes, days, stdin.strip())
                if action == "create"
                else db.revoke_token(state, name)
            )
        except db.Invalid as err:
            print(f"{path}: {err}", file=sys.stderr)
            return 1
    print(line)
    return 0


def job_cli(argv: list[str]) -> int:
    """``gitlab-standin-job queue|show|list``: the lab's stand-in for pipelines."""
    import argparse

    parser = argparse.ArgumentParser(prog="gitlab-standin-job")
    sub = parser.add_subparsers(dest="command", required=True)
    queue = sub.add_parser("queue")
    queue.add_argument("--ref", required=True)
    queue.add_argument("--protected", action="store_true")
    queue.add_argument("--tag", action="append", default=[])
    queue.add_argument("--project", type=int, default=1)
    queue.add_argument("--seconds", type=float, default=1.0)
    queue.add_argument("--name", default="lab-job")
    show = sub.add_parser("show")
    show.add_argument("id")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    with db.database() as state:
        if args.command == "queue":
            try:
                job = ci.queue_job(state, args.ref, protected=args.protected, tags=args.tag, project=args.project,
                                seconds=args.seconds, name=args.name)  # fmt: skip
            except db.Invalid as err:
                print(f"gitlab-standin-job: {err}", file=sys.stderr)
                return 1
            print(job["id"])
        elif args.command == "show":
            if args.id not in state["jobs"]:
                print(f"gitlab-standin-job: no job {args.id}", file=sys.stderr)
                return 1
            print(json.dumps(ci.job_view(state["jobs"][args.id])))
        else:
            print(json.dumps([ci.job_view(j) for _, j in sorted(state["jobs"].items(), key=lambda kv: int(kv[0]))]))
    return 0


def main() -> int:
    name = Path(sys.argv[0]).name
    if name == "gitlab-rails":
        return rails(sys.argv[1:], sys.stdin.read())
    if name == "gitlab-standin-job":
        return job_cli(sys.argv[1:])
    if name == "gitlab-shell":
        return gp.shell(sys.argv[1:])
    if sys.argv[1:] == ["serve"]:
        return serve()
    if sys.argv[1:] == ["sidekiq"]:  # the wrapper's service sidekiq: no job of the stand-in's needs it
        print("sidekiq stand-in ready: no background jobs here", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        return 0
    print(f"{name}: run as gitlab-rails, gitlab-standin-job, or with 'serve'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
