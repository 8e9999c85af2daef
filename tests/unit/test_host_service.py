"""The host-service seam: the shared shell library, HostService's commands, and the
aliases that keep DockerHost's children (they moved from RunnerHost and Registry)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks

from components.host_service import HostService
from components.scripts import LIBRARY, SOURCE_LINE, script
from tests.unit.test_scripts import _library as run_with_library

pytestmark = pytest.mark.unit

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
# Named in host-files.sh: the stager runs before anything is staged; the arch check runs
# as the login user before sudo is known to work. Neither installs anything.
STANDALONE = {"stage.sh", "check-arch.sh", LIBRARY}


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.sh")), ids=lambda p: p.name)
def test_every_host_script_sources_the_library_and_travels_with_it(path: Path) -> None:
    lines = path.read_text().splitlines()
    if path.name in STANDALONE:
        assert SOURCE_LINE not in lines
        return
    assert lines.count(SOURCE_LINE) == 1, f"{path.name} does not source {LIBRARY} (or twice)"
    travelling = script(path.name)
    assert SOURCE_LINE not in travelling.splitlines()
    assert (SCRIPTS / LIBRARY).read_text() in travelling
    subprocess.run(["sh", "-n"], input=travelling, text=True, check=True)


def test_pid_in_names_only_a_running_process_of_the_name_asked(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    body = "\n".join(
        f'echo "{k}=$(pid_in {shlex.quote(str(pidfile))} {c})"'
        for k, c in (("any", ""), ("sleep", "sleep"), ("other", "wireguard-go"))
    )
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        pidfile.write_text(f"{sleeper.pid}\n")
        alive = run_with_library(tmp_path, body)
        sleeper.kill()
    assert alive.stdout.split() == [f"any={sleeper.pid}", f"sleep={sleeper.pid}", "other="], alive.stderr
    assert run_with_library(tmp_path, body).stdout.split() == ["any=", "sleep=", "other="]  # gone
    pidfile.write_text("12a\n")
    assert run_with_library(tmp_path, body).stdout.split() == ["any=", "sleep=", "other="]


@pytest.mark.parametrize("name", ["-wg0", "wg 0", "wg0/x", "", "a" * 16])
def test_check_ifname_refuses_what_ip_cannot_take_safely(tmp_path: Path, name: str) -> None:
    done = run_with_library(tmp_path, f"check_ifname {shlex.quote(name)}")
    assert done.returncode == 1 and "interface name" in done.stderr, done.stderr
    assert run_with_library(tmp_path, "check_ifname wg0.100_a=b+c").returncode == 0


def test_a_template_is_enabled_under_its_instance_name_once(tmp_path: Path) -> None:
    enable = 'enable_unit "$units/x@.service" "$units/multi-user.target.wants" x@wg0.service'
    first = run_with_library(tmp_path, enable)
    link = tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants" / "x@wg0.service"
    assert first.stdout == f"changed t: enabled x@wg0.service ({link})\n", first.stderr
    assert link.readlink() == link.parent.parent / "x@.service"
    assert run_with_library(tmp_path, enable + '\n[ -z "$changes" ] && echo unchanged').stdout == "unchanged\n"


def test_a_service_stages_its_up_and_files_and_its_delete_removes_the_stage() -> None:
    service = HostService(
        stage="backup", up="docker-prune-up.sh", down="docker-prune-down.sh", args=["80"], files={"x.conf": "x"}
    )
    create = service.create()
    assert isinstance(create, str)
    assert 'stage/"backup' in create and create.rstrip().endswith('80 "$d"')
    assert "docker-prune-down.sh" in service.delete() and "rm -rf" in service.delete()


class _Monitor(mocks.MockMonitor):
    """Records each registration's alias specs (the mock monitor itself drops them)."""

    def __init__(self, mocks_: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks_)
        self.aliases: dict[str, list[Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        self.aliases[request.name] = list(request.aliases)
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


class _Echo(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}_id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@pulumi.runtime.test  # type: ignore[untyped-decorator]
def test_moved_children_carry_an_alias_to_their_old_parent() -> Any:
    from components.config import parse_stack
    from components.docker_host import DockerHost, docker_host_args
    from components.hosts import connect_hosts
    from components.registry import registry_trust
    from tests.stacks import lab_stack

    monitor = _Monitor(_Echo())
    pulumi.runtime.set_mocks(_Echo(), project="forgeway", stack="lab", preview=False, monitor=monitor)
    cfg, _ = parse_stack(*lab_stack())
    hosts = connect_hosts(cfg.hosts, None)
    trust = registry_trust(cfg, None)
    runner = cfg.hosts_with("runner")[0].name
    docker = DockerHost(f"{runner}-docker-host", docker_host_args(cfg, hosts, trust, {})[runner])

    def check(_: object) -> None:
        fleet = "forgeway:runners:RunnerFleet$forgeway:runners:RunnerHost"
        old_parent = f"urn:pulumi:lab::forgeway::{fleet}::{runner}-runner-host"
        for child in ("docker-daemon", "docker-prune"):
            specs = monitor.aliases[f"{runner}-{child}"]
            # name and type left out: the same as now; only the parent moved
            assert [(a.spec.parentUrn, a.spec.name, a.spec.type) for a in specs] == [(old_parent, "", "")], specs
        assert monitor.aliases[f"{runner}-docker-host"] == []

    assert docker.daemon is not None and docker.prune is not None
    # Both registered (the monitor has seen each) before the check reads what it recorded.
    return pulumi.Output.all(docker.daemon.urn, docker.prune.urn).apply(check)
