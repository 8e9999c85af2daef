"""Replacing a runner drains its jobs: the applier's container delete (tools/applier/docker.py,
as the docker provider's) against the runner stand-in in a real dockerd, reached over ssh as
pulumi-docker reaches it (the fixtures and helpers of tests/lab/test_applier_docker.py).

The runner container's stop signal and grace period (stopSignal, destroyGraceSeconds) are
the ones the program registers for the lab stack (components/runners.py, under the mock
monitor); the rest mirrors it. The stand-in's image has no STOPSIGNAL, so the drain here
comes from the program's inputs alone. Checked, each through the applier:
- a config.toml change replaces the runner delete-first, and the job it was running
  finishes before the container goes (its log, read just before the remove);
- a job that outlives the grace period is killed with the runner, and the apply log says
  so, with the runner's last line naming the job;
- the container's own stop signal is the one sent: with SIGTERM the job is abandoned at once.

Needs root, docker.io and debootstrap, as the other docker lab tests; no lock (a Lab of
its own, random names).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tools.applier.docker
from components.render.runner_config import render_config_toml
from tests.lab.netns import Lab
from tests.lab.test_applier_docker import Args, DockerHostLab, _command, _ops, _provider, _run
from tests.lab.test_runner_standin import TOKEN, _view
from tests.stacks import lab_stack
from tools.applier.apply import destroy
from tools.lab.docker import docker
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import RUNNER_STANDIN, ensure_image
from tools.stack.synth import synthesize_in_subprocess

pytestmark = pytest.mark.lab

NAME = "forgeway-runner"
DRAIN_INPUTS = ("stopSignal", "destroyGraceSeconds", "stopTimeout")


@pytest.fixture(scope="module")
def drain() -> dict[str, Any]:
    """The drain inputs of the lab stack's runner containers, as the program registers them."""
    synth = synthesize_in_subprocess("lab", *lab_stack())
    found = [
        {k: r.inputs[k] for k in DRAIN_INPUTS if k in r.inputs}
        for r in synth.of_type("docker:index/container:Container")
        if r.name.endswith("-runner")
    ]
    assert found and all(f == found[0] for f in found), found
    print(f"\nthe program's runner drain inputs: {found[0]}")
    return found[0]


@pytest.fixture(scope="module")
def rh() -> Iterator[DockerHostLab]:
    """One namespace host whose sshd points DOCKER_HOST at its own dockerd, with the stand-in."""
    base = Path(tempfile.mkdtemp(prefix="fwrd-"))
    work = base / "d"
    daemon = None
    with Lab() as lab:
        try:
            host = lab.add_host("rd", extra_env={"DOCKER_HOST": f"unix://{work}/docker.sock"})
            daemon = start_dockerd(host.netns, work, index=14)
            print(f"\nensure_image: {ensure_image(daemon, RUNNER_STANDIN)}")
            yield DockerHostLab(host, daemon)
        finally:
            if daemon is not None:
                stop_dockerd(daemon)
            shutil.rmtree(base, ignore_errors=True)


def _program(rh: DockerHostLab, drain: dict[str, Any], concurrent: int, **container: Any) -> list[Args]:
    """The runner host's docker resources as components/runners.py registers them."""
    inputs = {
        "name": NAME,
        "image": RUNNER_STANDIN,
        "restart": "unless-stopped",
        "memory": 512,
        "volumes": [
            {"volumeName": "forgeway-runner-config", "containerPath": "/etc/gitlab-runner"},
            {"hostPath": str(rh.daemon.socket), "containerPath": "/var/run/docker.sock"},
        ],
        "uploads": [
            {
                "file": "/etc/gitlab-runner/config.toml",
                "content": render_config_toml(_view(concurrent=concurrent)),
                "permissions": "0600",
            }
        ],
        "labels": [{"label": "forgeway.role", "value": "gitlab-runner"}],
        **drain,
        **container,
    }
    return [
        _command(rh.host),
        _provider(rh.host),
        Args("docker:index/volume:Volume", "rd-runner-config", {"name": "forgeway-runner-config"}),
        Args("docker:index/remoteImage:RemoteImage", "rd-runner-image", {"name": RUNNER_STANDIN, "keepLocally": True}),
        Args("docker:index/container:Container", "rd-runner", inputs),
    ]


def _ready(rh: DockerHostLab) -> None:
    started = time.monotonic()
    while b"runner-standin ready:" not in (logs := docker(rh.daemon, "logs", NAME).stdout):
        assert time.monotonic() - started < 30, logs
        time.sleep(0.1)


def _job(rh: DockerHostLab, name: str, seconds: int) -> None:
    _ready(rh)
    docker(rh.daemon, "exec", NAME, "runner-standin", "job", name, str(seconds))


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch, rh: DockerHostLab) -> list[tuple[str, int]]:
    """(log, exit code) of every container the applier removes, read just before the remove."""
    seen: list[tuple[str, int]] = []
    real = tools.applier.docker._remove_container

    def spy(d: Any, container_id: str, remove_volumes: bool) -> None:
        done = docker(rh.daemon, "logs", container_id, check=False)
        state = docker(rh.daemon, "inspect", "--format", "{{.State.ExitCode}}", container_id, check=False)
        seen.append(((done.stdout + done.stderr).decode(errors="replace"), int(state.stdout or b"-1")))
        real(d, container_id, remove_volumes)

    monkeypatch.setattr(tools.applier.docker, "_remove_container", spy)
    return seen


def _lines(log: str) -> list[str]:
    return [line.removeprefix("runner-standin: ") for line in log.splitlines()]


def test_replace_drains_the_running_job_and_reports_one_that_outlives_the_grace(
    rh: DockerHostLab, drain: dict[str, Any], tmp_path: Path, removed: list[tuple[str, int]]
) -> None:
    state, logs = tmp_path / "state.json", list[str]()
    assert set(_ops(_run(state, _program(rh, drain, 2), logs.append)).values()) == {"create"}
    inspect = docker(rh.daemon, "inspect", "--format", "{{.Config.StopSignal}}", NAME).stdout
    assert inspect == b"SIGQUIT\n", inspect  # from the program: the stand-in's image has no STOPSIGNAL

    # 1. A config.toml change replaces the runner (delete first); its running job finishes first.
    _job(rh, "build-1", 3)
    started = time.monotonic()
    changes = _run(state, _program(rh, drain, 3), logs.append)
    seconds = time.monotonic() - started
    print(f"\nreplace with a 3 s job running: {seconds:.1f}s")
    assert _ops(changes)["rd-runner"] == "replace" and any("rd-runner (delete before replace)" in x for x in logs)
    (log, code), *_ = removed
    lines = _lines(log)
    quit_line = "SIGQUIT: graceful shutdown, no new jobs; waiting for 1 running job(s): build-1"
    assert quit_line in lines, f"no graceful stop; the runner's log:\n{log}"
    quit_at = lines.index(quit_line)
    finished = next(i for i, line in enumerate(lines) if line.startswith("job build-1 finished after"))
    assert quit_at < finished < lines.index("all jobs finished, exiting") == len(lines) - 1, log
    assert code == 0, log  # it exited by itself, not killed at the end of the grace period
    assert seconds > 2.0, seconds
    assert not [x for x in logs if "did not stop within" in x], logs
    _ready(rh)  # the new runner runs

    # 2. A job longer than the grace period: killed with the runner, and the apply log says so.
    #    The grace is the old container's: lowering it is a state-only update, counted at the next delete.
    assert _ops(_run(state, _program(rh, drain, 3, destroyGraceSeconds=2), logs.append))["rd-runner"] == "update"
    _job(rh, "long-1", 120)
    logs.clear()
    started = time.monotonic()
    changes = _run(state, _program(rh, drain, 4, destroyGraceSeconds=2), logs.append)
    seconds = time.monotonic() - started
    print(f"replace with a 120 s job running, 2 s grace: {seconds:.1f}s")
    assert _ops(changes)["rd-runner"] == "replace"
    assert removed[-1][1] == 137, removed[-1]
    (report,) = [x for x in logs if "did not stop within" in x]
    assert "rd-runner: did not stop within destroyGraceSeconds=2 s after SIGQUIT: docker killed it" in report
    assert "its running jobs" in report and "waiting for 1 running job(s): long-1" in report, report
    assert TOKEN not in "\n".join(logs)
    assert seconds < 100, seconds  # not the job's 120 s

    # 3. The container's own stop signal is sent: with SIGTERM the job is abandoned at once.
    _run(state, _program(rh, drain, 4, stopSignal="SIGTERM"), logs.append)
    _job(rh, "gone-1", 120)
    logs.clear()
    started = time.monotonic()
    assert {c.op for c in destroy(state, logs.append)} == {"delete"}
    seconds = time.monotonic() - started
    print(f"destroy with SIGTERM as the stop signal: {seconds:.1f}s")
    log, code = removed[-1]
    assert _lines(log)[-1] == "SIGTERM: stopping; abandoned 1 running job(s): gone-1", log
    assert code == 0, (code, log)
    assert docker(rh.daemon, "inspect", NAME, check=False).returncode != 0
