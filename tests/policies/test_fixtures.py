"""Each policy on its fixtures: a passing set reports nothing, a failing one names the resource and the fix.

Fixtures live in ``fixtures/<policy-name>/{pass,fail}-*.json``: a description, the
resources (type, name, props in wire format, opts, provider and parent by name), the
policy config if any, and for a failing set the expected violations, each as the
resource it must name and a substring of the fix it must say.
"""

from __future__ import annotations

import pytest

from policies import rules
from tests.policies.harness import FIXTURES, Case, load_cases, run_policies

pytestmark = pytest.mark.policies

BY_NAME = {p.name: p for p in rules.POLICIES}


@pytest.mark.parametrize("case", load_cases(), ids=str)
def test_fixture(case: Case) -> None:
    policy = BY_NAME[case.policy]
    outcome = run_policies([policy], case.specs, {policy.name: case.config})
    found = [v.message for v in outcome.violations]
    assert not outcome.not_evaluated, outcome.not_evaluated
    if case.passes:
        assert found == [], f"{case}: {case.description}"
        return
    assert len(found) == len(case.expect), f"{case}: expected {len(case.expect)} violation(s), got:\n" + "\n".join(
        found
    )
    unmatched = list(found)
    for expected in case.expect:
        match = next((m for m in unmatched if expected["resource"] in m and expected["fix"] in m), None)
        assert match is not None, f"{case}: no violation names {expected} among:\n" + "\n".join(unmatched)
        unmatched.remove(match)


@pytest.mark.parametrize("policy", rules.POLICIES, ids=lambda p: p.name)
def test_every_policy_has_a_passing_and_a_failing_fixture(policy: object) -> None:
    cases = load_cases(policy.name)  # type: ignore[attr-defined]
    assert any(c.passes for c in cases), f"no fixtures/{policy.name}/pass-*.json"  # type: ignore[attr-defined]
    assert any(not c.passes for c in cases), f"no fixtures/{policy.name}/fail-*.json"  # type: ignore[attr-defined]


def test_fixture_directories_are_policies() -> None:
    assert {d.name for d in FIXTURES.iterdir() if d.is_dir()} == set(BY_NAME)


def test_fixture_files_say_pass_or_fail() -> None:
    names = [c.path.name for c in load_cases()]
    assert all(n.startswith(("pass-", "fail-")) for n in names), names


def test_failing_fixtures_expect_something() -> None:
    assert all(c.expect for c in load_cases() if not c.passes)
