"""The parsers inside the policies, one table each, and how the pack behaves on unknown values."""

from __future__ import annotations

import time

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies import rules
from tests.policies.harness import run_policies, specs_from_fixture

pytestmark = pytest.mark.policies

BY_NAME = {p.name: p for p in rules.POLICIES}
DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "ref",
    [
        "gitlab/gitlab-ce:18.5.1-ce.0",
        "yrzr/gitlab-ce-arm64v8:18.5.1-ce.0",
        "gitlab/gitlab-runner:v18.5.0",
        "forgeway-lab/gitlab-standin:1.0",
        "registry.example.org:5050/group/tool:1.2.3",
        f"alpine@sha256:{DIGEST}",
        f"alpine:3.20.3@sha256:{DIGEST}",
        f"sha256:{DIGEST}",
    ],
)
def test_pinned_images(ref: str) -> None:
    assert rules.image_pin_problem(ref) is None


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("gitlab/gitlab-ce", "no tag"),
        ("registry.example.org:5050/group/tool", "no tag"),
        ("gitlab/gitlab-ce:latest", "alias"),
        ("gitlab/gitlab-ce:LATEST", "alias"),
        ("node:20-latest", "alias"),
        ("debian:stable", "alias"),
        ("debian:bookworm", "no version"),
        ("gitlab/gitlab-ce:18", "major version"),
        ("gitlab/gitlab-runner:v18", "major version"),
        ("alpine@sha256:abc", "not a sha256 digest"),
    ],
)
def test_unpinned_images(ref: str, why: str) -> None:
    problem = rules.image_pin_problem(ref)
    assert problem is not None and why in problem


def test_forwarded_ports_reads_the_forms_nft_accepts() -> None:
    ruleset = """
    tcp dport { 80, https } dnat ip to 10.8.0.2   # a set, with a service name
    tcp dport ssh dnat ip to 10.8.0.2:2222
    udp dport 6000-6002 \\
        dnat ip to 10.8.0.2
    dnat ip to tcp dport map { 5050 : 10.8.0.2 . 5050 }
    tcp dport 2202 accept
    # tcp dport 9999 dnat ip to 10.8.0.2   (a comment, not a rule)
    """
    forwarded = rules.forwarded_ports(ruleset)
    assert sorted(forwarded.ranges) == [(22, 22), (80, 80), (443, 443), (5050, 5050), (6000, 6002)]
    assert forwarded.unreadable == ()


def test_forwarded_ports_refuses_what_it_cannot_read() -> None:
    forwarded = rules.forwarded_ports("tcp dport != 22 dnat to 10.8.0.2\ntcp dport $web dnat to 10.8.0.2\n")
    assert forwarded.ranges == ()
    assert len(forwarded.unreadable) == 2


def test_variables_and_public_keys_are_not_secret_material() -> None:
    props = {
        "create": 'token="$(cat)"; PASSWORD=$1 run',
        "environment": {"HOST_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFSY7q4MU3hM6UPT8VuIVmVIR7Yvyebuq1slw7WfZ9OW"},
        "envs": ["GITLAB_ROOT_PASSWORD=", "TZ=UTC"],
        "hostKey": "ssh-ed25519 AAAA",
    }
    assert rules.secret_material(props) == []


def test_secret_scan_stays_linear_on_long_scripts() -> None:
    """Rendered scripts are tens of kilobytes; a backtracking pattern once took 37 s on the prod stack."""
    text = ("a" * 5000 + "_token_" + "b" * 5000 + " = \n") * 20
    started = time.perf_counter()
    assert rules.secret_material({"create": text}) == []
    assert time.perf_counter() - started < 1.0


def test_unknown_values_are_not_evaluated_not_passed() -> None:
    """In a preview, a value from an uncreated resource is unknown: the policy is skipped, not passed or failed."""
    specs = specs_from_fixture([{"type": rules.REMOTE_IMAGE, "name": "img", "props": {"name": UNKNOWN_STRING_VALUE}}])
    outcome = run_policies([BY_NAME["images-pinned"]], specs)
    assert outcome.violations == []
    assert [(policy, why) for policy, _, why in outcome.not_evaluated] == [
        ("images-pinned", "string value at .name can't be known during preview")
    ]


def test_stack_policies_skip_only_the_unknown_resource() -> None:
    """One runner config unknown in preview does not stop the check of another."""
    toml = '[[runners]]\n  name = "r"\n  [runners.docker]\n    privileged = true\n'
    conn = {"host": "192.168.1.52", "hostKey": "ssh-ed25519 AAAA"}
    specs = specs_from_fixture(
        [
            {
                "type": rules.COMMAND,
                "name": "a-runner-config",
                "props": {"stdin": UNKNOWN_STRING_VALUE, "connection": conn},
            },
            {"type": rules.COMMAND, "name": "b-runner-config", "props": {"stdin": toml, "connection": conn}},
        ]
    )
    outcome = run_policies([BY_NAME["runner-job-isolation"]], specs)
    assert outcome.not_evaluated == []
    assert len(outcome.violations) == 1 and "b-runner-config" in outcome.violations[0].message
