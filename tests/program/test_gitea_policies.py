"""The policy pack on a Gitea stack (forge: gitea): the example passes it whole, and an
unprotected Gitea data volume is caught as GitLab's volumes are."""

from __future__ import annotations

from dataclasses import replace

from policies import rules
from tests.policies.harness import run_policies, specs_from_synthesis
from tests.program.conftest import Stack


def test_the_gitea_example_passes_the_pack_with_no_finding(gitea: Stack) -> None:
    outcome = run_policies(rules.POLICIES, specs_from_synthesis(gitea.synth.resources))
    assert outcome.violations == [], "\n".join(str(v) for v in outcome.violations)
    assert outcome.not_evaluated == []


def test_an_unprotected_gitea_volume_is_refused(gitea: Stack) -> None:
    specs = [
        replace(s, protect=False) if s.type == "docker:index/volume:Volume" else s
        for s in specs_from_synthesis(gitea.synth.resources)
    ]
    found = run_policies(rules.POLICIES, specs).of("gitlab-volumes-protected")
    assert len(found) == 1 and found[0].level == "mandatory", found
    assert "forgeway.role=gitea-data" in found[0].message and "Gitea's data" in found[0].message


def test_a_file_variable_names_where_a_secret_is_not_the_secret() -> None:
    envs = [
        "GITEA__security__SECRET_KEY__FILE=/etc/forgeway/secret_key",  # a path: fine
        "DB_PASSWORD_FILE=hunter2-not-a-path",  # a value under a _FILE name: still a secret
        "GITEA__security__SECRET_KEY=abc123",
    ]
    found = rules.secret_material({"envs": envs})
    assert [f.path for f in found] == ["envs[1]", "envs[2]"], found


def test_an_unprotected_woodpecker_volume_is_refused_naming_woodpecker(gitea_woodpecker: Stack) -> None:
    specs = [
        replace(s, protect=False) if s.type == "docker:index/volume:Volume" and "woodpecker" in s.name else s
        for s in specs_from_synthesis(gitea_woodpecker.synth.resources)
    ]
    found = run_policies(rules.POLICIES, specs).of("gitlab-volumes-protected")
    assert len(found) == 1 and found[0].level == "mandatory", found
    assert "forgeway.role=woodpecker-data" in found[0].message and "Woodpecker's data" in found[0].message
