"""The pack as the Pulumi CLI loads it: project file, pinned requirements, a builder-only __main__, docs."""

from __future__ import annotations

import ast
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from pulumi_policy import EnforcementLevel, StackValidationPolicy

from policies import rules

pytestmark = pytest.mark.policies

PACK = Path(rules.__file__).parents[1]  # policies/, the package policies/rules/ is in
DOCS = PACK.parent / "docs"
# Issue 7: every policy is mandatory except the memory advice and the warning twin; the
# drain advice too (runners.stop_grace_seconds: 0 is a choice a user may make).
ADVISORY = {
    "container-memory-limits",
    "ssh-host-keys-unpinned",
    "runner-containers-drain",
    "gitlab-client-addresses",
    "gitlab-backed-up",  # issue 18: off is a choice, warned about
    "runner-dind-tls",  # issue 21: a job network holds only the job's own services
}
STACK_POLICIES = {
    "image-platform-matches-host",
    "runner-job-isolation",
    "runner-protected-by-gitlab",
    "gitlab-backed-up",
}


def test_project_file_runs_python_in_a_virtualenv() -> None:
    project = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == "venv"


def test_requirements_pin_the_versions_tested_here() -> None:
    lines = [line for line in (PACK / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    pins = dict(line.split("==") for line in lines)
    assert pins == {"pulumi-policy": version("pulumi-policy"), "pulumi": version("pulumi")}


def test_main_only_builds_the_pack() -> None:
    tree = ast.parse((PACK / "__main__.py").read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    imports = [ast.unparse(node) for node in body if isinstance(node, ast.ImportFrom)]
    assert imports == ["from pulumi_policy import PolicyPack", "from rules import POLICIES"]
    calls = [node for node in body if not isinstance(node, ast.ImportFrom)]
    assert [ast.unparse(node) for node in calls] == ["PolicyPack(name='forgeway', policies=POLICIES)"]


def test_policies_are_named_described_and_levelled() -> None:
    names = [p.name for p in rules.POLICIES]
    assert len(names) == len(set(names))
    for policy in rules.POLICIES:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)+", policy.name), policy.name
        assert policy.description.endswith("."), policy.name
        expected = EnforcementLevel.ADVISORY if policy.name in ADVISORY else EnforcementLevel.MANDATORY
        assert policy.enforcement_level == expected, policy.name
    assert {p.name for p in rules.POLICIES if isinstance(p, StackValidationPolicy)} == STACK_POLICIES


def test_config_options_are_camel_case_with_defaults() -> None:
    for policy in rules.POLICIES:
        if policy.config_schema is None:
            continue
        for key, schema in policy.config_schema.properties.items():
            assert re.fullmatch(r"[a-z]+([A-Z][a-z]+)*", key), key
            assert "default" in schema and "description" in schema, key


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (tests/unit/test_docs.py checks the links with the same rule)."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def test_the_docs_list_every_policy_with_its_level_and_a_section() -> None:
    """docs/policies.md: a table row per policy with its level, linking a section that names it."""
    text = (DOCS / "policies.md").read_text()
    rows = re.findall(r"^\| \[`([a-z-]+)`\]\(#([a-z0-9-]+)\) \| (mandatory|advisory) \|", text, re.M)
    assert {name: level for name, _, level in rows} == {p.name: p.enforcement_level.value for p in rules.POLICIES}
    headings = {slug(h): h for h in re.findall(r"^###? (.+)$", text, re.M)}
    for name, anchor, level in rows:
        assert anchor in headings and name in headings[anchor], f"{name}: no section #{anchor} naming it"
        section = text.split(f"### {headings[anchor]}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
        assert f"`{name}` ({level}): " in section, f"{name}: its section does not open with what it checks"


def test_the_pack_readme_points_at_the_docs() -> None:
    assert "(../docs/policies.md)" in (PACK / "README.md").read_text()
