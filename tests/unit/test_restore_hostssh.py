"""tools/hostssh.py: the connection a stack's config gives, and what ssh is really handed.

``ssh`` is replaced on PATH by a script that records its argv, stdin and the keys its
agent holds, so the tests see exactly what the real client would get.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tools.hostssh import HostRunner, HostSshError, connection_from_config, stack_connection
from tools.stack.configs import EXAMPLE_PASSPHRASE, ROOT, prod_stack

FAKE_SSH = """#!/usr/bin/env python3
import json, os, subprocess, sys
keys = ""
if os.environ.get("SSH_AUTH_SOCK"):
    keys = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True).stdout
record = {"argv": sys.argv[1:], "stdin": sys.stdin.read(), "keys": keys}
with open(os.environ["FAKE_SSH_LOG"], "w") as out:
    json.dump(record, out)
print("ran")
sys.exit(int(os.environ.get("FAKE_SSH_EXIT", "0")))
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "ssh.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return log


def test_the_gitlab_host_is_chosen_by_role_with_its_pinned_key_and_sudo() -> None:
    config, secret_keys = prod_stack()
    conn = connection_from_config(config, secret_keys)
    assert conn.name == "jetson"
    assert (conn.target.address, conn.target.user, conn.become) == ("192.168.1.50", "forgeway", "sudo")
    argv = conn.ssh_argv(conn.as_root("true"))
    assert "StrictHostKeyChecking=yes" in argv
    assert any(a.startswith("KnownHostsCommand=/bin/echo %H ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFSY7q") for a in argv)
    assert argv[-2] == "forgeway@192.168.1.50"
    assert argv[-1].startswith("{ sudo -n true") and "sudo -n -- env" in argv[-1]
    assert conn.private_key is not None and conn.private_key not in " ".join(argv)
    assert conn.private_key not in repr(conn)


def test_a_jump_host_goes_through_proxycommand_with_its_own_pin() -> None:
    config, secret_keys = prod_stack()
    for host in config["forgeway:hosts"]:
        if host["name"] == "jetson":
            host["jump_host"] = "vps"
    conn = connection_from_config(config, secret_keys)
    assert conn.jump is not None and conn.jump.port == 2202
    proxy = next(a for a in conn.ssh_argv("true") if a.startswith("ProxyCommand="))
    assert "admin@203.0.113.10" in proxy and "AAAAC3NzaC1lZDI1NTE5AAAAIJnM0Tvg7" in proxy


def test_a_host_by_name_and_unknown_names_or_roles_are_clear_errors() -> None:
    config, secret_keys = prod_stack()
    assert connection_from_config(config, secret_keys, host="pi5").name == "pi5"
    with pytest.raises(HostSshError, match=r"no host named 'nope'.*vps, jetson, pi5, builder"):
        connection_from_config(config, secret_keys, host="nope")
    with pytest.raises(HostSshError, match="exactly one host with role 'runner', found pi5, builder"):
        connection_from_config(config, secret_keys, role="runner")


def test_root_login_runs_the_command_as_it_is() -> None:
    config, secret_keys = prod_stack()
    config["forgeway:hosts"][1]["ssh_user"] = "root"
    conn = connection_from_config(config, secret_keys)
    assert conn.become == "none" and conn.as_root("id -u") == "id -u"


def _stack_dir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Pulumi.prod.yaml", tmp_path / "Pulumi.prod.yaml")
    return tmp_path


def test_the_stack_file_is_decrypted_with_the_passphrase_file(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text(EXAMPLE_PASSPHRASE + "\n")
    conn = stack_connection(
        "prod", project_dir=_stack_dir(tmp_path), environ={"PULUMI_CONFIG_PASSPHRASE_FILE": str(tmp_path / "pass")}
    )
    assert conn.name == "jetson" and conn.private_key and "OPENSSH PRIVATE KEY" in conn.private_key


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PULUMI_CONFIG_PASSPHRASE": "wrong"}, "incorrect passphrase"),
        ({}, "PULUMI_CONFIG_PASSPHRASE"),
    ],
)
def test_a_wrong_or_missing_passphrase_is_one_clear_error(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(HostSshError, match=message):
        stack_connection("prod", project_dir=_stack_dir(tmp_path), environ=environ)


def test_no_stack_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(HostSshError, match=r"no stack file .*Pulumi\.gone\.yaml"):
        stack_connection("gone", project_dir=tmp_path, environ={})


def test_the_run_pipes_stdin_and_the_key_goes_only_to_a_private_agent(fake_ssh: Path) -> None:
    config, secret_keys = prod_stack()
    conn = connection_from_config(config, secret_keys)
    with HostRunner(conn) as runner:
        done = runner.run("cat > /tmp/x", stdin="a secret on stdin\n")
        socket = runner._agent.socket if runner._agent else ""
    record = json.loads(fake_ssh.read_text())
    assert done.returncode == 0 and done.stdout == "ran\n"
    assert record["stdin"] == "a secret on stdin\n"
    assert record["keys"].startswith("ssh-ed25519 ")  # the stack's key, in the agent
    assert "a secret" not in " ".join(record["argv"]) and "PRIVATE KEY" not in " ".join(record["argv"])
    assert record["argv"][-1].endswith("sh -c 'cat > /tmp/x'")
    assert socket and not Path(socket).exists()  # the agent is gone after close


def test_a_failing_command_keeps_its_status_and_output(fake_ssh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SSH_EXIT", "3")
    config, secret_keys = prod_stack()
    config.pop("forgeway:ssh_private_key")
    conn = connection_from_config(config, [k for k in secret_keys if k != "forgeway:ssh_private_key"])
    with HostRunner(conn) as runner:
        done = runner.run("false", root=False)
    assert done.returncode == 3
    assert json.loads(fake_ssh.read_text())["argv"][-1] == "false"
