"""The runner stand-in's side of GitLab's runner API (imported by runner_standin.py).

Copied into forgeway-lab/runner-standin beside ``/usr/local/bin/runner-standin``. It
talks to ``<url>/api/v4/`` of config.toml's ``[[runners]]`` over TLS, trusting only the
runner's ``tls-ca-file`` when it is set (gitlab-runner: the CA pool of that URL), the
system's CAs otherwise, with the host name checked. The ``glrt-`` token goes in the
JSON body, as gitlab-runner sends it (network/gitlab.go: VerifyRunner, RequestJob,
UpdateJob; gitlab-org/gitlab-runner).

How gitlab-runner itself behaves, and where the stand-in differs:

* ``POST /runners/verify``: gitlab-runner calls it from ``register`` and ``verify``
  (commands/register.go, commands/verify.go), not from ``run``. The stand-in calls it
  at start, so the lab sees at once whether the token is good: 200 logs ``Verifying
  runner... is valid`` (gitlab-runner's words for a ``glrt-`` token), 403 ``is not
  valid``, anything else ``failed``. Until one succeeds it retries, backing off from
  ``check_interval`` to 30 s, and requests no job.
* ``POST /jobs/request`` every ``check_interval`` seconds (config.toml; gitlab-runner's
  default 3) while fewer than ``concurrent`` jobs run, none while stopping (SIGQUIT).
  201: a job (logged ``Checking for jobs... received``); 204: none; 403 ``forbidden``
  (logged once per change: gitlab-runner logs it each time and keeps polling, so does
  the stand-in). After SIGQUIT it neither verifies nor polls, and logs nothing: the
  runner's last lines are its drain's.
* A received job "runs" as the lab's file jobs do (runner_standin.py), as long as its
  ``FORGEWAY_LAB_JOB_SECONDS`` variable says; then ``PUT /jobs/:id`` with the job's
  token and state ``success``. ``/run/runner-standin/received/<id>.json`` records it
  for the lab tests: id, ref, protected, tags, state.
"""

from __future__ import annotations

import http.client
import json
import queue
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

RECEIVED = Path("/run/runner-standin/received")
DEFAULT_CHECK_INTERVAL = 3.0  # gitlab-runner's common.DefaultCheckInterval
MAX_BACKOFF = 30.0
TIMEOUT = 10.0


class Connection(NamedTuple):
    url: str
    token: str
    ca_file: str | None
    concurrent: int
    check_interval: float

    def __repr__(self) -> str:  # never the token
        return f"Connection({self.url!r})"


def connection(data: dict[str, Any]) -> Connection:
    """From config.toml, already checked by runner_standin.check_config."""
    runner = data["runners"][0]
    interval = data.get("check_interval")
    usable = isinstance(interval, int) and not isinstance(interval, bool) and interval > 0
    return Connection(
        url=runner["url"].rstrip("/"),
        token=runner["token"],
        ca_file=runner.get("tls-ca-file"),
        concurrent=int(data["concurrent"]),
        check_interval=float(interval) if usable else DEFAULT_CHECK_INTERVAL,  # type: ignore[arg-type]
    )


def call(conn: Connection, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """(status, parsed JSON or None) of ``method <url>/api/v4/<path>``; OSError on no answer."""
    parts = urlsplit(conn.url)
    context = ssl.create_default_context(cafile=conn.ca_file)
    client = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=TIMEOUT, context=context)
    try:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "gitlab-runner standin"}
        client.request(method, f"{parts.path}/api/v4/{path}", body=data, headers=headers)
        response = client.getresponse()
        raw = response.read()
    except (http.client.HTTPException, ssl.SSLError) as err:
        raise OSError(f"{type(err).__name__}: {err}") from None
    finally:
        client.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, None


class Poller:
    """The thread that verifies the token and asks for jobs; jobs go to ``received``."""

    def __init__(self, conn: Connection, log: Callable[[str], None]) -> None:
        self.conn = conn
        self.log = log
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lock = threading.Lock()
        self.active = 0  # received and not yet finished
        self.draining = False
        self.verified = False
        self._last_status: object = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="poller", daemon=True).start()

    def _say(self, line: str) -> None:
        """Log, unless stopping: after SIGQUIT the runner's last lines are its drain's."""
        with self.lock:
            if not self.draining:
                self.log(line)

    def _stopping(self) -> bool:
        with self.lock:
            return self.draining

    def finished(self, job: dict[str, Any], state: str) -> None:
        """Called by the main loop when a received job ends: tell GitLab, free the slot."""
        with self.lock:
            self.active -= 1
        job_id = job["id"]
        try:
            status, _ = call(self.conn, "PUT", f"jobs/{job_id}", {"token": job["token"], "state": state})
            self.log(f"job gitlab-{job_id}: Submitting job to coordinator... {'ok' if status == 200 else status}")
        except OSError as err:
            self.log(f"job gitlab-{job_id}: Submitting job to coordinator... failed: {err}")
        record(job, state)

    def _run(self) -> None:
        backoff = self.conn.check_interval
        while not self.verified:
            if self._stopping():
                return
            try:
                status, _ = call(self.conn, "POST", "runners/verify", {"token": self.conn.token})
                word = {200: "is valid", 403: "is not valid"}.get(status, f"failed (status {status})")
            except OSError as err:
                status, word = 0, f"failed: {err}"
            self._say(f"Verifying runner... {word}")
            if status == 200:
                self.verified = True
                break
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        while not self._stopping():
            with self.lock:
                free = self.active < self.conn.concurrent
            if free:
                self._request()
            time.sleep(self.conn.check_interval)

    def _request(self) -> None:
        try:
            status, job = call(self.conn, "POST", "jobs/request", {"token": self.conn.token, "info": {}})
        except OSError as err:
            status, job = 0, None
            self._once(("error", str(err)), f"Checking for jobs... failed: {err}")
            return
        if status == 201 and isinstance(job, dict):
            with self.lock:
                self.active += 1
            self.received.put(job)
            self._last_status = None
            self._say(f"Checking for jobs... received job={job['id']} ref={job['git_info']['ref']}")
        elif status == 403:
            self._once(403, "Checking for jobs... forbidden")
        elif status != 204:
            self._once(status, f"Checking for jobs... failed (status {status})")

    def _once(self, key: object, line: str) -> None:
        if self._last_status != key:
            self._say(line)
        self._last_status = key


def variable(job: dict[str, Any], key: str, default: str = "") -> str:
    return next((str(v["value"]) for v in job.get("variables", []) if v.get("key") == key), default)


def record(job: dict[str, Any], state: str) -> None:
    """/run/runner-standin/received/<id>.json: what the lab tests read."""
    RECEIVED.mkdir(parents=True, exist_ok=True)
    entry = {
        "id": job["id"],
        "ref": job["git_info"]["ref"],
        "protected": variable(job, "CI_COMMIT_REF_PROTECTED") == "true",
        "state": state,
    }
    partial = RECEIVED / f".{job['id']}.json"
    partial.write_text(json.dumps(entry))
    partial.rename(RECEIVED / f"{job['id']}.json")
