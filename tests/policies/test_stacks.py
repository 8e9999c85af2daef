"""The whole program under mocks passes the pack, and the pack catches what config can plant.

The prod and lab stacks are synthesized by ``tools.stack.synth`` (the program's real
``__main__.py`` under Pulumi's mock monitor); their registrations become policy args
with wire-format camelCase inputs, secrets unwrapped by pulumi_policy's own
deserializer, exactly as the analyzer builds them.

Planting. Each policy's mistake is planted in a copy of the lab stack config. Two kinds
reach the pack, and the tests below show it catches them:

* ``ssh-host-keys-pinned``: ``forgeway:insecure_unpinned_host_keys: true`` with the host
  keys removed (mandatory; with the policy waiver, only ``ssh-host-keys-unpinned``
  warnings remain);
* ``vps-forwarding-ports``: ``forwarding.ports`` with the registry on 2375 (a docker API
  port) and HTTPS on 8444 (outside the allowlist, and so the GitLab container publishes a home port
  outside allowedHomePorts); config validation accepts both.

The other mistakes cannot reach the pack from config, which is the point of the config
checks; ``test_planted_mistakes_config_refuses_never_reach_the_pack`` plants each and
shows the error naming the key: a floating image tag (``images-pinned``), an image named
for the other architecture (``image-platform-matches-host``), a privileged runner or
the docker socket in jobs without ``protected_only`` (``runner-job-isolation``), a
plaintext secret (``secrets-not-plaintext``). What config cannot express at all is fixed
by the components: GitLab's volumes are always protected and retained
(``gitlab-volumes-protected``), every container has a memory limit and GitLab 256 MB of
shm (``container-memory-limits``), images are pulled for the host's own platform, the
registry URL is always https (``registry-tls-only``), secrets are secret Outputs. The
synthesized stacks pass the whole pack (below), and the fixtures
(tests/policies/fixtures) show each policy catching the mistake a component bug would
make.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from components.config import ConfigError, parse_stack
from policies import rules
from tests.policies.conftest import SynthesizedStack, synthesize
from tests.policies.harness import Spec, run_policies
from tests.stacks import lab_stack
from tools.stack.synth import contains_secret, unwrap

pytestmark = pytest.mark.policies

REMOTE = "command:remote:Command"
DOCKER = "pulumi:providers:docker"


def _as_policy_resource(spec: Spec) -> SimpleNamespace:
    return SimpleNamespace(resource_type=spec.type, name=spec.name, props=unwrap(spec.props))


def _connections(spec: Spec) -> int:
    """How many SSH connections a remote command or docker provider makes: two through a jump host."""
    props = unwrap(spec.props)
    if spec.type == REMOTE:
        return 2 if props.get("connection", {}).get("proxy") else 1
    return 2 if "ProxyCommand=" in str(props.get("sshOpts")) else 1  # sshOpts: JSON text or a list


def _show(violations: Sequence[object]) -> str:
    return "\n".join(str(v) for v in violations)


def test_example_stack_passes_the_pack(example_stack: SynthesizedStack) -> None:
    outcome = run_policies(rules.POLICIES, example_stack.specs)
    assert outcome.mandatory == [], _show(outcome.mandatory)
    assert outcome.not_evaluated == []


def test_example_stack_has_no_advisory_findings(example_stack: SynthesizedStack) -> None:
    """Except what the lab's snat mode gives up, said once, on the VPS's ruleset."""
    outcome = run_policies(rules.POLICIES, example_stack.specs)
    snat = example_stack.config["forgeway:forwarding"].get("mode") == "snat"
    said = [v for v in outcome.violations if v.policy == "gitlab-client-addresses"]
    assert [v for v in outcome.violations if v not in said] == [], _show(outcome.violations)
    if snat:
        assert len(said) == 1 and "'vps-forwarding'" in said[0].message, _show(said)
        assert said[0].level == "advisory" and "every internet client" in said[0].message
    else:
        assert said == [], _show(said)


def test_the_lab_in_preserve_source_mode_is_told_nothing_about_client_addresses() -> None:
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config["forgeway:forwarding"]["mode"] = "preserve-source"
    stack = synthesize("lab", config, secret_keys)
    outcome = run_policies(rules.POLICIES, stack.specs)
    assert outcome.violations == [], _show(outcome.violations)


def test_the_pack_sees_the_program(example_stack: SynthesizedStack) -> None:
    """Not a vacuous pass: the connections and the forwarding the policies check are there."""
    types = Counter(s.type for s in example_stack.specs)
    hosts = example_stack.config["forgeway:hosts"]
    assert types[REMOTE] >= len(hosts)  # at least each host's arch check
    assert types[DOCKER] == sum(1 for h in hosts if {"gitlab", "runner"} & set(h["roles"]))
    vps = next(h["name"] for h in hosts if "vps" in h["roles"])
    (forwarding,) = [s for s in example_stack.specs if s.type == REMOTE and s.name == f"{vps}-forwarding"]
    forwarded = rules.forwarded_ports(unwrap(forwarding.props["stdin"]))
    assert forwarded.unreadable == ()
    assert {lo for lo, _ in forwarded.ranges} == {80, 443, 22, 5050}
    assert {e.home[0] for e in forwarded.exposures} == {80, 443, 2222, 5050}
    assert len({e.address for e in forwarded.exposures}) == 1
    # The staged files on command lines are read decoded (the secret and forwarding scans see them).
    staged = [what for what, _ in rules.decoded_texts(unwrap(forwarding.props["create"]))]
    assert "staged file 'forwarding-up.sh'" in staged
    runners = [s for s in example_stack.specs if s.name.endswith("-runner") and "uploads" in s.props]
    assert runners and all(list(rules.runner_documents(_as_policy_resource(s))) for s in runners)


def test_declared_secret_inputs_are_secret_on_the_wire(example_stack: SynthesizedStack) -> None:
    """What secrets-not-plaintext cannot see: every input holding secret material is really secret.

    The policy only sees that such an input is declared (additional_secret_outputs); the
    synthesis still has the wire format, where a secret value carries Pulumi's marker.
    """
    checked = 0
    for reg in example_stack.synth.resources:
        for finding in rules.secret_material(unwrap(reg.inputs)):
            checked += 1
            assert contains_secret(reg.inputs[finding.prop]), f"{reg.urn}: {finding.path} holds {finding.what}"
    assert checked > 0  # the SSH private key in every connection, at least


def test_gitlab_volumes_are_retained_on_delete(example_stack: SynthesizedStack) -> None:
    """What gitlab-volumes-protected cannot see: retain_on_delete (the analyzer protocol has no field for it)."""
    for spec in example_stack.specs:
        labels = {item["label"]: item["value"] for item in spec.props.get("labels", []) if isinstance(item, dict)}
        if spec.type == "docker:index/volume:Volume" and labels.get(rules.ROLE_LABEL) in rules.GITLAB_VOLUME_ROLES:
            assert spec.protect and spec.retain_on_delete, spec.urn


def test_planted_unpinned_host_keys_are_mandatory_violations(lab_unpinned: SynthesizedStack) -> None:
    outcome = run_policies(rules.POLICIES, lab_unpinned.specs)
    assert {v.policy for v in outcome.mandatory} == {"ssh-host-keys-pinned"}
    named = {s.name for s in lab_unpinned.specs if s.type in (REMOTE, DOCKER)}
    for name in named:
        assert any(f"'{name}'" in v.message and "hosts[].host_key" in v.message for v in outcome.mandatory), name
    # One per unpinned connection: a jump host's too (the lab's IPv6-only runner-arm has one).
    assert len(outcome.mandatory) == sum(_connections(s) for s in lab_unpinned.specs if s.type in (REMOTE, DOCKER))
    assert any("jump host" in v.message for v in outcome.mandatory), _show(outcome.mandatory)


def test_planted_unpinned_host_keys_waived_are_warnings(lab_unpinned: SynthesizedStack) -> None:
    outcome = run_policies(
        rules.POLICIES, lab_unpinned.specs, {"ssh-host-keys-pinned": {"allowUnpinnedHostKeys": True}}
    )
    assert outcome.mandatory == [], _show(outcome.mandatory)
    warnings = outcome.of("ssh-host-keys-unpinned")
    assert warnings and all(v.level == "advisory" and v.message.startswith("warning:") for v in warnings)
    assert len(warnings) == sum(_connections(s) for s in lab_unpinned.specs if s.type in (REMOTE, DOCKER))


def test_planted_forwarded_ports_are_mandatory_violations(lab_bad_ports: SynthesizedStack) -> None:
    outcome = run_policies(rules.POLICIES, lab_bad_ports.specs)
    assert {v.policy for v in outcome.mandatory} == {"vps-forwarding-ports"}
    messages = [v.message for v in outcome.mandatory]
    assert len(messages) == 3, messages
    assert any("'home-gitlab' ports[2] publishes port 8444 on 10.8.0.2" in m for m in messages), messages
    assert any("'vps-forwarding' (stdin) forwards port 2375, a docker API port" in m for m in messages), messages
    assert any(
        "'vps-forwarding' (stdin) forwards port 8444, which is not in the allowlist" in m and "allowedPorts" in m
        for m in messages
    ), messages


@pytest.mark.parametrize(
    ("plant", "key"),
    [
        ({"forgeway:gitlab": {"images": {"amd64": "gitlab/gitlab-ce:latest"}}}, "forgeway:gitlab.images.amd64"),
        (
            {"forgeway:gitlab": {"images": {"amd64": "yrzr/gitlab-ce-arm64v8:18.5.1-ce.0"}}},
            "forgeway:gitlab.images.amd64",
        ),
        ({"hosts[3].runner": {"privileged": True}}, "forgeway:hosts[3].runner.privileged"),
        (
            {"hosts[3].runner": {"insecure_docker_socket_in_jobs": True}},
            "forgeway:hosts[3].runner.insecure_docker_socket_in_jobs",
        ),
        ({"plaintext": "forgeway:ssh_private_key"}, "forgeway:ssh_private_key"),
    ],
)
def test_planted_mistakes_config_refuses_never_reach_the_pack(plant: dict[str, Any], key: str) -> None:
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    for where, value in plant.items():
        if where == "plaintext":
            secret_keys = [k for k in secret_keys if k != value]  # the secret given as plain config
        elif where.startswith("hosts["):
            host = config["forgeway:hosts"][int(where[6])]
            host["runner"] = {**host.get("runner", {}), **value}
        else:
            section = config[where]
            for field, sub in value.items():
                section[field] = {**section[field], **sub} if isinstance(sub, dict) else sub
    with pytest.raises(ConfigError) as refused:
        parse_stack(config, secret_keys)
    assert any(problem.key == key for problem in refused.value.problems), str(refused.value)


def test_planted_backups_off_are_one_advisory_finding_on_gitlab() -> None:
    """backup.enabled: false (the backup_password then not needed): warned, not refused."""
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config["forgeway:backup"] = {"enabled": False}
    del config["forgeway:backup_password"]
    stack = synthesize("lab", config, [k for k in secret_keys if k != "forgeway:backup_password"])
    outcome = run_policies(rules.POLICIES, stack.specs)
    said = [v for v in outcome.violations if v.policy == "gitlab-backed-up"]
    assert outcome.mandatory == [], _show(outcome.mandatory)
    assert len(said) == 1 and said[0].level == "advisory" and "'home-gitlab'" in said[0].message, _show(said)
