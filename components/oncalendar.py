"""systemd calendar specs (``OnCalendar=``), checked as ``systemd-analyze calendar`` would.

The prune timer's schedule (``runners.prune.on_calendar``) is written into a systemd
timer on each runner host; a spec systemd refuses there fails only after the tunnel
and the rest of the host have already changed. This is an independent reading of the
grammar in systemd.time(7) and of systemd 252's parser (src/shared/calendarspec.c:
weekdays, then ``[year-]month-day`` or ``month~day``, then ``hour:minute[:second]``,
each part a comma list of ``value[..stop][/repeat]`` or ``*``), with the same bounds.
tests/unit/test_oncalendar.py holds it against the installed ``systemd-analyze``.

Deliberately narrower than systemd, and said so in the error:
* a time zone may only be ``UTC``: others depend on the host's time zone database (and
  the prune script's character check refuses '_' in names such as America/New_York);
* ``@epoch`` is refused: a timer that fires once is not a schedule (and the script
  refuses '@');
* a range of seconds (``*:*:05..10``) is refused: systemd 252 takes some and not others
  (``3..4`` but not ``3..3``, ``3..3/1`` but not ``5.5..6``) by rules its source does not
  show plainly; a prune check needs no second ranges (``*:*:0/10`` still works).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["calendar_problem"]

USEC_PER_SEC = 1_000_000
INT_MAX = 2**31 - 1
MIN_YEAR, MAX_YEAR = 1970, 2199
CHAIN_MAX = 240  # systemd's limit on the values of one comma list (plus one)
# Characters docker-prune-up.sh lets into the timer unit (components/scripts).
_CHARSET = re.compile(r"[A-Za-z0-9 *:/,.~+-]{1,256}")
_SHORTHANDS = frozenset(
    {
        "minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually", "anually",
        "quarterly", "semiannually", "semi-annually", "biannually", "bi-annually",
    }
)  # fmt: skip
_DAYS = (
    ("monday", 0), ("mon", 0), ("tuesday", 1), ("tue", 1), ("wednesday", 2), ("wed", 2),
    ("thursday", 3), ("thu", 3), ("friday", 4), ("fri", 4), ("saturday", 5), ("sat", 5),
    ("sunday", 6), ("sun", 6),
)  # fmt: skip


class _Invalid(Exception):
    pass


@dataclass
class _Value:
    start: int
    stop: int = -1
    repeat: int = 0


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self, offset: int = 0) -> str:
        at = self.pos + offset
        return self.text[at] if at < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1


def _number(r: _Reader, usec: bool) -> int:
    if not r.peek().isdigit():
        raise _Invalid
    begin = r.pos
    while r.peek().isdigit():
        r.pos += 1
    value = int(r.text[begin : r.pos])
    if usec:
        value *= USEC_PER_SEC
        if r.peek() == "." and r.peek(1) != ".":  # one '.' is a decimal point, '..' a range
            r.pos += 1
            value += _fraction(r)
    if value > INT_MAX:
        raise _Invalid
    return value


def _fraction(r: _Reader) -> int:
    """Microseconds of a decimal fraction: six digits, rounded by the seventh."""
    digits = ""
    while r.peek().isdigit():
        digits += r.peek()
        r.pos += 1
    if not digits:
        raise _Invalid
    value = int(digits[:6].ljust(6, "0"))
    return value + 1 if len(digits) > 6 and digits[6] >= "5" else value


def _chain(r: _Reader, usec: bool) -> list[_Value] | None:
    """One part; None is '*' (any value)."""
    if r.peek() == "*":
        r.pos += 1
        return [_Value(0, -1, USEC_PER_SEC)] if usec else None
    values: list[_Value] = []
    while True:
        if len(values) > CHAIN_MAX:
            raise _Invalid
        value = _Value(_number(r, usec))
        if r.peek() == "." and r.peek(1) == ".":
            if usec:
                raise _Invalid  # a range of seconds: see the module docstring
            r.pos += 2
            value.stop = _number(r, usec)
            value.repeat = USEC_PER_SEC if usec else 1
        if r.peek() == "/":
            r.pos += 1
            value.repeat = _number(r, usec)
            if value.repeat == 0:
                raise _Invalid
        if r.peek() not in ("", " ", ",", "-", "~", ":"):
            raise _Invalid
        values.append(value)
        if r.peek() != ",":
            return values
        r.pos += 1


def _day_at(r: _Reader) -> int | None:
    """The weekday named at the reader (consumed), or None if none is."""
    rest = r.text[r.pos :].lower()
    match = next(((name, nr) for name, nr in _DAYS if rest.startswith(name)), None)
    if match is None:
        return None
    name, nr = match
    if r.peek(len(name)) not in ("", "-", ".", ",", " "):
        raise _Invalid
    r.pos += len(name)
    return nr


def _weekdays(r: _Reader) -> None:
    """Mon, Mon..Fri, Sat,Sun: a comma list of days and ranges ('-' is an old range mark)."""
    first, range_from = True, -1
    while True:
        nr = _day_at(r)
        if nr is None:
            if first:
                return  # no weekdays: the date follows
            raise _Invalid
        if range_from > nr:
            raise _Invalid
        if r.peek() in ("", " "):
            r.skip_spaces()
            return
        separator = ".." if r.text.startswith("..", r.pos) else r.peek()
        if separator in ("..", "-"):
            if range_from >= 0:
                raise _Invalid
            range_from = nr
        elif separator == ",":
            range_from = -1
        else:
            raise _Invalid
        r.pos += len(separator)
        if r.peek() in ("", " "):  # a trailing comma, but not an open range
            r.skip_spaces()
            if range_from >= 0:
                raise _Invalid
            return
        first = False


@dataclass
class _Spec:
    year: list[_Value] | None = None
    month: list[_Value] | None = None
    day: list[_Value] | None = None
    end_of_month: bool = False
    hour: list[_Value] | None = None
    minute: list[_Value] | None = None
    second: list[_Value] | None = None


def _date(r: _Reader, spec: _Spec) -> None:
    if r.peek() == "":
        return
    if r.peek() == "@":
        raise _Invalid  # @epoch: a single instant (see the module docstring)
    begin = r.pos
    first = _chain(r, usec=False)
    if r.peek() in ("", ":"):
        r.pos = begin  # a time, not a date
        return
    if r.peek() == "~":
        spec.end_of_month = True
    elif r.peek() != "-":
        raise _Invalid
    r.pos += 1
    second = _chain(r, usec=False)
    if r.peek() in ("", " "):
        r.skip_spaces()
        spec.month, spec.day = first, second
        return
    if spec.end_of_month:
        raise _Invalid
    if r.peek() == "~":
        spec.end_of_month = True
    elif r.peek() != "-":
        raise _Invalid
    r.pos += 1
    third = _chain(r, usec=False)
    if r.peek() not in ("", " "):
        raise _Invalid
    r.skip_spaces()
    spec.year, spec.month, spec.day = first, second, third


def _time(r: _Reader, spec: _Spec) -> None:
    if r.peek() == "":
        return  # no time: midnight
    spec.hour = _chain(r, usec=False)
    if r.peek() != ":":
        raise _Invalid
    r.pos += 1
    spec.minute = _chain(r, usec=False)
    if r.peek() == "":
        return
    if r.peek() != ":":
        raise _Invalid
    r.pos += 1
    spec.second = _chain(r, usec=True)
    if r.peek() != "":
        raise _Invalid


def _normalized(values: list[_Value] | None, year: bool = False) -> list[_Value]:
    out = []
    for v in values or []:
        start, stop = v.start, v.stop
        if year:  # two-digit years: 12 is 2012, 89 is 1989
            start, stop = (x + 2000 if 0 <= x < 70 else x + 1900 if 70 <= x < 100 else x for x in (start, stop))
        repeat = v.repeat
        if stop > start and repeat > 0:
            stop -= (stop - start) % repeat  # the range ends on a repetition
        if stop == start:  # a range that repeats never is one value
            stop, repeat = -1, 0
        out.append(_Value(start, stop, repeat))
    return out


def _valid(values: list[_Value], low: int, high: int, end_of_month: bool = False) -> bool:
    if end_of_month:
        high -= 3  # at most 28 days before the end of the month
    for v in values:
        if not low <= v.start <= high or v.repeat > high - low:
            return False
        if v.stop >= 0:
            if not low <= v.stop <= high or v.start + v.repeat > v.stop:
                return False
        elif (end_of_month and v.start - v.repeat < low) or (not end_of_month and v.start + v.repeat > high):
            return False
    return True


def _parse(text: str) -> None:
    if text[-4:].lower() == " utc":
        text = text[:-4]
    if not text:
        raise _Invalid
    if text.lower() in _SHORTHANDS:
        return
    r = _Reader(text)
    spec = _Spec()
    _weekdays(r)
    _date(r, spec)
    _time(r, spec)
    if r.peek() != "":
        raise _Invalid
    end_of_month = spec.end_of_month and spec.day is not None
    checks = (
        _valid(_normalized(spec.year, year=True), MIN_YEAR, MAX_YEAR),
        _valid(_normalized(spec.month), 1, 12),
        _valid(_normalized(spec.day), 1, 31, end_of_month),
        _valid(_normalized(spec.hour), 0, 23),
        _valid(_normalized(spec.minute), 0, 59),
        _valid(_normalized(spec.second), 0, 60 * USEC_PER_SEC - 1),
    )
    if not all(checks):
        raise _Invalid


def calendar_problem(text: str) -> str | None:
    """None if systemd takes ``text`` as an OnCalendar spec; else what is wrong."""
    if not _CHARSET.fullmatch(text):
        return "only letters, digits, spaces and * : / , . ~ + - (at most 256 characters)"
    try:
        _parse(text)
    except _Invalid:
        return "a spec `systemd-analyze calendar` accepts"
    return None
