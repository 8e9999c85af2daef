"""Settings and state of the Gitea stand-in: app.ini from ``GITEA__section__KEY``, and its sqlite database.

Settings as the gitea/gitea image has them: its entrypoint writes every ``GITEA__section__KEY``
(``GITEA__section__KEY__FILE``: the value read from that file) into ``$GITEA_CUSTOM/conf/app.ini``
(environment-to-ini), and ``gitea`` reads app.ini, so ``docker exec -u git <c> gitea ...`` sees
what the container was started with. Section and key names decode ``_0X2E_`` to ``.`` and
``_0X2D_`` to ``-`` as environment-to-ini does.

State: one sqlite file (``database.PATH``, default ``/data/gitea/gitea.db``), as Gitea's default
sqlite3 database; the web server and every CLI call open it, sqlite serialises their writes.
Secrets (passwords, tokens, client secrets, codes) are kept as hashes only, as Gitea keeps them.
Only modules of Python's standard library are used (the image has python3 and libpython3-stdlib).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

VERSION = "1.22.6"  # the Gitea the stand-in says it is
ENV_PREFIX = "GITEA__"
SCOPE_CATEGORIES = ("activitypub", "admin", "issue", "misc", "notification", "organization", "package",
                    "repository", "user")  # fmt: skip
ROOT_REFUSAL = (
    "Gitea is not supposed to be run as root. Sorry. If you need to use privileged TCP ports please "
    "instead use setcap and the `cap_net_bind_service` permission"
)
UNSAFE_ROOT_ENV = "GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"


class GiteaError(Exception):
    """A refusal with Gitea's words; the CLI prints it and exits 1, the API answers it."""


def custom_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("GITEA_CUSTOM", "/data/gitea"))


def app_ini(environ: dict[str, str] | None = None) -> Path:
    return custom_dir(environ) / "conf" / "app.ini"


def _decode(name: str) -> str:
    return name.replace("_0X2E_", ".").replace("_0X2D_", "-")


def env_settings(environ: dict[str, str], *, files: bool = True) -> dict[tuple[str, str], str]:
    """``(section, KEY) -> value`` of every ``GITEA__section__KEY[__FILE]`` variable; with
    ``files`` False the ``__FILE`` ones are left out (their files are root's: only the
    image's setup, as root, reads them, writing the values into app.ini)."""
    found: dict[tuple[str, str], str] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        from_file = len(parts) == 3 and parts[2] == "FILE"
        if len(parts) != 2 and not from_file:
            raise GiteaError(f"{name}: expected GITEA__section__KEY or GITEA__section__KEY__FILE")
        setting = value
        if from_file and not files:
            continue
        if from_file:
            try:
                setting = Path(value).read_text().rstrip("\n")
            except OSError as err:
                raise GiteaError(f"{name}: cannot read {value}: {err.strerror}") from None
        found[(_decode(parts[0]), _decode(parts[1]))] = setting
    return found


def write_app_ini(environ: dict[str, str]) -> Path:
    """Merge the environment's settings into app.ini (environment-to-ini); its path. Mode 0600: it may hold secrets."""
    path = app_ini(environ)
    config = read_config(path)
    for (section, key), value in env_settings(environ).items():
        if section and not config.has_section(section):
            config.add_section(section)
        config.set(section or configparser.DEFAULTSECT, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(".app.ini.new")
    with partial.open("w") as out:
        os.fchmod(out.fileno(), 0o600)
        config.write(out)
    os.replace(partial, path)
    return path


def read_config(path: Path) -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case, as in app.ini
    if path.is_file():
        config.read(path)
    return config


@dataclass(frozen=True)
class Settings:
    root_url: str
    domain: str
    ssh_domain: str
    ssh_port: int
    ssh_listen_port: int
    protocol: str
    http_addr: str
    http_port: int
    cert_file: Path | None
    key_file: Path | None
    install_lock: bool
    require_signin_view: bool
    data: Path  # the volume: /data
    db_path: Path
    repo_root: Path
    packages: Path


def _int(config: configparser.ConfigParser, section: str, key: str, default: int) -> int:
    value = config.get(section, key, fallback=str(default))
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise GiteaError(f"[{section}] {key} = {value!r}: expected a port number")
    return int(value)


def _bool(config: configparser.ConfigParser, section: str, key: str) -> bool:
    value = config.get(section, key, fallback="false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise GiteaError(f"[{section}] {key} = {value!r}: expected true or false")
    return value in ("true", "1")


def settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    custom = custom_dir(env)
    config = read_config(app_ini(env))
    # The environment wins, as after environment-to-ini; its __FILE values are in app.ini
    # already: the gitea binary (`docker exec -u git ... gitea`) never reads those files.
    for (section, key), value in env_settings(env, files=False).items():
        if section and not config.has_section(section):
            config.add_section(section)
        config.set(section or configparser.DEFAULTSECT, key, value)
    domain = config.get("server", "DOMAIN", fallback="localhost")
    protocol = config.get("server", "PROTOCOL", fallback="http")
    if protocol not in ("http", "https"):
        raise GiteaError(f"[server] PROTOCOL = {protocol!r}: the stand-in serves http or https")
    http_port = _int(config, "server", "HTTP_PORT", 3000)
    root_url = config.get("server", "ROOT_URL", fallback=f"{protocol}://{domain}:{http_port}/")
    if not re.fullmatch(r"https?://[^/\s]+/?", root_url):
        raise GiteaError(f"[server] ROOT_URL = {root_url!r}: expected http(s)://host[:port]/")
    data = custom.parent

    def path(section: str, key: str, default: Path) -> Path:
        value = config.get(section, key, fallback="")
        return default if not value else Path(value) if Path(value).is_absolute() else custom / value

    db_type = config.get("database", "DB_TYPE", fallback="sqlite3")
    if db_type != "sqlite3":
        raise GiteaError(f"[database] DB_TYPE = {db_type!r}: the stand-in has sqlite3 only")
    cert: Path | None = None
    key_file: Path | None = None
    if protocol == "https":
        cert, key_file = path("server", "CERT_FILE", Path()), path("server", "KEY_FILE", Path())
        if Path() in (cert, key_file):
            raise GiteaError("[server] PROTOCOL = https needs CERT_FILE and KEY_FILE")
    ssh_port = _int(config, "server", "SSH_PORT", 22)
    return Settings(
        root_url=root_url.rstrip("/") + "/",
        domain=domain,
        ssh_domain=config.get("server", "SSH_DOMAIN", fallback=domain),
        ssh_port=ssh_port,
        ssh_listen_port=_int(config, "server", "SSH_LISTEN_PORT", ssh_port),
        protocol=protocol,
        http_addr=config.get("server", "HTTP_ADDR", fallback="0.0.0.0"),  # noqa: S104 (Gitea's default)
        http_port=http_port,
        cert_file=cert,
        key_file=key_file,
        install_lock=_bool(config, "security", "INSTALL_LOCK"),
        require_signin_view=_bool(config, "service", "REQUIRE_SIGNIN_VIEW"),
        data=data,
        db_path=path("database", "PATH", custom / "gitea.db"),
        repo_root=path("repository", "ROOT", data / "git" / "repositories"),
        packages=path("packages", "CHUNKED_UPLOAD_PATH", custom / "packages"),
    )


def refuse_root(environ: dict[str, str] | None = None) -> None:
    """Gitea's check (modules/setting): root only with the undocumented override."""
    env = os.environ if environ is None else environ
    if os.geteuid() == 0 and env.get(UNSAFE_ROOT_ENV, "").lower() not in ("true", "1"):
        raise GiteaError(ROOT_REFUSAL)


# --------------------------------------------------------------------------- secrets


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10000).hex()  # Gitea's pbkdf2 default


def parse_scopes(text: str) -> list[str]:
    """Gitea's access token scopes: ``all`` or ``read:X``/``write:X`` for its categories."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    for scope in scopes:
        level, _, category = scope.partition(":")
        if scope != "all" and not (level in ("read", "write") and category in SCOPE_CATEGORIES):
            raise GiteaError(f"invalid access token scope provided: {scope!r}")
    return scopes


def scope_allows(scopes: list[str], needed: str) -> bool:
    level, _, category = needed.partition(":")
    return "all" in scopes or needed in scopes or (level == "read" and f"write:{category}" in scopes)


# --------------------------------------------------------------------------- the database

SCHEMA = """
CREATE TABLE IF NOT EXISTS user (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, email TEXT UNIQUE NOT NULL,
  passwd TEXT NOT NULL, salt TEXT NOT NULL, is_admin INTEGER NOT NULL, must_change INTEGER NOT NULL,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS access_token (id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, name TEXT NOT NULL,
  token_hash TEXT UNIQUE NOT NULL, scope TEXT NOT NULL, UNIQUE (uid, name));
CREATE TABLE IF NOT EXISTS oauth2_application (id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, name TEXT NOT NULL,
  client_id TEXT UNIQUE NOT NULL, secret_hash TEXT NOT NULL, redirect_uris TEXT NOT NULL,
  confidential INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS oauth2_code (code_hash TEXT PRIMARY KEY, app_id INTEGER NOT NULL, uid INTEGER NOT NULL,
  redirect_uri TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth2_token (token_hash TEXT PRIMARY KEY, uid INTEGER NOT NULL, app_id INTEGER NOT NULL,
  kind TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS session (sid_hash TEXT PRIMARY KEY, uid INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS registry_token (token_hash TEXT PRIMARY KEY, uid INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS public_key (id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, name TEXT NOT NULL,
  content TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS repository (id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, name TEXT NOT NULL,
  private INTEGER NOT NULL, UNIQUE (uid, name));
"""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str
    is_admin: bool

    def api(self) -> dict[str, object]:
        """Gitea's API User (the fields a client reads)."""
        return {
            "id": self.id, "login": self.name, "login_name": "", "full_name": "", "email": self.email,
            "avatar_url": "", "language": "", "is_admin": self.is_admin, "active": True,
            "prohibit_login": False, "restricted": False, "visibility": "public", "username": self.name,
        }  # fmt: skip


class Db:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.executescript(SCHEMA)

    def one(self, sql: str, *args: object) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = self.conn.execute(sql, args).fetchone()
        return row

    def run(self, sql: str, *args: object) -> int:
        return int(self.conn.execute(sql, args).lastrowid or 0)

    # users ------------------------------------------------------------------

    def _user(self, row: tuple[object, ...] | None) -> User | None:
        return None if row is None else User(int(str(row[0])), str(row[1]), str(row[2]), bool(row[3]))

    def user_by_name(self, name: str) -> User | None:
        return self._user(self.one("SELECT id, name, email, is_admin FROM user WHERE lower(name) = lower(?)", name))

    def user_by_id(self, uid: int) -> User | None:
        return self._user(self.one("SELECT id, name, email, is_admin FROM user WHERE id = ?", uid))

    def users(self) -> list[User]:
        rows = self.conn.execute("SELECT id, name, email, is_admin FROM user ORDER BY id").fetchall()
        return [u for u in (self._user(r) for r in rows) if u is not None]

    def create_user(self, name: str, email: str, password: str, *, admin: bool, must_change: bool) -> User:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", name):
            raise GiteaError(f"name is invalid [{name}]: must be valid alpha or numeric or dash(-_) or dot characters")
        if self.user_by_name(name) is not None:
            raise GiteaError(f"CreateUser: user already exists [name: {name}]")
        if self.one("SELECT 1 FROM user WHERE lower(email) = lower(?)", email):
            raise GiteaError(f"CreateUser: e-mail already in use [email: {email}]")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            raise GiteaError(f"e-mail invalid [email: {email}]")
        if len(password) < 8:
            raise GiteaError("password is too short (minimum length is 8)")  # MIN_PASSWORD_LENGTH default
        salt = secrets.token_hex(16)
        uid = self.run(
            "INSERT INTO user (name, email, passwd, salt, is_admin, must_change, created) VALUES (?,?,?,?,?,?,?)",
            name, email, hash_password(password, salt), salt, int(admin), int(must_change), int(time.time()),
        )  # fmt: skip
        return User(uid, name, email, admin)

    def edit_user(self, user: User, *, password: str | None, must_change: bool | None) -> None:
        """What PATCH /api/v1/admin/users/{username} changes here: the password (re-salted) and
        must_change_password; every other EditUserOption field is accepted and not kept."""
        if password is not None:
            if len(password) < 8:
                raise GiteaError("password is too short (minimum length is 8)")
            salt = secrets.token_hex(16)
            self.run("UPDATE user SET passwd = ?, salt = ? WHERE id = ?", hash_password(password, salt), salt, user.id)
        if must_change is not None:
            self.run("UPDATE user SET must_change = ? WHERE id = ?", int(must_change), user.id)

    def check_password(self, name: str, password: str) -> User | None:
        row = self.one("SELECT id, passwd, salt FROM user WHERE lower(name) = lower(?)", name)
        if row is None or not secrets.compare_digest(str(row[1]), hash_password(password, str(row[2]))):
            return None
        return self.user_by_id(int(str(row[0])))

    # access tokens ------------------------------------------------------------

    def create_token(self, user: User, name: str, scopes: list[str]) -> str:
        if self.one("SELECT 1 FROM access_token WHERE uid = ? AND name = ?", user.id, name):
            raise GiteaError("access token name has been used already")
        token = secrets.token_hex(20)  # 40 hex characters, as Gitea's
        self.run("INSERT INTO access_token (uid, name, token_hash, scope) VALUES (?,?,?,?)",
                 user.id, name, digest(token), ",".join(scopes))  # fmt: skip
        return token

    def token_user(self, token: str) -> tuple[User, list[str]] | None:
        """The user and scopes of an access token, or of an OAuth2 access token (all scopes)."""
        row = self.one("SELECT uid, scope FROM access_token WHERE token_hash = ?", digest(token))
        if row is not None:
            user = self.user_by_id(int(str(row[0])))
            return None if user is None else (user, parse_scopes(str(row[1])))
        row = self.one("SELECT uid FROM oauth2_token WHERE token_hash = ? AND kind = 'access' AND expires > ?",
                       digest(token), time.time())  # fmt: skip
        user = None if row is None else self.user_by_id(int(str(row[0])))
        return None if user is None else (user, ["all"])

    # OAuth2 -------------------------------------------------------------------

    def create_app(self, user: User, name: str, redirect_uris: list[str], confidential: bool) -> dict[str, object]:
        client_id = _uuid4()
        secret = "gto_" + secrets.token_hex(26)
        created = int(time.time())
        app_id = self.run(
            "INSERT INTO oauth2_application (uid, name, client_id, secret_hash, redirect_uris, confidential, created)"
            " VALUES (?,?,?,?,?,?,?)",
            user.id, name, client_id, digest(secret), json.dumps(redirect_uris), int(confidential), created,
        )  # fmt: skip
        return {**self.app_api(app_id), "client_secret": secret}

    def app_api(self, app_id: int) -> dict[str, object]:
        row = self.one("SELECT id, name, client_id, redirect_uris, confidential, created FROM oauth2_application"
                       " WHERE id = ?", app_id)  # fmt: skip
        if row is None:
            raise GiteaError("OAuth2 application not found")
        return {
            "id": row[0], "name": row[1], "client_id": row[2], "client_secret": "",
            "redirect_uris": json.loads(str(row[3])), "confidential_client": bool(row[4]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(str(row[5])))),
        }  # fmt: skip

    def apps_of(self, user: User) -> list[dict[str, object]]:
        rows = self.conn.execute("SELECT id FROM oauth2_application WHERE uid = ? ORDER BY id", (user.id,)).fetchall()
        return [self.app_api(int(r[0])) for r in rows]

    def app_by_client(self, client_id: str) -> tuple[int, list[str], str, bool] | None:
        """id, redirect URIs, secret hash, confidential."""
        row = self.one("SELECT id, redirect_uris, secret_hash, confidential FROM oauth2_application"
                       " WHERE client_id = ?", client_id)  # fmt: skip
        if row is None:
            return None
        return int(str(row[0])), list(json.loads(str(row[1]))), str(row[2]), bool(row[3])

    def issue(self, table: str, column: str, uid: int, seconds: float, **extra: object) -> str:
        value = secrets.token_urlsafe(32)
        names = ", ".join([column, "uid", "expires", *extra])
        marks = ", ".join("?" * (3 + len(extra)))
        self.run(f"INSERT INTO {table} ({names}) VALUES ({marks})",  # noqa: S608 (names are ours)
                 digest(value), uid, time.time() + seconds, *extra.values())  # fmt: skip
        return value


def _uuid4() -> str:
    raw = bytearray(secrets.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
