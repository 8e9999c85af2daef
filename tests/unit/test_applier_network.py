"""The lab applier's docker_network and networks_advanced (tools/applier/docker.py), against
a recording stand-in for the Engine API: the calls and bodies the provider's Create makes
(resource_docker_network_funcs.go, resource_docker_container_funcs.go). That dockerd takes
them and the container gets its fixed addresses is the lab's (tests/lab/test_lab_ipv6.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tools.applier.docker import (
    _DOCKER_CREATE,
    DOCKER_CONTAINER,
    DOCKER_NETWORK,
    _Docker,
    _provider_deletes_first,
)
from tools.applier.docker_api import Response
from tools.applier.state import ApplyError

pytestmark = pytest.mark.unit


class _Engine:
    """Answers what a create needs; records (method, path, body) of every call."""

    def __init__(self, bridge_status: int = 200) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.bridge_status = bridge_status

    def call(self, method: str, path: str, **kwargs: Any) -> Response:
        self.calls.append((method, path, kwargs.get("json_body")))
        if path == "/networks/create":
            return Response(201, "Created", body=b'{"Id": "n1"}')
        if path == "/containers/create":
            return Response(201, "Created", body=b'{"Id": "c1"}')
        if path == "/networks/bridge/disconnect":
            body = b"" if self.bridge_status == 200 else b'{"message": "container c1 is not connected to bridge"}'
            return Response(self.bridge_status, "x", body=body)
        if path.endswith("/json"):  # inspect: running, on its network
            info = {"Name": "/gitlab", "State": {"Running": True}, "Config": {}, "NetworkSettings": {"Networks": {}}}
            return Response(200, "OK", body=json.dumps(info).encode())
        if path.startswith("/images/"):
            return Response(200, "OK", body=b'{"Id": "sha256:i", "Architecture": "amd64", "Os": "linux"}')
        return Response(204 if method == "DELETE" or path.endswith("/start") else 200, "OK")


def _docker(engine: _Engine) -> _Docker:
    return _Docker(engine, "home-gitlab", "home", [])  # type: ignore[arg-type]  # the client's one method


def test_a_network_is_created_dual_stack_with_its_ipam_and_replaced_delete_first() -> None:
    engine = _Engine()
    inputs = {
        "name": "forgeway-gitlab", "driver": "bridge", "ipv6": True,
        "ipamConfigs": [{"subnet": "172.31.254.0/29", "gateway": "172.31.254.1"},
                        {"subnet": "fd77:6179:7762::/64", "gateway": "fd77:6179:7762::1"}],
        "labels": [{"label": "forgeway.role", "value": "forgeway-gitlab-network"}],
    }  # fmt: skip
    network_id, outputs = _DOCKER_CREATE[DOCKER_NETWORK](_docker(engine), "home-gitlab-network", inputs)
    ((method, path, body),) = engine.calls
    assert (method, path, network_id, outputs["name"]) == ("POST", "/networks/create", "n1", "forgeway-gitlab")
    assert body["EnableIPv6"] is True and body["IPAM"] == {
        "Driver": "default",
        "Config": [
            {"Subnet": "172.31.254.0/29", "Gateway": "172.31.254.1"},
            {"Subnet": "fd77:6179:7762::/64", "Gateway": "fd77:6179:7762::1"},
        ],
    }
    assert body["Labels"] == {"forgeway.role": "forgeway-gitlab-network"}
    assert _provider_deletes_first(DOCKER_NETWORK, inputs)  # two networks of one name cannot exist at once
    with pytest.raises(ApplyError, match=r"does not emulate ipamConfigs\.auxAddress"):
        _DOCKER_CREATE[DOCKER_NETWORK](_docker(engine), "n", {**inputs, "ipamConfigs": [{"auxAddress": {"a": "b"}}]})


@pytest.mark.parametrize("bridge_status", [200, 500])
def test_networks_advanced_leaves_the_bridge_then_joins_with_its_fixed_addresses(bridge_status: int) -> None:
    """As resourceDockerContainerCreate: created on "bridge" (network_mode unset), disconnected
    from it (not being on it is fine), connected with IPAMConfig, then started."""
    engine = _Engine(bridge_status)
    inputs = {
        "name": "forgeway-gitlab", "image": "sha256:i", "mustRun": True,
        "networksAdvanced": [{"name": "forgeway-gitlab", "ipv4Address": "172.31.254.2",
                              "ipv6Address": "fd77:6179:7762::2"}],
    }  # fmt: skip
    _DOCKER_CREATE[DOCKER_CONTAINER](_docker(engine), "home-gitlab", inputs)
    paths = [path for _m, path, _b in engine.calls]
    create, leave, join, start = (
        paths.index(p)
        for p in ("/containers/create", "/networks/bridge/disconnect", "/networks/forgeway-gitlab/connect",
                  "/containers/c1/start")
    )  # fmt: skip
    assert create < leave < join < start, paths
    assert engine.calls[create][2]["HostConfig"]["NetworkMode"] == "bridge"
    assert engine.calls[join][2] == {
        "Container": "c1",
        "EndpointConfig": {"IPAMConfig": {"IPv4Address": "172.31.254.2", "IPv6Address": "fd77:6179:7762::2"}},
    }
