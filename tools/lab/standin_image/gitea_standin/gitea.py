#!/usr/bin/python3
"""``gitea`` of the Gitea stand-in (/usr/local/bin/gitea in the image): the subcommands forgeway uses.

* ``gitea web``: the server (gitea_web.py);
* ``gitea admin user create --username U --email E (--password P | --random-password)
  [--admin] [--must-change-password[=false]]``;
* ``gitea admin user generate-access-token --username U [--token-name N] [--scopes S] [--raw]``;
* ``gitea admin user list``;
* ``gitea serv key-<id>``: sshd's forced command (authorized_keys), git over SSH.

Each refuses root as Gitea does (``GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true`` overrides, as
there). Global ``--config``/``-c`` and ``--work-path``/``-w`` are taken anywhere. Words, flags and
exit codes follow Gitea 1.22's cmd/admin_user_*.go; see docs/lab-gitea.md.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.lab.standin_image.gitea_standin.gitea_db import (
        VERSION,
        Db,
        GiteaError,
        Settings,
        parse_scopes,
        refuse_root,
        settings,
    )
    from tools.lab.standin_image.gitea_standin.gitea_web import serve
else:  # beside this file, in the repository and in the image (/usr/local/lib/gitea-standin)
    sys.path.insert(0, str(Path(os.path.realpath(__file__)).parent))
    from gitea_db import VERSION, Db, GiteaError, Settings, parse_scopes, refuse_root, settings
    from gitea_web import serve


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "t"):
        return True
    if text.lower() in ("false", "0", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gitea")
    top.add_argument("--version", "-v", action="store_true")
    commands = top.add_subparsers(dest="command")
    commands.add_parser("web").add_argument("--port", "-p", type=int)
    serv = commands.add_parser("serv")
    serv.add_argument("key")
    admin = commands.add_parser("admin").add_subparsers(dest="admin_command", required=True)
    user = admin.add_parser("user").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--password")
    create.add_argument("--random-password", action="store_true")
    create.add_argument("--random-password-length", type=int, default=12)
    create.add_argument("--admin", nargs="?", const=True, default=False, type=_bool)
    create.add_argument("--must-change-password", nargs="?", const=True, default=None, type=_bool)
    create.add_argument("--access-token", action="store_true")
    token = user.add_parser("generate-access-token")
    token.add_argument("--username", "-u")
    token.add_argument("--token-name", "-t", default="gitea-admin")
    token.add_argument("--scopes", default="")  # Gitea's default: no scope at all
    token.add_argument("--raw", action="store_true")
    user.add_parser("list").add_argument("--admin", action="store_true")
    return top


def _globals(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take out the global --config/-c and --work-path/-w (urfave/cli takes them at any level)."""
    rest: list[str] = []
    env: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in ("--config", "-c", "--work-path", "-w", "--custom-path", "-C"):
            value = value if eq else next(args, "")
            if name in ("--config", "-c"):
                env["GITEA_CUSTOM"] = str(Path(value).resolve().parent.parent)  # <custom>/conf/app.ini
            elif name in ("--custom-path", "-C"):
                env["GITEA_CUSTOM"] = value
        else:
            rest.append(arg)
    return rest, env


def create_user(db: Db, args: argparse.Namespace) -> int:
    if args.password and args.random_password:
        raise GiteaError("cannot set both -random-password and -password flags")
    if not args.password and not args.random_password:
        raise GiteaError("must set either password or random-password flag")
    password = args.password or secrets.token_urlsafe(args.random_password_length)[: args.random_password_length]
    if args.random_password:
        print(f"generated random password is '{password}'")
    # Gitea: true, but false for the first user (taken as the admin), unless the flag says
    must_change = bool(db.users()) if args.must_change_password is None else args.must_change_password
    user = db.create_user(args.username, args.email, password, admin=args.admin, must_change=must_change)
    if args.access_token:
        print(f"Access token was successfully created... {db.create_token(user, 'gitea-admin', ['all'])}")
    print(f"New user '{user.name}' has been successfully created!")
    return 0


def generate_token(db: Db, args: argparse.Namespace) -> int:
    if args.username is None:
        raise GiteaError("You must provide a username to generate a token for")
    user = db.user_by_name(args.username)
    if user is None:
        raise GiteaError(f"user does not exist [uid: 0, name: {args.username}]")
    token = db.create_token(user, args.token_name, parse_scopes(args.scopes))
    print(token if args.raw else f"Access token was successfully created: {token}")
    return 0


def serv(s: Settings, db: Db, key: str) -> int:
    """git-upload-pack / git-receive-pack for the key's user, as ``gitea serv`` checks them."""
    match = re.fullmatch(r"key-(\d+)", key)
    row = db.one("SELECT uid FROM public_key WHERE id = ?", int(match[1])) if match else None
    user = db.user_by_id(int(str(row[0]))) if row else None
    if user is None:
        raise GiteaError(f"Gitea: Cannot find key: {key}")
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if not original:
        print(f"Hi there, {user.name}! You've successfully authenticated with the key named, but Gitea does not "
              "provide shell access.", file=sys.stderr)  # fmt: skip
        return 0
    words = shlex.split(original)
    if len(words) != 2 or words[0] not in ("git-upload-pack", "git-receive-pack", "git-upload-archive"):
        raise GiteaError(f"Gitea: Unknown git command: {original}")
    path = re.fullmatch(r"/?([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?", words[1])
    owner = db.user_by_name(path[1]) if path else None
    repo = db.one("SELECT private FROM repository WHERE uid = ? AND lower(name) = lower(?)", owner.id, path[2]) \
        if owner and path else None  # fmt: skip
    if owner is None or repo is None or path is None:
        raise GiteaError(f"Gitea: Repository does not exist: {words[1]}")
    if (words[0] == "git-receive-pack" or repo[0]) and user.id != owner.id and not user.is_admin:
        raise GiteaError(f"Gitea: User {user.name} does not have level write access to repository {path[2]}")
    target = s.repo_root / owner.name.lower() / f"{path[2].lower()}.git"
    return subprocess.run([words[0], str(target)], check=False).returncode


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 (one return per subcommand)
    rest, env = _globals(sys.argv[1:] if argv is None else argv)
    os.environ.update(env)
    args = parser().parse_args(rest)
    if args.version:
        print(f"Gitea version {VERSION} built with GNU Make 4.3, go1.22.9 : bindata, sqlite, sqlite_unlock_notify")
        return 0
    try:
        refuse_root()
        s = settings()
        if args.command == "web":
            serve(s if args.port is None else s.__class__(**{**s.__dict__, "http_port": args.port}))
            return 0
        db = Db(s.db_path)
        if args.command == "serv":
            return serv(s, db, args.key)
        if args.command == "admin" and args.user_command == "create":
            return create_user(db, args)
        if args.command == "admin" and args.user_command == "generate-access-token":
            return generate_token(db, args)
        if args.command == "admin" and args.user_command == "list":
            print("ID   Username  Email  IsActive  IsAdmin  2FA")
            for user in db.users():
                if user.is_admin or not args.admin:
                    print(f"{user.id}   {user.name}  {user.email}  true  {str(user.is_admin).lower()}  false")
            return 0
        parser().print_help()
        return 1
    except GiteaError as err:
        print(f"Command error: {err}" if args.command == "admin" else str(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
