"""The stack files and Pulumi.yaml: secrets encrypted, schema valid, reference current."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from components.config import PROJECT, SECRET_KEYS, SECTIONS, parse_stack
from tests.stacks import EXAMPLE_PASSPHRASE, ROOT, lab_stack, prod_stack, secret_strings
from tools.stack.secrets import secure_values

pytestmark = pytest.mark.unit

PROD = ROOT / "Pulumi.prod.yaml"


def test_every_secure_value_of_prod_decrypts_with_the_documented_passphrase() -> None:
    config, secret_keys = prod_stack()  # raises on any value that does not decrypt
    doc = yaml.safe_load(PROD.read_text())
    assert len(secure_values(doc)) >= 4
    assert {f"{PROJECT}:{k}" for k in ("ssh_private_key", "gitlab_root_password", "runner_tokens")} <= set(secret_keys)
    assert config[f"{PROJECT}:ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_the_readme_documents_that_passphrase() -> None:
    assert f"PULUMI_CONFIG_PASSPHRASE={EXAMPLE_PASSPHRASE}" in (ROOT / "README.md").read_text()


def test_prod_holds_no_secret_in_plaintext() -> None:
    config, secret_keys = prod_stack()
    text = PROD.read_text()
    # Every secret key of the schema that prod sets is stored encrypted...
    for key in SECRET_KEYS:
        if f"{PROJECT}:{key}" in config:
            assert f"{PROJECT}:{key}" in secret_keys, key
    # ...no decrypted value appears in the file, and nothing looks like a key or token.
    for value in secret_strings(config, secret_keys):
        assert value not in text
    assert not re.search(r"PRIVATE KEY-----|glrt-[A-Za-z0-9_-]{8,}|PrivateKey\s*=", text)


def test_prod_is_a_valid_stack_with_the_promised_shape() -> None:
    config, secret_keys = prod_stack()
    stack, _ = parse_stack(config, secret_keys)
    arches = {h.name: h.arch for h in stack.hosts}
    assert stack.gitlab_host.arch == "arm64"
    assert sorted(arches[h.name] for h in stack.hosts_with("runner")) == ["amd64", "arm64"]
    assert len(stack.hosts_with("vps")) == 1


def test_lab_stack_is_valid_once_the_lab_fills_in_its_keys() -> None:
    parse_stack(*lab_stack())


def test_pulumi_yaml_declares_only_what_pulumis_schema_can_check() -> None:
    doc = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert doc["name"] == PROJECT
    assert doc["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    for key, decl in doc["config"].items():
        assert decl["type"] in {"string", "integer", "boolean", "array"}, key
        assert decl.get("description"), key
        # A declared key without a default is required by the CLI; a secret one cannot
        # have a default (pulumi/pulumi#21865): so no optional secret is declared.
        assert "default" in decl and not decl.get("secret"), key


def test_pulumi_yaml_lists_every_key() -> None:
    text = (ROOT / "Pulumi.yaml").read_text()
    for key in [*SECTIONS, *SECRET_KEYS]:
        assert f"#   {PROJECT}:{key} (" in text, key


def test_config_reference_and_outputs_contract_are_current() -> None:
    """docs/config.md, docs/outputs.md and Pulumi.yaml hold what `make reference` generates now."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.ci.reference", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
