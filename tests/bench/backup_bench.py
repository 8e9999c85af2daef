"""Benchmark on the lab (root): a backup and a restore of a >= 1 GiB GitLab, and a second backup.

Not a timed test: it prints its figures (issue 18, `make bench`). The dataset is the GitLab
stand-in's own data: DATASET_MIB of incompressible files in its uploads (what
``gitlab-backup create`` takes as GitLab's uploads), put there once. Then, on the lab's
GitLab host, through the stack's own SSH connection (tools/hostssh.py):

* backup: the host's forgeway-backup.service (``gitlab-backup create`` and one restic
  snapshot to the SFTP repository on the VPS, over the tunnel); its seconds;
* the repository's size (``forgeway-restic stats --mode raw-data``);
* restore: tools.restore's steps (over the data that is there: --overwrite); its seconds
  and each step's;
* a second backup after a 1 MiB change: its seconds and the bytes restic added
  (status.json ``added_bytes``: deduplicated).

Uses a running lab if there is one (and removes the dataset from it after), else brings one
up and takes it down again.
Run under ``flock /tmp/fwl.lock`` (the lab's names are fixed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.stacks import ROOT
from tools.hostssh import HostRunner, connection_from_config

DATASET_MIB = 1100  # >= 1 GiB
BENCH_DIR = "/var/opt/gitlab/gitlab-rails/uploads/@hashed/be/nc/bench"
STATUS = "/var/lib/forgeway/backup/status.json"
LAB = [sys.executable, "-m", "tools.lab"]


def _lab_up() -> bool:
    """Bring a lab up unless one is; whether this run brought it up."""
    from tools.lab.layout import TOPOLOGY

    if TOPOLOGY.exists():
        return False
    subprocess.run([*LAB, "up"], cwd=ROOT, check=True)
    return True


def _runner() -> HostRunner:
    from tools.lab.config import lab_config
    from tools.lab.layout import TOPOLOGY

    config, secret_keys = lab_config(json.loads(TOPOLOGY.read_text()))
    return HostRunner(connection_from_config(config, secret_keys, host="home"))


def _must(runner: HostRunner, command: str, timeout: float = 3600) -> str:
    done = runner.run(command, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"`{command}` failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _backup(runner: HostRunner) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    _must(runner, "systemctl start forgeway-backup.service")
    seconds = time.monotonic() - started
    status: dict[str, object] = json.loads(_must(runner, f"cat {STATUS}"))
    if status.get("result") != "ok":
        raise RuntimeError(f"the backup failed: {status.get('error')}")
    return seconds, status


def _mib(value: object) -> str:
    return f"{value / (1 << 20):.1f} MiB" if isinstance(value, int) else "?"


def main() -> int:
    from tools.restore import Restore

    brought_up = _lab_up()
    try:
        with _runner() as runner:
            fill = (
                f"docker exec forgeway-gitlab sh -c 'mkdir -p {BENCH_DIR} && "
                f"for i in $(seq 1 {DATASET_MIB // 100}); do [ -s {BENCH_DIR}/blob$i ] || "
                f"head -c 100M /dev/urandom > {BENCH_DIR}/blob$i; done; "
                f"head -c {DATASET_MIB % 100 or 1}M /dev/urandom > {BENCH_DIR}/rest; chown -R git:git {BENCH_DIR}'"
            )
            _must(runner, fill)
            size = _must(runner, "docker exec forgeway-gitlab du -sm /var/opt/gitlab").split()[0]
            print(f"dataset: GitLab's data {size} MiB (of which {DATASET_MIB} MiB incompressible uploads)")
            first, status = _backup(runner)
            print(f"backup: {first:.1f} s (snapshot {status.get('snapshot')}, added {_mib(status.get('added_bytes'))})")
            stats = json.loads(_must(runner, "/etc/forgeway/backup/forgeway-restic stats --mode raw-data --json"))
            print(f"repository: {_mib(stats.get('total_size'))} stored")
            lines: list[str] = []
            started = time.monotonic()
            Restore(runner, overwrite=True, log=lines.append).run()
            print(f"restore: {time.monotonic() - started:.1f} s")
            for line in lines[:-1]:
                print(f"  {line}")
            _must(runner, f"docker exec forgeway-gitlab sh -c 'head -c 1M /dev/urandom > {BENCH_DIR}/changed'")
            second, status = _backup(runner)
            print(f"second backup (1 MiB changed): {second:.1f} s, added {_mib(status.get('added_bytes'))}")
    finally:
        if brought_up:
            subprocess.run([*LAB, "down"], cwd=ROOT, check=False)
        else:  # a lab that stays: without the dataset, whose 1 GiB would slow its next backups
            with _runner() as runner:
                runner.run(f"docker exec forgeway-gitlab rm -rf {BENCH_DIR}", timeout=600)
    return 0


@pytest.mark.bench
def test_backup_bench() -> None:
    assert main() == 0


if __name__ == "__main__":
    raise SystemExit(main())
