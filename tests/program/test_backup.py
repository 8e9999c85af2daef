"""The backups as the program registers them (mock monitor; nothing runs on a host).

Checked: the GitLab host's key command, the VPS's SFTP user (default repository only) and
the GitLab host's backup service, in that order; the staged settings and known_hosts; the
password and backend environment on the service's stdin only, as secrets, never on a
command line or any other input; the outputs; and nothing at all with backup.enabled false.
That the scripts do what they say is tests/lab/test_backup_scripts.py's job.
"""

from __future__ import annotations

import shlex
from functools import cache

from components.backup import default_repository
from components.config import PROJECT, parse_stack
from components.scripts import decode_staged
from components.tunnel import tunnel_addresses
from tests.program.conftest import Stack, _synth, as_root
from tests.program.leaks import plaintext_leaks
from tests.stacks import lab_stack, prod_stack
from tools.stack.synth import Registration, is_secret_value, unwrap

COMMAND = "command:remote:Command"
ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "AKIAFORGEWAYTEST", "AWS_SECRET_ACCESS_KEY": "s3-secret-forgeway-test"}


def _named(stack: Stack, name: str) -> Registration:
    (reg,) = [r for r in stack.synth.of_type(COMMAND) if r.name == name]
    return reg


def _hosts(stack: Stack) -> tuple[str, str]:
    hosts = stack.config[f"{PROJECT}:hosts"]
    gitlab = next(h["name"] for h in hosts if "gitlab" in h["roles"])
    vps = next(h["name"] for h in hosts if "vps" in h["roles"])
    return gitlab, vps


def _staged(cmd: Registration) -> dict[str, str]:
    words = shlex.split(as_root(unwrap(cmd.inputs["create"])).split("&&")[1])
    pairs = words[5:]  # sh -c STAGE_SH stage.sh $d NAME B64 ...
    return {pairs[i]: decode_staged(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}


@cache
def _s3_stack() -> Stack:
    config, secret_keys = prod_stack()
    config[f"{PROJECT}:backup"] = {"repository": "s3:https://s3.example.org/forgeway-backups"}
    config[f"{PROJECT}:backup_environment"] = dict(ENVIRONMENT)
    return _synth("prod-s3", (config, [*secret_keys, f"{PROJECT}:backup_environment"]))


def test_key_then_sftp_user_then_service_on_their_hosts(stack: Stack) -> None:
    gitlab, vps = _hosts(stack)
    key = _named(stack, f"{gitlab}-backup-key")
    sftp = _named(stack, f"{vps}-backup-sftp")
    service = _named(stack, f"{gitlab}-backup")
    assert "backup-key.sh" in unwrap(key.inputs["create"]) and "--delete" in unwrap(key.inputs["delete"])
    assert key.urn in sftp.dependencies and key.urn in service.dependencies and sftp.urn in service.dependencies
    assert "backup-sftp-up.sh" in unwrap(sftp.inputs["create"])
    assert "backup-sftp-down.sh" in unwrap(sftp.inputs["delete"])
    assert "backup-up.sh" in unwrap(service.inputs["create"])
    assert "backup-down.sh" in unwrap(service.inputs["delete"])
    for name in (f"{gitlab}-tunnel-wg0", "tunnel-wg0", f"{gitlab}-segment", f"{vps}-segment"):  # tunnel-wg0: the VPS
        assert _named(stack, name).urn in service.dependencies, name
    components = [r for r in stack.synth.resources if r.type == "forgeway:backup:Backup"]
    assert len(components) == 1 and {key.parent, sftp.parent, service.parent} == {components[0].urn}


def test_the_service_stages_the_contracts_files_and_settings(stack: Stack) -> None:
    gitlab, vps = _hosts(stack)
    cfg, _ = parse_stack(stack.config, stack.secret_keys)
    staged = _staged(_named(stack, f"{gitlab}-backup"))
    assert set(staged) == {"backup-up.sh", "forgeway-backup.sh", "forgeway-restic.sh", "settings", "known_hosts"}
    address = tunnel_addresses(cfg)[vps]
    settings = dict(line.split("=", 1) for line in staged["settings"].splitlines() if not line.startswith("#"))
    assert settings["REPOSITORY"] == default_repository(address, cfg.admin_ssh_port)
    assert settings["REPOSITORY"] == f"sftp://forgeway-backup@{address}:{cfg.admin_ssh_port}//restic"
    assert (settings["SFTP_HOST"], settings["SFTP_PORT"]) == (str(address), str(cfg.admin_ssh_port))
    assert settings["HOST"] == gitlab and settings["CONTAINER"] == "forgeway-gitlab"
    assert settings["RETENTION"] == "--keep-last=3 --keep-daily=7 --keep-weekly=4 --keep-monthly=6"
    vps_key = cfg.vps.host_key
    if vps_key is not None:
        assert staged["known_hosts"] == f"[{address}]:{cfg.admin_ssh_port} {vps_key}\n"
    args = shlex.split(as_root(unwrap(_named(stack, f"{gitlab}-backup").inputs["create"])).split("&&")[2])
    assert args[2:5] == ["*-*-* 03:15:00", "30", "360"], args


def test_password_and_environment_travel_on_stdin_only_as_secrets() -> None:
    stack = _s3_stack()
    gitlab, vps = _hosts(stack)
    service = _named(stack, f"{gitlab}-backup")
    assert is_secret_value(service.inputs["stdin"])
    stdin = unwrap(service.inputs["stdin"])
    password = stack.config[f"{PROJECT}:backup_password"]
    assert stdin.splitlines()[0] == password
    assert "export AWS_SECRET_ACCESS_KEY=s3-secret-forgeway-test\n" in stdin
    for value in (password, *ENVIRONMENT.values()):
        for reg in stack.synth.resources:
            for field in ("create", "delete", "update", "triggers", "environment"):
                assert value not in str(unwrap(reg.inputs.get(field, ""))), (reg.name, field)
    assert plaintext_leaks(stack.synth, [password, *ENVIRONMENT.values()]) == []
    assert not [r for r in stack.synth.of_type(COMMAND) if r.name == f"{vps}-backup-sftp"], "no SFTP user for s3"
    settings = _staged(service)["settings"]
    assert "REPOSITORY=s3:https://s3.example.org/forgeway-backups\n" in settings and "SFTP_HOST" not in settings
    assert stack.synth.outputs["backup_repository"] == "s3:https://s3.example.org/forgeway-backups"


def test_no_secret_of_the_backup_shows_in_plaintext(stack: Stack) -> None:
    assert plaintext_leaks(stack.synth, [stack.config[f"{PROJECT}:backup_password"]]) == []


def test_outputs_name_the_repository_and_the_schedule(stack: Stack) -> None:
    cfg, _ = parse_stack(stack.config, stack.secret_keys)
    address = tunnel_addresses(cfg)[cfg.vps.name]
    assert stack.synth.outputs["backup_repository"] == default_repository(address, cfg.admin_ssh_port)
    assert stack.synth.outputs["backup_schedule"] == "*-*-* 03:15:00"


def test_backups_off_register_nothing_and_export_nothing() -> None:
    config, secret_keys = lab_stack()
    config[f"{PROJECT}:backup"] = {"enabled": False}
    del config[f"{PROJECT}:backup_password"]
    off = _synth("lab-no-backup", (config, [k for k in secret_keys if k != f"{PROJECT}:backup_password"]))
    # The upgrade guard's pre-upgrade step stays: with backups off it checks for a manual backup.
    registered = [r for r in off.synth.resources if not r.name.endswith("-gitlab-pre-upgrade-backup")]
    assert not [r for r in registered if "backup" in r.name or r.type == "forgeway:backup:Backup"]
    assert "backup_repository" not in off.synth.outputs and "backup_schedule" not in off.synth.outputs
