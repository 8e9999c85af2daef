"""woodpecker-oauth.sh (components/woodpecker.py's OAuth2 application) against a fake docker
and a fake Gitea API behind a fake curl: the callback exact, the app recreated (never two),
the token and the client secret on no command line, delete removes it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.scripts import script_command
from tests.unit.test_gitea_scripts import FAKE_DOCKER

pytestmark = pytest.mark.unit

TOKEN = "f00dfeed1234567890abcdef"  # noqa: S105  # a made-up admin token to look for
URI = "https://ci.example.org:8443/authorize"
APP = "forgeway-woodpecker"

# Gitea's /api/v1/user/applications/oauth2 over a JSON file: GET lists (no secret), POST
# creates (the secret shown once), DELETE .../ID removes. Compact JSON, in Gitea's field order.
# `docker inspect NAME`: the container is there unless $GONE is set.
DOCKER = FAKE_DOCKER.replace(
    'case "$1 $2" in', 'case "$1 $2" in\n  "inspect forgeway-gitea") [ -z "${GONE:-}" ]; exit $? ;;', 1
)
FAKE_CURL = r"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
with open(os.environ["LOG"], "a") as log:
    log.write("curl " + " ".join(args) + "\n")
state = os.path.join(os.environ["STATE"], "apps.json")
apps = json.load(open(state)) if os.path.exists(state) else []
method, headers, body, url = "GET", "", None, None
i = 0
while i < len(args):
    a = args[i]
    if a == "-X": method = args[i + 1]; i += 2; continue
    if a == "-H":
        if args[i + 1].startswith("@"): headers += open(args[i + 1][1:]).read()
        i += 2; continue
    if a == "--data-binary": body = json.load(open(args[i + 1][1:])); i += 2; continue
    if a == "--max-time": i += 2; continue
    if a.startswith("https://"): url = a
    i += 1
if "Authorization: token " + os.environ["TOKEN"] not in headers:
    sys.exit(22)
base = "https://localhost:3000/api/v1/user/applications/oauth2"
def dump(o): return json.dumps(o, separators=(",", ":"))
if method == "GET":
    print(dump([{k: v for k, v in a.items() if k != "client_secret"} for a in apps]))
elif method == "DELETE":
    n = int(url.rsplit("/", 1)[1]); apps = [a for a in apps if a["id"] != n]
elif method == "POST" and url == base:
    counter = os.path.join(os.environ["STATE"], "next")
    n = int(open(counter).read()) if os.path.exists(counter) else 1  # Gitea's ids never come back
    open(counter, "w").write(str(n + 1))
    app = {"id": n, "name": body["name"], "client_id": "cid-%d" % n, "client_secret": "gto_secret%d" % n,
           "redirect_uris": body["redirect_uris"], "confidential_client": body["confidential_client"]}
    apps.append(app); print(dump(app))
else:
    sys.exit(22)
json.dump(apps, open(state, "w"))
"""


@pytest.fixture()
def fakes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "state").mkdir()
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "log"),
        "STATE": str(tmp_path / "state"),
        "TOKEN": TOKEN,
    }


def _run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = script_command("woodpecker-oauth.sh", *args)
    return subprocess.run(["sh", "-c", command], input=stdin, env=env, capture_output=True, text=True, check=False)


def _up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run(env, "up", "forgeway-gitea", APP, URI, "0", stdin=f"{TOKEN}\n")


def _apps(env: dict[str, str]) -> list[dict[str, object]]:
    path = Path(env["STATE"], "apps.json")
    return json.loads(path.read_text()) if path.exists() else []


def test_up_creates_the_app_with_the_exact_callback_and_prints_id_and_secret(fakes: dict[str, str]) -> None:
    done = _up(fakes)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cid-1\ngto_secret1\n"
    (app,) = _apps(fakes)
    assert app["name"] == APP and app["redirect_uris"] == [URI] and app["confidential_client"] is True
    log = Path(fakes["LOG"]).read_text()
    assert TOKEN not in log and "gto_secret1" not in log, log  # no argv held either


def test_a_second_up_recreates_it_never_two(fakes: dict[str, str]) -> None:
    assert _up(fakes).returncode == 0
    again = _up(fakes)
    assert again.returncode == 0 and again.stdout == "cid-2\ngto_secret2\n"
    assert [a["id"] for a in _apps(fakes)] == [2]
    assert "deleted OAuth2 application" in again.stderr


def test_down_deletes_it_with_a_token_minted_in_the_container(fakes: dict[str, str]) -> None:
    assert _up(fakes).returncode == 0
    done = _run(fakes, "down", "forgeway-gitea", APP, "forgeway-admin")
    assert done.returncode == 0, done.stderr
    assert _apps(fakes) == [] and done.stdout == ""
    assert "generate-access-token --username forgeway-admin" in Path(fakes["LOG"]).read_text()


def test_down_without_the_gitea_container_changes_nothing(fakes: dict[str, str]) -> None:
    done = _run({**fakes, "GONE": "1"}, "down", "forgeway-gitea", APP, "forgeway-admin")
    assert done.returncode == 0 and "no container" in done.stderr
    assert "curl" not in Path(fakes["LOG"]).read_text()


def test_a_wrong_token_fails_and_prints_nothing(fakes: dict[str, str]) -> None:
    done = _run(fakes, "up", "forgeway-gitea", APP, URI, "0", stdin="0000wrong\n")
    assert done.returncode != 0 and done.stdout == "" and _apps(fakes) == []


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("up", "forgeway-gitea", APP, "http://ci.example.org/authorize", "0"), "REDIRECT_URI"),
        (("up", "forgeway-gitea", 'a"b', URI, "0"), "APP"),
        (("up", "forgeway gitea", APP, URI, "0"), "CONTAINER"),
        (("sideways", "forgeway-gitea", APP, URI, "0"), "MODE"),
    ],
)
def test_bad_arguments_are_refused_by_name(fakes: dict[str, str], args: tuple[str, ...], word: str) -> None:
    done = _run(fakes, *args, stdin=f"{TOKEN}\n")
    assert done.returncode != 0 and word in done.stderr and not Path(fakes["LOG"]).exists()
