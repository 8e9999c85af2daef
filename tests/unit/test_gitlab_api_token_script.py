"""components/scripts/gitlab-api-token.sh with a fake docker: the API token's seed.

What the fake records proves: the script waits for the container's health check (and
fails after TIMEOUT naming the container and what it saw), installs the ruby file only
when it differs, hands the token to `gitlab-rails runner` on stdin and nowhere else, and
a revoke with the container gone succeeds without touching it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from components.scripts import script

TOKEN = secrets.token_hex(10)  # 20 characters, made per run
FAKE_DOCKER = r"""#!/bin/sh
# A docker that knows one container, its health in $FAKE/health (none: no container).
echo "docker $*" >>"$FAKE/log"
case $1 in
  inspect)
    [ -f "$FAKE/health" ] || exit 1
    case $3 in *Running*) echo true ;; *) cat "$FAKE/health" ;; esac ;;
  exec)
    shift
    [ "$1" = -i ] && shift
    shift # the container
    case $1 in
      sh) case $3 in *umask*) cat >"$FAKE/rb" ;; *) cat "$FAKE/rb" 2>/dev/null || true ;; esac ;;
      gitlab-rails) cat >"$FAKE/stdin"; echo "ok forgeway-provisioner: $4" ;;
      /opt/gitlab/bin/gitlab-healthcheck) [ -f "$FAKE/up" ] ;;
    esac ;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "gitlab-api-token.rb").write_text(script("gitlab-api-token.rb"))
    return tmp_path


def _run(fake: Path, action: str, timeout: str = "30") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{fake / 'bin'}:{os.environ['PATH']}",
        "FAKE": str(fake),
        "FORGEWAY_ETC": str(fake / "etc"),
        "FORGEWAY_SYSTEMD": "no",
    }
    return subprocess.run(
        ["sh", "-c", script("gitlab-api-token.sh"), "gitlab-api-token.sh", action, "forgeway-gitlab", timeout,
         str(fake / "stage")],
        input=TOKEN, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_create_seeds_the_token_on_stdin_only_and_converges(fake: Path) -> None:
    (fake / "health").write_text("healthy\n")
    first = _run(fake, "create")
    assert first.returncode == 0, first.stderr
    assert (fake / "stdin").read_text() == TOKEN, "gitlab-rails got the token on stdin"
    assert (fake / "rb").read_text() == script("gitlab-api-token.rb")
    assert "changed gitlab-api-token: /etc/gitlab/forgeway/gitlab-api-token.rb" in first.stdout
    log = (fake / "log").read_text()
    assert TOKEN not in log + first.stdout + first.stderr, "the token on a command line or in the output"
    assert "docker exec -i forgeway-gitlab gitlab-rails runner /etc/gitlab/forgeway/gitlab-api-token.rb create" in log
    second = _run(fake, "create")
    assert second.returncode == 0 and "changed" not in second.stdout, second.stdout


def test_create_waits_for_healthy_then_fails_naming_the_container(fake: Path) -> None:
    (fake / "health").write_text("starting\n")
    done = _run(fake, "create", timeout="5")
    assert done.returncode == 1
    assert "waited 5s for container forgeway-gitlab to report healthy" in done.stderr, done.stderr
    assert "State.Health.Status: starting" in done.stderr and "runners.api_ready_timeout_seconds" in done.stderr
    assert not (fake / "stdin").exists(), "gitlab-rails ran before GitLab was healthy"


def test_revoke_with_the_container_gone_succeeds_untouched(fake: Path) -> None:
    done = _run(fake, "revoke")
    assert done.returncode == 0, done.stderr
    assert "not running: no token to revoke" in done.stdout
    assert "exec" not in (fake / "log").read_text()


def test_revoke_runs_gitlab_rails_revoke(fake: Path) -> None:
    (fake / "health").write_text("healthy\n")
    done = _run(fake, "revoke")
    assert done.returncode == 0, done.stderr
    assert "gitlab-rails runner /etc/gitlab/forgeway/gitlab-api-token.rb revoke" in (fake / "log").read_text()


def test_create_runs_the_images_check_itself_while_docker_says_starting(fake: Path) -> None:
    """Docker's first probe comes one interval (60 s) after the start: the script does not wait for it."""
    (fake / "health").write_text("starting\n")
    (fake / "up").write_text("")
    done = _run(fake, "create", timeout="5")
    assert done.returncode == 0, done.stderr
    log = (fake / "log").read_text()
    assert "docker exec forgeway-gitlab /opt/gitlab/bin/gitlab-healthcheck --fail --max-time 10" in log
    assert (fake / "stdin").read_text() == TOKEN
