"""examples/consumer under Pulumi's mock monitor, reading a synthesized forgeway stack.

The consumer runs in its own process (tools/stack/synth.py, one program per process). Its
StackReference is answered with the forgeway stack's outputs as recorded by the
synthesis, in the engine's shape (outputs with their secrets in place plus
secretOutputNames), so what the consumer's SDK makes secret is what a real
`pulumi up` would.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from components.outputs import OUTPUTS
from tests.program.conftest import Stack
from tests.program.leaks import plaintext_leaks
from tools.stack.synth import (
    ROOT,
    STACK_REFERENCE,
    Synthesis,
    contains_secret,
    is_secret_value,
    stack_reference_state,
    synthesize_in_subprocess,
    unwrap,
)

CONSUMER = ROOT / "examples" / "consumer" / "__main__.py"
PASSWORD_VARIABLE = "FORGEWAY_GITLAB_ROOT_PASSWORD"  # noqa: S105 (a variable name)


def _reference_name(stack: Stack) -> str:
    return f"organization/forgeway/{stack.name}"


def _run_consumer(forgeway_stack: str, references: dict[str, Any]) -> Synthesis:
    return synthesize_in_subprocess(
        "dev",
        {"consumer:forgeway_stack": forgeway_stack},
        [],
        program=CONSUMER,
        project="consumer",
        stack_references=references,
    )


@pytest.fixture(scope="session")
def consumer(stack: Stack) -> Synthesis:
    """The consumer reading the prod (then the lab) stack: prod has Let's Encrypt, lab its own CA."""
    return _run_consumer(_reference_name(stack), {_reference_name(stack): stack.synth.outputs})


def _forgeway_secret_values(stack: Stack) -> list[str]:
    """Every string inside a secret forgeway output (what must never show unwrapped)."""
    found: list[str] = []

    def strings(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                strings(v)
        elif isinstance(value, list):
            for v in value:
                strings(v)
        elif isinstance(value, str):
            found.append(value)

    for value in stack.synth.outputs.values():
        if contains_secret(value):
            strings(unwrap(value))
    return found


def test_the_mock_reference_names_exactly_the_contracts_secret_outputs(prod: Stack) -> None:
    state = stack_reference_state("organization/forgeway/prod", prod.synth.outputs)
    expected = sorted(o.name for o in OUTPUTS if o.secret and o.name in prod.synth.outputs)
    assert state["secretOutputNames"] == expected


def test_consumer_reads_the_configured_stack_once(stack: Stack, consumer: Synthesis) -> None:
    refs = consumer.of_type(STACK_REFERENCE)
    assert [(r.name, r.read, r.inputs.get("name")) for r in refs] == [("forgeway", True, _reference_name(stack))]


def test_docker_client_is_set_up_from_the_registry_and_ca_outputs(stack: Stack, consumer: Synthesis) -> None:
    out = stack.synth.outputs
    client = consumer.outputs["docker_client"]
    registry = out["registry"]
    assert client["registry"] == registry
    assert client["login"] == f"docker login {registry} --username root --password-stdin"
    if "ca_certificate" in out:
        assert client["ca_crt_path"] == f"/etc/docker/certs.d/{registry}/ca.crt"
        assert client["ca_crt"] == out["ca_certificate"]
        assert out["ca_certificate"] in client["setup_script"]
    else:
        assert "ca_crt" not in client and "ca_crt_path" not in client, "a public CA needs no certs.d file"


def test_setup_script_is_valid_shell(consumer: Synthesis, tmp_path: Any) -> None:
    script = tmp_path / "setup.sh"
    script.write_text(consumer.outputs["docker_client"]["setup_script"])
    subprocess.run(["sh", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "sh", str(script)], check=True)


def test_ci_variables_carry_forgeway_values(stack: Stack, consumer: Synthesis) -> None:
    out = stack.synth.outputs
    variables = unwrap(consumer.outputs["ci_variables"])
    arches = sorted(arch for arch, hosts in out["runners"].items() if hosts)
    assert variables == {
        "FORGEWAY_GITLAB_URL": out["gitlab_url"],
        "FORGEWAY_REGISTRY": out["registry"],
        "FORGEWAY_RUNNER_TAGS": ",".join(arches),
        "FORGEWAY_CA_CERT": out.get("ca_certificate", ""),
        PASSWORD_VARIABLE: unwrap(out["gitlab_root_password"]),
    }


def test_ci_templates_pick_each_runner_architecture_by_tag(stack: Stack, consumer: Synthesis) -> None:
    templates = consumer.outputs["gitlab_ci_templates"]
    for arch, hosts in stack.synth.outputs["runners"].items():
        assert (f".forgeway-{arch}:\n  tags: [{arch}]" in templates) == bool(hosts), arch


def test_the_password_stays_secret_in_the_consumers_outputs(consumer: Synthesis) -> None:
    variables = consumer.outputs["ci_variables"]
    assert is_secret_value(variables[PASSWORD_VARIABLE]), f"ci_variables.{PASSWORD_VARIABLE} lost its secret marker"


def test_only_what_came_from_a_secret_output_is_secret(consumer: Synthesis) -> None:
    # Secretness is per referenced output: the plain ones must stay readable.
    variables = consumer.outputs["ci_variables"]
    plain = {k: v for k, v in variables.items() if k != PASSWORD_VARIABLE}
    assert not contains_secret(plain), f"plain CI variables turned secret: {sorted(plain)}"
    for name in ("docker_client", "gitlab_ci_templates"):
        assert not contains_secret(consumer.outputs[name]), f"consumer output {name} is secret"


def test_no_forgeway_secret_appears_in_plaintext_in_the_consumer(stack: Stack, consumer: Synthesis) -> None:
    secrets = _forgeway_secret_values(stack)
    assert secrets, "the referenced stack has no secret outputs: the check would prove nothing"
    assert plaintext_leaks(consumer, [*secrets, *stack.secrets]) == []


def test_a_missing_stack_fails_the_run(prod: Stack) -> None:
    with pytest.raises(RuntimeError, match=r"unknown stack 'organization/forgeway/nope'"):
        _run_consumer("organization/forgeway/nope", {_reference_name(prod): prod.synth.outputs})
