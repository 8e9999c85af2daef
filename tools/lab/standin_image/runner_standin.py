#!/usr/bin/python3
"""Entrypoint (PID 1) of the lab image forgeway-lab/runner-standin (tools/lab/images.py).

The real gitlab/gitlab-runner image cannot be pulled in the lab. This stand-in is run
by the program exactly as the real one (components/runners.py) and checks what the real
runner would need from it, so that a lab apply proves the container is wired right
(the checks are in runner_checks.py):

* ``/etc/gitlab-runner/config.toml`` (the config volume; uploaded by the program): a
  regular file, mode 0600, owner root; TOML (tomllib); ``concurrent`` an integer >= 1;
  exactly one ``[[runners]]``, with ``executor = "docker"``, a ``url`` of ``https://``,
  a ``token`` of ``glrt-`` (a runner authentication token; a registration token,
  ``GR1348941...``, is refused by name), and ``[runners.docker]`` with an ``image``
  and ``volumes`` the runner's parser takes (``[SOURCE:]DESTINATION[:ro|rw]``, no ``:``
  inside a path);
* with ``tls-ca-file`` set (``/etc/gitlab-runner/certs/ca.crt``, components/render/
  runner_config.py CA_PATH): that file exists and holds a PEM certificate;
* ``/var/run/docker.sock`` (the host's, bind-mounted): ``GET /_ping`` answers ``OK``.

The first failure ends the container with status 1 and one line,
``runner-standin: FATAL: <reason>``; the token is never printed. When all is well it
logs ``runner-standin ready: <name> <url> tags-from-comment=<tags>`` (the tags the
rendered file's comment says GitLab must hold, comma-separated; ``-`` when none), then
talks to GitLab as gitlab-runner does (runner_gitlab.py): ``POST /runners/verify``,
retried until it passes, then ``POST /jobs/request`` every ``check_interval``; a job
GitLab hands it runs like a lab job below, named ``gitlab-<id>``, and is reported back
(``PUT /jobs/:id``) and recorded in /run/runner-standin/received/<id>.json.

Jobs, for the lab: ``runner-standin job <id> <seconds>`` (through ``docker exec``) hands
the running stand-in a job that takes that long; it exits 0 once the stand-in took it,
1 when refused. The stand-in logs ``job <id> started``, then ``job <id> finished``.
Stopping, as gitlab-runner does (commands/multi.go; docs/configuration/init.md):

* SIGQUIT, the graceful stop (the program's stop_signal; gitlab-runner's image also has it
  as STOPSIGNAL, this one does not, so the lab proves the program's): no new jobs
  (a request is refused), the running ones finish, then ``all jobs finished, exiting``
  and exit 0; at once when none runs. Docker's SIGKILL at the end of a stop's timeout
  cuts that short: the last line is then the ``SIGQUIT: graceful shutdown`` one.
* SIGTERM or SIGINT, the forceful stop, also during a graceful one: running jobs are
  killed and named (``abandoned N running job(s): ...``), exit 0 at once.

Only modules of python3-minimal and libpython3-stdlib (tomllib, json, http.client) are used.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.lab.standin_image import runner_gitlab
    from tools.lab.standin_image.runner_checks import (
        CONFIG,
        DOCKER_SOCKET,
        Fatal,
        Ready,
        check_config,
        ping_docker,
        read_config,
    )
else:  # beside this file, in the repository and in the image (/usr/local/bin)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import runner_gitlab
    from runner_checks import CONFIG, DOCKER_SOCKET, Fatal, Ready, check_config, ping_docker, read_config

JOBS = Path("/run/runner-standin/jobs")  # job requests: a file <id> holding its seconds
_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
POLL = 0.1  # seconds between looks for job requests


# --------------------------------------------------------------------------- main


def check(config: Path = CONFIG, docker_socket: Path = DOCKER_SOCKET) -> Ready:
    """Every check, in order; the first failure raises :class:`Fatal`."""
    text, data = read_config(config)
    ready = check_config(config, text, data)
    ping_docker(docker_socket)
    return ready


def _redact(message: str, config: Path) -> str:
    """The message on one line, without the token even if a check were to quote it."""
    try:
        token = tomllib.loads(config.read_text())["runners"][0]["token"]
    except Exception:  # any failure: nothing to redact
        token = None
    line = " ".join(message.split())
    if isinstance(token, str) and len(token) >= 4:
        line = line.replace(token, "[token]")
    return line


_log_lock = threading.Lock()
_closing = False  # set with the last line: the poller thread logs nothing after it


def log(line: str, *, last: bool = False) -> None:
    global _closing  # noqa: PLW0603 (one flag for the one process)
    with _log_lock:
        if not _closing:
            print(f"runner-standin: {line}", flush=True)
        _closing = _closing or last


class Jobs:
    """The jobs this stand-in runs: each a child process that sleeps its seconds."""

    def __init__(self, requests: Path) -> None:
        self.requests = requests
        self.running: dict[int, tuple[str, float]] = {}  # pid -> (job id, start)
        self.from_gitlab: dict[int, dict[str, Any]] = {}  # pid -> the job GitLab handed out
        self.draining = False
        requests.mkdir(parents=True, exist_ok=True)

    def names(self) -> str:
        return ", ".join(sorted(name for name, _ in self.running.values())) or "-"

    def take_requests(self) -> None:
        for path in sorted(self.requests.iterdir()):
            if not _JOB_ID.fullmatch(path.name):
                continue  # a request being written (.<id>), or one already answered (<id>.<answer>)
            if self.draining:
                path.rename(path.with_name(f"{path.name}.refused"))
                log(f"job {path.name} refused: shutting down, no new jobs")
                continue
            try:
                seconds = float(path.read_text())
            except ValueError:
                path.rename(path.with_name(f"{path.name}.refused"))
                log(f"job {path.name} refused: its request is not a number of seconds")
                continue
            self.start(path.name, seconds)
            path.rename(path.with_name(f"{path.name}.running"))

    def start(self, name: str, seconds: float) -> int:
        pid = os.fork()
        if pid == 0:  # the job: sleep, then exit 0 (signals stay blocked; SIGKILL ends it)
            time.sleep(seconds)
            os._exit(0)
        self.running[pid] = (name, time.monotonic())
        log(f"job {name} started ({seconds:g} s)")
        return pid

    def take_from_gitlab(self, poller: runner_gitlab.Poller) -> None:
        """Start what GitLab handed out (even while draining: it is this runner's already)."""
        while not poller.received.empty():
            job = poller.received.get()
            try:
                seconds = float(runner_gitlab.variable(job, "FORGEWAY_LAB_JOB_SECONDS", "1"))
            except ValueError:
                seconds = 1.0
            runner_gitlab.record(job, "running")
            self.from_gitlab[self.start(f"gitlab-{job['id']}", seconds)] = job

    def reap(self, poller: runner_gitlab.Poller | None = None) -> None:
        """Collect every exited child: jobs are logged, others (`docker exec` orphans) dropped."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.running:
                name, started = self.running.pop(pid)
                took, code = time.monotonic() - started, os.waitstatus_to_exitcode(status)
                log(f"job {name} finished after {took:.1f} s (exit {code})")
                job = self.from_gitlab.pop(pid, None)
                if job is not None and poller is not None:
                    poller.finished(job, "success" if code == 0 else "failed")

    def abandon(self) -> list[str]:
        """Kill every running job (a forceful stop); their names."""
        names = sorted(name for name, _ in self.running.values())
        for pid in list(self.running):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.running.clear()
        return names


def request_job(name: str, seconds: str, requests: Path = JOBS, timeout: float = 10.0) -> int:
    """``runner-standin job <id> <seconds>``: hand the running stand-in a job; 0 once it took it."""
    if not _JOB_ID.fullmatch(name):
        print(f"runner-standin job: {name!r} is not a job id ({_JOB_ID.pattern})", file=sys.stderr)
        return 2
    requests.mkdir(parents=True, exist_ok=True)
    partial = requests / f".{name}"
    partial.write_text(seconds)
    partial.rename(requests / name)
    deadline = time.monotonic() + timeout
    while (requests / name).exists():
        if time.monotonic() > deadline:
            print(f"runner-standin job: {name} not taken in {timeout:g} s (is the stand-in running?)", file=sys.stderr)
            return 1
        time.sleep(POLL / 2)
    if (requests / f"{name}.running").exists():
        return 0
    print(f"runner-standin job: {name} refused (the stand-in is shutting down)", file=sys.stderr)
    return 1


def main() -> int:
    if sys.argv[1:2] == ["job"] and len(sys.argv) == 4:
        return request_job(sys.argv[2], sys.argv[3])
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # taken by sigtimedwait below: no race
    try:
        ready = check()
    except Fatal as err:
        print(f"runner-standin: FATAL: {_redact(str(err), CONFIG)}", file=sys.stderr, flush=True)
        return 1
    print(ready.line(), flush=True)
    jobs = Jobs(JOBS)
    poller = runner_gitlab.Poller(runner_gitlab.connection(read_config(CONFIG)[1]), log)
    poller.start()
    while True:
        jobs.take_requests()
        jobs.take_from_gitlab(poller)
        received = signal.sigtimedwait(signals, POLL)
        jobs.reap(poller)  # PID 1 also reaps what `docker exec` sessions orphan
        signo = received.si_signo if received is not None else None
        if signo == signal.SIGQUIT and not jobs.draining:
            jobs.draining = True
            with poller.lock:
                poller.draining = True
            count = len(jobs.running)
            log(f"SIGQUIT: graceful shutdown, no new jobs; waiting for {count} running job(s): {jobs.names()}")
        elif signo in (signal.SIGTERM, signal.SIGINT):
            abandoned = jobs.abandon()
            name = signal.Signals(signo).name
            log(
                f"{name}: stopping"
                + (f"; abandoned {len(abandoned)} running job(s): {', '.join(abandoned)}" if abandoned else ""),
                last=True,
            )
            return 0
        if jobs.draining and not jobs.running:
            log("all jobs finished, exiting", last=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
