"""The host-service seam: the shared shell library, HostService's commands, and the
aliases that keep DockerHost's children (they moved from RunnerHost and Registry)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks

from components.host_service import HostService
from components.scripts import LIBRARY, SOURCE_LINE, script

pytestmark = pytest.mark.unit

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
# Named in host-files.sh: the stager runs before anything is staged; the arch check runs
# as the login user before sudo is known to work. Neither installs anything.
STANDALONE = {"stage.sh", "check-arch.sh", LIBRARY}
# Not converted yet (engineer nspawn2's files this session): strict, so converting them
# fails here until they leave this set.
NOT_YET = {"tunnel-up.sh", "tunnel-down.sh"}
HOST_SCRIPTS = [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="defines its own helpers")) if p.name in NOT_YET else p
    for p in sorted(SCRIPTS.glob("*.sh"))
]


@pytest.mark.parametrize("path", HOST_SCRIPTS, ids=lambda p: p.name)
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
