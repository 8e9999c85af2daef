"""The applier's refresh reads (tools/applier/refresh.py): the providers' normal forms,
from their source, on inspect documents shaped as the Engine API returns them."""

from __future__ import annotations

from typing import Any

import pytest

from components.gitlab import go_duration as program_go_duration
from tools.applier.docker import go_duration_ns
from tools.applier.refresh import go_duration, normal_ports, read_container, read_volume

S = 10**9


@pytest.mark.parametrize(
    ("ns", "text"),
    [  # what Go's time.Duration.String() prints for each (Go's own examples and edge cases)
        (0, "0s"),
        (1, "1ns"),
        (1_100, "1.1µs"),
        (2_200_000, "2.2ms"),
        (500_000_000, "500ms"),
        (1_500_000_000, "1.5s"),
        (30 * S, "30s"),
        (60 * S, "1m0s"),
        (90 * S, "1m30s"),
        (600 * S, "10m0s"),
        (3600 * S, "1h0m0s"),
        (4530 * S + 918_273_645, "1h15m30.918273645s"),
        (-90 * S, "-1m30s"),
    ],
)
def test_go_duration_prints_what_go_prints(ns: int, text: str) -> None:
    assert go_duration(ns) == text
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize("seconds", [0, 1, 30, 59, 60, 61, 600, 3599, 3600, 3661, 86400])
def test_the_programs_whole_second_durations_are_gos(seconds: int) -> None:
    assert program_go_duration(seconds) == go_duration(seconds * S)


def test_normal_ports_sort_by_internal_port_and_keep_each_ports_bindings_in_order() -> None:
    given: list[dict[str, Any]] = [
        {"internal": 443, "external": 443, "ip": "10.0.0.2", "protocol": "tcp"},
        {"internal": 22, "external": 2222, "ip": "10.0.0.2", "protocol": "tcp"},
        {"internal": 443, "external": 443, "ip": "192.168.1.2", "protocol": "tcp"},
        {"internal": 22, "external": 2222, "ip": "192.168.1.2", "protocol": "tcp"},
        {"internal": 80, "external": 8080},
    ]
    assert [(p["internal"], p["ip"]) for p in normal_ports(given)] == [
        (22, "10.0.0.2"),
        (22, "192.168.1.2"),
        (80, "0.0.0.0"),  # noqa: S104 (the schema's default)
        (443, "10.0.0.2"),
        (443, "192.168.1.2"),
    ]
    assert normal_ports(normal_ports(given)) == normal_ports(given)


def _inspect(**host: Any) -> dict[str, Any]:
    return {
        "Name": "/forgeway-gitlab",
        "Image": "sha256:abc",
        "State": {"Running": True},
        "Config": {
            "Image": "sha256:abc",
            "Hostname": "gitlab.example.test",
            "Env": ["GITLAB_ROOT_PASSWORD=not-read-back"],
            "Labels": {"forgeway.role": "gitlab", "from.the.image": "x"},
            "Healthcheck": {
                "Test": ["CMD", "true"],
                "Interval": 60 * S,
                "Timeout": 30 * S,
                "StartPeriod": 600 * S,
                "Retries": 5,
            },
        },
        "HostConfig": {
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "Memory": 4096 * 1024 * 1024,
            "MemorySwap": 8192 * 1024 * 1024,  # the daemon's default: twice the memory
            "ShmSize": 256 * 1024 * 1024,
            "NetworkMode": "bridge",
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}},
            **host,
        },
        "NetworkSettings": {
            "Ports": {
                "443/tcp": [{"HostIp": "10.0.0.2", "HostPort": "443"}],
                "22/tcp": [{"HostIp": "10.0.0.2", "HostPort": "2222"}],
                "80/tcp": None,  # EXPOSEd by the image, not published
            },
        },
    }


def _registered(**extra: Any) -> dict[str, Any]:
    return {
        "name": "forgeway-gitlab",
        "image": "sha256:abc",
        "hostname": "gitlab.example.test",
        "envs": ["GITLAB_ROOT_PASSWORD=secret"],
        "labels": [{"label": "forgeway.role", "value": "gitlab"}],
        "volumes": [{"volumeName": "v", "containerPath": "/etc/gitlab"}],
        "uploads": [{"file": "/etc/gitlab/ssl/x.key", "content": "secret"}],
        "ports": [
            {"internal": 443, "external": 443, "ip": "10.0.0.2", "protocol": "tcp"},
            {"internal": 22, "external": 2222, "ip": "10.0.0.2", "protocol": "tcp"},
        ],
        "restart": "unless-stopped",
        "shmSize": 256,
        "memory": 4096,
        "healthcheck": {
            "tests": ["CMD", "true"],
            "interval": "60s",
            "timeout": "30s",
            "retries": 5,
            "startPeriod": "600s",
        },
        "logDriver": "json-file",
        "logOpts": {"max-size": "50m", "max-file": "5"},
        "destroyGraceSeconds": 120,
        **extra,
    }


def test_a_container_reads_back_sorted_ports_go_durations_and_the_daemons_swap() -> None:
    registered = _registered()
    read = read_container(_inspect(), registered)
    assert [p["internal"] for p in read["ports"]] == [22, 443]
    assert read["healthcheck"] == {
        "tests": ["CMD", "true"],
        "interval": "1m0s",
        "timeout": "30s",
        "startPeriod": "10m0s",
        "retries": 5,
    }
    # Unset in the program, not computed, and not zero on the daemon: the next up sees it.
    assert read["memorySwap"] == 8192
    # Never read back: the program's values stay, secrets included.
    for key in ("envs", "labels", "volumes", "uploads", "destroyGraceSeconds"):
        assert read[key] == registered[key], key
    assert {k: read[k] for k in ("name", "image", "restart", "memory", "shmSize", "logOpts")} == {
        k: registered[k] for k in ("name", "image", "restart", "memory", "shmSize", "logOpts")
    }
    assert "networkMode" not in read  # "bridge" is the schema default


def test_a_container_in_the_normal_form_reads_back_as_registered() -> None:
    registered = _registered(
        ports=normal_ports(_registered()["ports"]),
        healthcheck={
            "tests": ["CMD", "true"],
            "interval": "1m0s",
            "timeout": "30s",
            "retries": 5,
            "startPeriod": "10m0s",
        },
        memorySwap=8192,
    )
    assert read_container(_inspect(), registered) == registered


def test_a_stopped_container_that_must_run_is_marked_for_an_update() -> None:
    info = {**_inspect(), "State": {"Running": False, "ExitCode": 1}}
    assert read_container(info, _registered())["mustRun"] is False
    assert "mustRun" not in read_container(_inspect(), _registered())


def test_log_opts_are_read_only_when_configured() -> None:
    registered = {k: v for k, v in _registered().items() if k != "logOpts"}
    assert "logOpts" not in read_container(_inspect(), registered)


def test_a_volume_reads_back_labels_as_a_set_and_its_options() -> None:
    registered = {
        "name": "forgeway-gitlab-data",
        "labels": [{"label": "b", "value": "2"}, {"label": "a", "value": "1"}],
    }
    volume = {"Name": "forgeway-gitlab-data", "Driver": "local", "Labels": {"a": "1", "b": "2"}, "Options": None}
    assert read_volume(volume, registered) == registered
    moved = {**volume, "Options": {"type": "none", "o": "bind", "device": "/srv/gitlab"}}
    assert read_volume(moved, registered)["driverOpts"] == moved["Options"]
