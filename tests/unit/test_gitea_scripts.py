"""The Gitea host scripts (components/scripts/gitea-*.sh) against a fake docker and curl:
the admin password and the token never on a command line, the token alone on stdout, the
TLS key written once as the git user's 0600 file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from components.forge_switch import OTHER_FORGE_VOLUMES
from components.scripts import script_command

pytestmark = pytest.mark.unit

PASSWORD = "Pw0rdFromPulumiRandom-x"  # noqa: S105  # a made-up value to look for
TOKEN = "f00dfeed1234567890abcdef"  # noqa: S105  # what the fake gitea mints

# Every call's argv on one line in $LOG; `docker exec -i ... sh -c S` runs S here (curl is
# faked too, and copies the files its -H @FILE / --data-binary @FILE name, as curl reads them).
FAKE_DOCKER = r"""#!/bin/sh
echo "docker $*" >>"$LOG"
case "$1 $2" in
  "inspect -f") echo "${HEALTH:-healthy}"; exit 0 ;;
  "volume inspect") echo "$VOLUME_ROOT"; exit 0 ;;
esac
[ "$1" = exec ] || exit 1
shift
interactive=no
while :; do
  case $1 in
    -i) interactive=yes; shift ;;
    -u) shift 2 ;;
    *) break ;;
  esac
done
shift  # the container
if [ "$1" = sh ]; then shift; exec sh "$@"; fi
case "$*" in
  "gitea admin user list --admin")
    echo "ID   Username  Email  IsActive  IsAdmin  2FA"
    [ -f "$STATE/created" ] && echo "1    forgeway-admin  a@b.c  true  true  false"
    exit 0 ;;
  "gitea admin user create"*) touch "$STATE/created"; echo "generated random password is 'zzz'"; exit 0 ;;
  "gitea admin user generate-access-token"*) echo "$TOKEN"; exit 0 ;;
esac
exit 1
"""
FAKE_CURL = r"""#!/bin/sh
echo "curl $*" >>"$LOG"
while [ $# -gt 0 ]; do
  case $1 in
    -H) case $2 in @*) cat "${2#@}" >>"$STATE/headers" ;; esac; shift 2 ;;
    --data-binary) cat "${2#@}" >"$STATE/body"; shift 2 ;;
    *) echo "$1" >"$STATE/url"; shift ;;
  esac
done
"""


@pytest.fixture()
def fakes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "state").mkdir()
    (tmp_path / "volume").mkdir()
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "log"),
        "STATE": str(tmp_path / "state"),
        "TOKEN": TOKEN,
        "VOLUME_ROOT": str(tmp_path / "volume"),
    }


def _admin(env: dict[str, str], password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    command = script_command(
        "gitea-admin.sh", "forgeway-gitea", "forgeway-admin", "forgeway-admin@git.example.org", "0"
    )
    return subprocess.run(
        ["sh", "-c", command], input=f"{password}\n", env=env, capture_output=True, text=True, check=False
    )


def test_admin_is_created_and_its_password_set_off_every_command_line(fakes: dict[str, str]) -> None:
    done = _admin(fakes)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{TOKEN}\n"  # the token, and only the token, on stdout
    log = Path(fakes["LOG"]).read_text()
    assert "gitea admin user create --admin --username forgeway-admin" in log and "--random-password" in log
    assert "generate-access-token --username forgeway-admin" in log and "--raw" in log
    assert PASSWORD not in log and TOKEN not in log, log  # no argv held either
    state = Path(fakes["STATE"])
    assert state.joinpath("url").read_text().strip() == "https://localhost:3000/api/v1/admin/users/forgeway-admin"
    body = json.loads(state.joinpath("body").read_text())
    assert body == {
        "login_name": "forgeway-admin",
        "source_id": 0,
        "email": "forgeway-admin@git.example.org",
        "password": PASSWORD,
        "must_change_password": False,
    }
    assert f"Authorization: token {TOKEN}" in state.joinpath("headers").read_text()
    assert "-X PATCH" in log


def test_a_second_run_keeps_the_user_and_sets_the_password_again(fakes: dict[str, str]) -> None:
    assert _admin(fakes).returncode == 0
    again = _admin(fakes)
    assert again.returncode == 0 and again.stdout == f"{TOKEN}\n"
    assert Path(fakes["LOG"]).read_text().count("gitea admin user create") == 1
    assert "exists" in again.stderr


@pytest.mark.parametrize("password", ["", "has space", 'quote"d', "back\\slash"])
def test_a_password_json_cannot_carry_is_refused_unshown(fakes: dict[str, str], password: str) -> None:
    done = _admin(fakes, password)
    assert done.returncode != 0 and done.stdout == ""
    assert not Path(fakes["LOG"]).exists() or "create" not in Path(fakes["LOG"]).read_text()
    if password:
        assert password not in done.stderr


def test_an_unhealthy_gitea_fails_naming_the_container(fakes: dict[str, str]) -> None:
    done = _admin({**fakes, "HEALTH": "starting"})
    assert done.returncode != 0 and "forgeway-gitea" in done.stderr and "healthy" in done.stderr


def _tls_key(env: dict[str, str], key: str) -> subprocess.CompletedProcess[str]:
    command = script_command("gitea-tls-key.sh", "forgeway-gitea-data", str(os.getuid()))
    return subprocess.run(["sh", "-c", command], input=key, env=env, capture_output=True, text=True, check=False)


def test_the_tls_key_is_written_once_0600(fakes: dict[str, str]) -> None:
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n-----END EC PRIVATE KEY-----\n"
    first = _tls_key(fakes, key)
    assert first.returncode == 0 and first.stdout.startswith("changed"), first.stderr
    path = Path(fakes["VOLUME_ROOT"]) / "forgeway" / "tls.key"
    assert path.read_text() == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    second = _tls_key(fakes, key)
    assert second.returncode == 0 and second.stdout.startswith("ok"), second.stdout
    assert "BEGIN" not in Path(fakes["LOG"]).read_text()


def test_the_tls_key_refuses_what_is_not_a_key(fakes: dict[str, str]) -> None:
    done = _tls_key(fakes, "not a key")
    assert done.returncode != 0 and "not a PEM private key" in done.stderr
    assert not (Path(fakes["VOLUME_ROOT"]) / "forgeway" / "tls.key").exists()


# --- forge-switch-check.sh -------------------------------------------------------------

SWITCH_DOCKER = r"""#!/bin/sh
echo "docker $*" >>"$LOG"
[ "$1 $2" = "volume inspect" ] || exit 1
for volume; do :; done
[ -d "$VOLUMES/$volume" ] || exit 1
case "$*" in
  *Options*) echo "" ;;
  *Mountpoint*) echo "$VOLUMES/$volume" ;;
esac
"""
GITLAB_VOLUMES = ("forgeway-gitlab-config", "forgeway-gitlab-logs", "forgeway-gitlab-data")


@pytest.fixture()
def volumes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(SWITCH_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "volumes").mkdir()
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "log"),
        "VOLUMES": str(tmp_path / "volumes"),
    }


def _switch(env: dict[str, str], allow: str) -> subprocess.CompletedProcess[str]:
    command = script_command("forge-switch-check.sh", "jetson", "gitea", allow, *GITLAB_VOLUMES)
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=False)


def test_no_other_forge_volume_passes(volumes: dict[str, str]) -> None:
    done = _switch(volumes, "no")
    assert done.returncode == 0 and "no other forge's data" in done.stdout, done.stderr


def test_empty_volumes_of_the_other_forge_pass(volumes: dict[str, str]) -> None:
    for name in GITLAB_VOLUMES:
        (Path(volumes["VOLUMES"]) / name).mkdir()
    assert _switch(volumes, "no").returncode == 0


def test_the_other_forges_data_refuses_the_switch_unless_allowed(volumes: dict[str, str]) -> None:
    data = Path(volumes["VOLUMES"]) / "forgeway-gitlab-data"
    (data / "git-data").mkdir(parents=True)
    refused = _switch(volumes, "no")
    assert refused.returncode == 1
    assert "forgeway-gitlab-data" in refused.stderr and "forgeway-gitlab-config" not in refused.stderr
    assert "allow_forge_change" in refused.stderr and "Nothing was changed" in refused.stderr
    allowed = _switch(volumes, "yes")
    assert allowed.returncode == 0 and "allowed by allow_forge_change" in allowed.stdout
    assert data.joinpath("git-data").is_dir()  # read only: the data stays


def test_giteas_data_refuses_a_switch_to_gitlab(volumes: dict[str, str]) -> None:
    """gitea -> gitlab: the same script, given Gitea's and Woodpecker's volumes (components/forge_switch.py)."""
    others = OTHER_FORGE_VOLUMES["gitlab"]
    (Path(volumes["VOLUMES"]) / "forgeway-woodpecker-server-data").mkdir()  # empty: no data
    (Path(volumes["VOLUMES"]) / "forgeway-gitea-data" / "git").mkdir(parents=True)
    command = script_command("forge-switch-check.sh", "jetson", "gitlab", "no", *others)
    refused = subprocess.run(["sh", "-c", command], env=volumes, capture_output=True, text=True, check=False)
    assert refused.returncode == 1, refused.stdout
    assert "now gitlab" in refused.stderr and "forgeway-gitea-data" in refused.stderr
    assert "forgeway-woodpecker-server-data" not in refused.stderr, "an empty volume is not data"
