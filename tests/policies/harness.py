"""A small runner for the policy pack: resources in, violations out, as the analyzer would.

It builds ``ResourceValidationArgs`` and ``StackValidationArgs`` the way pulumi_policy's
analyzer does for the engine (wire-format props through ``deserialize_properties``, so
secrets arrive unwrapped, then ``unknown_checking_proxy``), calls each policy's
``validate`` and collects what it reports. Resources come from fixture files or from a
synthesis of the program under mocks (``tools.stack.synth``).

What differs from the engine, on purpose or by necessity:

* resource policies see inputs, stack policies see outputs under the engine; here both
  see the inputs (the mocks echo inputs as outputs) plus, in fixtures, a component's
  registered outputs given as its props;
* ``retain_on_delete`` is kept beside the args (the analyzer protocol has no field for
  it), so tests can check what policies cannot see;
* policy config is the schema defaults overlaid with the given config, as the CLI
  does with ``--policy-pack-config``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from pathlib import Path
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from tools.stack.synth import Registration

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_STACK = "fixture"

__all__ = [
    "FIXTURES",
    "Case",
    "Outcome",
    "Spec",
    "Violation",
    "load_cases",
    "run_policies",
    "specs_from_fixture",
    "specs_from_synthesis",
]


@dataclass(frozen=True)
class Spec:
    """One resource as the engine would describe it to a policy pack (props in wire format)."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    protect: bool = False
    retain_on_delete: bool = False
    additional_secret_outputs: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()
    parent: str | None = None  # URN
    provider: str | None = None  # URN of a provider Spec


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # "mandatory" | "advisory"
    message: str
    urn: str


@dataclass
class Outcome:
    violations: list[Violation] = field(default_factory=list)
    # (policy, urn or "stack", why) where a value was unknown, as in a preview
    not_evaluated: list[tuple[str, str, str]] = field(default_factory=list)

    def of(self, policy: str) -> list[Violation]:
        return [v for v in self.violations if v.policy == policy]

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]


# --- building the pulumi_policy objects ----------------------------------------------


def _props(spec: Spec) -> Any:
    return unknown_checking_proxy(deserialize_properties(json.loads(json.dumps(spec.props))))


def _options(spec: Spec) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        spec.protect,
        list(spec.ignore_changes),
        None,
        [],
        PolicyCustomTimeouts(0, 0, 0),
        list(spec.additional_secret_outputs),
        spec.parent,
    )


def _provider(spec: Spec, by_urn: Mapping[str, Spec]) -> PolicyProviderResource | None:
    if spec.provider is None or spec.provider not in by_urn:
        return None
    p = by_urn[spec.provider]
    return PolicyProviderResource(p.type, _props(p), p.urn, p.name)


def _stack_resources(specs: Sequence[Spec]) -> list[PolicyResource]:
    by_urn = {s.urn: s for s in specs}
    made = {
        s.urn: PolicyResource(s.type, _props(s), s.urn, s.name, _options(s), _provider(s, by_urn), None, [], {})
        for s in specs
    }
    for s in specs:
        if s.parent in made:
            made[s.urn].parent = made[s.parent]
    return list(made.values())


def _config(policy: Any, given: Mapping[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    schema = getattr(policy, "config_schema", None)
    if schema is not None:
        for key, prop in (schema.properties or {}).items():
            if "default" in prop:
                config[key] = prop["default"]
    config.update({k: v for k, v in (given or {}).items() if k != "enforcementLevel"})
    return config


def _level(policy: Any, given: Mapping[str, Any] | None) -> str:
    if given and "enforcementLevel" in given:
        return str(given["enforcementLevel"])
    return str(policy.enforcement_level.value)


@dataclass
class _Reporter:
    """A ``report_violation`` callback that records into an Outcome."""

    outcome: Outcome
    policy: str
    level: str
    default_urn: str

    def __call__(self, message: str, urn: str | None = None) -> None:
        if self.default_urn != "stack":
            urn = None  # a resource policy's report belongs to the resource validated
        self.outcome.violations.append(Violation(self.policy, self.level, message, urn or self.default_urn))


def run_policies(
    policies: Iterable[Any], specs: Sequence[Spec], config: Mapping[str, Mapping[str, Any]] | None = None
) -> Outcome:
    """Every policy over every resource (resource policies) or over all of them (stack policies).

    A resource policy's reports belong to the resource it validates (the analyzer
    ignores the urn argument there); a stack policy's to the urn it names, else the stack.
    """
    outcome = Outcome()
    by_urn = {s.urn: s for s in specs}
    for policy in policies:
        given = (config or {}).get(policy.name)
        level = _level(policy, given)
        if level == "disabled":
            continue
        policy_config = _config(policy, given)
        if isinstance(policy, ResourceValidationPolicy):
            for spec in specs:
                args = ResourceValidationArgs(
                    spec.type, _props(spec), spec.urn, spec.name, _options(spec), _provider(spec, by_urn), policy_config
                )
                # The analyzer files a resource policy's reports under the resource, whatever urn is given.
                report = _Reporter(outcome, policy.name, level, spec.urn)
                try:
                    result = policy.validate(args, report)
                    assert not isawaitable(result), "forgeway's validators are synchronous"
                except UnknownValueError as exc:
                    outcome.not_evaluated.append((policy.name, spec.urn, exc.message))
        elif isinstance(policy, StackValidationPolicy):
            stack_args = StackValidationArgs(_stack_resources(specs), policy_config)
            try:
                result = policy.validate(stack_args, _Reporter(outcome, policy.name, level, "stack"))
                assert not isawaitable(result), "forgeway's validators are synchronous"
            except UnknownValueError as exc:
                outcome.not_evaluated.append((policy.name, "stack", exc.message))
    return outcome


# --- resources from fixtures -----------------------------------------------------------


def _fixture_urn(type_: str, name: str) -> str:
    return f"urn:pulumi:{FIXTURE_STACK}::forgeway::{type_}::{name}"


def specs_from_fixture(resources: Sequence[Mapping[str, Any]]) -> list[Spec]:
    """Fixture resources: ``{type, name, props, opts, provider, parent}``; provider and parent are names."""
    urns = {r["name"]: _fixture_urn(r["type"], r["name"]) for r in resources}
    specs = []
    for r in resources:
        opts = r.get("opts", {})
        for ref in ("provider", "parent"):
            if ref in r and r[ref] not in urns:
                raise ValueError(f"fixture resource {r['name']!r}: {ref} {r[ref]!r} is not in the fixture")
        specs.append(
            Spec(
                type=r["type"],
                name=r["name"],
                urn=urns[r["name"]],
                props=r.get("props", {}),
                protect=bool(opts.get("protect", False)),
                retain_on_delete=bool(opts.get("retainOnDelete", False)),
                additional_secret_outputs=tuple(opts.get("additionalSecretOutputs", ())),
                parent=urns[r["parent"]] if "parent" in r else None,
                provider=urns[r["provider"]] if "provider" in r else None,
            )
        )
    return specs


@dataclass(frozen=True)
class Case:
    """One fixture file: a resource set that a policy must pass, or fail with named messages."""

    policy: str
    path: Path
    description: str
    specs: list[Spec]
    config: dict[str, Any]
    expect: list[dict[str, str]]  # fail cases: [{"resource": name, "fix": substring}, ...]

    @property
    def passes(self) -> bool:
        return self.path.name.startswith("pass-")

    def __str__(self) -> str:
        return f"{self.policy}/{self.path.name}"


# A runner token's shape (glrt- and 20+ characters), made at run time.
FAKE_RUNNER_TOKEN = "glrt-" + "fixtureonly" + "0" * 13
# A WireGuard private key's shape (44 base64 characters), random per run.
FAKE_WG_KEY = base64.b64encode(os.urandom(32)).decode()
_PLACEHOLDERS = {"{FAKE_RUNNER_TOKEN}": FAKE_RUNNER_TOKEN, "{FAKE_WG_KEY}": FAKE_WG_KEY}


def _fill_placeholders(text: str) -> str:
    for placeholder, value in _PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def load_cases(policy: str | None = None) -> list[Case]:
    """Every fixture file (of one policy, or of all)."""
    cases = []
    for path in sorted(FIXTURES.glob(f"{policy or '*'}/*.json")):
        # Fixtures say {FAKE_RUNNER_TOKEN}, {FAKE_WG_KEY}: no secret-shaped string is tracked in the repo.
        data = json.loads(_fill_placeholders(path.read_text()))
        cases.append(
            Case(
                policy=path.parent.name,
                path=path,
                description=data["description"],
                specs=specs_from_fixture(data["resources"]),
                config=data.get("config", {}),
                expect=data.get("expect", []),
            )
        )
    return cases


# --- resources from a synthesis ---------------------------------------------------------


def _provider_urn(reference: str) -> str | None:
    """``<provider urn>::<id>`` as the SDK sends it; the URN itself contains ``::``."""
    return reference.rsplit("::", 1)[0] if reference else None


def specs_from_synthesis(resources: Iterable[Registration]) -> list[Spec]:
    """The program's registrations as the engine would hand them to the pack (wire-format inputs)."""
    return [
        Spec(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props=r.inputs,
            protect=r.protect,
            retain_on_delete=r.retain_on_delete,
            additional_secret_outputs=tuple(r.additional_secret_outputs),
            ignore_changes=tuple(r.ignore_changes),
            parent=r.parent or None,
            provider=_provider_urn(r.provider),
        )
        for r in resources
    ]
