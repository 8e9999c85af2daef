# Over 400 lines on purpose: one provider's emulation (pulumi-docker images, volumes, containers),
# checked against one provider source; images, volumes and containers share _Docker and its waits.
"""The lab applier's pulumi-docker emulation (tools/applier/apply.py): images, volumes and
containers through the Engine API over the provider's own ssh transport (tools/applier/docker_api.py)."""

from __future__ import annotations

import base64
import contextlib
import io
import re
import secrets
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tools.applier.docker_api import DockerApiError, DockerClient, Response, redact
from tools.applier.state import ApplyError, Entry

DOCKER_PROVIDER = "pulumi:providers:docker"
DOCKER_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_VOLUME = "docker:index/volume:Volume"
DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_NETWORK = "docker:index/network:Network"

# Container inputs the emulation honours; any other is refused by name.
_CONTAINER_INPUTS = {
    "name", "image", "envs", "ports", "volumes", "labels", "restart", "maxRetryCount", "shmSize", "memory",
    "memorySwap", "cpuShares", "cpuSet", "healthcheck", "uploads", "hostname", "command", "entrypoints",
    "privileged", "networkMode", "logDriver", "logOpts", "capabilities", "destroyGraceSeconds", "mustRun",
    "start", "wait", "waitTimeout", "removeVolumes", "stopSignal", "stopTimeout", "networksAdvanced",
    "hosts",
}  # fmt: skip
# Changed in place by the provider's update (ContainerUpdate).
_CONTAINER_UPDATES = {"restart", "maxRetryCount", "cpuShares", "cpuSet", "memory", "memorySwap"}
# Not ForceNew upstream and not sent by ContainerUpdate: a change is an update that only
# the state sees (healthcheck: the running container keeps its old one; logged).
_CONTAINER_STATE_ONLY = {
    "destroyGraceSeconds",
    "mustRun",
    "start",
    "wait",
    "waitTimeout",
    "removeVolumes",
    "healthcheck",
}
_DOCKER_INPUTS = {
    DOCKER_IMAGE: {"name", "platform", "keepLocally", "forceRemove", "pullTriggers", "triggers"},
    DOCKER_VOLUME: {"name", "driver", "driverOpts", "labels"},
    DOCKER_CONTAINER: _CONTAINER_INPUTS,
    DOCKER_NETWORK: {"name", "driver", "ipv6", "ipamConfigs", "labels"},
}
# Keys of the inputs' nested objects the emulation honours (wire names).
_DOCKER_NESTED = {
    "ports": {"internal", "external", "ip", "protocol"},
    "volumes": {"volumeName", "hostPath", "containerPath", "readOnly"},
    "uploads": {"file", "content", "contentBase64", "executable", "permissions"},
    "healthcheck": {"tests", "interval", "timeout", "startPeriod", "retries"},
    "capabilities": {"adds", "drops"},
    "labels": {"label", "value"},
    "networksAdvanced": {"name", "ipv4Address", "ipv6Address", "aliases"},
    "ipamConfigs": {"subnet", "gateway"},
    "hosts": {"host", "ip"},  # the provider's `host` blocks (ForceNew): ExtraHosts host:ip
}


# --- docker: images, volumes and containers over the Engine API (tools/applier/docker_api.py) ---

_MIB = 1024 * 1024
_START_TIMEOUT_S = 15.0  # the provider waits this long for a started container to run
_VOLUME_IN_USE_RETRY_S = 30.0
_GO_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_GO_UNITS_NS["h"] = 3600 * 10**9
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class _Docker:
    """One resource's API calls: errors name the resource, host and step, with its
    secrets (env values, uploaded contents) redacted."""

    def __init__(
        self,
        client: DockerClient,
        what: str,
        host: str,
        secret_values: list[str],
        log: Callable[[str], None] | None = None,
        *,
        lab_names: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.client = client
        self.what = what
        self.host = host
        self.secrets = secret_values
        self.log = log or (lambda line: None)
        # The lab's stand-in for DNS inside containers (the applier request's ``resolve``):
        # see _container_body.
        self.lab_names = dict(lab_names or {})

    def fail(self, step: str, detail: str) -> ApplyError:
        return ApplyError(redact(f"{self.what}: {step} failed on docker host {self.host}: {detail}", self.secrets))

    def call(
        self, step: str, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any
    ) -> Response:
        try:
            response = self.client.call(method, path, **kwargs)
        except DockerApiError as exc:
            raise self.fail(step, str(exc)) from None
        if response.status not in ok:
            raise self.fail(step, f"HTTP {response.status}: {response.message()}")
        return response


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="/:@")


def _secret_values(inputs: Mapping[str, Any]) -> list[str]:
    """What must never reach a log or an error: env values and uploaded contents."""
    values = [str(e).partition("=")[2] for e in inputs.get("envs") or []]
    for upload in inputs.get("uploads") or []:
        values.append(str(upload.get("content") or ""))
        with contextlib.suppress(ValueError):
            values.append(base64.b64decode(upload.get("contentBase64") or "").decode(errors="replace"))
    return [v for v in values if v]


def _docker_inputs(typ: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs that are set, after refusing any (also nested) the emulation does not honour."""
    given = {k: v for k, v in inputs.items() if v is not None}
    unknown = sorted(set(given) - _DOCKER_INPUTS[typ])
    for key, allowed in _DOCKER_NESTED.items():
        value = given.get(key)
        items = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        for item in items:
            if isinstance(item, dict):
                unknown += [f"{key}.{k}" for k in sorted(set(item) - allowed) if item[k] is not None]
    if unknown:
        raise ApplyError(f"the lab applier does not emulate {', '.join(unknown)} of {typ}")
    return given


def _provider_deletes_first(typ: str, inputs: Mapping[str, Any]) -> bool:
    """The bridge's delete-before-replace: always for containers (DeleteBeforeReplace in
    pulumi-docker's resource info), and for a resource whose autonamable ``name`` the
    program set itself (two with one name cannot exist at once)."""
    return typ == DOCKER_CONTAINER or (typ in (DOCKER_VOLUME, DOCKER_NETWORK) and bool(inputs.get("name")))


def _autoname(name: str) -> str:
    """The bridge's autoname: the resource name, "-", 7 random hex digits."""
    return f"{name}-{secrets.token_hex(4)[:7]}"


def go_duration_ns(text: str) -> int:
    """Nanoseconds of a Go duration string ("30s", "1m30s", "1.5h", "500ms")."""
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    if s == "0":
        return 0
    total, pos = 0.0, 0
    while pos < len(s):
        match = _GO_DURATION_PART.match(s, pos)
        if match is None:
            raise ValueError(f"not a Go duration: {text!r}")
        total += float(match.group(1)) * _GO_UNITS_NS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"not a Go duration: {text!r}")
    return sign * round(total)


def _labels(items: list[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(item["label"]): str(item["value"]) for item in items or []}


def _inspect_image(d: _Docker, image: str, platform: str | None = None) -> dict[str, Any]:
    """The provider's "find or pull": here find only, as the lab has no registry."""
    response = d.call("inspect image", "GET", f"/images/{_quote(image)}/json", ok=(200, 404))
    if response.status == 404:
        raise d.fail(
            f"pull of image {image}",
            "the image is not on the daemon and cannot be pulled in the lab (no registry): "
            "the lab must load it first (tools/lab/images.ensure_image)",
        )
    info: dict[str, Any] = response.json()
    if platform:
        want_os, _, rest = platform.partition("/")
        want_arch, _, want_variant = rest.partition("/")
        have = "/".join(str(p) for p in (info.get("Os"), info.get("Architecture"), info.get("Variant")) if p)
        if (want_os, want_arch) != (info.get("Os"), info.get("Architecture")) or (
            want_variant and want_variant != info.get("Variant")
        ):
            raise d.fail(
                f"pull of image {image}", f"the image there is {have}, but the platform asked for is {platform}"
            )
    return info


def _image_create(d: _Docker, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    given = _docker_inputs(DOCKER_IMAGE, inputs)
    info = _inspect_image(d, given["name"], given.get("platform"))
    image_id = str(info["Id"])
    digests = info.get("RepoDigests") or []
    # The terraform provider's id: the image id followed by the name.
    return image_id + given["name"], {**inputs, "imageId": image_id, "repoDigest": digests[0] if digests else image_id}


def _image_delete(d: _Docker, entry: Entry) -> None:
    if entry.inputs.get("keepLocally"):
        return
    query = {"force": bool(entry.inputs.get("forceRemove"))}
    d.call("remove image", "DELETE", f"/images/{_quote(entry.inputs['name'])}", query=query, ok=(200, 404))


def _volume_create(d: _Docker, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    given = _docker_inputs(DOCKER_VOLUME, inputs)
    body = {
        "Name": given.get("name") or _autoname(name),
        "Driver": given.get("driver") or "local",
        "DriverOpts": given.get("driverOpts") or {},
        "Labels": _labels(given.get("labels")),
    }
    volume = d.call("create volume", "POST", "/volumes/create", json_body=body, ok=(200, 201)).json()
    outputs = {**inputs, "name": volume["Name"], "driver": volume["Driver"], "mountpoint": volume.get("Mountpoint", "")}
    return str(volume["Name"]), outputs


def _network_create(d: _Docker, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """NetworkCreate as resource_docker_network_funcs.go builds it (ipam driver "default")."""
    given = _docker_inputs(DOCKER_NETWORK, inputs)
    network_name = given.get("name") or _autoname(name)
    body = {
        "Name": network_name,
        "CheckDuplicate": True,
        "Driver": given.get("driver") or "bridge",
        "EnableIPv6": bool(given.get("ipv6")),
        "IPAM": {
            "Driver": "default",
            "Config": [
                {k: v for k, v in (("Subnet", c.get("subnet")), ("Gateway", c.get("gateway"))) if v}
                for c in given.get("ipamConfigs") or []
            ],
        },
        "Labels": _labels(given.get("labels")),
    }
    created = d.call("create network", "POST", "/networks/create", json_body=body, ok=(200, 201)).json()
    network_id = str(created["Id"])
    return network_id, {**inputs, "name": network_name, "driver": body["Driver"]}


def _network_delete(d: _Docker, entry: Entry) -> None:
    """Remove the network; one still in use (a container on it) is retried a while."""
    deadline = time.monotonic() + _VOLUME_IN_USE_RETRY_S
    while True:
        response = d.call("remove network", "DELETE", f"/networks/{_quote(entry.id)}", ok=(204, 404, 403, 409))
        if response.status in (204, 404):
            return
        if time.monotonic() > deadline:
            raise d.fail(f"remove network {entry.id}", f"HTTP {response.status}: {response.message()}")
        time.sleep(1.0)


def _connect_networks(d: _Docker, container_id: str, networks: list[Mapping[str, Any]]) -> None:
    """networks_advanced as the provider's Create attaches them: the container leaves docker's
    default "bridge" (created there by its network_mode), then joins each network with its
    fixed addresses (NetworkConnect's EndpointConfig.IPAMConfig)."""
    response = d.call(
        "disconnect from bridge", "POST", "/networks/bridge/disconnect",
        json_body={"Container": container_id, "Force": False}, ok=(200, 204, 403, 404, 500),
    )  # fmt: skip
    if response.status not in (200, 204) and "is not connected" not in response.message():
        raise d.fail("disconnect from bridge", f"HTTP {response.status}: {response.message()}")
    for net in networks:
        ipam = {
            k: v for k, v in (("IPv4Address", net.get("ipv4Address")), ("IPv6Address", net.get("ipv6Address"))) if v
        }
        endpoint: dict[str, Any] = {"IPAMConfig": ipam}
        if net.get("aliases"):
            endpoint["Aliases"] = list(net["aliases"])
        d.call(
            f"connect to network {net['name']}", "POST", f"/networks/{_quote(str(net['name']))}/connect",
            json_body={"Container": container_id, "EndpointConfig": endpoint}, ok=(200, 204),
        )  # fmt: skip


def _volume_delete(d: _Docker, entry: Entry) -> None:
    """Remove the volume (forced, as the provider); a volume still in use is retried a while."""
    deadline = time.monotonic() + _VOLUME_IN_USE_RETRY_S
    while True:
        response = d.call(
            "remove volume", "DELETE", f"/volumes/{_quote(entry.id)}", query={"force": True}, ok=(204, 404, 409)
        )
        if response.status != 409:
            return
        if time.monotonic() > deadline:
            raise d.fail(f"remove volume {entry.id}", f"HTTP 409: {response.message()}")
        time.sleep(1.0)


def _port_config(ports: list[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    """(ExposedPorts, PortBindings) of the ``ports`` input (ip 0.0.0.0, tcp by default)."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in ports:
        key = f"{int(port['internal'])}/{port.get('protocol') or 'tcp'}"
        exposed[key] = {}
        external = port.get("external")
        host_ip = port.get("ip") or "0.0.0.0"  # noqa: S104 (the provider's default)
        bindings.setdefault(key, []).append(
            {"HostIp": host_ip, "HostPort": "" if external is None else str(int(external))}
        )
    return exposed, bindings


def _volume_config(volumes: list[Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """(Binds, anonymous Volumes) of the ``volumes`` input, as the provider builds them."""
    binds: list[str] = []
    anonymous: dict[str, Any] = {}
    for volume in volumes:
        source = volume.get("volumeName") or volume.get("hostPath")
        target = volume["containerPath"]
        if source:
            binds.append(f"{source}:{target}" + (":ro" if volume.get("readOnly") else ""))
        else:
            anonymous[target] = {}
    return binds, anonymous


def _resources(given: Mapping[str, Any]) -> dict[str, Any]:
    """Memory (MB), swap (MB, or -1), shm (MB), CPU shares and set: HostConfig fields."""
    resources: dict[str, Any] = {}
    if given.get("memory"):
        resources["Memory"] = int(given["memory"]) * _MIB
    if given.get("memorySwap"):
        swap = int(given["memorySwap"])
        resources["MemorySwap"] = swap * _MIB if swap > 0 else swap
    if given.get("shmSize"):
        resources["ShmSize"] = int(given["shmSize"]) * _MIB
    if given.get("cpuShares"):
        resources["CpuShares"] = int(given["cpuShares"])
    if given.get("cpuSet"):
        resources["CpusetCpus"] = given["cpuSet"]
    return resources


def _restart_policy(given: Mapping[str, Any]) -> dict[str, Any]:
    return {"Name": given.get("restart") or "no", "MaximumRetryCount": int(given.get("maxRetryCount") or 0)}


def _extra_hosts(hosts: list[Mapping[str, Any]], lab_names: Mapping[str, Sequence[str]]) -> list[str]:
    """ExtraHosts: the program's ``host:ip`` entries, then the lab's names they do not give
    (each with all its addresses: A and AAAA)."""
    given = [f"{h['host']}:{h['ip']}" for h in hosts]
    named = {str(h["host"]) for h in hosts}
    lab = [(name, address) for name, addresses in sorted(lab_names.items()) for address in addresses]
    return given + [f"{name}:{address}" for name, address in lab if name not in named]


def _container_body(given: Mapping[str, Any], lab_names: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """ContainerCreate's config and host config, built as the terraform provider does.

    ``lab_names`` is the lab's stand-in for DNS (the applier request's ``resolve`` map): a
    container on a lab host resolves those names as a real host's DNS would (the runner
    reaches <gitlab.domain> at the VPS's public addresses, A and AAAA). Docker writes a container's
    /etc/hosts itself, so the netns's /etc/hosts does not reach it. Not an input: the
    provider sends no ExtraHosts for an unset ``hosts``, and refresh reads none. The
    program's own ``hosts`` (the provider's ``host`` blocks) come first and a lab name they
    give is left out: a real container's /etc/hosts entry wins over DNS.
    """
    exposed, bindings = _port_config(given.get("ports") or [])
    binds, anonymous = _volume_config(given.get("volumes") or [])
    optional = {
        "Cmd": list(given.get("command") or []),
        "Entrypoint": list(given.get("entrypoints") or []),
        "ExposedPorts": exposed,
        "Volumes": anonymous,
    }
    config: dict[str, Any] = {
        "Image": given["image"],
        "Hostname": given.get("hostname", ""),
        "Env": list(given.get("envs") or []),
        "Labels": _labels(given.get("labels")),
        **{k: v for k, v in optional.items() if v},
    }
    # The provider passes both as given; an empty StopSignal lets the daemon take the image's.
    config["StopSignal"] = given.get("stopSignal") or ""
    if given.get("stopTimeout") is not None:
        config["StopTimeout"] = int(given["stopTimeout"])
    if "healthcheck" in given:
        check = given["healthcheck"]
        config["Healthcheck"] = {
            "Test": list(check.get("tests") or []),
            "Interval": go_duration_ns(check.get("interval") or "0s"),
            "Timeout": go_duration_ns(check.get("timeout") or "0s"),
            "StartPeriod": go_duration_ns(check.get("startPeriod") or "0s"),
            "Retries": int(check.get("retries") or 0),
        }
    capabilities = given.get("capabilities") or {}
    host_optional = {
        "PortBindings": bindings,
        "Binds": binds,
        # The schema's default "bridge" is sent when unset (resourceDockerContainerCreate's
        # GetOk sees it); left empty, the daemon records "default", which a refresh reads back.
        "NetworkMode": given.get("networkMode") or "bridge",
        "CapAdd": list(capabilities.get("adds") or []),
        "CapDrop": list(capabilities.get("drops") or []),
        "ExtraHosts": _extra_hosts(given.get("hosts") or [], lab_names or {}),
    }
    host: dict[str, Any] = {
        "Privileged": bool(given.get("privileged")),
        "RestartPolicy": _restart_policy(given),
        "LogConfig": {"Type": given.get("logDriver") or "", "Config": dict(given.get("logOpts") or {})},
        **_resources(given),
        **{k: v for k, v in host_optional.items() if v},
    }
    return {**config, "HostConfig": host}


def _upload_tar(upload: Mapping[str, Any]) -> bytes:
    """One file in a tar, mode ``permissions`` (octal text, e.g. "0600"; it wins over
    ``executable``), else 0644 (0744 if executable), as the provider uploads it."""
    if bool(upload.get("content")) == bool(upload.get("contentBase64")):
        raise ApplyError(f"upload {upload.get('file')}: exactly one of content and contentBase64 must be set")
    data = str(upload["content"]).encode() if upload.get("content") else base64.b64decode(upload["contentBase64"])
    info = tarfile.TarInfo(str(upload["file"]))
    mode = int(str(upload["permissions"]), 8) if upload.get("permissions") else None
    info.size, info.mode = len(data), mode if mode is not None else 0o744 if upload.get("executable") else 0o644
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _inspect_container(d: _Docker, container_id: str) -> dict[str, Any]:
    info: dict[str, Any] = d.call("inspect container", "GET", f"/containers/{container_id}/json").json()
    return info


def _await_running(d: _Docker, container_id: str, must_run: bool) -> dict[str, Any]:
    """Wait (as the provider's read does) until the started container runs; one that
    has exited already fails when mustRun."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        info = _inspect_container(d, container_id)
        state = info.get("State") or {}
        if state.get("Running") or not must_run:
            return info
        if state.get("Status") in ("exited", "dead") or time.monotonic() > deadline:
            error = f", {state['Error']}" if state.get("Error") else ""
            raise d.fail("start", f"the container is {state.get('Status')} (exit code {state.get('ExitCode')}{error})")
        time.sleep(0.2)


def _await_healthy(d: _Docker, container_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = _inspect_container(d, container_id).get("State") or {}
        health = state.get("Health")
        if not health:
            raise d.fail("wait for healthy", "the container has no healthcheck (wait needs one)")
        if health.get("Status") == "healthy":
            return
        if not state.get("Running"):
            stopped = f"status {state.get('Status')}, exit code {state.get('ExitCode')}"
            raise d.fail("wait for healthy", f"the container stopped before it was healthy ({stopped})")
        if time.monotonic() > deadline:
            log = health.get("Log") or [{}]
            last = str(log[-1].get("Output", "")).strip()[-500:]
            raise d.fail(
                "wait for healthy",
                f"not healthy after {timeout_s:.0f} s (status {health.get('Status')}, last check: {last!r})",
            )
        time.sleep(0.5)


def _remove_container(d: _Docker, container_id: str, remove_volumes: bool) -> None:
    query = {"v": remove_volumes, "force": True}
    d.call("remove container", "DELETE", f"/containers/{container_id}", query=query, ok=(204, 404))
    d.call(
        "wait for removal", "POST", f"/containers/{container_id}/wait", query={"condition": "removed"}, ok=(200, 404)
    )


def _container_create(d: _Docker, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    given = _docker_inputs(DOCKER_CONTAINER, inputs)
    container_name = given.get("name") or _autoname(name)
    _inspect_image(d, given["image"])
    body = _container_body(given, d.lab_names)
    created = d.call("create", "POST", "/containers/create", query={"name": container_name}, json_body=body, ok=(201,))
    container_id = str(created.json()["Id"])
    try:
        if given.get("networksAdvanced"):
            _connect_networks(d, container_id, list(given["networksAdvanced"]))
        for upload in given.get("uploads") or []:
            d.call(
                f"upload of {upload.get('file')}",
                "PUT",
                f"/containers/{container_id}/archive",
                query={"path": "/"},
                raw_body=_upload_tar(upload),
                content_type="application/x-tar",
            )
        if given.get("start", True):
            d.call("start", "POST", f"/containers/{container_id}/start", ok=(204, 304))
            _await_running(d, container_id, bool(given.get("mustRun", True)))
            if given.get("wait"):
                _await_healthy(d, container_id, float(given.get("waitTimeout") or 60))
        info = _inspect_container(d, container_id)
    except ApplyError:
        # The engine would keep a failed create to replace it next run; the lab removes
        # it, so the name is free for the next apply.
        with contextlib.suppress(ApplyError):
            _remove_container(d, container_id, bool(given.get("removeVolumes", True)))
        raise
    outputs = {
        **inputs,
        "id": container_id,
        "name": str(info.get("Name", container_name)).lstrip("/"),
        **container_computed(info),
    }
    return container_id, outputs


def _container_update(
    d: _Docker, inputs: dict[str, Any], previous: Entry, log: Callable[[str], None]
) -> dict[str, Any]:
    """The provider's update: ContainerUpdate with the restart policy and resources when
    one of them changed; other (state-only) changes touch nothing on the host."""
    given = _docker_inputs(DOCKER_CONTAINER, inputs)
    changed = {k for k in {*inputs, *previous.inputs} if inputs.get(k) != previous.inputs.get(k)}
    if changed & _CONTAINER_UPDATES:
        body: dict[str, Any] = {
            "RestartPolicy": _restart_policy(given),
            "CpuShares": int(given.get("cpuShares") or 0),
            "Memory": int(given.get("memory") or 0) * _MIB,
            "CpusetCpus": given.get("cpuSet") or "",
        }
        if given.get("memorySwap"):
            body["MemorySwap"] = _resources(given)["MemorySwap"]
        d.call("update", "POST", f"/containers/{previous.id}/update", json_body=body)
    if "healthcheck" in changed:
        log(f"{'':8} {d.what}: healthcheck changed: the provider records it, the container keeps its old one")
    return {**previous.outputs, **inputs, "id": previous.id, "name": previous.outputs.get("name")}


def _container_delete(d: _Docker, entry: Entry) -> None:
    """The provider's delete (terraform-provider-docker internal/provider/
    resource_docker_container_funcs.go, resourceDockerContainerDelete): ContainerStop with
    ``destroyGraceSeconds`` as its timeout (0 when unset) and no signal, so the daemon sends
    the container's own stop signal (``stopSignal``, else the image's STOPSIGNAL, else
    SIGTERM) and SIGKILL when the timeout runs out; then a forced ContainerRemove.

    The provider says nothing when the grace period ran out; the lab logs it (a drained
    gitlab-runner exits by itself, one killed by docker abandoned its running jobs), with
    the container's last log line."""
    grace = int(entry.inputs.get("destroyGraceSeconds") or 0)
    started = time.monotonic()
    stop = d.call(
        "stop", "POST", f"/containers/{entry.id}/stop", query={"t": grace}, ok=(204, 304, 404), timeout=grace + 60
    )
    if grace > 0 and stop.status == 204:
        _report_killed(d, entry.id, grace, time.monotonic() - started)
    # v: anonymous volumes only (removeVolumes, default true); named volumes stay.
    _remove_container(d, entry.id, bool(entry.inputs.get("removeVolumes", True)))


_SIGKILL_STATUS = 128 + 9


def _report_killed(d: _Docker, container_id: str, grace: int, seconds: float) -> None:
    """Log when the stop ended in docker's SIGKILL after the grace period, not in an exit."""
    info = _inspect_container(d, container_id)
    state = info.get("State") or {}
    if state.get("ExitCode") != _SIGKILL_STATUS or state.get("OOMKilled") or seconds < grace:
        return
    signal = (info.get("Config") or {}).get("StopSignal") or "SIGTERM"
    last = _last_log_line(d, container_id)
    d.log(
        redact(
            f"{'':8} {d.what}: did not stop within destroyGraceSeconds={grace} s after {signal}: docker killed it "
            f"(SIGKILL, exit {_SIGKILL_STATUS}) after {seconds:.0f} s; what it was still doing was cut off "
            f"(a gitlab-runner: its running jobs). Its last log line: {last!r}",
            d.secrets,
        )
    )


def _last_log_line(d: _Docker, container_id: str) -> str:
    """The last line the container printed (stdout or stderr), from the daemon's log."""
    query = {"stdout": True, "stderr": True, "tail": 5}
    response = d.call("read logs", "GET", f"/containers/{container_id}/logs", query=query, ok=(200, 404))
    lines = _demultiplex(response.body).decode(errors="replace").splitlines()
    return next((line for line in reversed(lines) if line.strip()), "")


def _demultiplex(body: bytes) -> bytes:
    """The payload of docker's multiplexed log stream (8-byte frame headers: stream, 0, 0, 0, size)."""
    if body[:1] not in (b"\x00", b"\x01", b"\x02") or body[1:4] != b"\x00\x00\x00":
        return body  # a container with a TTY: the stream is raw
    out, pos = b"", 0
    while pos + 8 <= len(body):
        size = int.from_bytes(body[pos + 4 : pos + 8], "big")
        out += body[pos + 8 : pos + 8 + size]
        pos += 8 + size
    return out


_DOCKER_CREATE: dict[str, Callable[[_Docker, str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    DOCKER_IMAGE: _image_create,
    DOCKER_VOLUME: _volume_create,
    DOCKER_CONTAINER: _container_create,
    DOCKER_NETWORK: _network_create,
}
_DOCKER_DELETE: dict[str, Callable[[_Docker, Entry], None]] = {
    DOCKER_IMAGE: _image_delete,
    DOCKER_VOLUME: _volume_delete,
    DOCKER_CONTAINER: _container_delete,
    DOCKER_NETWORK: _network_delete,
}


def container_computed(info: Mapping[str, Any]) -> dict[str, Any]:
    """The computed outputs the provider reads from a container's inspect (create and refresh)."""
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    return {
        "hostname": (info.get("Config") or {}).get("Hostname", ""),
        "bridge": (info.get("NetworkSettings") or {}).get("Bridge", ""),
        "networkDatas": [
            {
                "networkName": net,
                "ipAddress": data.get("IPAddress", ""),
                "ipPrefixLength": data.get("IPPrefixLen", 0),
                "gateway": data.get("Gateway", ""),
                "macAddress": data.get("MacAddress", ""),
            }
            for net, data in sorted(networks.items())
        ],
    }
