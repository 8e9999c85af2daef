"""components.config: the bad-config corpus, each case refused with every problem it has.

Each file in ``bad_configs/`` is a patch over the decrypted prod stack::

    description: one line saying what a user got wrong
    set: {path: value}        # forgeway:hosts[1].arch, forgeway:gitlab.images.amd64, ...
    delete: [path]            # applied after `set`, in order
    plaintext: [full key]     # a secret key of prod treated as NOT secret
    secret: [full key]        # extra keys treated as secret (stored encrypted)
    sensitive: [full key]     # keys whose values must never be printed, although not secret
    expect: [{key, contains, got?}]   # every problem that must be reported
    also: [key]               # further problem keys that may be reported
    xfail: reason             # a known bug in components/config/ (strict)

Paths and patches: tests/unit/config_patches.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import PROJECT, ConfigError, Problem, parse_stack
from tests.unit.config_patches import MISSING, TOP_KEY, Config, Patched, apply_patch, lookup

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parent / "bad_configs"
CASE_FILES = sorted(CORPUS.glob("*.yaml"))
CASE_FIELDS = {"description", "set", "delete", "plaintext", "secret", "sensitive", "expect", "also", "xfail"}
EXPECT_FIELDS = {"key", "contains", "got"}
# What a problem's key must look like: a full key, then .field or [index] parts.
KEY_SYNTAX = re.compile(rf"^{PROJECT}:[a-z_]+(\.[A-Za-z0-9_-]+|\[\d+\])*$")


# --- the corpus ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    patch: dict[str, Any]
    expect: list[dict[str, str]]
    also: list[str]
    xfail: str | None


def load_case(path: Path) -> Case:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path.name
    assert set(doc) <= CASE_FIELDS, f"{path.name}: unknown fields {set(doc) - CASE_FIELDS}"
    description = doc.get("description")
    assert isinstance(description, str) and description.strip() and "\n" not in description.strip(), path.name
    expect = doc.get("expect")
    assert isinstance(expect, list) and expect, f"{path.name}: expect must list at least one problem"
    for entry in expect:
        assert isinstance(entry, dict) and {"key", "contains"} <= set(entry) <= EXPECT_FIELDS, (path.name, entry)
        assert all(isinstance(v, str) for v in entry.values()), (path.name, entry)
        assert KEY_SYNTAX.match(entry["key"]), (path.name, entry["key"])
    also = doc.get("also") or []
    assert all(isinstance(k, str) for k in also), path.name
    xfail = doc.get("xfail")
    assert xfail is None or (isinstance(xfail, str) and xfail), path.name
    patch = {k: doc[k] for k in ("set", "delete", "plaintext", "secret", "sensitive") if doc.get(k)}
    return Case(path.name, patch, expect, also, xfail)


def _case_params() -> list[Any]:
    params = []
    for path in CASE_FILES:
        case = load_case(path)
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        params.append(pytest.param(case, id=path.name, marks=marks))
    return params


def _shows(shown: str, value: Any) -> bool:
    """Whether a problem's value text is the given value (maybe cut short with '...')."""
    text = json.dumps(value)
    return shown == text or (shown.endswith("...") and len(shown) > 3 and text.startswith(shown[:-3]))


def check_problem_values(problems: list[Problem], patched: Patched, pinned: set[Problem]) -> None:
    """Every problem names a real key and shows the value given there, or [secret];
    ``pinned`` problems have their value checked by a case's ``got`` instead (a bad map
    key, say, shows the key)."""
    for p in problems:
        assert KEY_SYNTAX.match(p.key), f"not a key: {p.key!r}"
        top = TOP_KEY.match(p.key)
        assert top is not None
        given = lookup(patched.config, p.key)
        if top.group(0) in patched.sensitive:
            want = {"[secret]"} if given is not MISSING else {"[secret]", "nothing"}
            assert p.value in want, f"{p.key} is secret but shows {p.value!r}"
        elif p in pinned:
            continue
        elif given is MISSING:
            assert p.value == "nothing", f"{p.key} is not in the config, yet shows {p.value!r}"
        elif isinstance(given, dict | list):
            assert p.value not in {"", "nothing"}, f"{p.key} is set, yet shows {p.value!r}"
        else:
            assert _shows(p.value, given), f"{p.key} is {given!r} but shows {p.value!r}"


def check_error(err: ConfigError, patched: Patched, expect: list[dict[str, str]], also: list[str]) -> None:
    problems = err.problems
    assert problems, "a ConfigError without problems"
    text = str(err)
    # One exception listing every problem, one per line.
    lines = text.splitlines()
    assert f"has {len(problems)} problem(s)" in lines[0]
    assert lines[1:] == [f"  - {p}" for p in problems]

    def matches(p: Problem, e: Mapping[str, str]) -> bool:
        return p.key == e["key"] and e["contains"] in p.expected and p.value == e.get("got", p.value)

    check_problem_values(problems, patched, {p for p in problems for e in expect if "got" in e and matches(p, e)})
    for fragment in patched.hidden:
        assert fragment not in text, f"a secret value is printed: ...{fragment[:4]}..."

    for e in expect:
        assert any(matches(p, e) for p in problems), f"not reported: {e}\n{text}"
    unexpected = [str(p) for p in problems if p.key not in also and not any(matches(p, e) for e in expect)]
    assert not unexpected, "unexpected problems:\n" + "\n".join(unexpected)


@pytest.mark.parametrize("case", _case_params())
def test_bad_config_is_refused_with_every_problem(case: Case, prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, case.patch)
    with pytest.raises(ConfigError) as info:
        parse_stack(patched.config, patched.secret_keys)
    check_error(info.value, patched, case.expect, case.also)


def test_corpus_has_at_least_30_cases() -> None:
    assert len(CASE_FILES) >= 30


def test_corpus_files_are_named_numbered_and_change_prod(prod: tuple[Config, list[str]]) -> None:
    numbers = []
    descriptions = set()
    for path in CASE_FILES:
        assert re.fullmatch(r"\d{3}-[a-z0-9]+(-[a-z0-9]+)*\.yaml", path.name), path.name
        numbers.append(path.name[:3])
        case = load_case(path)
        descriptions.add(yaml.safe_load(path.read_text())["description"])
        patched = apply_patch(prod, case.patch)
        changed = patched.config != prod[0] or patched.secret_keys != prod[1] or patched.sensitive - set(prod[1])
        assert changed, f"{path.name} leaves prod as it is"
    assert len(set(numbers)) == len(numbers), "two cases share a number"
    assert len(descriptions) == len(CASE_FILES), "two cases share a description"


# --- the checker itself can fail -------------------------------------------------------


def test_the_checker_catches_leaks_strays_and_misses(prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, {"set": {"forgeway:hosts[1].arch": "armv7"}})
    password = prod[0]["forgeway:gitlab_root_password"]
    arch = Problem("forgeway:hosts[1].arch", '"armv7"', "32-bit ARM is not supported")
    expect = [{"key": arch.key, "contains": "32-bit ARM"}]
    check_error(ConfigError([arch]), patched, expect, [])  # the baseline passes
    bad = [
        ([arch, Problem("forgeway:gitlab_root_password", json.dumps(password), "x")], expect),  # a leak
        ([arch, Problem("forgeway:tunnel.mtu", "nothing", "x")], expect),  # a problem nobody expected
        ([Problem("forgeway:hosts[2].arch", '"armv7"', "32-bit ARM")], expect),  # wrong key
        ([Problem(arch.key, '"arm64"', arch.expected)], expect),  # not the value given
        ([Problem("forgeway:gitlab.images.aarch64.[key]", '"x"', "y")], []),  # not a key
    ]
    for problems, want in bad:
        with pytest.raises(AssertionError):
            check_error(ConfigError(problems), patched, want, [])
