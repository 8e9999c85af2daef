"""``refresh`` for the lab applier (tools/applier/apply.py), as ``pulumi refresh`` does it.

The engine asks each resource's provider to read it back and writes what the provider
returns into the state; the next ``up`` diffs the program's inputs against that. The
applier diffs against its recorded inputs, so a refresh here writes the provider's read
into the recorded inputs (and outputs), in the provider's own normal form, and drops a
resource the provider no longer finds (Read clears its id: "removing from state").

What each provider reads back, from its source at the pinned versions (pulumi-docker
5.2 = kreuzwerker/terraform-provider-docker v4.x; files under ``internal/provider/``;
checked at v4.0.0 and v4.5.0, which agree on everything below):

- ``docker:index/container:Container``: resource_docker_container_funcs.go
  ``resourceDockerContainerRead`` (also the last step of its Create). Gone (404) is
  dropped. Read back, per wire name: ``name`` (without the API's "/"), ``image``
  (``.Image`` when the state's value is a ``sha256:`` id, else ``.Config.Image``),
  ``hostname``, ``command``, ``entrypoints``, ``restart``, ``maxRetryCount``,
  ``privileged``, ``capabilities`` (when any), ``memory``/``memorySwap``/``shmSize``
  (MB: bytes/1024/1024; a non-positive swap as it is), ``cpuShares``, ``cpuSet``,
  ``logDriver``, ``logOpts`` (only when set: ``containerLogOptsForState``),
  ``networkMode``; ``ports`` (only when set, and the container runs or ``mustRun``)
  through resource_docker_container_structures.go ``flattenContainerPorts``: the
  daemon's ``NetworkSettings.Ports`` keys sorted by internal port only
  (``byPortAndProtocol.Less``; Go's ``sort.Sort`` is not stable, so two protocols on
  one internal port come back in no fixed order), each key's bindings in the daemon's
  order, with ``external`` and ``ip`` as bound; ``healthcheck`` (when the container has
  one) with its durations as Go's ``time.Duration.String()`` ("1m0s", "30s", "10m0s").
  A stopped container with ``mustRun`` gets ``mustRun: false`` (its "trigger update").
  Not read back (the source says so): ``envs`` and ``labels`` (issues #242/#269 upstream),
  ``volumes``, ``uploads``, ``destroyGraceSeconds``, ``start``, ``wait*``,
  ``removeVolumes``.
- ``docker:index/volume:Volume``: resource_docker_volume.go ``resourceDockerVolumeRead``:
  gone is dropped; ``name``, ``labels``, ``driver``, ``driverOpts`` (the daemon's
  ``Options``) and ``mountpoint`` read back.
- ``docker:index/network:Network``: resource_docker_network.go ``resourceDockerNetworkRead``:
  gone is dropped; otherwise the recorded inputs stay (every input replaces, and the
  program's networks are read back as asked). ``networksAdvanced`` of a container is not
  read back (resourceDockerContainerRead: "// networks_advanced").
- ``docker:index/remoteImage:RemoteImage``: resource_docker_image_funcs.go
  ``resourceDockerImageRead``: an image no longer on the daemon is dropped; else the id
  (image id + name), ``imageId`` and ``repoDigest`` are read.
- ``command:remote:Command`` (pulumi-command 1.2.1,
  provider/pkg/provider/remote/commandController.go): no custom Read, so the
  pulumi-go-provider ``infer`` default returns the state as it is.
- random and tls resources: left as they are. terraform-provider-random's Reads are
  empty (internal/provider/resource_bytes.go, resource_password.go); terraform-provider-tls's
  are no-ops for keys and CSRs and only mark a certificate ``ready_for_renewal``
  (internal/provider/common_cert.go ``modifyStateIfCertificateReadyForRenewal``), which
  the applier checks on every apply instead (tools/applier/tls.py ``_due_for_renewal``).
- ``gitlab:index/userRunner:UserRunner`` (terraform-provider-gitlab v19
  ``resource_gitlab_user_runner.go`` Read): ``GET runners/:id``; a 404 drops it; the read
  attributes replace the recorded inputs the program set (tagLists as a set), so a changed
  accessLevel or tag list is drift the next ``up`` updates (tools/applier/gitlab.py ``read``).
- ``command:local:Command``: no custom Read (as ``command:remote:Command``).
- ``pulumi:providers:*``: nothing to read.

Which properties a read can make differ from the program's: the terraform SDK diffs
the configuration against the state, so a property the program sets is compared with
its read value, and one it leaves unset is compared only when the schema neither
computes it nor reads back its zero value or schema default
(resource_docker_container.go: ``hostname``, ``command``, ``entrypoint``, ``shm_size``,
``log_driver``, ``healthcheck``, ``labels``, ``env`` are Computed; ``restart`` defaults to
"no", ``network_mode`` to "bridge"). Sets (``capabilities``, volume ``labels``) compare
without order.

Not emulated: the ``ports`` DiffSuppressFunc
(resource_docker_container.go ``suppressIfPortsDidNotChangeForMigrationV0ToV1``), which
hides a pure reordering of ``ports`` as long as each internal port appears once; the
applier compares lists as they are, so the lab replaces on any order the provider did
not read back, where the provider replaces only when an internal port is published
twice (e.g. ``gitlab.publish_on_lan``) and the orders differ. The applier is stricter
there, never kinder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tools.applier.docker import (
    DOCKER_CONTAINER,
    DOCKER_IMAGE,
    DOCKER_NETWORK,
    DOCKER_VOLUME,
    _Docker,
    _quote,
    container_computed,
)
from tools.applier.gitlab import USER_RUNNER
from tools.applier.state import Change, Entry

__all__ = ["go_duration", "normal_ports", "read_container", "read_volume", "refresh"]

_MIB = 1024 * 1024
_UNSET = object()


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``: "0s", "500ms", "1.5s", "30s", "1m0s", "1h2m3s"."""
    if nanoseconds < 0:
        return "-" + go_duration(-nanoseconds)
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 10**9:  # below a second: the largest unit that is at most it, with a fraction
        for unit, size, digits in (("ms", 10**6, 6), ("µs", 10**3, 3), ("ns", 1, 0)):
            if nanoseconds >= size:
                return _with_fraction(nanoseconds, size, digits) + unit
    seconds = _with_fraction(nanoseconds % (60 * 10**9), 10**9, 9) + "s"
    minutes, hours = nanoseconds // (60 * 10**9) % 60, nanoseconds // (3600 * 10**9)
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if nanoseconds >= 60 * 10**9 else seconds


def _with_fraction(value: int, unit: int, digits: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    return f"{whole}." + f"{fraction:0{digits}d}".rstrip("0")


def normal_ports(ports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``ports`` in the order ``flattenContainerPorts`` reads them back: by internal port,
    each port's bindings in the order given, with the schema's defaults (ip 0.0.0.0, tcp)
    filled in. The daemon does not keep that order for a port bound to two addresses: it
    reverses up to 12 bindings and shuffles more (go-connections ``nat.SortPortMap``,
    measured on dockerd 20.10.24), so such ports read back changed (issue 20, docs/lab.md)."""
    order: list[tuple[int, str]] = []
    bindings: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for port in ports:
        key = (int(port["internal"]), str(port.get("protocol") or "tcp"))
        if key not in bindings:
            order.append(key)
            bindings[key] = []
        external = port.get("external")
        bindings[key].append(
            {
                "internal": key[0],
                "external": None if external is None else int(external),
                "ip": str(port.get("ip") or "0.0.0.0"),  # noqa: S104 (the schema's default)
                "protocol": key[1],
            }
        )
    return [b for key in sorted(order, key=lambda k: k[0]) for b in bindings[key]]


def _flatten_ports(network_ports: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """flattenContainerPorts on the inspect's NetworkSettings.Ports ({"80/tcp": [...]})."""
    out = []
    for key in sorted(network_ports or {}, key=lambda k: int(k.split("/")[0])):
        internal, _, protocol = key.partition("/")
        for binding in (network_ports or {})[key] or []:
            host_port = str(binding.get("HostPort") or "")
            out.append(
                {
                    "internal": int(internal),
                    "external": int(host_port) if host_port.isdigit() else 0,  # Go's Atoi: 0 on error
                    "ip": str(binding.get("HostIp") or ""),
                    "protocol": protocol,
                }
            )
    return out


def _mb(value: Any) -> int:
    return int(value or 0) // _MIB


def _settle(
    recorded: Mapping[str, Any],
    read: Mapping[str, Any],
    *,
    computed: frozenset[str],
    defaults: Mapping[str, Any],
    sets: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The recorded inputs with the read written in, as the next diff will see them: a set
    property keeps the program's value; an unset one is written only where it would
    differ from the program's unset value (not computed, not zero, not the default)."""
    out = dict(recorded)
    for key, value in read.items():
        if recorded.get(key) is not None:
            out[key] = recorded[key] if key in sets and _same_set(recorded[key], value) else value
        elif key not in computed and value not in (None, "", 0, False, [], {}, defaults.get(key, _UNSET)):
            out[key] = value
    return out


def _same_set(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_set(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return sorted(map(repr, a)) == sorted(map(repr, b))
    return bool(a == b)


_CONTAINER_COMPUTED = frozenset({"hostname", "command", "entrypoints", "shmSize", "logDriver", "healthcheck"})
_CONTAINER_DEFAULTS = {"restart": "no", "networkMode": "bridge"}
_HEALTHCHECK_DEFAULTS = {"tests": [], "interval": "0s", "timeout": "0s", "startPeriod": "0s", "startInterval": "0s"}


def read_container(info: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The container's inputs as the provider's Read leaves them in the state, from the
    daemon's inspect (``info``) and the recorded inputs (what the program registered)."""
    config, host = info.get("Config") or {}, info.get("HostConfig") or {}
    state = info.get("State") or {}
    restart = host.get("RestartPolicy") or {}
    swap = int(host.get("MemorySwap") or 0)
    read: dict[str, Any] = {
        "name": str(info.get("Name", "")).lstrip("/"),
        "image": info.get("Image") if str(recorded.get("image", "")).startswith("sha256:") else config.get("Image"),
        "hostname": config.get("Hostname", ""),
        "command": list(config.get("Cmd") or []),
        "entrypoints": list(config.get("Entrypoint") or []),
        "restart": restart.get("Name") or "",
        "maxRetryCount": int(restart.get("MaximumRetryCount") or 0),
        "privileged": bool(host.get("Privileged")),
        "memory": _mb(host.get("Memory")),
        "memorySwap": swap // _MIB if swap > 0 else swap,
        "shmSize": _mb(host.get("ShmSize")),
        "cpuShares": int(host.get("CpuShares") or 0),
        "cpuSet": host.get("CpusetCpus") or "",
        "logDriver": (host.get("LogConfig") or {}).get("Type", ""),
        "networkMode": host.get("NetworkMode") or "",
    }
    if host.get("CapAdd") or host.get("CapDrop"):
        read["capabilities"] = {"adds": list(host.get("CapAdd") or []), "drops": list(host.get("CapDrop") or [])}
    if recorded.get("logOpts") is not None:  # containerLogOptsForState: only when configured
        read["logOpts"] = dict((host.get("LogConfig") or {}).get("Config") or {})
    running, must_run = bool(state.get("Running")), recorded.get("mustRun", True) is not False
    if recorded.get("ports") and (running or must_run):
        read["ports"] = _flatten_ports((info.get("NetworkSettings") or {}).get("Ports"))
    check = config.get("Healthcheck")
    if check is not None:
        full = {
            "tests": list(check.get("Test") or []),
            "interval": go_duration(int(check.get("Interval") or 0)),
            "timeout": go_duration(int(check.get("Timeout") or 0)),
            "startPeriod": go_duration(int(check.get("StartPeriod") or 0)),
            "startInterval": go_duration(int(check.get("StartInterval") or 0)),
            "retries": int(check.get("Retries") or 0),
        }
        given = recorded.get("healthcheck") or {}
        read["healthcheck"] = {k: v for k, v in full.items() if k in given or v != _HEALTHCHECK_DEFAULTS.get(k, 0)}
    inputs = _settle(
        recorded, read, computed=_CONTAINER_COMPUTED, defaults=_CONTAINER_DEFAULTS, sets=frozenset({"capabilities"})
    )
    if not running and must_run:
        inputs["mustRun"] = False  # the provider's drift marker: the next up updates it
    return inputs


def read_volume(volume: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The volume's inputs after resourceDockerVolumeRead (labels: a set)."""
    read = {
        "name": volume.get("Name", ""),
        "labels": [{"label": k, "value": v} for k, v in sorted((volume.get("Labels") or {}).items())],
        "driver": volume.get("Driver", ""),
        "driverOpts": dict(volume.get("Options") or {}),
    }
    return _settle(recorded, read, computed=frozenset({"name", "driver"}), defaults={}, sets=frozenset({"labels"}))


def _refresh_network(d: _Docker, entry: Entry) -> Entry | None:
    """resourceDockerNetworkRead: gone is dropped; every input replaces, and what the daemon
    reports of a network the program made is what it asked (name, driver, ipv6, ipam), so
    the state keeps its inputs."""
    response = d.call("inspect network", "GET", f"/networks/{_quote(entry.id)}", ok=(200, 404))
    return None if response.status == 404 else entry


def _refresh_docker(d: _Docker, entry: Entry) -> Entry | None:
    """The entry after the provider's Read, or None when the provider no longer finds it."""
    if entry.type == DOCKER_CONTAINER:
        response = d.call("inspect container", "GET", f"/containers/{entry.id}/json", ok=(200, 404))
        if response.status == 404:
            return None
        info = response.json()
        inputs = read_container(info, entry.inputs)
        outputs = {**entry.outputs, **inputs, **container_computed(info)}
        return replace(entry, inputs=inputs, outputs=outputs)
    if entry.type == DOCKER_VOLUME:
        response = d.call("inspect volume", "GET", f"/volumes/{_quote(entry.id)}", ok=(200, 404))
        if response.status == 404:
            return None
        volume = response.json()
        inputs = read_volume(volume, entry.inputs)
        outputs = {**entry.outputs, **inputs, "mountpoint": volume.get("Mountpoint", "")}
        return replace(entry, inputs=inputs, outputs=outputs)
    # DOCKER_IMAGE: found by name among the daemon's images, else dropped.
    name = str(entry.inputs["name"])
    response = d.call("inspect image", "GET", f"/images/{_quote(name)}/json", ok=(200, 404))
    if response.status == 404:
        return None
    image = response.json()
    image_id = str(image["Id"])
    digests = image.get("RepoDigests") or []
    outputs = {**entry.outputs, "imageId": image_id, "repoDigest": digests[0] if digests else image_id}
    return replace(entry, id=image_id + name, outputs=outputs)


def refresh(
    state_path: Path, log: Callable[[str], None] = print, *, resolve: Mapping[str, str] | None = None
) -> list[Change]:
    """Read every resource in the state back through its provider and record the reads.

    Changes: ``same`` (the read is what the state had), ``read`` (the state now holds
    the provider's read), ``gone`` (the provider no longer finds it: dropped).
    """
    from tools.applier.apply import Applier  # the applier's ssh and docker plumbing

    applier = Applier(state_path, log, resolve=resolve)  # resolve: the lab's stand-in for DNS
    changes: list[Change] = []
    try:
        for key, entry in sorted(applier.state.entries.items(), key=lambda item: item[1].seq):
            if entry.type not in (DOCKER_CONTAINER, DOCKER_VOLUME, DOCKER_NETWORK, DOCKER_IMAGE, USER_RUNNER):
                changes.append(Change("same", entry.type, entry.name))  # nothing the provider reads back
                continue
            current = applier._provider_entry(entry.provider)
            provider_inputs = current.inputs if current is not None else entry.provider_inputs
            if entry.type == USER_RUNNER:
                after = applier.gitlab.read(entry, provider_inputs)
            else:
                read = _refresh_network if entry.type == DOCKER_NETWORK else _refresh_docker
                after = read(applier._docker(entry.type, entry.name, provider_inputs, entry.inputs), entry)
            if after is None:
                log(f"{'gone':8} {entry.type} {entry.name} (the provider no longer finds it: removed from the state)")
                del applier.state.entries[key]
                changes.append(Change("gone", entry.type, entry.name))
            elif after != entry:
                moved = sorted(k for k in {*after.inputs, *entry.inputs} if after.inputs.get(k) != entry.inputs.get(k))
                log(f"{'read':8} {entry.type} {entry.name}" + (f" (now recorded: {', '.join(moved)})" if moved else ""))
                applier.state.entries[key] = after
                changes.append(Change("read", entry.type, entry.name))
            else:
                changes.append(Change("same", entry.type, entry.name))
            applier.state.save()
    finally:
        applier.close()
    return changes
