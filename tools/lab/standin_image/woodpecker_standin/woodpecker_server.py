#!/usr/bin/python3
"""``woodpecker-server`` of the Woodpecker stand-in (entrypoint of forgeway-lab/woodpecker-standin).

Reads what woodpeckerci/woodpecker-server reads (docs/lab-gitea.md lists it) and does, for
the lab, what forgeway relies on:

* sign-in through Gitea's OAuth2 authorization-code flow: ``GET /login`` sends the browser to
  ``<WOODPECKER_GITEA_URL>/login/oauth/authorize`` with ``redirect_uri=<WOODPECKER_HOST>/authorize``;
  ``GET /authorize`` exchanges the code at ``/login/oauth/access_token`` with the client ID and
  secret, reads ``/api/v1/user`` and signs the user in (cookie ``user_sess``). Registration is
  closed unless ``WOODPECKER_OPEN=true``, except for the users ``WOODPECKER_ADMIN`` names, who
  are admins; Gitea's TLS is verified (the system store, ``SSL_CERT_FILE``) unless
  ``WOODPECKER_GITEA_SKIP_VERIFY=true``;
* ``POST /api/user/token`` (signed in): a personal token; ``GET /api/user``, ``GET /api/agents``
  (admin) with ``Authorization: Bearer <token>``;
* agents on ``WOODPECKER_GRPC_ADDR`` (woodpecker_common.py: the shared secret enforced);
* lab only: ``POST /api/standin/jobs`` (admin) queues a job-shaped workflow for an agent whose
  labels hold the job's; ``GET /api/standin/jobs/<id>`` its state, exit code and log.

State (users, tokens, agents, jobs) in the sqlite file ``WOODPECKER_DATABASE_DATASOURCE``
(default /var/lib/woodpecker/woodpecker.sqlite), kept across container replaces on its volume.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import sqlite3
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

if TYPE_CHECKING:
    from tools.lab.standin_image.woodpecker_standin.woodpecker_common import (
        NEXT_WAIT,
        VERSION,
        Fatal,
        Wire,
        env,
        env_value,
        listen_address,
        server_socket,
    )
else:  # beside this file, in the repository and in the image
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from woodpecker_common import NEXT_WAIT, VERSION, Fatal, Wire, env, env_value, listen_address, server_socket

SESSION_COOKIE = "user_sess"
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, login TEXT UNIQUE NOT NULL, forge_id INTEGER NOT NULL,
  email TEXT NOT NULL, admin INTEGER NOT NULL, token_hash TEXT, forge_token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (sid_hash TEXT PRIMARY KEY, uid INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS agents (id INTEGER PRIMARY KEY, name TEXT NOT NULL, platform TEXT NOT NULL,
  backend TEXT NOT NULL, capacity INTEGER NOT NULL, version TEXT NOT NULL, labels TEXT NOT NULL,
  last_contact INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
  agent_id INTEGER, exit_code INTEGER, log TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
"""


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Config:
    def __init__(self, environ: dict[str, str]) -> None:
        self.host = env_value(environ, "WOODPECKER_HOST", required=True).rstrip("/")
        if not self.host.startswith(("http://", "https://")):
            raise Fatal(f"WOODPECKER_HOST={self.host!r}: expected the server's public URL, https://...")
        if env_value(environ, "WOODPECKER_GITEA").lower() != "true":
            raise Fatal("WOODPECKER_GITEA=true is required: the stand-in knows Gitea only")
        self.gitea_url = env_value(environ, "WOODPECKER_GITEA_URL", required=True).rstrip("/")
        self.client = env_value(environ, "WOODPECKER_GITEA_CLIENT", required=True)
        self.secret = env_value(environ, "WOODPECKER_GITEA_SECRET", required=True)
        self.agent_secret = env_value(environ, "WOODPECKER_AGENT_SECRET", required=True)
        self.admins = {a.strip().lower() for a in env_value(environ, "WOODPECKER_ADMIN").split(",") if a.strip()}
        self.open = env_value(environ, "WOODPECKER_OPEN", default="false").lower() == "true"
        self.skip_verify = env_value(environ, "WOODPECKER_GITEA_SKIP_VERIFY", default="false").lower() == "true"
        self.http = listen_address(
            env_value(environ, "WOODPECKER_SERVER_ADDR", default=":8000"), "WOODPECKER_SERVER_ADDR"
        )
        # WOODPECKER_SERVER_CERT and _KEY: TLS on WOODPECKER_SERVER_ADDR_TLS (":443"), and the
        # plain address only redirects to it (cmd/server/server.go, as the real server does).
        cert, key = env_value(environ, "WOODPECKER_SERVER_CERT"), env_value(environ, "WOODPECKER_SERVER_KEY")
        if bool(cert) != bool(key):
            raise Fatal("WOODPECKER_SERVER_CERT and WOODPECKER_SERVER_KEY go together")
        self.tls_files = (cert, key) if cert else None
        self.https = listen_address(
            env_value(environ, "WOODPECKER_SERVER_ADDR_TLS", default=":443"), "WOODPECKER_SERVER_ADDR_TLS"
        )
        self.grpc = listen_address(env_value(environ, "WOODPECKER_GRPC_ADDR", default=":9000"), "WOODPECKER_GRPC_ADDR")
        self.db = Path(env_value(environ, "WOODPECKER_DATABASE_DATASOURCE",
                                 default="/var/lib/woodpecker/woodpecker.sqlite"))  # fmt: skip
        driver = env_value(environ, "WOODPECKER_DATABASE_DRIVER", default="sqlite3")
        if driver != "sqlite3":
            raise Fatal(f"WOODPECKER_DATABASE_DRIVER={driver!r}: the stand-in has sqlite3 only")

    @property
    def callback(self) -> str:
        return f"{self.host}/authorize"  # Woodpecker's, exactly: the OAuth app must have it


class State:
    """The sqlite file, one connection per use (threads), serialised by sqlite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()  # one writer of jobs' hand-out at a time
        with self.connect() as conn:
            conn.executescript(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return list(conn.execute(sql, args).fetchall())
        finally:
            conn.close()

    def run(self, sql: str, *args: object) -> int:
        conn = self.connect()
        try:
            return int(conn.execute(sql, args).lastrowid or 0)
        finally:
            conn.close()


class Reply(Exception):
    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _agent_api(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "name": row[1], "platform": row[2], "backend": row[3], "capacity": row[4],
            "version": row[5], "custom_labels": json.loads(row[6]), "last_contact": row[7], "created": row[8],
            "owner_id": -1, "org_id": -1, "no_schedule": False, "last_work": 0, "updated": row[7]}  # fmt: skip


_AGENT_COLUMNS = "id, name, platform, backend, capacity, version, labels, last_contact, created"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "woodpecker-standin"
    config: Config
    state: State
    pending_states: dict[str, float]

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"http: {self.client_address[0]} {format % args}\n")
        sys.stdout.flush()

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        text = body.encode() if isinstance(body, str) else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        ctype = "text/plain; charset=utf-8" if isinstance(body, str) else "application/json"
        for name, value in {"Content-Type": ctype, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def _user(self) -> tuple[Any, ...] | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            rows = self.state.query("SELECT id, login, admin FROM users WHERE token_hash = ?", _hash(auth[7:].strip()))
            if not rows:
                raise Reply(401, "Unauthorized")
            return rows[0]
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if SESSION_COOKIE in cookie:
            query = "SELECT u.id, u.login, u.admin FROM users u JOIN sessions s ON s.uid = u.id WHERE s.sid_hash = ?"
            rows = self.state.query(f"{query} AND s.expires > ?", _hash(cookie[SESSION_COOKIE].value), time.time())
            return rows[0] if rows else None
        return None

    def _admin(self) -> tuple[Any, ...]:
        user = self._user()
        if user is None:
            raise Reply(401, "Unauthorized")
        if not user[2]:
            raise Reply(403, "Forbidden")
        return user

    def _json(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            loaded = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            raise Reply(400, "invalid JSON") from None
        if not isinstance(loaded, dict):
            raise Reply(400, "expected a JSON object")
        return loaded

    def _handle(self) -> None:
        try:
            self._route(urlsplit(self.path).path)
        except Reply as reply:
            self._send(reply.status, reply.body, reply.headers)

    do_GET = do_POST = _handle

    def _route(self, path: str) -> None:  # noqa: PLR0912 (one branch per route)
        method = self.command
        if method == "GET" and path in ("/healthz", "/api/healthz"):
            self._send(200, None)
        elif method == "GET" and path == "/version":
            self._send(200, {"source": "https://github.com/woodpecker-ci/woodpecker", "version": VERSION})
        elif method == "GET" and path == "/login":
            self._login()
        elif method == "GET" and path == "/authorize":
            self._authorize()
        elif method == "POST" and path == "/api/user/token":
            user = self._user()
            if user is None:
                raise Reply(401, "Unauthorized")
            token = secrets.token_urlsafe(32)
            self.state.run("UPDATE users SET token_hash = ? WHERE id = ?", _hash(token), user[0])
            self._send(200, token)
        elif method == "GET" and path == "/api/user":
            user = self._user()
            if user is None:
                raise Reply(401, "Unauthorized")
            self._send(200, {"id": user[0], "login": user[1], "admin": bool(user[2])})
        elif method == "GET" and path == "/api/agents":
            self._admin()
            rows = self.state.query(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY id")  # noqa: S608
            self._send(200, [_agent_api(r) for r in rows])
        elif method == "POST" and path == "/api/standin/jobs":
            self._admin()
            spec = self._json()
            if not isinstance(spec.get("image"), str) or not isinstance(spec.get("commands"), list):
                raise Reply(400, "a job needs image (string) and commands (list of strings)")
            labels = spec.get("labels") or {}
            job = {"image": spec["image"], "commands": [str(c) for c in spec["commands"]],
                   "labels": {str(k): str(v) for k, v in dict(labels).items()}}  # fmt: skip
            job_id = self.state.run("INSERT INTO jobs (spec, state, created) VALUES (?, 'pending', ?)",
                                    json.dumps(job), time.time())  # fmt: skip
            self._send(200, {"id": job_id})
        elif method == "GET" and path.startswith("/api/standin/jobs/") and path.rsplit("/", 1)[1].isdigit():
            self._admin()
            rows = self.state.query("SELECT id, state, exit_code, log, agent_id FROM jobs WHERE id = ?",
                                    int(path.rsplit("/", 1)[1]))  # fmt: skip
            if not rows:
                raise Reply(404, "Not Found")
            r = rows[0]
            self._send(200, {"id": r[0], "state": r[1], "exit_code": r[2], "log": r[3], "agent_id": r[4]})
        else:
            raise Reply(404, "Not Found")

    def _login(self) -> None:
        state = secrets.token_urlsafe(24)
        self.pending_states[state] = time.time() + 600
        query = urlencode({"client_id": self.config.client, "redirect_uri": self.config.callback,
                           "response_type": "code", "state": state})  # fmt: skip
        self._send(303, None, {"Location": f"{self.config.gitea_url}/login/oauth/authorize?{query}"})

    def _forge(self, path: str, *, form: dict[str, str] | None = None, token: str | None = None) -> dict[str, Any]:
        data = None if form is None else urlencode(form).encode()
        request = urllib.request.Request(f"{self.config.gitea_url}{path}", data=data)  # noqa: S310 (https by config)
        request.add_header("Accept", "application/json")
        if form is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        context = ssl.create_default_context()
        if self.config.skip_verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
                loaded = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise Reply(
                502, f"forge answered {err.code} on {path}: {err.read()[:300].decode(errors='replace')}"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise Reply(502, f"cannot reach the forge at {self.config.gitea_url}: {err}") from None
        if not isinstance(loaded, dict):
            raise Reply(502, f"forge answered no JSON object on {path}")
        return loaded

    def _authorize(self) -> None:
        q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if "error" in q:
            raise Reply(303, None, {"Location": "/login?" + urlencode({"error": q["error"]})})
        if self.pending_states.pop(q.get("state", ""), 0) < time.time():
            raise Reply(400, "invalid or expired OAuth state")
        tokens = self._forge("/login/oauth/access_token", form={
            "grant_type": "authorization_code", "code": q.get("code", ""), "client_id": self.config.client,
            "client_secret": self.config.secret, "redirect_uri": self.config.callback,
        })  # fmt: skip
        access = tokens.get("access_token")
        if not isinstance(access, str):
            raise Reply(502, f"the forge gave no access token: {tokens.get('error', '?')}")
        forge_user = self._forge("/api/v1/user", token=access)
        login = str(forge_user.get("login", ""))
        admin = login.lower() in self.config.admins
        existing = self.state.query("SELECT id FROM users WHERE login = ?", login)
        if existing:
            uid = int(existing[0][0])
            self.state.run("UPDATE users SET forge_token = ?, admin = ? WHERE id = ?", access, int(admin), uid)
        elif not self.config.open and not admin:
            raise Reply(303, None, {"Location": "/login?error=registration_closed"})
        else:
            uid = self.state.run("INSERT INTO users (login, forge_id, email, admin, forge_token) VALUES (?,?,?,?,?)",
                                 login, int(forge_user.get("id", 0)), str(forge_user.get("email", "")), int(admin),
                                 access)  # fmt: skip
        sid = secrets.token_urlsafe(32)
        self.state.run(
            "INSERT INTO sessions (sid_hash, uid, expires) VALUES (?,?,?)", _hash(sid), uid, time.time() + 86400
        )
        secure = "; Secure" if self.config.host.startswith("https://") else ""
        self._send(303, None, {"Location": "/", "Set-Cookie": f"{SESSION_COOKIE}={sid}; Path=/; HttpOnly{secure}"})


# --------------------------------------------------------------------------- agents


def _take_job(state: State, labels: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    with state.lock:
        for job_id, spec_text in state.query("SELECT id, spec FROM jobs WHERE state = 'pending' ORDER BY id"):
            spec = json.loads(spec_text)
            if all(labels.get(k) == v or labels.get(k) == "*" for k, v in spec["labels"].items()):
                state.run("UPDATE jobs SET state = 'running' WHERE id = ?", job_id)
                return int(job_id), spec
    return None


def serve_agent(config: Config, state: State, conn: socket.socket, address: Any) -> None:
    wire = Wire(conn)
    try:
        hello = wire.receive()
        if hello is None or hello.get("type") != "register":
            return
        if not hmac.compare_digest(str(hello.get("secret", "")).encode(), config.agent_secret.encode()):
            print(f"grpc: {address[0]}: agent refused: invalid agent secret", flush=True)
            wire.send({"error": "rpc error: code = Unauthenticated desc = invalid agent secret"})
            return
        platform = str(hello.get("platform", ""))
        labels = {str(k): str(v) for k, v in dict(hello.get("labels") or {}).items()}
        now = int(time.time())
        agent_id = int(hello.get("id") or 0)
        fields = (str(hello.get("hostname", "")), platform, str(hello.get("backend", "")),
                  int(hello.get("capacity", 1)), str(hello.get("version", "")), json.dumps(labels), now)  # fmt: skip
        if agent_id and state.query("SELECT 1 FROM agents WHERE id = ?", agent_id):
            state.run("UPDATE agents SET name=?, platform=?, backend=?, capacity=?, version=?, labels=?, last_contact=?"
                      " WHERE id = ?", *fields, agent_id)  # fmt: skip
        else:
            agent_id = state.run("INSERT INTO agents (name, platform, backend, capacity, version, labels, last_contact,"
                                 " created) VALUES (?,?,?,?,?,?,?,?)", *fields, now)  # fmt: skip
        wire.send({"type": "registered", "id": agent_id})
        print(f"grpc: agent {agent_id} ({fields[0]}, {platform}) connected from {address[0]}", flush=True)
        # the real agent's default labels; a custom one of the same name wins (agent/rpc auth)
        match = {"platform": platform, "hostname": fields[0], "backend": fields[2], "repo": "*", **labels}
        while (message := wire.receive()) is not None:
            state.run("UPDATE agents SET last_contact = ? WHERE id = ?", int(time.time()), agent_id)
            if message.get("type") == "next":
                deadline = time.monotonic() + NEXT_WAIT
                job = _take_job(state, match)
                while job is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                    job = _take_job(state, match)
                if job is None:
                    wire.send({"type": "none"})
                else:
                    state.run("UPDATE jobs SET agent_id = ? WHERE id = ?", agent_id, job[0])
                    wire.send({"type": "job", "id": job[0], **job[1]})
            elif message.get("type") == "done":
                code = int(message.get("exit_code", -1))
                state.run("UPDATE jobs SET state = ?, exit_code = ?, log = ? WHERE id = ? AND agent_id = ?",
                          "success" if code == 0 else "failure", code, str(message.get("log", ""))[-65536:],
                          int(message.get("id", 0)), agent_id)  # fmt: skip
                wire.send({"type": "ok"})
    except (OSError, ValueError) as err:
        print(f"grpc: {address[0]}: {err}", flush=True)
    finally:
        wire.close()


def main() -> int:
    try:
        config = Config(env())
        state = State(config.db)
        grpc = server_socket(*config.grpc)
    except Fatal as err:
        print(f"woodpecker-server: FATAL: {err}", flush=True)
        return 1

    def accept() -> None:
        while True:
            conn, address = grpc.accept()
            threading.Thread(target=serve_agent, args=(config, state, conn, address), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    handler = type("BoundHandler", (Handler,), {"config": config, "state": state, "pending_states": {}})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if not config.http[0] or ":" in config.http[0] else socket.AF_INET

        def server_bind(self) -> None:
            if self.address_family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    if config.tls_files is None:
        server = Server((config.http[0] or "::", config.http[1]), handler)
        print(f"woodpecker-server {VERSION} (stand-in): http on {config.http[1]}, agents on {config.grpc[1]}, "
              f"host {config.host}, forge {config.gitea_url}", flush=True)  # fmt: skip
        server.serve_forever()
        return 0
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*config.tls_files)
    except (OSError, ssl.SSLError) as err:
        print(f"woodpecker-server: FATAL: WOODPECKER_SERVER_CERT/KEY: {err}", flush=True)
        return 1
    redirect = type("Redirect", (RedirectHandler,), {"config": config})
    plain = Server((config.http[0] or "::", config.http[1]), redirect)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    server = Server((config.https[0] or "::", config.https[1]), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"woodpecker-server {VERSION} (stand-in): https on {config.https[1]} (http {config.http[1]} redirects), "
          f"agents on {config.grpc[1]}, host {config.host}, forge {config.gitea_url}", flush=True)  # fmt: skip
    server.serve_forever()
    return 0


class RedirectHandler(BaseHTTPRequestHandler):
    """The plain address with TLS on: every request sent to WOODPECKER_HOST (the real server's redirect)."""

    config: Config

    def _redirect(self) -> None:
        self.send_response(301)
        self.send_header("Location", self.config.host + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _redirect

    def log_message(self, format: str, *args: Any) -> None:
        return


if __name__ == "__main__":
    sys.exit(main())
