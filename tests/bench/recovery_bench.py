"""Benchmark on the lab (root): how long GitLab is unreachable after a reboot or a CGNAT event.

Not a timed test: it prints its figures (issue 14, "Recovery, measured"). For each event,
RUNS times, the figure is the seconds from the moment the event is over to the end of
the first successful HTTPS request from the client through the VPS that started after
that moment; the event's line gives the maximum (and every run).

* ``vps``, ``home`` (the GitLab host), ``runner-amd``, ``all``: ``python -m tools.lab
  reboot HOST`` (tools/lab/topology.py; it prints ``{"host": ..., "sshd_back": <time.time()>}``
  per host when its sshd answers again). The moment is that host's ``sshd_back``; for
  ``all``, the last host's. A tools.lab without the reboot action: those lines say so.
* ``cgnat-forget``: ``python -m tools.lab.cgnat forget`` (the CGNAT drops the home side's
  UDP mappings; the next packet gets a new public port). The moment is its ``at``.

Probes: every PROBE_EVERY s a new ``curl`` (its own process, so one stuck on a dead path
never delays the next) from ``fwl-client`` to ``https://<VPS>/`` with the stack's CA,
for the whole event; any HTTP answer counts as success. Uses a running lab if there is
one, else brings one up and takes it down again. Target: each event at most 20 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from tests.stacks import ROOT

RUNS = 3
PROBE_EVERY = 0.25
PROBE_TIMEOUT = 3.0
GIVE_UP = 180.0  # per run, after the event is over
TARGET = 20.0
LAB = [sys.executable, "-m", "tools.lab"]
CGNAT = [sys.executable, "-m", "tools.lab.cgnat"]
URL = "https://203.0.113.10/"
EVENTS: list[tuple[str, list[str] | None]] = [
    ("VPS alone reboots", ["vps"]),
    ("GitLab host alone reboots", ["home"]),
    ("one runner host reboots", ["runner-amd"]),
    ("all hosts reboot together", ["all"]),
    ("CGNAT forgets home's mapping (new port)", None),
]


@dataclass
class Prober:
    """Starts a curl every PROBE_EVERY s; keeps (start, end) of the ones that got an HTTP answer."""

    cafile: str
    successes: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self) -> None:
        start = time.time()
        argv = ["ip", "netns", "exec", "fwl-client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                "--cacert", self.cafile, "--connect-timeout", str(PROBE_TIMEOUT), "--max-time", str(PROBE_TIMEOUT),
                URL]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=PROBE_TIMEOUT + 5)
        if done.returncode == 0 and done.stdout.strip() not in ("", "000"):
            with self._lock:
                self.successes.append((start, time.time()))

    def _loop(self) -> None:
        while not self._stop.is_set():
            threading.Thread(target=self._one, daemon=True).start()
            self._stop.wait(PROBE_EVERY)

    def first_success_after(self, moment: float) -> float | None:
        with self._lock:
            ends = [end for start, end in self.successes if start >= moment]
        return min(ends) if ends else None

    def __enter__(self) -> Prober:
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def _wait_until_up(cafile: str) -> None:
    with Prober(cafile) as prober:
        began = time.time()
        while prober.first_success_after(began) is None:
            if time.time() - began > GIVE_UP:
                raise RuntimeError(f"{URL} does not answer from fwl-client: the lab is not serving")
            time.sleep(0.2)


def _event_moment(hosts: list[str] | None) -> float:
    """Run the event; the time.time() at which it is over (sshd back, or the forget done)."""
    argv = [*CGNAT, "forget"] if hosts is None else [*LAB, "reboot", *hosts]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    moments = [float(line["sshd_back"] if hosts is not None else line["at"]) for line in lines]
    if not moments:
        raise RuntimeError(f"{' '.join(argv[1:])} printed no JSON line: {done.stdout[-500:]}")
    return max(moments)


def measure(hosts: list[str] | None, cafile: str) -> float:
    """One run: seconds from the event's end to the first HTTPS success that started after it."""
    _wait_until_up(cafile)
    with Prober(cafile) as prober:
        moment = _event_moment(hosts)
        while (first := prober.first_success_after(moment)) is None:
            if time.time() - moment > GIVE_UP:
                raise RuntimeError(f"no HTTPS answer {GIVE_UP:.0f} s after the event")
            time.sleep(0.1)
    return first - moment


def has_reboot_action() -> bool:
    done = subprocess.run([*LAB, "--help"], cwd=ROOT, capture_output=True, text=True, check=False)
    return "reboot" in done.stdout


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])  # e.g. "cgnat": only events whose name has it
    started_here = not (ROOT / ".lab" / "topology.json").exists()
    if started_here:
        subprocess.run([*LAB, "up"], cwd=ROOT, check=True, capture_output=True)
    lines = []
    try:
        cafile = str(ROOT / ".lab" / "ca.crt")
        reboot = has_reboot_action()
        described = json.loads((ROOT / ".lab" / "topology.json").read_text())
        booting = {h["name"] for h in described["hosts"] if h.get("boots")}
        for name, hosts in EVENTS:
            if wanted and not any(w.lower() in name.lower() for w in wanted):
                continue
            if hosts is not None and not reboot:
                lines.append(f"  {name:<42} not measured: tools.lab has no reboot action here")
                continue
            if hosts is not None and not set(hosts) - {"all"} <= booting:
                lines.append(f"  {name:<42} not measured: {', '.join(hosts)} does not boot in the lab (issue 14)")
                continue
            shown = f"{name} (booting: {', '.join(sorted(booting))})" if hosts == ["all"] else name
            runs = [measure(hosts, cafile) for _ in range(RUNS)]
            verdict = "ok" if max(runs) <= TARGET else f"OVER the {TARGET:.0f} s target"
            each = ", ".join(f"{r:.1f}" for r in runs)
            lines.append(f"  {shown:<42} max {max(runs):5.1f} s  (runs: {each})  {verdict}")
    finally:
        if started_here:
            subprocess.run([*LAB, "down"], cwd=ROOT, check=False, capture_output=True)
    print(f"recovery: seconds from the event's end to the first HTTPS answer through the VPS ({RUNS} runs):")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
