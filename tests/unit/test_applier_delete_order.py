"""The applier deletes as the engine does: a resource only after everything that depends on it."""

from __future__ import annotations

from tools.applier.state import Entry, delete_order, key_of_urn


def _entry(name: str, seq: int, *dependencies: str) -> Entry:
    return Entry("t:index/x:X", name, name, seq, {}, {}, dependencies=[f"t:index/x:X::{d}" for d in dependencies])


def test_dependents_go_first_even_when_a_dependency_changed_later() -> None:
    # gitlab was updated in place after the runner (newer seq); the runner depends on it through the provider.
    gitlab, provider, runner, other = (
        _entry("gitlab", 9),
        _entry("api", 3, "gitlab"),
        _entry("r", 4, "api"),
        _entry("o", 5),
    )
    order = [e.name for e in delete_order([gitlab, provider, runner, other])]
    assert order.index("r") < order.index("api") < order.index("gitlab"), order
    assert order[0] == "o", "the newest of those free to go first"  # o (5) and r (4) are free; gitlab (9) is not


def test_a_cycle_still_deletes_everything_newest_first() -> None:
    order = [e.name for e in delete_order([_entry("a", 1, "b"), _entry("b", 2, "a")])]
    assert order == ["b", "a"]


def test_state_keys_of_urns_and_provider_references() -> None:
    parent = "forgeway:runner_registration:RunnerRegistration"
    urn = f"urn:pulumi:lab::forgeway::{parent}$gitlab:index/userRunner:UserRunner::r1"
    assert key_of_urn(urn) == "gitlab:index/userRunner:UserRunner::r1"
    ref = "urn:pulumi:lab::forgeway::pulumi:providers:gitlab::gitlab-api::0123-abcd"
    assert key_of_urn(ref) == "pulumi:providers:gitlab::gitlab-api"
