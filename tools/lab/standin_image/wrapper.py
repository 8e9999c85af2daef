#!/usr/bin/python3
"""Entrypoint (PID 1) of the lab image forgeway-lab/gitlab-standin (tools/lab/images.py).

Installed as ``/assets/wrapper``, the path of the omnibus image's own entrypoint. It
reads what the omnibus gitlab/gitlab-ce container reads and answers on its ports, so a
lab host runs the program's GitLab container unchanged but for the image:

* ``GITLAB_OMNIBUS_CONFIG``: the gitlab.rb text (components/render/gitlab.py). Read here:
  ``external_url``, ``registry_external_url``, ``letsencrypt['enable']``,
  ``nginx['listen_port']``, ``nginx['ssl_certificate']``/``_key``,
  ``registry_nginx['listen_port']``, ``registry_nginx['ssl_certificate']``/``_key``; every
  other line is ignored. Certificates default to ``/etc/gitlab/ssl/<host>.crt``/``.key``,
  as in omnibus. With Let's Encrypt on (or unset, and the files missing, as omnibus
  decides) no ACME is possible here: a self-signed certificate is made, and said loudly.
  With it off, a missing certificate or key stops the container, naming the path. A
  key that is not root's alone (mode 0600 or stricter) stops it too: forgeway uploads
  keys so (omnibus itself would serve with a world-readable key; the stand-in is
  stricter so a regression fails in the lab).
* ``from_file '<path>'`` in GITLAB_OMNIBUS_CONFIG: the file is read there as more
  gitlab.rb (omnibus's docker gitlab.rb evals the variable where ``from_file`` works);
  it must exist and be root's alone, like a key. One level only.
* The root password, required: ``gitlab_rails['initial_root_password']`` (in gitlab.rb or
  a ``from_file``), or ``GITLAB_ROOT_PASSWORD``, which wins, as in omnibus
  (gitlab/libraries/gitlab_rails.rb). The registry's basic-auth password of user
  ``root``. Never logged, never on a command line, not passed on to any service.
* Volumes: ``/etc/gitlab`` (ssl/, the ssh host keys ``ssh_host_*_key`` and
  ``gitlab-secrets.json`` (root 0600, omnibus's shape: gitlab_rails.db_key_base,
  secret_key_base, otp_key_base, ..., registry.http_secret), each made on first start only),
  ``/var/log/gitlab`` (nginx/gitlab_access.log, nginx/gitlab_registry_access.log,
  nginx/error.log, sshd/current, registry/current, puma/current, sidekiq/current),
  ``/var/opt/gitlab`` (home of user ``git``: git-data/repositories, gitlab-rails/uploads,
  the registry's storage gitlab-rails/shared/registry, backups/, the API's state, and
  gitlab-rails/VERSION: the image's version, recorded at every start as omnibus's
  reconfigure does).
* Ports: 80 (301 to external_url), 443 (``/`` answers ``forgeway-gitlab-standin 443
  <client address>``, ``/-/health`` ``GitLab OK`` and ``/api/v4/`` from the API backend,
  service ``puma`` (gitlab_api.py: GitLab's REST API for runners and tokens, its state in
  /var/opt/gitlab, its log /var/log/gitlab/puma/current), ``/-/bulk`` 1 GiB of zeros for the
  lab's transfer tests and bench; uploads by their web path, from the API backend), 5050 (the
  registry, basic auth, only with registry_external_url), 22 (sshd, keys only, user ``git``:
  the keys of ``POST /api/v4/user/keys``, each running gitlab-shell, gitlab_projects.py).

Services (nginx, sshd, puma: the API, sidekiq: a stand-in that waits, registry:
docker-registry) run as children; their output goes to the container's stdout, one line
each, prefixed with the service's name. SIGTERM (or SIGINT) stops them and exits 0; any
service that exits by itself stops the rest and the container exits 1, but one stopped by
``gitlab-ctl stop`` (gitlab_ctl.py, over the control socket /run/gitlab-standin/control.sock,
root's alone) stays down while the container runs on, until ``gitlab-ctl start``, as runit
keeps omnibus's services. Only modules of python3-minimal are used.

Over 400 lines on purpose: it is copied into the image as the one file at the omnibus
entrypoint's path, with no package beside it to import from.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import urlsplit

CONFIG_ENV = "GITLAB_OMNIBUS_CONFIG"
PASSWORD_ENV = "GITLAB_ROOT_PASSWORD"  # noqa: S105 (the name of the variable)
ETC = Path("/etc/gitlab")
SSL_DIR = ETC / "ssl"
LOG_DIR = Path("/var/log/gitlab")
DATA_DIR = Path("/var/opt/gitlab")
REGISTRY_STORAGE = DATA_DIR / "gitlab-rails" / "shared" / "registry"
RUN_DIR = Path("/run/gitlab-standin")  # generated configs: fresh in every container
HEALTH_URL_FILE = RUN_DIR / "health-url"  # read by /opt/gitlab/bin/gitlab-healthcheck
# Lab-only: a sparse file for the lab's bulk-transfer tests and bench (GET /-/bulk, ranges).
BULK_FILE = RUN_DIR / "bulk"
BULK_SIZE = 1 << 30
HTTP_PORT = 80
SSH_PORT = 22
REGISTRY_BACKEND = "127.0.0.1:5000"
API_BACKEND = "127.0.0.1:8080"  # gitlab_api.py serve: omnibus's puma port
API_SCRIPT = "/opt/gitlab/embedded/service/gitlab-rails/api.py"
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")
VERSION_FILE = Path("/opt/gitlab/embedded/service/gitlab-rails/VERSION")  # the image's (tools/lab/images.py)
RUNNING_VERSION = DATA_DIR / "gitlab-rails" / "VERSION"  # recorded at each start, as omnibus's reconfigure does
# An image carrying this file fails any upgrade (tests/lab/test_lab_upgrade.py commits one).
FAIL_UPGRADE = Path("/opt/gitlab/embedded/service/gitlab-rails/FORGEWAY_LAB_FAIL_UPGRADE")
MIGRATIONS_UNTIL = DATA_DIR / "gitlab-rails" / "standin-migrations-until"  # gitlab_api.py reads it
MIGRATION_SECONDS = 4
SECRETS_JSON = ETC / "gitlab-secrets.json"
SHELL_SECRET = DATA_DIR / "gitlab-rails" / "etc" / "gitlab_shell_secret"  # readable by git: gitlab-shell's
CONTROL_SOCKET = RUN_DIR / "control.sock"  # gitlab-ctl talks to the supervisor here (gitlab_ctl.py)
DATA_DIRS = {  # path: (owner, mode), as omnibus makes them
    DATA_DIR / "git-data": ("git", 0o700),
    DATA_DIR / "git-data" / "repositories": ("git", 0o2770),
    DATA_DIR / "gitlab-rails" / "uploads": ("git", 0o700),
    DATA_DIR / "backups": ("git", 0o700),
}
STOP_TIMEOUT = 4.0  # seconds a service gets after SIGTERM before SIGKILL
BANNER = "forgeway-gitlab-standin"
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NGINX_USER = "www-data"

# A single-quoted Ruby literal: only \\ and \' are escapes (components/render/gitlab.py ruby_str).
_RUBY_STR = r"'(?P<str>(?:[^'\\]|\\.)*)'"
_TRAILER = r"\s*(?:#.*)?"
_FROM_FILE_LINE = re.compile(r"\s*from_file\s*\(?\s*" + _RUBY_STR + r"\s*\)?" + _TRAILER)
_URL_LINE = re.compile(r"\s*(?P<key>external_url|registry_external_url)\s+" + _RUBY_STR + _TRAILER)
_SETTING_LINE = re.compile(
    r"\s*(?P<key>[a-z_]+\['[a-z_]+'\])\s*=\s*(?:" + _RUBY_STR + r"|(?P<bool>true|false)|(?P<int>\d+))" + _TRAILER
)
ROOT_PASSWORD_KEY = "gitlab_rails['initial_root_password']"  # noqa: S105 (a setting's name)
KEYS = (
    "external_url",
    "registry_external_url",
    "letsencrypt['enable']",
    "nginx['listen_port']",
    "nginx['ssl_certificate']",
    "nginx['ssl_certificate_key']",
    "registry_nginx['listen_port']",
    "registry_nginx['ssl_certificate']",
    "registry_nginx['ssl_certificate_key']",
    ROOT_PASSWORD_KEY,
)
# What may go into nginx.conf unquoted: host names and paths, never a `$`, quote or `;`.
_SAFE_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/@+-]+")

Value = str | bool | int


class Fatal(Exception):
    """A configuration the container cannot start with; the message says what and where."""


class Site(NamedTuple):
    host: str
    origin: str  # https://host[:port], no path
    listen_port: int
    certificate: Path
    key: Path


class Settings(NamedTuple):
    gitlab: Site
    registry: Site | None
    letsencrypt: bool | None  # None: not set in gitlab.rb
    root_password: str | None  # gitlab_rails['initial_root_password']; never logged


# --------------------------------------------------------------------------- gitlab.rb


def ruby_unquote(body: str) -> str:
    r"""The value of a single-quoted Ruby literal's body: ``\\`` is ``\``, ``\'`` is ``'``."""
    return re.sub(r"\\([\\'])", r"\1", body)


def private_file(path: Path, what: str) -> None:
    """Fatal unless ``path`` is root's alone: owner root, no group or other permission bits."""
    st = path.stat()
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise Fatal(
            f"{what} {path} is mode {st.st_mode & 0o7777:04o} owned by uid {st.st_uid}: "
            "a private file must be root's alone (0600)"
        )


def parse_gitlab_rb(text: str, source: str = CONFIG_ENV, *, included: bool = False) -> dict[str, Value]:
    """The settings of :data:`KEYS` found in ``text`` and the files it loads with ``from_file``.

    Lines apply in order, a loaded file's where its ``from_file`` stands (as Ruby would);
    a line setting a key that cannot be read is fatal.
    """
    found: dict[str, Value] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("from_file"):
            found.update(_from_file(line, f"{source} line {number}", included))
            continue
        key = next((k for k in KEYS if stripped.startswith(k) and stripped[len(k) :][:1] in (" ", "\t", "=")), None)
        if key is None:
            continue
        match = _URL_LINE.fullmatch(line) or _SETTING_LINE.fullmatch(line)
        if match is None or match.group("key") != key:
            shown = "its line (not shown: a secret)" if key == ROOT_PASSWORD_KEY else repr(line.strip())
            raise Fatal(f"{source} line {number}: cannot read {key} from {shown}")
        groups = match.groupdict()
        if groups.get("str") is not None:
            found[key] = ruby_unquote(groups["str"])
        elif groups.get("bool") is not None:
            found[key] = groups["bool"] == "true"
        elif groups.get("int") is not None:
            found[key] = int(groups["int"])
    return found


def _from_file(line: str, where: str, included: bool) -> dict[str, Value]:
    match = _FROM_FILE_LINE.fullmatch(line)
    if match is None or included:
        raise Fatal(f"{where}: the stand-in reads one level of from_file '<absolute path>' only: {line.strip()!r}")
    path = Path(ruby_unquote(match.group("str")))
    if not path.is_absolute() or not path.is_file():
        raise Fatal(f"{where}: from_file {str(path)!r}: no such file (upload it before the container starts)")
    private_file(path, f"{where}: from_file")
    return parse_gitlab_rb(path.read_text(), str(path), included=True)


def _str(found: dict[str, Value], key: str) -> str | None:
    value = found.get(key)
    if value is not None and not isinstance(value, str):
        raise Fatal(f"{CONFIG_ENV}: {key} must be a string, not {'a secret' if key == ROOT_PASSWORD_KEY else value!r}")
    return value


def _port(found: dict[str, Value], key: str, default: int) -> int:
    value = found.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise Fatal(f"{CONFIG_ENV}: {key} must be a port number, not {value!r}")
    return value


def _path(found: dict[str, Value], key: str, default: Path) -> Path:
    value = _str(found, key)
    if value is None:
        return default
    if not _SAFE_PATH.fullmatch(value):
        raise Fatal(f"{CONFIG_ENV}: {key} = {value!r}: the stand-in takes absolute paths of [A-Za-z0-9._/@+-] only")
    return Path(value)


def _site(found: dict[str, Value], url_key: str, prefix: str, default_port: int) -> Site | None:
    url = _str(found, url_key)
    if url is None:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as err:
        raise Fatal(f"{CONFIG_ENV}: {url_key} {url!r}: {err}") from err
    host = parts.hostname or ""
    if parts.scheme != "https" or not _host_ok(host):
        raise Fatal(f"{CONFIG_ENV}: {url_key} {url!r}: the stand-in serves https://<host name or address> only")
    shown = f"[{host}]" if ":" in host else host
    origin = f"https://{shown}" if port in (None, 443) else f"https://{shown}:{port}"
    return Site(
        host=host,
        origin=origin,
        listen_port=_port(found, f"{prefix}['listen_port']", default_port),
        certificate=_path(found, f"{prefix}['ssl_certificate']", SSL_DIR / f"{host}.crt"),
        key=_path(found, f"{prefix}['ssl_certificate_key']", SSL_DIR / f"{host}.key"),
    )


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_SAFE_HOST.fullmatch(host))
    return True


def settings(text: str) -> Settings:
    found = parse_gitlab_rb(text)
    gitlab = _site(found, "external_url", "nginx", 443)
    if gitlab is None:
        raise Fatal(f"{CONFIG_ENV} sets no external_url '...'")
    letsencrypt = found.get("letsencrypt['enable']")
    if letsencrypt is not None and not isinstance(letsencrypt, bool):
        raise Fatal(f"{CONFIG_ENV}: letsencrypt['enable'] must be true or false, not {letsencrypt!r}")
    registry = _site(found, "registry_external_url", "registry_nginx", 5050)
    root_password = _str(found, ROOT_PASSWORD_KEY)
    return Settings(gitlab=gitlab, registry=registry, letsencrypt=letsencrypt, root_password=root_password)


# --------------------------------------------------------------------------- logging


_print_lock = threading.Lock()


def log(message: str, service: str = "wrapper") -> None:
    with _print_lock:
        sys.stdout.write(f"{service}: {message}\n")
        sys.stdout.flush()


def _run(argv: list[str], *, stdin: str | None = None) -> str:
    """Run a setup command; its failure is fatal, with its output (never ``stdin``)."""
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, check=False, env={"PATH": SERVICE_PATH}, timeout=120
    )
    if done.returncode != 0:
        raise Fatal(f"{' '.join(argv)} failed ({done.returncode}): {(done.stdout + done.stderr).strip()[-2000:]}")
    return done.stdout


# --------------------------------------------------------------------------- setup


def _tls_files(site: Site, letsencrypt: bool | None, which: str) -> None:
    """Make sure ``site``'s certificate and key exist (self-signed when Let's Encrypt would act)."""
    missing = [path for path in (site.certificate, site.key) if not path.is_file()]
    if site.key not in missing:
        private_file(site.key, f"{which}['ssl_certificate_key']")
    if not missing:
        if letsencrypt:
            log(
                f"WARNING: letsencrypt['enable'] = true, but the stand-in cannot do ACME: {which} keeps "
                f"the certificate already in {site.certificate}"
            )
        return
    if letsencrypt is False:
        names = {site.certificate: "ssl_certificate", site.key: "ssl_certificate_key"}
        raise Fatal(
            "letsencrypt['enable'] = false and "
            + ", ".join(f"{which}['{names[p]}'] {p} is missing" for p in missing)
            + ": upload it before the container starts"
        )
    for path in (site.certificate, site.key):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    try:
        ipaddress.ip_address(site.host)
        san = f"IP:{site.host}"
    except ValueError:
        san = f"DNS:{site.host}"
    _run([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "90", "-subj", f"/CN={site.host}", "-addext", f"subjectAltName={san}",
        "-keyout", str(site.key), "-out", str(site.certificate),
    ])  # fmt: skip
    site.key.chmod(0o600)
    banner = "!" * 78
    log(banner)
    log(f"LET'S ENCRYPT IS NOT AVAILABLE IN THE STAND-IN: {which} serves a SELF-SIGNED certificate")
    log(f"for {site.host}: {site.certificate} (key {site.key}); clients will not trust it")
    log(banner)


def _ssh_host_keys() -> list[Path]:
    """/etc/gitlab/ssh_host_<type>_key, each made only if missing (kept in the config volume)."""
    keys = []
    for key_type in SSH_KEY_TYPES:
        key = ETC / f"ssh_host_{key_type}_key"
        if not key.is_file():
            key.with_name(key.name + ".pub").unlink(missing_ok=True)
            _run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "", "-f", str(key)])
            log(f"made ssh host key {key}")
        key.chmod(0o600)
        keys.append(key)
    return keys


def _hex(size: int = 64) -> str:
    return os.urandom(size).hex()


def gitlab_secrets() -> dict[str, Any]:
    """/etc/gitlab/gitlab-secrets.json, made at first start when missing (root 0600), as omnibus does.

    Omnibus's shape (files/gitlab-cookbooks/gitlab/libraries/secrets.rb): the keys the stand-in
    uses or a backup must keep; kept in the config volume, never made again while it exists.
    """
    if SECRETS_JSON.is_file():
        private_file(SECRETS_JSON, "gitlab-secrets.json")
        try:
            loaded = json.loads(SECRETS_JSON.read_text())
        except json.JSONDecodeError as err:
            raise Fatal(f"{SECRETS_JSON}: not JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(loaded, dict):
            raise Fatal(f"{SECRETS_JSON}: not a JSON object")
        return loaded
    made: dict[str, Any] = {
        "gitlab_workhorse": {"secret_token": base64.b64encode(os.urandom(32)).decode()},
        "gitlab_shell": {"secret_token": _hex()},
        "gitlab_rails": {
            "secret_key_base": _hex(), "db_key_base": _hex(), "otp_key_base": _hex(),
            "encrypted_settings_key_base": _hex(),
            "active_record_encryption_primary_key": [base64.b64encode(os.urandom(24)).decode().rstrip("=")],
            "active_record_encryption_deterministic_key": [base64.b64encode(os.urandom(24)).decode().rstrip("=")],
            "active_record_encryption_key_derivation_salt": base64.b64encode(os.urandom(24)).decode().rstrip("="),
        },
        "registry": {"http_secret": _hex()},
    }  # fmt: skip
    partial = SECRETS_JSON.with_name(".gitlab-secrets.json.new")
    partial.write_text(json.dumps(made, indent=2) + "\n")
    partial.chmod(0o600)
    os.replace(partial, SECRETS_JSON)
    log(f"made {SECRETS_JSON} (first start): keep it with your backups")
    return made


def record_version() -> str:
    """The image's version, written to the data volume (/var/opt/gitlab/gitlab-rails/VERSION).

    Another version recorded there is an upgrade: as omnibus, refused (the container exits)
    when ``gitlab-ctl upgrade-check OLD NEW`` refuses it, or when the image carries
    :data:`FAIL_UPGRADE` (the lab's failing upgrade: the data stays as it was); otherwise
    batched background migrations are pending for :data:`MIGRATION_SECONDS`
    (``gitlab-rails runner`` answers BatchedMigration.queued.count).
    """
    try:
        version = VERSION_FILE.read_text().strip()
    except OSError:
        raise Fatal(f"{VERSION_FILE} is missing: the image says no version") from None
    previous = RUNNING_VERSION.read_text().strip() if RUNNING_VERSION.is_file() else ""
    if previous and previous != version:
        checked = subprocess.run(
            ["gitlab-ctl", "upgrade-check", previous, version], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise Fatal(checked.stderr.strip() or f"gitlab-ctl upgrade-check {previous} {version} failed")
        if FAIL_UPGRADE.exists():
            raise Fatal(f"upgrade {previous} -> {version}: a database migration failed (the lab's failing image)")
        MIGRATIONS_UNTIL.parent.mkdir(parents=True, exist_ok=True)
        MIGRATIONS_UNTIL.write_text(f"{time.time() + MIGRATION_SECONDS}\n")
        log(f"upgraded from {previous} to {version}: background migrations queued")
    RUNNING_VERSION.parent.mkdir(parents=True, exist_ok=True)
    RUNNING_VERSION.write_text(version + "\n")
    return version


def _data_dirs(secrets: dict[str, Any]) -> None:
    """Git data, uploads and backups directories (owner git), and gitlab-shell's secret (root:git 0640)."""
    for path, (owner, mode) in DATA_DIRS.items():
        path.mkdir(parents=True, exist_ok=True)
        _run(["chown", f"{owner}:{owner}", str(path)])
        path.chmod(mode)
    SHELL_SECRET.parent.mkdir(parents=True, exist_ok=True)
    SHELL_SECRET.write_text(str(secrets.get("gitlab_shell", {}).get("secret_token", "")) + "\n")
    os.chown(SHELL_SECRET, 0, _gid("git"))
    SHELL_SECRET.chmod(0o640)


def _git_user() -> None:
    """User ``git`` (home /var/opt/gitlab, as omnibus), not locked: key logins only."""
    done = subprocess.run(["id", "-u", "git"], capture_output=True, check=False, env={"PATH": SERVICE_PATH})
    if done.returncode != 0:
        _run(["useradd", "--system", "--no-create-home", "--home-dir", str(DATA_DIR), "--shell", "/bin/sh", "git"])
    _run(["usermod", "--password", "*", "git"])  # "!" (locked) would make sshd refuse keys too


def _htpasswd(password: str) -> Path:
    """``root:<SHA-512 crypt>`` for nginx; the password goes to openssl on stdin."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise Fatal("the root password contains a control character")
    hashed = _run(["openssl", "passwd", "-6", "-stdin"], stdin=password + "\n").strip()
    path = RUN_DIR / "registry.htpasswd"
    path.write_text(f"root:{hashed}\n")
    os.chown(path, 0, _gid(NGINX_USER))
    path.chmod(0o640)
    return path


def _gid(group: str) -> int:
    for line in Path("/etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return int(fields[2])
    raise Fatal(f"no group {group} in the image")


def has_ipv6() -> bool:
    """Whether this container has IPv6 at all (any address, ::1 included)."""
    table = Path("/proc/net/if_inet6")
    return table.exists() and table.read_text().strip() != ""


def _listen(port: int, flags: str, ipv6: bool) -> list[str]:
    """nginx's listen lines: omnibus listens on '*' and '[::]' (nginx['listen_addresses']
    default, gitlab/attributes/default.rb); [::] only where the container has IPv6."""
    return [f"    listen {port}{flags};"] + ([f"    listen [::]:{port}{flags};"] if ipv6 else [])


def nginx_conf(s: Settings, htpasswd: Path, ipv6: bool = False) -> str:
    logs = LOG_DIR / "nginx"
    tmp = RUN_DIR / "nginx"
    g = s.gitlab
    lines = [
        f"user {NGINX_USER};",
        "worker_processes 1;",
        "daemon off;",
        f"pid {RUN_DIR}/nginx.pid;",
        "error_log stderr warn;",
        f"error_log {logs}/error.log warn;",
        "events { worker_connections 1024; }",
        "http {",
        "  default_type text/plain;",
        "  server_tokens off;",
        '  log_format gitlab \'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent"\';',
        '  log_format gitlab_stdout \'$server_port $remote_addr - $remote_user [$time_local] "$request" $status '
        '$body_bytes_sent "$http_user_agent"\';',
        "  access_log /dev/stdout gitlab_stdout;",
        f"  client_body_temp_path {tmp}/client_body;",
        f"  proxy_temp_path {tmp}/proxy;",
        f"  fastcgi_temp_path {tmp}/fastcgi;",
        f"  uwsgi_temp_path {tmp}/uwsgi;",
        f"  scgi_temp_path {tmp}/scgi;",
        "  ssl_protocols TLSv1.2 TLSv1.3;",
        "  ssl_session_cache shared:SSL:1m;",
        "  server {",
        *_listen(HTTP_PORT, " default_server", ipv6),
        f"    access_log {logs}/gitlab_access.log gitlab;",
        "    access_log /dev/stdout gitlab_stdout;",
        f"    location / {{ return 301 {g.origin}$request_uri; }}",
        "  }",
        "  server {",
        *_listen(g.listen_port, " ssl default_server", ipv6),
        f"    ssl_certificate {g.certificate};",
        f"    ssl_certificate_key {g.key};",
        f"    access_log {logs}/gitlab_access.log gitlab;",
        "    access_log /dev/stdout gitlab_stdout;",
        f"    location = /-/bulk {{ default_type application/octet-stream; alias {BULK_FILE}; }}",
        # rails answers /-/health in omnibus: healthy means the API (and gitlab-rails) can work
        f"    location = /-/health {{ proxy_pass http://{API_BACKEND}; }}",
        "    location /api/v4/ {",
        "      client_max_body_size 100m;  # GitLab's default maximum attachment size",
        f"      proxy_pass http://{API_BACKEND};",
        "      proxy_set_header Host $http_host;",
        "      proxy_set_header X-Forwarded-For $remote_addr;",
        "      proxy_set_header X-Forwarded-Proto https;",
        "    }",
        # uploads by their web path (rails serves them in omnibus)
        "    location ~ ^/(-/project/[0-9]+|[^/]+/[^/]+)/uploads/ {",
        f"      proxy_pass http://{API_BACKEND};",
        "      proxy_set_header Host $http_host;",
        "    }",
        '    location = /-/liveness { default_type application/json; return 200 \'{"status":"ok"}\\n\'; }',
        '    location = /-/readiness { default_type application/json; return 200 \'{"status":"ok"}\\n\'; }',
        f'    location / {{ return 200 "{BANNER} $server_port $remote_addr\\n"; }}',
        "  }",
    ]
    if s.registry is not None:
        r = s.registry
        lines += [
            # Set only when the registry did not: nginx's own 401 needs it too, or docker
            # login takes the registry for a v1 one.
            "  map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {",
            "    '' 'registry/2.0';",
            "  }",
            "  server {",
            *_listen(r.listen_port, " ssl", ipv6),
            f"    ssl_certificate {r.certificate};",
            f"    ssl_certificate_key {r.key};",
            f"    access_log {logs}/gitlab_registry_access.log gitlab;",
            "    access_log /dev/stdout gitlab_stdout;",
            "    client_max_body_size 0;  # layers of any size",
            "    chunked_transfer_encoding on;",
            "    location /v2/ {",
            '      auth_basic "Registry realm";',
            f"      auth_basic_user_file {htpasswd};",
            "      add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;",
            f"      proxy_pass http://{REGISTRY_BACKEND};",
            "      proxy_http_version 1.1;",
            "      proxy_request_buffering off;  # stream layer uploads through",
            "      proxy_buffering off;",
            "      proxy_set_header Host $http_host;",
            "      proxy_set_header X-Real-IP $remote_addr;",
            "      proxy_set_header X-Forwarded-For $remote_addr;",
            "      proxy_set_header X-Forwarded-Proto https;",
            "      proxy_read_timeout 900;",
            "    }",
            "    location / { return 404; }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def registry_conf(secret: str) -> str:
    return f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true  # nginx logs every request; "response completed" lines have the client address
storage:
  filesystem:
    rootdirectory: {REGISTRY_STORAGE}
  delete:
    enabled: true
http:
  addr: {REGISTRY_BACKEND}
  secret: {secret}
  relativeurls: true
  headers:
    X-Content-Type-Options: [nosniff]
"""


def sshd_conf(keys: list[Path]) -> str:
    return "\n".join([
        f"Port {SSH_PORT}",
        *(f"HostKey {key}" for key in keys),
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        "AllowUsers git",
        f"AuthorizedKeysFile %h/.ssh/authorized_keys {DATA_DIR}/.ssh/authorized_keys",
        "PrintMotd no",
        "UseDNS no",
        "AcceptEnv GIT_PROTOCOL",
        "LogLevel VERBOSE",  # logs "Connection from <address> port <port>"
        f"PidFile {RUN_DIR}/sshd.pid",
    ]) + "\n"  # fmt: skip


class Service(NamedTuple):
    name: str
    argv: list[str]
    log_file: Path | None  # besides stdout; nginx writes its own files


def prepare(environ: dict[str, str]) -> list[Service]:
    """Check the environment, make keys, certificates and configs; the services to start."""
    text = environ.get(CONFIG_ENV)
    if not text:
        raise Fatal(f"{CONFIG_ENV} is not set: it must hold the gitlab.rb text with external_url")
    s = settings(text)
    password = environ.get(PASSWORD_ENV) or s.root_password  # the env wins, as in omnibus
    if not password:
        raise Fatal(
            f"no root password: set {ROOT_PASSWORD_KEY} (in gitlab.rb or a from_file) or {PASSWORD_ENV}; "
            "the stand-in, unlike GitLab, does not make one up"
        )
    if len(password) < 8:
        log("WARNING: the root password is shorter than 8 characters: GitLab would refuse it")
    logs = [LOG_DIR / name for name in ("nginx", "sshd", "registry", "puma", "sidekiq")]
    for directory in (ETC, SSL_DIR, *logs, DATA_DIR, RUN_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (RUN_DIR / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    _tls_files(s.gitlab, s.letsencrypt, "nginx")
    if s.registry is not None and s.registry.certificate != s.gitlab.certificate:
        _tls_files(s.registry, s.letsencrypt, "registry_nginx")
    htpasswd = _htpasswd(password)
    keys = _ssh_host_keys()
    secrets = gitlab_secrets()
    version = record_version()
    _git_user()
    _data_dirs(secrets)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory

    nginx = RUN_DIR / "nginx.conf"
    nginx.write_text(nginx_conf(s, htpasswd, ipv6=has_ipv6()))
    _run(["nginx", "-e", "stderr", "-t", "-q", "-c", str(nginx)])
    sshd = RUN_DIR / "sshd_config"
    sshd.write_text(sshd_conf(keys))
    _run(["/usr/sbin/sshd", "-t", "-f", str(sshd)])
    HEALTH_URL_FILE.write_text(f"https://127.0.0.1:{s.gitlab.listen_port}/-/health\n")
    with BULK_FILE.open("wb") as bulk:
        bulk.truncate(BULK_SIZE)  # sparse: no disk used, zeros read back

    services = [
        Service("nginx", ["nginx", "-e", "stderr", "-c", str(nginx)], None),
        Service("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(sshd)], LOG_DIR / "sshd" / "current"),
        Service("puma", ["python3", API_SCRIPT, "serve"], LOG_DIR / "puma" / "current"),
        Service("sidekiq", ["python3", API_SCRIPT, "sidekiq"], LOG_DIR / "sidekiq" / "current"),
    ]
    if s.registry is not None:
        REGISTRY_STORAGE.mkdir(parents=True, exist_ok=True)
        registry = RUN_DIR / "registry.yml"
        registry.write_text(registry_conf(str(secrets.get("registry", {}).get("http_secret") or _hex(24))))
        registry.chmod(0o600)
        services.append(
            Service("registry", ["docker-registry", "serve", str(registry)], LOG_DIR / "registry" / "current")
        )
    log(
        f"{BANNER} GitLab {version}: external_url {s.gitlab.origin} "
        f"(https on {s.gitlab.listen_port}, http on {HTTP_PORT}), "
        + (f"registry {s.registry.origin} on {s.registry.listen_port}, " if s.registry else "no registry, ")
        + f"ssh on {SSH_PORT}"
    )
    return services


# --------------------------------------------------------------------------- supervision


def _pump(name: str, stream: IO[bytes], log_file: Path | None) -> None:
    """Copy a service's output, line by line, to stdout (prefixed) and to its log file."""
    out = log_file.open("a", buffering=1) if log_file is not None else None
    try:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            log(line, name)
            if out is not None:
                out.write(line + "\n")
    finally:
        if out is not None:
            out.close()


class Supervisor:
    """The services as runit keeps them in omnibus: each runs until the container stops, or
    until ``gitlab-ctl stop`` (the control socket, :meth:`control`) takes it down; a service
    that exits by itself stops the container, as before."""

    def __init__(self) -> None:
        self.stopping = False
        self.lock = threading.RLock()
        self.children: dict[int, str] = {}  # pid -> service name, while it runs
        self.services: dict[str, Service] = {}  # every service, in start order
        self.since: dict[str, float] = {}  # when each went up or down (monotonic)
        self.held_down: set[str] = set()  # stopped by gitlab-ctl: its exit is no failure
        self.pumps: list[threading.Thread] = []
        self.born = time.monotonic()

    def on_signal(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log(f"{signal.Signals(signum).name}: stopping")
        self.stopping = True

    def start(self, service: Service) -> None:
        with self.lock:
            self.services.setdefault(service.name, service)
            self.held_down.discard(service.name)
            proc = subprocess.Popen(
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={"PATH": SERVICE_PATH, "LANG": "C.UTF-8"},  # not ours: no password, no gitlab.rb
            )
            assert proc.stdout is not None
            pump = threading.Thread(target=_pump, args=(service.name, proc.stdout, service.log_file), daemon=True)
            pump.start()
            self.pumps.append(pump)
            self.children[proc.pid] = service.name
            self.since[service.name] = time.monotonic()
        log(f"started {service.name} (pid {proc.pid})")

    def pid_of(self, name: str) -> int | None:
        with self.lock:
            return next((pid for pid, n in self.children.items() if n == name), None)

    def reap(self) -> list[tuple[str, int]]:
        """Reap every exited child (services and orphans PID 1 inherits); the services among
        them that were not stopped on purpose (gitlab-ctl stop)."""
        ended = []
        with self.lock:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in self.children:
                    name = self.children.pop(pid)
                    self.since[name] = time.monotonic()
                    code = os.waitstatus_to_exitcode(status)
                    if name in self.held_down:
                        log(f"{name} stopped ({code})")
                    else:
                        ended.append((name, code))
        return ended

    def run(self) -> int:
        threading.Thread(target=self.serve_control, daemon=True).start()
        while not self.stopping:
            ended = self.reap()
            if ended:
                for name, code in ended:
                    log(f"{name} exited ({code}): stopping the container")
                self.stop()
                return 1
            time.sleep(0.2)
        self.stop()
        return 0

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 2.0)):
            with self.lock:
                self.held_down.update(self.children.values())
                pids = list(self.children)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.children and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.05)
            if not self.children:
                break
        for pump in self.pumps:
            pump.join(timeout=1.0)

    # ----------------------------------------------------------------------- gitlab-ctl

    def stop_service(self, name: str) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns once the main loop has reaped it."""
        with self.lock:
            pid = self.pid_of(name)
            self.held_down.add(name)
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 2.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pid_of(name) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.pid_of(name) is None:
                return

    def status_line(self, name: str) -> str:
        now = time.monotonic()
        pid = self.pid_of(name)
        log_part = f"; run: log: (pid {os.getpid()}) {int(now - self.born)}s"
        seconds = int(now - self.since.get(name, self.born))
        if pid is not None:
            return f"run: {name}: (pid {pid}) {seconds}s{log_part}"
        return f"down: {name}: {seconds}s, normally up{log_part}"

    def control(self, command: str, service: str | None) -> tuple[list[str], int]:
        """One gitlab-ctl command: its output lines (runit's words) and exit status."""
        if command == "reconfigure":
            gitlab_secrets()
            version = record_version()
            return [f"Recipe: gitlab::default (stand-in: GitLab {version})", "gitlab Reconfigured!"], 0
        names = list(self.services) if service is None else [service]
        if service is not None and service not in self.services:
            return [f"fail: {service}: unable to change to service directory: file does not exist"], 1
        lines = []
        if command == "status":
            lines = [self.status_line(name) for name in names]
            return lines, 0 if all(self.pid_of(name) is not None for name in names) else 3
        for name in reversed(names) if command == "stop" else names:
            if command in ("stop", "restart"):
                self.stop_service(name)
            if command in ("start", "restart") and self.pid_of(name) is None and not self.stopping:
                self.start(self.services[name])
            lines.append("ok: " + self.status_line(name).split(";")[0])
        return lines, 0

    def serve_control(self) -> None:
        """The control socket (root's alone): one JSON request a connection, text lines back, ``exit N`` last."""
        CONTROL_SOCKET.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(CONTROL_SOCKET))
        CONTROL_SOCKET.chmod(0o600)
        server.listen(4)
        while True:
            connection, _ = server.accept()
            command, service = "?", None
            with connection, connection.makefile("rw") as stream:
                try:
                    request = json.loads(stream.readline())
                    command, service = str(request["command"]), request.get("service")
                    service = service if isinstance(service, str) else None
                    if command not in ("status", "stop", "start", "restart", "reconfigure"):
                        raise ValueError(f"unknown command {command!r}")
                    lines, code = self.control(command, service)
                except (ValueError, KeyError, TypeError, Fatal) as err:
                    lines, code = [f"fail: {err}"], 1
                stream.write("".join(f"{line}\n" for line in lines) + f"exit {code}\n")
                stream.flush()
            if command != "status":
                log(f"gitlab-ctl {command} {service or ''}: exit {code}")


def main() -> int:
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    environ = dict(os.environ)
    os.environ.pop(PASSWORD_ENV, None)  # no child inherits it
    try:
        services = prepare(environ)
    except Fatal as err:
        log(f"FATAL: {err}")
        return 1
    for service in services:
        if supervisor.stopping:
            break
        supervisor.start(service)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
