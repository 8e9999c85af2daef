"""components.oncalendar against the real ``systemd-analyze calendar`` on many samples.

Samples are built from the grammar's pieces (weekdays, dates, times, shorthands), then
mutated a character at a time, from a fixed seed. Where the validator accepts, systemd
must accept; where systemd accepts, the validator must too, except for what it refuses
on purpose (a time zone other than UTC, @epoch) and says so in its docstring.
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from components.oncalendar import calendar_problem

pytestmark = pytest.mark.unit

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

SHORTHANDS = ["minutely", "hourly", "Daily", "WEEKLY", "monthly", "yearly", "annually", "quarterly", "semi-annually"]
WEEKDAYS = ["", "Mon ", "mon,Tue ", "Mon..Fri ", "Sat,Sun ", "Monday-Wednesday ", "Fri, ", "Tue..Mon ", "Mon.. "]
# Mostly values every field takes, some on or past a field's bounds.
NUMBERS = ["0", "00", "1", "01", "2", "3", "4", "5", "05", "6", "7", "8", "10", "12"] * 3 + [
    "13",
    "15",
    "23",
    "24",
    "28",
    "29",
    "31",
    "32",
    "59",
    "60",
    "99",
]
YEARS = ["*", "2026", "26", "1969", "1970", "2199", "2200", "70", "2026..2030", "2026/2", "0001"]
CHARS = "0123456789*:/,.~-+ aMUTC"


def _part(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return "*"
    number = rng.choice(NUMBERS)
    if kind < 0.5:
        return number
    if kind < 0.65:
        return f"{number}..{rng.choice(NUMBERS)}"
    if kind < 0.8:
        return f"{number}/{rng.choice(NUMBERS)}"
    if kind < 0.9:
        return f"{number}..{rng.choice(NUMBERS)}/{rng.choice(NUMBERS)}"
    return ",".join(rng.choice(NUMBERS) for _ in range(rng.randint(2, 4)))


def _seconds(rng: random.Random) -> str:
    part = _part(rng)
    return part + rng.choice(["", "", ".5", ".000001", ".9999995", "."]) if part[-1].isdigit() else part


def _sample(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(SHORTHANDS) + rng.choice(["", "", " UTC", " utc", "  UTC"])
    spec = rng.choice(WEEKDAYS)
    date = rng.random()
    if date < 0.3:
        spec += f"{rng.choice(YEARS)}-{_part(rng)}{rng.choice(['-', '-', '~'])}{_part(rng)} "
    elif date < 0.5:
        spec += f"{_part(rng)}{rng.choice(['-', '~'])}{_part(rng)} "
    time = rng.random()
    if time < 0.45:
        spec += f"{_part(rng)}:{_part(rng)}"
    elif time < 0.85:
        spec += f"{_part(rng)}:{_part(rng)}:{_seconds(rng)}"
    spec = spec.rstrip(" ") if rng.random() < 0.9 else spec
    if rng.random() < 0.15:
        spec += " UTC"
    for _ in range(rng.choice([0, 0, 0, 0, 0, 1, 2])):  # a typo or two
        at = rng.randrange(len(spec) + 1)
        op = rng.random()
        if op < 0.4:
            spec = spec[:at] + rng.choice(CHARS) + spec[at:]
        elif op < 0.7:
            spec = spec[:at] + spec[at + 1 :]
        else:
            spec = spec[:at] + rng.choice(CHARS) + spec[at + 1 :]
    return spec


def _analyze(specs: list[str]) -> set[str]:
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", "--", *specs],
        capture_output=True,
        text=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0"},
        check=False,
    )
    marker = "Original form: "
    return {line.split(marker, 1)[1] for line in done.stdout.splitlines() if marker in line}


def _systemd_accepts(specs: list[str]) -> set[str]:
    """The specs ``systemd-analyze calendar`` parses. It prints each accepted one as
    "Original form: ..." with outer spaces trimmed, so a spec with outer spaces gets a
    call of its own; the rest go in batches."""
    spaced = [s for s in specs if s != s.strip(" ")]
    plain = [s for s in specs if s == s.strip(" ")]
    accepted: set[str] = set()
    for i in range(0, len(plain), 250):
        accepted |= _analyze(plain[i : i + 250])
    accepted |= {s for s in spaced if _analyze([s])}
    return accepted


def _refused_on_purpose(spec: str) -> bool:
    """What components.oncalendar refuses although systemd may take it (its docstring)."""
    time = spec.removesuffix(" UTC").rsplit(" ", 1)[-1]
    return time.count(":") == 2 and ".." in time.rsplit(":", 1)[1]


FIXED = [
    "hourly", "daily UTC", "*:0/15", "*-*-* 03:30", "Mon..Fri 09:00", "Sat,Sun 10:00:00", "*-*-01 00:00",
    "*-02~01", "*-*~3..5/5", "3..5/4:00", "0..23/24:00", "00:00:00.5", "00:00:59.9999994", "Mon,", "2199-12-31",
    "70/229-1-1", "1-1", "*:00:*", "Mon  10:00", "*-*-*  10:00", "*:*/15", "23:59:60", "24:00", "1969-01-01",
    "2200-01-01", "*-*-32", "*-*~29", "*-*~5/5", "5..3:00", "*:0/0", "Tue..Mon", "Mon..", "Mon1", "hourly ",
    "  hourly", "10:00 ", "hourly  UTC", "00:00:00.", "00:00:59.9999995", "*:1/59", "*-*-2/30", "1970/230-1-1",
    "",
]  # fmt: skip
# A fixed seed per sample: the same samples on every run (no cryptography here).
SAMPLES = list(dict.fromkeys(FIXED + [_sample(random.Random(f"oncalendar-{i}")) for i in range(3000)]))  # noqa: S311


@needs_systemd
def test_the_validator_agrees_with_systemd_analyze_on_every_sample() -> None:
    systemd = _systemd_accepts([s for s in SAMPLES if s])
    ours = {s for s in SAMPLES if calendar_problem(s) is None}
    too_loose = sorted(ours - systemd)
    too_strict = sorted(s for s in systemd - ours if not _refused_on_purpose(s))
    accepted, refused = len(systemd), len(SAMPLES) - len(systemd)
    assert not too_loose, f"systemd refuses what config would pass: {too_loose[:20]}"
    assert not too_strict, f"config refuses what systemd takes: {too_strict[:20]}"
    # The samples must exercise both sides, or agreement means nothing.
    assert accepted > 300 and refused > 300, (accepted, refused)


@needs_systemd
@pytest.mark.parametrize("spec", ["daily Europe/Berlin", "@1700000000", "hourly Etc/UTC", "*:*:3..4"])
def test_what_systemd_takes_and_forgeway_refuses_on_purpose(spec: str) -> None:
    assert _systemd_accepts([spec]) == {spec}
    assert calendar_problem(spec) is not None


@pytest.mark.parametrize("spec", ["hourly\n", "daily; rm -rf /", "hourly\x00", "Mon_Fri", "x" * 300, "é"])
def test_characters_the_unit_cannot_carry_are_refused(spec: str) -> None:
    assert calendar_problem(spec) is not None
