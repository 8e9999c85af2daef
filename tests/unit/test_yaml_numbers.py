"""Numbers YAML reads in another base (`ssh_port: 0022` is 18): found in the stack file,
refused naming the key, what was written and what it would mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.config import stack_file_problems
from components.config.yaml_numbers import stack_file, surprising_numbers

pytestmark = pytest.mark.unit

STACK = """\
config:
  docker:port: 0022
  forgeway:gitlab:
    ssh_port: 0022
    http_port: 8080
    quoted: "0022"
  forgeway:hosts:
    - name: vps
      ssh_port: 0x16
      zero: 0
    - name: home
      ssh_port: -0o17
      mask: 0b1_0
  forgeway:tunnel:
    listen_port: 051820
    text: 0022abc
"""


def test_every_number_yaml_reads_in_another_base_is_found_with_its_path() -> None:
    found = {(f.top, f.loc, f.text) for f in surprising_numbers(STACK, "forgeway:")}
    assert found == {
        ("forgeway:gitlab", ("ssh_port",), "0022"),
        ("forgeway:hosts", (0, "ssh_port"), "0x16"),
        ("forgeway:hosts", (1, "ssh_port"), "-0o17"),
        ("forgeway:hosts", (1, "mask"), "0b1_0"),
        ("forgeway:tunnel", ("listen_port",), "051820"),
    }


def test_the_found_spellings_really_change_the_value_in_yaml() -> None:
    # The premise, checked against a YAML 1.1 reader: 0022 is not 22 once read.
    assert yaml.safe_load("a: 0022")["a"] == 18
    assert yaml.safe_load("a: 0x16")["a"] == 22


def test_the_stack_files_problems_name_key_value_and_meaning(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: forgeway\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(STACK)
    problems = {p.key: p for p in stack_file_problems(tmp_path, "dev")}
    assert set(problems) == {
        "forgeway:gitlab.ssh_port",
        "forgeway:hosts[0].ssh_port",
        "forgeway:hosts[1].ssh_port",
        "forgeway:hosts[1].mask",
        "forgeway:tunnel.listen_port",
    }
    port = problems["forgeway:gitlab.ssh_port"]
    assert port.value == "0022" and "reads 0022 as 18" in port.expected and "Pulumi.dev.yaml" in port.expected
    assert "as 22" in problems["forgeway:hosts[0].ssh_port"].expected
    assert "as -15" in problems["forgeway:hosts[1].ssh_port"].expected
    assert "as not a whole number" in problems["forgeway:tunnel.listen_port"].expected  # 8 is no octal digit


def test_stack_config_dir_is_honoured_and_no_file_means_no_problem(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: forgeway\nruntime: python\nstackConfigDir: stacks\n")
    assert stack_file(tmp_path, "dev") is None and stack_file_problems(tmp_path, "dev") == []
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(STACK)
    assert stack_file(tmp_path, "dev") == tmp_path / "stacks" / "Pulumi.dev.yaml"
    assert len(stack_file_problems(tmp_path, "dev")) == 5


@pytest.mark.parametrize("stack", ["prod", "lab"])
def test_the_shipped_stack_files_spell_every_number_plainly(stack: str) -> None:
    assert stack_file_problems(Path(__file__).resolve().parents[2], stack) == []


def test_the_program_loader_reports_them_with_the_configs_other_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_stack_config (what __main__.py calls first) reads the running stack's file."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    from components.config import ConfigError, load_stack_config

    (tmp_path / "Pulumi.yaml").write_text("name: forgeway\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(STACK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pulumi, "get_stack", lambda: "dev")
    monkeypatch.setattr(runtime_config, "get_config_env", lambda: {"forgeway:gitlab": '{"ssh_port": 18}'})
    with pytest.raises(ConfigError) as refused:
        load_stack_config()
    text = str(refused.value)
    assert "forgeway:gitlab.ssh_port: a number written in decimal" in text and "reads 0022 as 18" in text
    assert "forgeway:hosts" in text  # the config's own problems (no hosts given) in the same error
