"""tools.stack new: a new user's own stack file, made from the example.

Each stack file costs one PBKDF2 derivation (~0.4 s), so the module makes one and reads
it several ways; only the refusal tests make more.
"""

from __future__ import annotations

import copy
import io
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import PLACEHOLDER, ConfigError, parse_stack
from tests.stacks import EXAMPLE_PASSPHRASE, ROOT, new_host_key, prod_stack, secret_strings
from tools.stack.file import load_stack_file
from tools.stack.new import new_stack
from tools.stack.secrets import INCORRECT_PASSPHRASE, NO_PASSPHRASE, key_from_encryption_salt, main, secure_values

pytestmark = pytest.mark.unit

PASSPHRASE = "a new user's own passphrase"  # noqa: S105 - test data
ENV = {"PULUMI_CONFIG_PASSPHRASE": PASSPHRASE}


def _project(tmp: Path) -> Path:
    for name in ("Pulumi.yaml", "Pulumi.prod.yaml"):
        (tmp / name).write_bytes((ROOT / name).read_bytes())
    return tmp


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _project(tmp_path_factory.mktemp("project"))
    return new_stack("home", project, "Pulumi.prod.yaml", environ=ENV, interactive=False)


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def _placeholder_paths(value: Any, path: str) -> list[str]:
    if isinstance(value, str) and value.startswith(PLACEHOLDER):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholder_paths(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _placeholder_paths(v, f"{path}[{i}]")]
    return []


def test_the_new_file_is_beside_pulumi_yaml_and_the_example_is_unchanged(made: Path) -> None:
    assert made.name == "Pulumi.home.yaml"
    assert made.parent / "Pulumi.yaml" in made.parent.iterdir()
    assert (made.parent / "Pulumi.prod.yaml").read_bytes() == (ROOT / "Pulumi.prod.yaml").read_bytes()


def test_its_salt_opens_with_the_new_passphrase_and_not_the_examples(
    made: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    salt = yaml.safe_load(made.read_text())["encryptionsalt"]
    example_salt = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["encryptionsalt"]
    assert salt != example_salt
    with pytest.raises(ValueError, match=INCORRECT_PASSPHRASE):
        key_from_encryption_salt(EXAMPLE_PASSPHRASE, salt)
    # A secret set under the new passphrase (as `pulumi config set --secret` would) decrypts.
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    token = "glrt-" + secrets.token_hex(12)  # made per run: no token-shaped literal in the repo
    monkeypatch.setattr(sys, "stdin", _Stdin(f"{token}\n".encode()))
    assert main(["encrypt", str(made)]) == 0
    value = capsys.readouterr().out.strip()
    doc = yaml.safe_load(made.read_text())
    doc["config"]["forgeway:runner_tokens"] = {"pi5": {"secure": value}}
    stack = made.parent / "Pulumi.withsecret.yaml"
    stack.write_text(yaml.safe_dump(doc))
    assert main(["check", str(stack)]) == 0
    config, _ = load_stack_file(stack, PASSPHRASE)
    assert config["forgeway:runner_tokens"] == {"pi5": token}
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", EXAMPLE_PASSPHRASE)
    assert main(["check", str(stack)]) == 1
    assert INCORRECT_PASSPHRASE in capsys.readouterr().err


def test_no_secret_host_or_domain_of_the_example_survives(made: Path) -> None:
    text = made.read_text()
    doc = yaml.safe_load(text)
    # The one secret in it is made here: a fresh backup_password (docs/backup.md).
    assert [path for path, _ in secure_values(doc)] == ["forgeway:backup_password"]
    example_config, example_secret_keys = prod_stack()
    for value in secret_strings(example_config, example_secret_keys):
        assert value not in text
    example_doc = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    for _, ciphertext in secure_values(example_doc):
        assert ciphertext.split(":")[2][:16] not in text
    for host in example_config["forgeway:hosts"]:
        assert host["address"] not in text
        assert host["host_key"].split()[1] not in text
        for value in (host.get("proxy") or {}).values():
            assert not isinstance(value, str) or value not in text
    for domain in ("vps.example.org", "gitlab.example.org", "registry.example.org"):
        assert domain not in text
    # The shape stays: the same hosts, roles and images.
    names = [(h["name"], h["roles"]) for h in doc["config"]["forgeway:hosts"]]
    assert names == [(h["name"], h["roles"]) for h in example_config["forgeway:hosts"]]


def test_the_config_check_names_every_key_to_fill_with_its_fix(made: Path) -> None:
    config, secret_keys = load_stack_file(made, PASSPHRASE)
    placeholders = {p for key, value in config.items() for p in _placeholder_paths(value, key)}
    assert len(placeholders) >= 10  # every host's address and host key, the domains, the proxy
    with pytest.raises(ConfigError) as info:
        parse_stack(config, secret_keys)
    problems = {p.key: p for p in info.value.problems}
    tokens: set[str] = set()  # optional since issue 17: runners are created through GitLab's API
    assert set(problems) == placeholders | tokens, str(info.value)
    # One line per key: what a placeholder's type check says about it is left out.
    assert len(info.value.problems) == len(problems), str(info.value)
    for key in placeholders:
        assert f"pulumi config set --path '{key}' " in problems[key].expected
    for key in tokens:
        assert f"pulumi config set --secret --path '{key}' <glrt-token>" in problems[key].expected
    assert "ssh-keyscan -t ed25519" in problems["forgeway:hosts[0].host_key"].expected


def test_with_every_placeholder_filled_the_stack_is_valid(made: Path) -> None:
    config, secret_keys = load_stack_file(made, PASSPHRASE)
    config = copy.deepcopy(config)
    for i, host in enumerate(config["forgeway:hosts"]):
        host["address"] = f"192.0.2.{10 + i}"
        host["host_key"] = new_host_key()
        host.pop("proxy", None)
    config["forgeway:hosts"][0]["public_address"] = "vps.home.test"
    config["forgeway:gitlab"]["domain"] = "gitlab.home.test"
    config["forgeway:registry"]["domain"] = "registry.home.test"
    config["forgeway:runner_tokens"] = {"pi5": "glrt-" + "a" * 20, "builder": "glrt-" + "b" * 20}
    stack, _ = parse_stack(config, [*secret_keys, "forgeway:runner_tokens"])
    assert [h.name for h in stack.hosts] == ["vps", "jetson", "pi5", "builder"]


def test_it_never_overwrites_a_stack_file(tmp_path: Path) -> None:
    project = _project(tmp_path)
    with pytest.raises(ValueError, match="committed example"):
        new_stack("prod", project, "Pulumi.prod.yaml", environ=ENV, interactive=False)
    mine = project / "Pulumi.home.yaml"
    mine.write_text("encryptionsalt: v1:mine\nconfig: {}\n")
    with pytest.raises(ValueError, match="never overwritten"):
        new_stack("home", project, "Pulumi.prod.yaml", environ=ENV, interactive=False)
    assert mine.read_text() == "encryptionsalt: v1:mine\nconfig: {}\n"
    assert (project / "Pulumi.prod.yaml").read_bytes() == (ROOT / "Pulumi.prod.yaml").read_bytes()


@pytest.mark.parametrize(
    ("environ", "answers", "message"),
    [
        ({"PULUMI_CONFIG_PASSPHRASE": ""}, [], "empty"),
        ({"PULUMI_CONFIG_PASSPHRASE": EXAMPLE_PASSPHRASE}, [], "published passphrase"),
        ({}, None, NO_PASSPHRASE),
        ({}, ["one passphrase", "another"], "differ"),
        ({}, ["", ""], "empty"),
    ],
    ids=["empty", "the-examples", "none-and-no-terminal", "prompts-differ", "prompted-empty"],
)
def test_passphrases_it_refuses(
    tmp_path: Path, environ: dict[str, str], answers: list[str] | None, message: str
) -> None:
    project = _project(tmp_path)
    asked = iter(answers or [])
    with pytest.raises(ValueError, match=message):
        new_stack(
            "home",
            project,
            "Pulumi.prod.yaml",
            environ=environ,
            interactive=answers is not None,
            prompt=lambda _: next(asked),
        )
    assert not (project / "Pulumi.home.yaml").exists()


def test_asked_twice_without_echo_when_no_variable_is_set(tmp_path: Path) -> None:
    project = _project(tmp_path)
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return PASSPHRASE

    path = new_stack("home", project, "Pulumi.prod.yaml", environ={}, interactive=True, prompt=prompt)
    assert len(asked) == 2
    key_from_encryption_salt(PASSPHRASE, yaml.safe_load(path.read_text())["encryptionsalt"])


def test_the_command_reads_the_passphrase_file_and_takes_none_on_argv(tmp_path: Path) -> None:
    project = _project(tmp_path)
    phrase_file = tmp_path / "home.passphrase"
    phrase_file.write_text(PASSPHRASE + "\n")  # an editor's newline is not part of it, as for the CLI
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env |= {"PULUMI_CONFIG_PASSPHRASE_FILE": str(phrase_file), "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "tools.stack", "new", "home", "--dir", str(project)]
    first = subprocess.run(run, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert first.returncode == 0, first.stderr
    assert "pulumi stack init home --secrets-provider passphrase" in first.stdout
    key_from_encryption_salt(PASSPHRASE, yaml.safe_load((project / "Pulumi.home.yaml").read_text())["encryptionsalt"])
    again = subprocess.run(run, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert again.returncode == 1 and "never overwritten" in again.stderr
    with_arg = subprocess.run([*run, "--passphrase", "x"], env=env, capture_output=True, text=True, check=False)
    assert with_arg.returncode == 2 and "unrecognized arguments" in with_arg.stderr


def test_its_backup_password_is_fresh_and_opens_with_the_new_passphrase(made: Path, tmp_path: Path) -> None:
    config, secret_keys = load_stack_file(made, PASSPHRASE)
    assert "forgeway:backup_password" in secret_keys
    password = config["forgeway:backup_password"]
    assert len(password) >= 32
    example_config, _ = prod_stack()
    assert password != example_config["forgeway:backup_password"]
    again = new_stack("again", _project(tmp_path), "Pulumi.prod.yaml", environ=ENV, interactive=False)
    assert load_stack_file(again, PASSPHRASE)[0]["forgeway:backup_password"] != password
