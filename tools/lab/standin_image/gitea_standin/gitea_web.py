"""``gitea web`` of the Gitea stand-in: its API, OAuth2 provider and container registry front.

What it answers is listed in docs/lab-gitea.md; the rules are Gitea's (routers/api/v1,
routers/web/auth/oauth.go, routers/api/packages/container): tokens as ``Authorization: token``
or ``Bearer``, basic auth with a password or a token, a redirect URI matched exactly, codes
used once, registry bearer tokens from ``/v2/token``. The registry's storage is Debian's
docker-registry on 127.0.0.1:5000 (the GitLab stand-in's registry program), reached through
this front, which checks the bearer token and who may push where.
"""

from __future__ import annotations

import base64
import html
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

if TYPE_CHECKING:
    from tools.lab.standin_image.gitea_standin.gitea_db import (
        VERSION,
        Db,
        GiteaError,
        Settings,
        User,
        digest,
        scope_allows,
    )
else:  # beside this file, in the repository and in the image
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gitea_db import VERSION, Db, GiteaError, Settings, User, digest, scope_allows

REGISTRY_BACKEND = os.environ.get("GITEA_STANDIN_REGISTRY_BACKEND", "127.0.0.1:5000")
SESSION_COOKIE = "i_like_gitea"  # Gitea's session cookie name
CODE_SECONDS = 600
ACCESS_SECONDS = 3600
REGISTRY_TOKEN_SECONDS = 86400
BANNER = "forgeway-gitea-standin"
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
GITEA_BIN = os.environ.get("GITEA_STANDIN_BIN", "/usr/local/bin/gitea")


class Reply(Exception):
    """An answer other than 200: status, JSON (or text) body, extra headers."""

    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _message(status: int, message: str) -> Reply:
    return Reply(status, {"message": message, "url": "https://docs.gitea.com/api/"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Gitea"
    settings: Settings  # set on the subclass by serve()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"router: {self.client_address[0]} {format % args}\n")
        sys.stdout.flush()

    # plumbing ---------------------------------------------------------------

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        if isinstance(body, bytes | str):
            data = body.encode() if isinstance(body, str) else body
            ctype = "text/html; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode(), "application/json;charset=utf-8"
        self.send_response(status)
        for name, value in {"Content-Type": ctype, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _chunks(self) -> Any:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _form(self) -> dict[str, str]:
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                loaded = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                raise _message(400, "invalid JSON body") from None
            return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        return {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}

    def _json(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self._body() or b"{}")
        except json.JSONDecodeError:
            raise _message(422, "invalid JSON body") from None
        if not isinstance(loaded, dict):
            raise _message(422, "expected a JSON object")
        return loaded

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _basic(self) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("basic "):
            return None
        try:
            name, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise _message(401, "invalid basic auth") from None
        return name, secret

    def _user(self, db: Db, needed: str | None = None) -> User | None:
        """Who asks: access token (header or ?token=), basic auth (password or token), or session cookie."""
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        token = value.strip() if scheme.lower() in ("token", "bearer") else None
        token = token or self._query().get("token") or self._query().get("access_token")
        found: tuple[User, list[str]] | None = None
        if token:
            found = db.token_user(token)
            if found is None:
                raise _message(401, "user does not exist")
        elif (basic := self._basic()) is not None:
            user = db.check_password(*basic)
            found = (user, ["all"]) if user else db.token_user(basic[1])
            if found is None or found[0].name.lower() != basic[0].lower():
                raise _message(401, "user does not exist")
        else:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            if SESSION_COOKIE in cookie:
                row = db.one("SELECT uid FROM session WHERE sid_hash = ? AND expires > ?",
                             digest(cookie[SESSION_COOKIE].value), time.time())  # fmt: skip
                user = None if row is None else db.user_by_id(int(str(row[0])))
                found = None if user is None else (user, ["all"])
        if found is None:
            return None
        if needed and not scope_allows(found[1], needed):
            raise _message(403, f"token does not have at least one of required scope(s): [{needed}]")
        return found[0]

    def _need_user(self, db: Db, needed: str) -> User:
        user = self._user(db, needed)
        if user is None:
            raise _message(401, "token is required")
        return user

    # dispatch ---------------------------------------------------------------

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        db = Db(self.settings.db_path)
        try:
            if path == "/v2" or path.startswith("/v2/"):
                self._registry(db, path)
                return
            if not self.settings.install_lock and path != "/":
                raise _message(404, "Gitea is not installed: [security] INSTALL_LOCK is not true (install page only)")
            self._route(db, path)
        except Reply as reply:
            self._send(reply.status, reply.body, reply.headers)
        except GiteaError as err:
            self._send(422, {"message": str(err)})
        finally:
            db.conn.close()

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_PATCH = _handle

    def _route(self, db: Db, path: str) -> None:  # noqa: PLR0912 (one branch per route)
        method = self.command
        if method == "GET" and path == "/":
            self._send(200, f"<html><body>{BANNER} {html.escape(self.client_address[0])}</body></html>\n")
        elif method == "GET" and path == "/api/healthz":
            self._send(200, {"status": "pass", "description": "Gitea: Git with a cup of tea"})
        elif method == "GET" and path == "/api/v1/version":
            self._send(200, {"version": VERSION})
        elif method == "GET" and path == "/api/v1/user":
            self._send(200, self._need_user(db, "read:user").api())
        elif path == "/api/v1/user/applications/oauth2" and method in ("GET", "POST"):
            self._oauth2_apps(db, method)
        elif method == "DELETE" and (m := re.fullmatch(r"/api/v1/user/applications/oauth2/(\d+)", path)):
            user = self._need_user(db, "write:user")
            if not db.one("SELECT 1 FROM oauth2_application WHERE id = ? AND uid = ?", int(m[1]), user.id):
                raise _message(404, "OAuth2 application not found")
            db.run("DELETE FROM oauth2_application WHERE id = ?", int(m[1]))
            self._send(204, b"")
        elif method == "PATCH" and (m := re.fullmatch(r"/api/v1/admin/users/([^/]+)", path)):
            self._edit_user(db, m[1])
        elif method == "POST" and path == "/api/v1/user/keys":
            self._add_key(db)
        elif method == "POST" and path == "/api/v1/user/repos":
            self._create_repo(db)
        elif method == "GET" and (m := re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)", path)):
            self._send(200, self._repo(db, m[1], m[2]))
        elif method == "POST" and path == "/user/login":
            self._login(db)
        elif method == "GET" and path == "/login/oauth/authorize":
            self._authorize(db)
        elif method == "POST" and path == "/login/oauth/access_token":
            self._access_token(db)
        else:
            raise _message(404, "not found")

    # API --------------------------------------------------------------------

    def _edit_user(self, db: Db, name: str) -> None:
        """Gitea's admin EditUser (routers/api/v1/admin/user.go): a site admin's token with
        write:admin; the body is EditUserOption, of which password and must_change_password act."""
        admin = self._need_user(db, "write:admin")
        if not admin.is_admin:
            raise _message(403, "reqSiteAdmin: user should be the site admin")
        user = db.user_by_name(name)
        if user is None:
            raise _message(404, f"user redirect does not exist [name: {name}]")
        body = self._json()
        password, must_change = body.get("password"), body.get("must_change_password")
        if password is not None and not isinstance(password, str):
            raise _message(422, "password: expected a string")
        if must_change is not None and not isinstance(must_change, bool):
            raise _message(422, "must_change_password: expected a boolean")
        db.edit_user(user, password=password or None, must_change=must_change)
        self._send(200, (db.user_by_id(user.id) or user).api())

    def _oauth2_apps(self, db: Db, method: str) -> None:
        user = self._need_user(db, "write:user" if method == "POST" else "read:user")
        if method == "GET":
            self._send(200, db.apps_of(user))
            return
        body = self._json()
        name, uris = body.get("name"), body.get("redirect_uris")
        if not isinstance(name, str) or not name:
            raise _message(422, "[Name]: Required")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
            raise _message(422, "[RedirectURIs]: Required")
        for uri in uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _message(422, f"invalid redirect URI {uri!r}")
        confidential = body.get("confidential_client", True)
        self._send(201, db.create_app(user, name, list(uris), bool(confidential)))

    def _add_key(self, db: Db) -> None:
        user = self._need_user(db, "write:user")
        body = self._json()
        key, title = str(body.get("key", "")).strip(), str(body.get("title", "")).strip()
        if not re.fullmatch(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?", key) or not title:
            raise _message(422, "invalid public key or title")
        content = " ".join(key.split()[:2])
        if db.one("SELECT 1 FROM public_key WHERE content = ?", content):
            raise _message(422, "Key content has been used as non-deploy key")
        key_id = db.run("INSERT INTO public_key (uid, name, content) VALUES (?,?,?)", user.id, title, content)
        write_authorized_keys(db, self.settings)
        self._send(201, {"id": key_id, "key": content, "title": title, "read_only": False})

    def _create_repo(self, db: Db) -> None:
        user = self._need_user(db, "write:repository")
        body = self._json()
        name = str(body.get("name", ""))
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) or name in (".", ".."):
            raise _message(422, "[Name]: invalid repository name")
        if db.one("SELECT 1 FROM repository WHERE uid = ? AND lower(name) = lower(?)", user.id, name):
            raise _message(409, "The repository with the same name already exists.")
        path = self.settings.repo_root / user.name.lower() / f"{name.lower()}.git"
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(path)], check=True)
        db.run(
            "INSERT INTO repository (uid, name, private) VALUES (?,?,?)", user.id, name, int(bool(body.get("private")))
        )
        self._send(201, self._repo(db, user.name, name))

    def _repo(self, db: Db, owner_name: str, name: str) -> dict[str, object]:
        owner = db.user_by_name(owner_name)
        query = "SELECT id, name, private FROM repository WHERE uid = ? AND lower(name) = lower(?)"
        row = None if owner is None else db.one(query, owner.id, name)
        if owner is None or row is None:
            raise _message(404, "The target couldn't be found.")
        s = self.settings
        ssh_host = s.ssh_domain if s.ssh_port == 22 else f"[{s.ssh_domain}]:{s.ssh_port}"
        ssh_url = (
            f"git@{s.ssh_domain}:" if s.ssh_port == 22 else f"ssh://git@{ssh_host}/"
        ) + f"{owner.name}/{row[1]}.git"
        return {"id": row[0], "name": row[1], "full_name": f"{owner.name}/{row[1]}", "private": bool(row[2]),
                "owner": owner.api(), "clone_url": f"{s.root_url}{owner.name}/{row[1]}.git", "ssh_url": ssh_url,
                "html_url": f"{s.root_url}{owner.name}/{row[1]}"}  # fmt: skip

    # sign-in and OAuth2 -----------------------------------------------------

    def _login(self, db: Db) -> None:
        form = self._form()
        user = db.check_password(form.get("user_name", ""), form.get("password", ""))
        if user is None:
            self._send(200, "<html><body>Username or password is incorrect.</body></html>\n")
            return
        sid = db.issue("session", "sid_hash", user.id, 86400)
        target = form.get("redirect_to") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        cookie = f"{SESSION_COOKIE}={sid}; Path=/; HttpOnly; Secure; SameSite=Lax"
        self._send(303, b"", {"Location": target, "Set-Cookie": cookie})

    def _authorize(self, db: Db) -> None:
        q = self._query()
        app = db.app_by_client(q.get("client_id", ""))
        if app is None:
            raise Reply(400, "<html><body>Client ID not registered</body></html>\n")
        app_id, uris, _, _ = app
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in uris:  # exact, as Gitea's ContainsRedirectURI for confidential clients
            raise Reply(400, "<html><body>Unregistered Redirect URI</body></html>\n")
        sep = "&" if "?" in redirect_uri else "?"
        state = {"state": q["state"]} if "state" in q else {}
        if q.get("response_type") != "code":
            params = urlencode(
                {
                    "error": "unsupported_response_type",
                    "error_description": "Only code response type is supported.",
                    **state,
                }
            )
            raise Reply(303, b"", {"Location": f"{redirect_uri}{sep}{params}"})
        user = self._user(db)
        if user is None:
            raise Reply(303, b"", {"Location": "/user/login?" + urlencode({"redirect_to": self.path})})
        code = db.issue("oauth2_code", "code_hash", user.id, CODE_SECONDS, app_id=app_id, redirect_uri=redirect_uri)
        self._send(303, b"", {"Location": f"{redirect_uri}{sep}{urlencode({'code': code, **state})}"})

    def _access_token(self, db: Db) -> None:
        form = self._form()
        basic = self._basic()
        client_id = basic[0] if basic else form.get("client_id", "")
        client_secret = basic[1] if basic else form.get("client_secret", "")
        app = db.app_by_client(client_id)

        def error(kind: str, description: str, status: int = 400) -> Reply:
            return Reply(status, {"error": kind, "error_description": description})

        if app is None:
            raise error("invalid_client", "cannot load client with client_id: '" + client_id + "'")
        app_id, _, secret_hash, confidential = app
        if confidential and digest(client_secret) != secret_hash:
            raise error("unauthorized_client", "invalid client secret")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            row = db.one("SELECT uid, app_id, redirect_uri, expires FROM oauth2_code WHERE code_hash = ?",
                         digest(form.get("code", "")))  # fmt: skip
            db.run("DELETE FROM oauth2_code WHERE code_hash = ?", digest(form.get("code", "")))  # used once
            if row is None or float(str(row[3])) < time.time() or int(str(row[1])) != app_id:
                raise error("invalid_grant", "client is not authorized")
            if form.get("redirect_uri") != row[2]:
                raise error("unauthorized_client", "unexpected redirect URI")
            uid = int(str(row[0]))
        elif grant == "refresh_token":
            row = db.one("SELECT uid FROM oauth2_token WHERE token_hash = ? AND kind = 'refresh' AND app_id = ?",
                         digest(form.get("refresh_token", "")), app_id)  # fmt: skip
            if row is None:
                raise error("unauthorized_client", "unable to parse refresh token")
            uid = int(str(row[0]))
        else:
            raise error("unsupported_grant_type", "Only refresh_token or authorization_code grant type is supported")
        access = db.issue("oauth2_token", "token_hash", uid, ACCESS_SECONDS, app_id=app_id, kind="access")
        refresh = db.issue("oauth2_token", "token_hash", uid, 30 * 86400, app_id=app_id, kind="refresh")
        self._send(200, {"access_token": access, "token_type": "bearer", "expires_in": ACCESS_SECONDS,
                         "refresh_token": refresh})  # fmt: skip

    # container registry -----------------------------------------------------

    def _challenge(self) -> Reply:
        realm = f"{self.settings.root_url}v2/token"
        return Reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, {
            "WWW-Authenticate": f'Bearer realm="{realm}",service="container_registry",scope="*"',
            "Docker-Distribution-Api-Version": "registry/2.0",
        })  # fmt: skip

    def _registry(self, db: Db, path: str) -> None:
        if path == "/v2/token":
            user = self._user(db, "read:package") if self._basic() else None
            if self._basic() is None and self.settings.require_signin_view:
                raise self._challenge()
            token = db.issue("registry_token", "token_hash", user.id if user else 0, REGISTRY_TOKEN_SECONDS)
            self._send(200, {"token": token, "access_token": token, "expires_in": REGISTRY_TOKEN_SECONDS})
            return
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            raise self._challenge()
        row = db.one("SELECT uid FROM registry_token WHERE token_hash = ? AND expires > ?",
                     digest(auth[7:].strip()), time.time())  # fmt: skip
        if row is None:
            raise self._challenge()
        uid = int(str(row[0]))
        user = db.user_by_id(uid) if uid else None
        if path in ("/v2", "/v2/"):
            if user is None and self.settings.require_signin_view:
                raise self._challenge()
            self._send(200, {}, {"Docker-Distribution-Api-Version": "registry/2.0"})
            return
        owner_name = path.split("/")[2]
        owner = db.user_by_name(owner_name)
        if owner is None:
            raise Reply(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]})
        writes = self.command not in ("GET", "HEAD")
        if (writes and (user is None or (user.id != owner.id and not user.is_admin))) or (
            user is None and self.settings.require_signin_view
        ):
            raise (
                self._challenge()
                if user is None
                else Reply(
                    403, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
                )
            )
        self._proxy()

    def _proxy(self) -> None:  # noqa: PLR0912 (both directions, both body framings)
        """Forward to docker-registry, streaming bodies both ways (chunked uploads included)."""
        host, _, port = REGISTRY_BACKEND.rpartition(":")
        backend = http.client.HTTPConnection(host, int(port), timeout=900)
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        backend.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in _HOP and name.lower() != "authorization":
                backend.putheader(name, value)
        backend.putheader("X-Forwarded-Proto", "https" if self.settings.protocol == "https" else "http")
        if chunked:
            backend.putheader("Transfer-Encoding", "chunked")
        backend.endheaders()
        if chunked:
            for chunk in self._chunks():
                backend.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            backend.send(b"0\r\n\r\n")
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    break
                backend.send(data)
                left -= len(data)
        response = backend.getresponse()
        self.send_response(response.status)
        length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        if length is None and self.command != "HEAD" and response.status not in (204, 304):
            self.send_header("Connection", "close")  # the body ends with the connection
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            while data := response.read(1 << 20):
                self.wfile.write(data)
        backend.close()


def write_authorized_keys(db: Db, settings: Settings) -> None:
    """Gitea's authorized_keys: one line per key, forced to ``gitea serv key-<id>``."""
    home = settings.data / "git" / ".ssh"
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        f'command="{GITEA_BIN} --config={_ini(settings)} serv key-{row[0]}",no-port-forwarding,no-X11-forwarding,'
        f"no-agent-forwarding,no-pty,restrict {row[1]}\n"
        for row in db.conn.execute("SELECT id, content FROM public_key ORDER BY id")
    ]
    partial = home / ".authorized_keys.new"
    partial.write_text("# gitea public key\n" + "".join(lines))
    partial.chmod(0o600)
    os.replace(partial, home / "authorized_keys")


def _ini(settings: Settings) -> Path:
    return settings.data / "gitea" / "conf" / "app.ini"


def has_ipv6() -> bool:
    """Whether this container has IPv6 at all (any address, ::1 included)."""
    table = Path("/proc/net/if_inet6")
    return table.exists() and table.read_text().strip() != ""


def listen_address(http_addr: str, ipv6: bool) -> str:
    """Where Gitea's listener binds: Go's net.Listen("tcp", "0.0.0.0:port"), HTTP_ADDR's
    default, opens one dual-stack [::] socket where the host has IPv6, so real Gitea answers
    on its container's IPv6 address too (the forge host DNATs the tunnel IPv6 address there)."""
    if http_addr == "0.0.0.0" and ipv6:  # noqa: S104 (Gitea's default)
        return "::"
    return http_addr.strip("[]")


def unmapped(client_address: Any) -> Any:
    """An IPv4 client on the dual-stack socket as Go shows it (10.8.0.1, not ::ffff:10.8.0.1)."""
    host = str(client_address[0])
    if host.startswith("::ffff:") and "." in host:
        return (host.removeprefix("::ffff:"), *client_address[1:])
    return client_address


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: Settings, context: ssl.SSLContext | None) -> None:
        self.context = context
        address = listen_address(settings.http_addr, has_ipv6())
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        handler = type("BoundHandler", (Handler,), {"settings": settings})
        super().__init__((address, settings.http_port), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake here, in the request's thread: a slow client holds up no one else."""
        if self.context is not None:
            request.settimeout(30)
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
            request.settimeout(None)
        super().finish_request(request, unmapped(client_address))


def serve(settings: Settings) -> None:
    context = None
    if settings.protocol == "https":
        assert settings.cert_file is not None and settings.key_file is not None
        for path in (settings.cert_file, settings.key_file):
            if not path.is_file():
                raise GiteaError(
                    f"[server] {'CERT_FILE' if path == settings.cert_file else 'KEY_FILE'} {path}: no such file"
                )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(settings.cert_file, settings.key_file)
    server = Server(settings, context)
    print(f"{BANNER}: Gitea {VERSION} listening on {settings.protocol}://{settings.http_addr}:{settings.http_port}"
          f" (ROOT_URL {settings.root_url})", flush=True)  # fmt: skip
    server.serve_forever()
