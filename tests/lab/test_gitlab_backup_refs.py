"""The stand-in's repository backup while pushes land (tools/lab/standin_image/gitlab_backup.py), in-process.

A tight loop of local pushes into a bare repository while its bundle is taken and restored,
round after round: every restore must have the source's HEAD, on a branch one push made, with
that push's whole history. ``git bundle create --all`` on the live repository fails this
within a few dozen rounds here (Debian's git 2.39 reads each ref twice and leaves out one that
moved in between, gitlab-org/git#262): a bundle without the branch, one without HEAD (whose
restore has no HEAD: the drill's failure of the clean-clone CI of e83d90e), or no bundle at all.
No container, no root: the drill (tests/lab/test_lab_backup_drill.py) checks the same on the
wire, where a push seldom meets the milliseconds that matter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROUNDS = 60  # at most; and at most DEADLINE_S seconds, with at least MIN_ROUNDS rounds
MIN_ROUNDS = 30
DEADLINE_S = 60


ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "p",
       "GIT_AUTHOR_EMAIL": "p@example.test", "GIT_COMMITTER_NAME": "p",
       "GIT_COMMITTER_EMAIL": "p@example.test"}  # fmt: skip
# Pushes as fast as git goes (a shell loop: the race is met by the rate of ref updates), each
# commit written to ``pushed`` before its push starts: commit i has i + 1 commits in its history.
PUSHES = """
i=0
while [ ! -e "$1/stop" ]; do
  git commit -q --allow-empty -m "push $i" && git rev-parse HEAD >>"$1/pushed" &&
    git push -q "$1/source.git" main || exit 1
  i=$((i + 1))
done
"""


def _git(*args: str, cwd: Path | None = None) -> str:
    command = ["git", *(["-C", str(cwd)] if cwd else []), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **ENV}).stdout.strip()


def test_every_bundle_taken_during_pushes_restores_a_consistent_repository(tmp_path: Path) -> None:
    from tools.lab.standin_image import gitlab_backup  # here: its import puts the image's paths on sys.path

    source, work = tmp_path / "source.git", tmp_path / "work"
    _git("init", "-q", "--bare", "--initial-branch=main", str(source))
    _git("init", "-q", "-b", "main", str(work))
    _git("commit", "-q", "--allow-empty", "-m", "first", cwd=work)
    _git("push", "-q", str(source), "main", cwd=work)
    pushed_file = tmp_path / "pushed"
    pushed_file.write_text(_git("rev-parse", "HEAD", cwd=work) + "\n")

    def pushed() -> list[str]:
        return pushed_file.read_text().split()

    loop = subprocess.Popen(["sh", "-c", PUSHES, "pushes", str(tmp_path)], cwd=work, env={**os.environ, **ENV},
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    rounds = overlapped = 0
    bundle, restored = tmp_path / "backup" / "repo.bundle", tmp_path / "restored.git"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while rounds < ROUNDS and time.monotonic() < deadline:
            before = len(pushed())
            assert gitlab_backup.bundle_repository(source, bundle, tmp_path / "scratch.git"), (
                "no bundle of a pushed repository"
            )
            overlapped += len(pushed()) > before  # a push started (and the one before it landed) meanwhile
            shutil.rmtree(restored, ignore_errors=True)
            gitlab_backup.restore_repository(bundle, restored)
            assert _git("symbolic-ref", "HEAD", cwd=restored) == "refs/heads/main", f"round {rounds}"
            head = _git("rev-parse", "--verify", "HEAD", cwd=restored)  # fails: a restore without HEAD
            assert head in pushed(), f"round {rounds}: the restored branch is at {head}, which no push made"
            count = int(_git("rev-list", "--count", "HEAD", cwd=restored))
            assert count == pushed().index(head) + 1, f"round {rounds}: history before {head} is missing"
            _git("fsck", "--strict", "--no-dangling", cwd=restored)
            rounds += 1
    finally:
        (tmp_path / "stop").touch()
        _, err = loop.communicate(timeout=60)
    assert loop.returncode == 0, f"a push failed: {err}"
    print(f"\n{rounds} bundles during {len(pushed())} pushes; pushes went on during {overlapped} of them")
    assert rounds >= MIN_ROUNDS, f"only {rounds} rounds in {DEADLINE_S} s: too few to meet the race"
    assert overlapped >= rounds // 2, f"pushes landed during {overlapped} of {rounds} bundles: the test proved nothing"
