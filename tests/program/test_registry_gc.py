"""The registry's garbage collection as the program registers it (mock monitor; nothing runs on a host).

Checked: one ``<gitlab host>-registry-gc`` command under the RegistryGc component, after the
GitLab container, staging the run script and its settings with the configured window and
timeout, its delete the down script; nothing with the registry or the collection off. That
the timer runs and frees space is tests/lab/test_lab_registry_gc.py's job.
"""

from __future__ import annotations

import shlex

from components.config import PROJECT
from components.gitlab import CONTAINER_NAME
from components.registry_gc import STORAGE
from tests.program.conftest import Stack, _synth, as_root
from tests.program.test_backup import _hosts, _named, _staged
from tests.stacks import prod_stack
from tools.stack.synth import unwrap

COMMAND = "command:remote:Command"


def test_one_timer_service_on_the_gitlab_host_after_its_container(stack: Stack) -> None:
    gitlab, _ = _hosts(stack)
    service = _named(stack, f"{gitlab}-registry-gc")
    create = as_root(unwrap(service.inputs["create"]))
    gc = (
        stack.config[f"{PROJECT}:registry"].get("garbage_collection", {})
        if f"{PROJECT}:registry" in stack.config
        else {}
    )
    schedule, timeout = gc.get("schedule", "Sun *-*-* 04:30:00"), gc.get("timeout_minutes", 120)
    assert shlex.split(create.split("&&")[-1])[-3:-1] == [schedule, str(timeout)], create[-300:]
    assert "registry-gc-down.sh" in unwrap(service.inputs["delete"])
    container = next(r for r in stack.synth.of_type("docker:index/container:Container") if r.name == f"{gitlab}-gitlab")
    assert container.urn in service.dependencies
    (component,) = [r for r in stack.synth.resources if r.type == "forgeway:registry_gc:RegistryGc"]
    assert service.parent == component.urn


def test_it_stages_the_run_and_where_it_looks(stack: Stack) -> None:
    gitlab, _ = _hosts(stack)
    staged = _staged(_named(stack, f"{gitlab}-registry-gc"))
    assert set(staged) == {"registry-gc-up.sh", "forgeway-registry-gc.sh", "settings"}
    settings = dict(line.split("=", 1) for line in staged["settings"].splitlines() if not line.startswith("#"))
    assert settings == {"CONTAINER": CONTAINER_NAME, "STORAGE": STORAGE, "BACKUP_LOCK": "/var/lib/forgeway/backup/lock"}
    assert "gitlab-ctl registry-garbage-collect -m" in staged["forgeway-registry-gc.sh"]


def test_a_window_of_its_own_and_nothing_when_off() -> None:
    config, secret_keys = prod_stack()
    config[f"{PROJECT}:registry"] = {"garbage_collection": {"schedule": "Sat *-*-* 02:00:00", "timeout_minutes": 30}}
    window = _synth("prod-gc-window", (config, secret_keys))
    gitlab, _ = _hosts(window)
    create = as_root(unwrap(_named(window, f"{gitlab}-registry-gc").inputs["create"]))
    assert shlex.split(create.split("&&")[-1])[-3:-1] == ["Sat *-*-* 02:00:00", "30"]
    for off in ({"garbage_collection": {"enabled": False}}, {"enabled": False}):
        config, secret_keys = prod_stack()
        config[f"{PROJECT}:registry"] = off
        synth = _synth("prod-gc-off", (config, secret_keys))
        assert not [r for r in synth.synth.of_type(COMMAND) if r.name.endswith("-registry-gc")], off
