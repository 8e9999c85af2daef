"""host-files.sh's timed-job run (job_lock, job_begin, job_traps, job_fail), the part
forgeway-backup and forgeway-registry-gc share: a job that stops before it has recorded its
result leaves a failed status.json naming why (its exit status, its own message, or the
signal), exits non-zero, runs its cleanup, and releases its lock for the next run.
tests/unit/test_scripts.py and test_registry_gc_scripts.py run the two real jobs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_scripts import _library as run_with_library

pytestmark = pytest.mark.unit

# A job as the two real ones are written: its own write_status, then the lock, the status
# "running", the traps; the lock's state seen from another open of the file while it runs.
JOB = """
state={state}
mkdir -p "$state"
write_status() {{
  printf '{{"result": %s, "started": %s, "finished": %s, "error": %s, "duration_seconds": %s}}\\n' \\
    "$(json "$result")" "$(json "$started")" "$(json "$finished")" "$(json "$error")" "$(job_duration)" \\
    >"$state/status.json"
}}
job_lock "$state" "the test job"
job_begin
write_status
cleanup() {{ echo cleaned >"$state/cleanup"; }}
job_traps "stopped by a signal" cleanup
if flock -n "$state/lock" true; then echo free; else echo held; fi >"$state/during"
{failure}
echo reached >"$state/reached"
"""

FAILURES = {
    "a failing command": ("sh -c 'exit 3'", 3, "stopped (exit status 3) before it finished"),
    "job_fail": ("job_fail 'restic said no\nover two lines'", 1, "restic said no over two lines"),
    "a signal": ("kill -TERM $$; sleep 5", 143, "stopped by a signal"),
}


@pytest.mark.parametrize("how", sorted(FAILURES))
def test_a_failing_job_records_why_and_releases_its_lock(tmp_path: Path, how: str) -> None:
    failure, code, error = FAILURES[how]
    state = tmp_path / "state"
    done = run_with_library(tmp_path, JOB.format(state=state, failure=failure))
    assert done.returncode == code, done.stdout + done.stderr
    assert f"t: FAILED: {error}" in done.stderr, done.stderr
    assert not (state / "reached").exists(), "the job went on after its failure"
    assert (state / "during").read_text() == "held\n", "the job ran without holding its lock"
    assert (state / "cleanup").read_text() == "cleaned\n", "the job's cleanup did not run"
    status = json.loads((state / "status.json").read_text())
    assert status["result"] == "failed" and status["error"] == error, status
    assert status["started"] and status["finished"] and isinstance(status["duration_seconds"], float), status
    # Released: the next run takes the lock at once (flock -n fails while anyone holds it).
    assert subprocess.run(["flock", "-n", str(state / "lock"), "true"], check=False).returncode == 0
    again = run_with_library(tmp_path, JOB.format(state=state, failure="result=ok; write_status"))
    assert again.returncode == 0 and "already running" not in again.stdout, again.stdout + again.stderr
    assert json.loads((state / "status.json").read_text())["result"] == "ok"


def test_a_second_run_while_one_holds_the_lock_does_nothing_and_says_so(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "lock").touch()
    with subprocess.Popen(["flock", str(state / "lock"), "sleep", "30"]) as holder:
        try:
            for _ in range(100):  # until the holder has the lock
                if subprocess.run(["flock", "-n", str(state / "lock"), "true"], check=False).returncode:
                    break
                subprocess.run(["sleep", "0.05"], check=True)
            done = run_with_library(tmp_path, JOB.format(state=state, failure="false"))
        finally:
            holder.kill()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"t: the test job is already running (lock {state}/lock): this run does nothing" in done.stdout
    assert not (state / "status.json").exists(), "a run that did nothing wrote a status"
