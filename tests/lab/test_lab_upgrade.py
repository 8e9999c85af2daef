"""The upgrade guard on `make lab` (components/upgrade.py, docs/gitlab.md "Upgrades").

One module, in order, on the session's lab (GitLab stand-in 17.11.3, backups on):
a skip to 18.5 is refused by the read-only check with no host touched; a failing 18.2.1
image (one more file in the stand-in, which then fails its migration at start) leaves the
old volumes as they were and says how to roll back from the pre-upgrade backup; the
working 18.2.1 then upgrades with the data marker and GitLab's SSH host key kept. The
lab is put back at 17.11.3 at the end (the volume's VERSION rewritten: a lab shortcut,
not a way to downgrade), so the session's other tests find it as they expect.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.lab.make_lab import MakeLab, gitlab_ssh_key, ssh_keys_offered
from tools.lab.images import ensure_image, standin_image

HOSTS = ("vps", "home", "runner-arm", "runner-amd")
VERSION_FILE = "/var/opt/gitlab/gitlab-rails/VERSION"


def _gitlab_image(image: str, version: str) -> tuple[str, ...]:
    return ("--set", f"gitlab.images.amd64={image}", "--set", f"gitlab.version={version}")


def _footprint(lab: MakeLab, stamp: str) -> dict[str, object]:
    """What an up could have changed: the state, every docker host's containers, and any
    file under /etc or /var/lib/forgeway newer than ``stamp`` on every host."""
    seen: dict[str, object] = {"state": json.dumps(lab.state(), sort_keys=True)}
    for name in HOSTS:
        machine = lab.machine(name)
        newer = ["sh", "-c", f"find /etc /var/lib/forgeway -xdev -newer {stamp} -type f 2>/dev/null || true"]
        seen[f"{name} files"] = machine.succeed(newer)
        if machine.daemon is not None:
            seen[f"{name} containers"] = machine.docker("ps", "-a", "--format", "{{.ID}} {{.Image}} {{.State}}")
    return seen


def test_skips_are_refused_untouched_failed_upgrades_say_how_back_and_one_stop_keeps_data(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    home = make_lab.machine("home")
    marker = f"forgeway-{time.time_ns()}"
    home.docker("exec", "forgeway-gitlab", "sh", "-c", f"echo {marker} > /var/opt/gitlab/lab-marker")
    ssh_key = gitlab_ssh_key(make_lab)
    try:
        # 1. A skip (17.11.3 -> 18.5.0 skips 18.2): refused before anything changes.
        stamp = "/run/forgeway-upgrade-stamp"
        for name in HOSTS:
            make_lab.machine(name).succeed(["sh", "-c", f"touch {stamp}; sleep 1"])
        before = _footprint(make_lab, stamp)
        skipped = make_lab.run("up", *_gitlab_image("forgeway-lab/gitlab-standin:18.5.0", "18.5.0"))
        assert skipped.returncode != 0
        said = skipped.stdout + skipped.stderr
        assert "GitLab runs 17.11.3 but the config deploys 18.5.0" in said, said[-3000:]
        assert "skips the required upgrade stop 18.2" in said and "Nothing was changed on any host" in said
        assert _footprint(make_lab, stamp) == before

        # 2. A failing upgrade: backed up first, then the new container fails its start.
        good = standin_image("18.2.1")
        ensure_image(home.dockerd(), good)
        scratch = home.docker("create", good).strip()
        flag = tmp_path / "FORGEWAY_LAB_FAIL_UPGRADE"
        flag.write_text("the lab's failing upgrade\n")
        home.docker("cp", str(flag), f"{scratch}:/opt/gitlab/embedded/service/gitlab-rails/")
        home.docker("commit", scratch, "forgeway-lab/gitlab-standin:18.2.1-broken")
        home.docker("rm", scratch)
        failed = make_lab.run("up", *_gitlab_image("forgeway-lab/gitlab-standin:18.2.1-broken", "18.2.1"))
        said = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "GitLab 18.2.1: the container did not start" in said, said[-3000:]
        assert "a database migration failed" in said  # the container's own last lines
        # The snapshot the pre-upgrade backup made, in the way back.
        assert "To roll back to GitLab 17.11.3" in said, said[-3000:]
        snapshot = said.split("python -m tools.restore --stack lab --snapshot ", 1)[1].split()[0]
        assert re.fullmatch(r"[0-9a-f]{8,64}", snapshot), snapshot  # restic's id, from status.json
        volume = home.docker("cp", f"forgeway-gitlab:{VERSION_FILE}", "-")
        assert "17.11.3" in volume  # the old version's data, not migrated
        assert marker in home.docker("cp", "forgeway-gitlab:/var/opt/gitlab/lab-marker", "-")

        # 3. The working 18.2.1: one stop, one up.
        make_lab.up(*_gitlab_image(good, "18.2.1"))
        # The applier prints a command's output only when it fails: the wait's is in the state.
        said = json.dumps(make_lab.state()["command:remote:Command::home-gitlab-upgrade-wait"]["outputs"])
        assert "GitLab 18.2.1 is ready" in said and "no background migration queued" in said, said[-3000:]
        assert home.docker("exec", "forgeway-gitlab", "cat", VERSION_FILE).strip() == "18.2.1"
        assert home.docker("exec", "forgeway-gitlab", "cat", "/var/opt/gitlab/lab-marker").strip() == marker
        assert ssh_key in ssh_keys_offered(make_lab), "GitLab's SSH host key changed with the upgrade"
    finally:
        # The lab's own 17.11.3 again for the session's other tests (a lab shortcut).
        home.docker_execute("exec", "forgeway-gitlab", "sh", "-c", f"echo 17.11.3 > {VERSION_FILE}")
        make_lab.up()
