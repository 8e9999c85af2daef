"""The lab's applier: run the program under the mock monitor and really do what the
providers would, for the resource types forgeway uses.

This is not the Pulumi engine. What it emulates, per type:
- ``command:remote:Command``: runs ``create`` (or ``update``, else ``create`` again on
  an input change; ``delete`` on delete) on the host over SSH with the real ``ssh``
  binary: the connection's pinned host key (the same ssh options the docker provider
  gets), its private key through a private ssh-agent, a jump host as ProxyCommand,
  ``stdin`` piped, ``environment`` exported in front of the command (the provider uses
  SSH setenv, which needs AcceptEnv), ``PULUMI_COMMAND_STDOUT/STDERR`` on delete.
- ``random:index/randomBytes:RandomBytes``, ``randomPassword``: real random values.
- ``tls:index/privateKey:PrivateKey`` (ECDSA P256), ``selfSignedCert``, ``certRequest``,
  ``locallySignedCert``: real keys, CSRs and certificates (cryptography), with the
  subject, SANs, validity, allowed uses (KeyUsage/ExtendedKeyUsage) and key ids Go's
  crypto/x509 gives them; a certificate within ``early_renewal_hours`` of its end is
  replaced on the next run (the provider's ``ready_for_renewal``). Write-only key
  inputs and anything else not listed in ``_TLS_INPUTS`` are refused by name.
- ``docker:index/remoteImage:RemoteImage``, ``volume:Volume``, ``container:Container``
  (pulumi-docker 5.2.0, the bridged terraform docker provider): Docker Engine API
  calls (v1.41) over ``ssh <sshOpts> … docker system dial-stdio`` to the host of the
  resource's ``pulumi:providers:docker``, one ssh per call (tools/docker_api.py), with
  the provider's own ssh options. The ssh key is the applier's agent's: the
  ``privateKey`` of every Command connection registered in this run, else (nothing
  registered yet, or ``destroy``) the first one found in the state's Commands.
  "Pull" is an inspect: the lab has no registry, so a missing image, or one whose
  architecture is not ``platform``'s, fails. Volumes are created and removed; a
  container is created, its ``uploads`` put in (a tar, as the provider does), started,
  waited for (running; healthy with ``wait``), updated in place through
  ContainerUpdate for ``restart``/``maxRetryCount``/``cpuShares``/``cpuSet``/``memory``/
  ``memorySwap``, and stopped (``destroyGraceSeconds``) and removed (anonymous volumes
  with ``removeVolumes``, named ones never) on delete. Inputs not in ``_DOCKER_INPUTS``
  are refused by name. A container is always replaced delete-first (the bridge sets
  DeleteBeforeReplace for it), a volume whose ``name`` the program sets too (the
  bridge's rule for a name it did not autoname); a missing name is autonamed
  ``<resource name>-<7 hex>``.
- ``pulumi:providers:*``: recorded, nothing to do.
Anything else is refused by name, so the lab never pretends.

State (like the engine's checkpoint, but plain JSON with mode 0600 under the lab
directory) maps ``type::name`` to inputs, outputs and the resource options below. On
the next run each resource is created, left alone (inputs equal), updated (keeping its
id), or replaced (a replace-on-change input such as ``triggers`` changed: the new one
is created, then the old one deleted; the other way round with ``deleteBeforeReplace``
or where the provider asks for it), and resources the program no longer registers are
deleted in reverse creation order.

Resource options, as the engine honours them (tools/synth.py hands them over):
- ``protect``: deleting the resource (gone from the program, or ``destroy``) fails
  naming it; so does a replace while the state and the program both protect it.
  ``destroy(exclude_protected=True)`` (``pulumi destroy --exclude-protected``) leaves
  protected resources in the state (not what they depend on) and logs them.
- ``retainOnDelete``: a delete (or the delete half of a replace) drops the resource
  from the state and leaves it on the host; the log says it was retained.
- ``deleteBeforeReplace``: the old resource is deleted before its replacement is made.
Not emulated: previews, refresh (drift on the hosts goes unseen), ``ignoreChanges``,
``replaceOnChanges``, ``dependsOn`` ordering beyond what the SDK's resolution order
gives, and parallelism (resources are applied one at a time, in the order the SDK
resolves them, which respects dependencies).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import ipaddress
import json
import os
import re
import secrets
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.render.ssh import SshTarget, ssh_destination, ssh_options
from tools.docker_api import DockerApiError, DockerClient, DockerHost, Response, redact
from tools.synth import RegistrationOptions, Synthesis, synthesize, unwrap

__all__ = ["Applier", "ApplyError", "Change", "apply_stack", "destroy"]

DOCKER_PROVIDER = "pulumi:providers:docker"
DOCKER_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_VOLUME = "docker:index/volume:Volume"
DOCKER_CONTAINER = "docker:index/container:Container"

# Container inputs the emulation honours; any other is refused by name.
_CONTAINER_INPUTS = {
    "name", "image", "envs", "ports", "volumes", "labels", "restart", "maxRetryCount", "shmSize", "memory",
    "memorySwap", "cpuShares", "cpuSet", "healthcheck", "uploads", "hostname", "command", "entrypoints",
    "privileged", "networkMode", "logDriver", "logOpts", "capabilities", "destroyGraceSeconds", "mustRun",
    "start", "wait", "waitTimeout", "removeVolumes",
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
}
# Keys of the inputs' nested objects the emulation honours (wire names).
_DOCKER_NESTED = {
    "ports": {"internal", "external", "ip", "protocol"},
    "volumes": {"volumeName", "hostPath", "containerPath", "readOnly"},
    "uploads": {"file", "content", "contentBase64", "executable", "permissions"},
    "healthcheck": {"tests", "interval", "timeout", "startPeriod", "retries"},
    "capabilities": {"adds", "drops"},
    "labels": {"label", "value"},
}

# Inputs whose change replaces the resource (the providers' replace-on-change sets);
# "*" means every input.
REPLACE_ON = {
    "command:remote:Command": {"triggers"},
    "random:index/randomBytes:RandomBytes": {"length", "keepers"},
    "random:index/randomPassword:RandomPassword": {"*"},
    "tls:index/privateKey:PrivateKey": {"*"},
    "tls:index/selfSignedCert:SelfSignedCert": {"*"},
    "tls:index/certRequest:CertRequest": {"*"},
    "tls:index/locallySignedCert:LocallySignedCert": {"*"},
    DOCKER_IMAGE: {"name", "platform", "pullTriggers", "triggers"},
    DOCKER_VOLUME: {"*"},
    DOCKER_CONTAINER: _CONTAINER_INPUTS - _CONTAINER_UPDATES - _CONTAINER_STATE_ONLY,
}
COMMAND_TIMEOUT_S = 300


class ApplyError(RuntimeError):
    """A resource could not be applied; the message names the resource, host and step."""


@dataclass
class Change:
    op: str  # create | update | replace | delete | same
    type: str
    name: str


@dataclass
class Entry:
    type: str
    name: str
    id: str
    seq: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str = ""  # the provider reference ("urn::id") it was made through
    provider_inputs: dict[str, Any] = field(default_factory=dict)  # that provider's inputs then (docker)
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False


@dataclass
class State:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    next_seq: int = 0

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text())
        entries = {k: Entry(**v) for k, v in data["entries"].items()}
        return cls(path, entries, data["next_seq"])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Holds secrets, as the engine's state does (encrypted there): owner-only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {"entries": {k: asdict(v) for k, v in self.entries.items()}, "next_seq": self.next_seq}, out, indent=1
            )
        tmp.replace(self.path)


# --- SSH -------------------------------------------------------------------------


class SshAgent:
    """A private ssh-agent for one apply, stopped by PID at the end."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="forgeway-agent-")
        self.socket = str(Path(self._dir.name) / "agent.sock")
        out = subprocess.run(["ssh-agent", "-a", self.socket, "-s"], capture_output=True, text=True, check=True)
        pid = next(part for part in out.stdout.split(";") if part.strip().startswith("SSH_AGENT_PID="))
        self.pid = int(pid.split("=")[1])
        self._keys: set[str] = set()

    def add(self, private_key: str) -> None:
        if private_key in self._keys:
            return
        key_file = Path(self._dir.name) / f"key{len(self._keys)}"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(private_key if private_key.endswith("\n") else private_key + "\n")
        subprocess.run(["ssh-add", "-q", str(key_file)], env=self.env(), check=True, capture_output=True)
        key_file.unlink()
        self._keys.add(private_key)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SSH_AUTH_SOCK": self.socket}

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 15)
        self._dir.cleanup()


def _target(conn: Mapping[str, Any]) -> SshTarget:
    return SshTarget(
        address=conn["host"],
        port=int(conn.get("port", 22)),
        user=conn.get("user", "root"),
        host_key=conn.get("hostKey"),
    )


def _with_env(command: str, env: Mapping[str, str]) -> str:
    if not env:
        return command
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"export {exports}; {command}"


# --- the applier --------------------------------------------------------------------


class Applier:
    """Performs resources as the SDK resolves them; see the module docstring."""

    def __init__(self, state_path: Path, log: Callable[[str], None] = print) -> None:
        self.state = State.load(state_path)
        self.log = log
        self.changes: list[Change] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._agent: SshAgent | None = None
        self._command_keys: list[str] = []  # privateKeys of Command connections registered in this run

    # -- called by the mock monitor, from worker threads --

    def handle(self, args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:
            return f"{args.name}-component", dict(args.inputs)  # components do nothing themselves
        options = getattr(args, "options", None) or RegistrationOptions()
        with self._lock:
            return self._handle(args.typ, args.name, unwrap(args.inputs), getattr(args, "provider", "") or "", options)

    def _handle(
        self, typ: str, name: str, inputs: dict[str, Any], provider: str, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        key = f"{typ}::{name}"
        if key in self._seen:
            raise ApplyError(f"{key} is registered twice in one run")
        self._seen.add(key)
        if typ == "command:remote:Command":
            self._note_keys(inputs.get("connection") or {})
        provider_inputs = self._provider_inputs(key, provider) if typ.startswith("docker:") else {}
        flags = {
            "protect": options.protect,
            "retain_on_delete": options.retain_on_delete,
            "delete_before_replace": options.delete_before_replace,
        }
        previous = self.state.entries.get(key)
        if previous is not None and previous.inputs == inputs and not _due_for_renewal(previous):
            # Options and the provider's inputs may change without the resource changing.
            if {k: getattr(previous, k) for k in flags} != flags or previous.provider_inputs != provider_inputs:
                self.state.entries[key] = Entry(
                    **{**asdict(previous), **flags, "provider": provider, "provider_inputs": provider_inputs}
                )
                self.state.save()
            self.changes.append(Change("same", typ, name))
            return previous.id, previous.outputs
        if previous is None:
            op = "create"
        else:
            changed = {k for k in {*inputs, *previous.inputs} if inputs.get(k) != previous.inputs.get(k)}
            replace_on = REPLACE_ON.get(typ, set())
            op = "replace" if "*" in replace_on or changed & replace_on else "update"
        delete_first = op == "replace" and (options.delete_before_replace or _provider_deletes_first(typ, inputs))
        self.log(f"{op:8} {typ} {name}" + (" (delete before replace)" if delete_first else ""))
        resource_id: str | None
        if op == "update":
            assert previous is not None
            resource_id, outputs = previous.id, self._update(typ, name, inputs, previous, provider_inputs)
        elif op == "create":
            resource_id, outputs = self._create(typ, name, inputs, provider_inputs)
        else:
            assert previous is not None
            if previous.protect and options.protect:
                # The engine allows unprotecting and replacing in one update, so both must protect.
                raise ApplyError(
                    f"unable to replace resource {key} as it is currently marked for protection: "
                    "remove the `protect` option from the resource in the program and apply again"
                )
            if delete_first:
                self._remove(previous)
                del self.state.entries[key]  # gone: a failing create must not leave it in the state
                self.state.save()
                resource_id, outputs = self._create(typ, name, inputs, provider_inputs)
            else:
                resource_id, outputs = self._create(typ, name, inputs, provider_inputs)
                self._remove(previous)  # create-then-delete, the engine's default order
        entry = Entry(
            typ,
            name,
            resource_id or f"{name}-{self.state.next_seq}",
            self.state.next_seq,
            inputs,
            outputs,
            provider=provider,
            provider_inputs=provider_inputs,
            **flags,
        )
        self.state.next_seq += 1
        self.state.entries[key] = entry
        self.state.save()
        self.changes.append(Change(op, typ, name))
        return entry.id, outputs

    def finish(self, exclude_protected: bool = False) -> None:
        """Delete what the program no longer registers, newest first.

        A protected resource stops the run (as in the engine), unless
        ``exclude_protected``, which leaves it in the state and says so.
        """
        stale = sorted((e for k, e in self.state.entries.items() if k not in self._seen), key=lambda e: -e.seq)
        kept = []
        for entry in stale:
            key = f"{entry.type}::{entry.name}"
            if entry.protect:
                if exclude_protected:
                    self.log(f"{'skip':8} {entry.type} {entry.name} (protected: left in the state)")
                    kept.append(key)
                    continue
                raise ApplyError(
                    f"unable to delete resource {key} as it is currently marked for protection: remove the "
                    "`protect` option from the resource in the program and apply, then delete it "
                    "(or destroy with exclude_protected)"
                )
            self.log(f"{'delete':8} {entry.type} {entry.name}")
            self._remove(entry)
            del self.state.entries[key]
            self.state.save()
            self.changes.append(Change("delete", entry.type, entry.name))
        if kept:
            self.log(
                f"All unprotected resources were destroyed. {len(kept)} protected resource(s) are still in the "
                f"state: {', '.join(kept)}"
            )

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    # -- per type --

    def _create(
        self, typ: str, name: str, inputs: dict[str, Any], provider_inputs: Mapping[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        """(resource id, or None for "name-seq"; outputs) of a new resource."""
        if typ == "command:remote:Command":
            return None, self._command(name, inputs, "create", inputs.get("create"))
        if typ == "random:index/randomBytes:RandomBytes":
            raw = os.urandom(int(inputs["length"]))
            return None, {**inputs, "base64": base64.b64encode(raw).decode(), "hex": raw.hex()}
        if typ == "random:index/randomPassword:RandomPassword":
            return None, {**inputs, "result": base64.urlsafe_b64encode(os.urandom(int(inputs["length"]))).decode()}
        if typ in _TLS_EMULATIONS:
            return None, {**inputs, **_TLS_EMULATIONS[typ](inputs)}
        if typ in _DOCKER_CREATE:
            return _DOCKER_CREATE[typ](self._docker(typ, name, provider_inputs, inputs), name, inputs)
        if typ.startswith("pulumi:providers:"):
            return None, dict(inputs)
        raise ApplyError(f"the lab applier does not emulate {typ} (resource {name})")

    def _update(
        self, typ: str, name: str, inputs: dict[str, Any], previous: Entry, provider_inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        if typ == "command:remote:Command":
            script = inputs.get("update") or inputs.get("create")
            return self._command(name, inputs, "update", script)
        if typ.startswith("pulumi:providers:"):
            return dict(inputs)
        if typ == DOCKER_CONTAINER:
            return _container_update(self._docker(typ, name, provider_inputs, inputs), inputs, previous, self.log)
        if typ in _DOCKER_INPUTS:
            _docker_inputs(typ, inputs)  # refuses what the emulation does not know
        # Types whose every input replaces never get here; for the others keep outputs.
        return {**previous.outputs, **inputs}

    def _remove(self, entry: Entry) -> None:
        """Delete a resource on its host, unless it is retained (retainOnDelete)."""
        if entry.retain_on_delete:
            self.log(
                f"{'retain':8} {entry.type} {entry.name} (retainOnDelete: left on the host, dropped from the state)"
            )
            return
        self._delete(entry)

    def _delete(self, entry: Entry) -> None:
        if entry.type == "command:remote:Command" and entry.inputs.get("delete"):
            env = {
                "PULUMI_COMMAND_STDOUT": str(entry.outputs.get("stdout", "")),
                "PULUMI_COMMAND_STDERR": str(entry.outputs.get("stderr", "")),
            }
            self._command(entry.name, entry.inputs, "delete", entry.inputs["delete"], extra_env=env)
        if entry.type in _DOCKER_DELETE:
            # The provider as it is now, if it is still in the state; else as it was.
            current = self._provider_entry(entry.provider)
            provider_inputs = current.inputs if current is not None else entry.provider_inputs
            _DOCKER_DELETE[entry.type](self._docker(entry.type, entry.name, provider_inputs, entry.inputs), entry)

    # -- ssh and docker plumbing --

    def _note_keys(self, conn: Mapping[str, Any]) -> None:
        for holder in (conn, conn.get("proxy") or {}):
            key = holder.get("privateKey")
            if key and key not in self._command_keys:
                self._command_keys.append(key)

    def _state_key(self) -> str | None:
        """The first private key of a Command connection in the state (oldest first)."""
        for entry in sorted(self.state.entries.values(), key=lambda e: e.seq):
            if entry.type == "command:remote:Command":
                conn = entry.inputs.get("connection") or {}
                for holder in (conn, conn.get("proxy") or {}):
                    if holder.get("privateKey"):
                        return str(holder["privateKey"])
        return None

    def _provider_entry(self, reference: str) -> Entry | None:
        provider_id = reference.rsplit("::", 1)[-1] if reference else ""
        for entry in self.state.entries.values():
            if entry.type == DOCKER_PROVIDER and entry.id == provider_id:
                return entry
        return None

    def _provider_inputs(self, key: str, reference: str) -> dict[str, Any]:
        entry = self._provider_entry(reference)
        if entry is None:
            raise ApplyError(
                f"{key}: its docker provider {reference or '(default)'} is not applied; the lab reaches docker "
                "only through an explicit pulumi:providers:docker with an ssh:// host"
            )
        return dict(entry.inputs)

    def _docker(self, typ: str, name: str, provider_inputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> _Docker:
        """The API of the provider's host for one resource, with the ssh key in the agent."""
        try:
            host = DockerHost.from_provider(provider_inputs)
        except ValueError as exc:
            raise ApplyError(f"{typ} {name}: {exc}") from exc
        if self._agent is None:
            self._agent = SshAgent()
        keys = self._command_keys or [k for k in (self._state_key(),) if k]
        if not keys:
            raise ApplyError(
                f"{typ} {name}: no ssh key for docker host {host.label}: the applier uses the privateKey of the "
                "program's Command connections, and none is registered or in the state"
            )
        for key in keys:
            self._agent.add(key)
        client = DockerClient(host, self._agent.env())
        return _Docker(client, f"{typ} {name}", host.label, _secret_values(inputs))

    def _command(
        self,
        name: str,
        inputs: Mapping[str, Any],
        step: str,
        script: str | None,
        extra_env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        outputs = {**inputs, "stdout": "", "stderr": ""}
        if not script:
            return outputs
        conn = inputs["connection"]
        env = {**(inputs.get("environment") or {}), **(extra_env or {})}
        done = self._ssh(conn, _with_env(script, env), inputs.get("stdin"))
        if done.returncode != 0:
            raise ApplyError(
                f"{name}: `{step}` failed on host {conn['host']} (exit {done.returncode}): "
                f"{done.stderr.strip()[-2000:] or done.stdout.strip()[-2000:]}"
            )
        return {**outputs, "stdout": done.stdout.rstrip("\n"), "stderr": done.stderr.rstrip("\n")}

    def _ssh(self, conn: Mapping[str, Any], command: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
        if self._agent is None:
            self._agent = SshAgent()
        for holder in (conn, conn.get("proxy") or {}):
            if holder.get("privateKey"):
                self._agent.add(holder["privateKey"])
        target = _target(conn)
        jump = _target(conn["proxy"]) if conn.get("proxy") else None
        argv = [
            "ssh",
            *ssh_options(target, jump),
            "-o",
            f"ConnectTimeout={int(conn.get('perDialTimeout', 15))}",
            ssh_destination(target),
            command,
        ]
        try:
            return subprocess.run(
                argv,
                input=stdin or "",
                capture_output=True,
                text=True,
                env=self._agent.env(),
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ApplyError(f"host {conn['host']}: no answer within {COMMAND_TIMEOUT_S} s") from exc


# --- tls: real keys, requests and certificates (cryptography) -------------------------

_TLS_CERT_TYPES = ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert")
# The inputs each emulation honours; any other (write-only keys, ...) is refused by name.
_TLS_INPUTS = {
    "tls:index/certRequest:CertRequest": {"privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris"},
    "tls:index/selfSignedCert:SelfSignedCert": {
        "privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris", "validityPeriodHours",
        "earlyRenewalHours", "allowedUses", "isCaCertificate", "maxPathLength", "setSubjectKeyId",
    },
    "tls:index/locallySignedCert:LocallySignedCert": {
        "certRequestPem", "caCertPem", "caPrivateKeyPem", "validityPeriodHours", "earlyRenewalHours",
        "allowedUses", "isCaCertificate", "maxPathLength", "setSubjectKeyId",
    },
}  # fmt: skip
# pulumi-tls subject fields -> X.509 attribute OIDs (dotted, to import cryptography lazily).
_SUBJECT_OIDS = {
    "commonName": "2.5.4.3",
    "serialNumber": "2.5.4.5",
    "country": "2.5.4.6",
    "locality": "2.5.4.7",
    "province": "2.5.4.8",
    "streetAddresses": "2.5.4.9",
    "organization": "2.5.4.10",
    "organizationalUnit": "2.5.4.11",
    "postalCode": "2.5.4.17",
    "emailAddress": "1.2.840.113549.1.9.1",
}
# allowed_uses -> KeyUsage flag (the cryptography keyword) or ExtendedKeyUsage OID.
_KEY_USAGES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
    "encipher_only": "encipher_only",
    "decipher_only": "decipher_only",
}
_EXTENDED_KEY_USAGES = {
    "any_extended": "2.5.29.37.0",
    "server_auth": "1.3.6.1.5.5.7.3.1",
    "client_auth": "1.3.6.1.5.5.7.3.2",
    "code_signing": "1.3.6.1.5.5.7.3.3",
    "email_protection": "1.3.6.1.5.5.7.3.4",
    "timestamping": "1.3.6.1.5.5.7.3.8",
    "ocsp_signing": "1.3.6.1.5.5.7.3.9",
}


def _tls_inputs(typ: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs that are set, after refusing any the emulation does not honour."""
    given = {k: v for k, v in inputs.items() if v is not None}
    unknown = sorted(set(given) - _TLS_INPUTS[typ])
    if unknown:
        raise ApplyError(f"the lab applier does not emulate {', '.join(unknown)} of {typ}")
    return given


def _tls_private_key(inputs: Mapping[str, Any]) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if inputs.get("algorithm") != "ECDSA" or inputs.get("ecdsaCurve", "P224") != "P256":
        raise ApplyError(f"the lab applier emulates ECDSA P256 keys only, not {inputs.get('algorithm')}")
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "privateKeyPem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode(),
        "publicKeyPem": key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    }


def _signing_key(pem: str, what: str) -> tuple[Any, Any, str]:
    """(key, hash for signing, pulumi-tls key algorithm) of a PEM private key; the
    hash follows Go's crypto/x509 (SHA-256, SHA-384 for P-384, SHA-512 for P-521)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ApplyError(f"{what}: not a readable unencrypted PEM private key ({exc})") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = {"secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}.get(key.curve.name, hashes.SHA256())
        return key, digest, "ECDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return key, hashes.SHA256(), "RSA"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, None, "ED25519"
    raise ApplyError(f"{what}: the lab applier signs with ECDSA, RSA or Ed25519 keys only")


def _x509_name(subject: Mapping[str, Any] | None) -> Any:
    from cryptography import x509

    attributes = []
    for field_name, value in (subject or {}).items():
        if field_name not in _SUBJECT_OIDS:
            raise ApplyError(f"the lab applier does not emulate subject field {field_name}")
        oid = x509.ObjectIdentifier(_SUBJECT_OIDS[field_name])
        values = value if isinstance(value, list) else [value]
        attributes += [x509.NameAttribute(oid, str(v)) for v in values if v not in (None, "")]
    return x509.Name(attributes)


def _sans(inputs: Mapping[str, Any]) -> list[Any]:
    from cryptography import x509

    names: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []]
    names += [x509.UniformResourceIdentifier(u) for u in inputs.get("uris") or []]
    return names


def _with_uses(builder: Any, allowed_uses: list[str]) -> Any:
    """KeyUsage (critical) and ExtendedKeyUsage extensions, as pulumi-tls sets them."""
    from cryptography import x509

    unknown = sorted(set(allowed_uses) - set(_KEY_USAGES) - set(_EXTENDED_KEY_USAGES))
    if unknown:
        raise ApplyError(f"the lab applier does not emulate allowed_uses {', '.join(unknown)}")
    flags = {flag: False for flag in _KEY_USAGES.values()}
    flags.update({_KEY_USAGES[u]: True for u in allowed_uses if u in _KEY_USAGES})
    if any(flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    extended = [x509.ObjectIdentifier(_EXTENDED_KEY_USAGES[u]) for u in allowed_uses if u in _EXTENDED_KEY_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    return builder


def _tls_certificate(
    inputs: Mapping[str, Any], *, subject: Any, public_key: Any, issuer: Any, signer: Any, digest: Any, sans: list[Any]
) -> dict[str, Any]:
    """Build and sign one certificate the way pulumi-tls (Go's crypto/x509) does: the
    validity from now, basic constraints (critical), the allowed uses, a subject key
    id for CA certificates or on request, an authority key id from the issuer's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    end = now + datetime.timedelta(hours=int(inputs["validityPeriodHours"]))
    is_ca = bool(inputs.get("isCaCertificate"))
    path_length = inputs.get("maxPathLength")
    path_length = int(path_length) if is_ca and path_length is not None and int(path_length) >= 0 else None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
    )
    builder = _with_uses(builder, list(inputs.get("allowedUses") or []))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if is_ca or inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
            )
    cert = builder.sign(signer, digest)
    return {
        "certPem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "validityEndTime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "readyForRenewal": False,
    }


def _tls_self_signed(inputs: Mapping[str, Any]) -> dict[str, Any]:
    given = _tls_inputs("tls:index/selfSignedCert:SelfSignedCert", inputs)
    key, digest, _ = _signing_key(given["privateKeyPem"], "selfSignedCert private_key_pem")
    subject = _x509_name(given.get("subject") or {"commonName": "forgeway"})
    return _tls_certificate(
        given, subject=subject, public_key=key.public_key(), issuer=None, signer=key, digest=digest, sans=_sans(given)
    )


def _tls_cert_request(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A real CSR (PEM) for the key, subject and SANs, as pulumi-tls's certRequest."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    given = _tls_inputs("tls:index/certRequest:CertRequest", inputs)
    if "privateKeyPem" not in given:
        raise ApplyError("certRequest: private_key_pem is required (the lab applier emulates no write-only key)")
    key, digest, algorithm = _signing_key(given["privateKeyPem"], "certRequest private_key_pem")
    builder = x509.CertificateSigningRequestBuilder().subject_name(_x509_name(given.get("subject")))
    sans = _sans(given)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(key, digest)
    return {"certRequestPem": request.public_bytes(serialization.Encoding.PEM).decode(), "keyAlgorithm": algorithm}


def _tls_locally_signed(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A real certificate for a CSR, signed by the CA key: the request's subject and
    SANs, the validity and allowed uses of the inputs (pulumi-tls's locallySignedCert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    given = _tls_inputs("tls:index/locallySignedCert:LocallySignedCert", inputs)
    for required in ("certRequestPem", "caCertPem", "caPrivateKeyPem", "validityPeriodHours"):
        if required not in given:
            raise ApplyError(f"locallySignedCert: {required} is required")
    try:
        request = x509.load_pem_x509_csr(given["certRequestPem"].encode())
        ca_cert = x509.load_pem_x509_certificate(given["caCertPem"].encode())
    except ValueError as exc:
        raise ApplyError(f"locallySignedCert: unreadable request or CA certificate ({exc})") from exc
    if not request.is_signature_valid:
        raise ApplyError("locallySignedCert: the certificate request's signature does not verify")
    ca_key, digest, ca_algorithm = _signing_key(given["caPrivateKeyPem"], "locallySignedCert ca_private_key_pem")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if ca_key.public_key().public_bytes(serialization.Encoding.DER, public) != ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ApplyError("locallySignedCert: ca_private_key_pem is not the key of ca_cert_pem")
    try:
        sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    outputs = _tls_certificate(
        given,
        subject=request.subject,
        public_key=request.public_key(),
        issuer=ca_cert,
        signer=ca_key,
        digest=digest,
        sans=sans,
    )
    return {**outputs, "caKeyAlgorithm": ca_algorithm}


_TLS_EMULATIONS: dict[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
    "tls:index/privateKey:PrivateKey": _tls_private_key,
    "tls:index/selfSignedCert:SelfSignedCert": _tls_self_signed,
    "tls:index/certRequest:CertRequest": _tls_cert_request,
    "tls:index/locallySignedCert:LocallySignedCert": _tls_locally_signed,
}


def _due_for_renewal(entry: Entry, now: datetime.datetime | None = None) -> bool:
    """A certificate within early_renewal_hours of its end: the provider's
    ready_for_renewal, which makes the next update replace it."""
    end = entry.outputs.get("validityEndTime") if entry.type in _TLS_CERT_TYPES else None
    if not end:
        return False
    ends = datetime.datetime.strptime(end, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    early = datetime.timedelta(hours=int(entry.inputs.get("earlyRenewalHours") or 0))
    return (now or datetime.datetime.now(datetime.UTC)) >= ends - early


# --- docker: images, volumes and containers over the Engine API (tools/docker_api.py) ---

_MIB = 1024 * 1024
_START_TIMEOUT_S = 15.0  # the provider waits this long for a started container to run
_VOLUME_IN_USE_RETRY_S = 30.0
_GO_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_GO_UNITS_NS["h"] = 3600 * 10**9
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class _Docker:
    """One resource's API calls: errors name the resource, host and step, with its
    secrets (env values, uploaded contents) redacted."""

    def __init__(self, client: DockerClient, what: str, host: str, secret_values: list[str]) -> None:
        self.client = client
        self.what = what
        self.host = host
        self.secrets = secret_values

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
    return typ == DOCKER_CONTAINER or (typ == DOCKER_VOLUME and bool(inputs.get("name")))


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
            "the lab must load it first (tools/lab_images.ensure_image)",
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


def _container_body(given: Mapping[str, Any]) -> dict[str, Any]:
    """ContainerCreate's config and host config, built as the terraform provider does."""
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
        "NetworkMode": given.get("networkMode"),
        "CapAdd": list(capabilities.get("adds") or []),
        "CapDrop": list(capabilities.get("drops") or []),
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
    body = _container_body(given)
    created = d.call("create", "POST", "/containers/create", query={"name": container_name}, json_body=body, ok=(201,))
    container_id = str(created.json()["Id"])
    try:
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
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    outputs = {
        **inputs,
        "id": container_id,
        "name": str(info.get("Name", container_name)).lstrip("/"),
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
    grace = int(entry.inputs.get("destroyGraceSeconds") or 0)
    if grace > 0:
        d.call(
            "stop", "POST", f"/containers/{entry.id}/stop", query={"t": grace}, ok=(204, 304, 404), timeout=grace + 60
        )
    # v: anonymous volumes only (removeVolumes, default true); named volumes stay.
    _remove_container(d, entry.id, bool(entry.inputs.get("removeVolumes", True)))


_DOCKER_CREATE: dict[str, Callable[[_Docker, str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    DOCKER_IMAGE: _image_create,
    DOCKER_VOLUME: _volume_create,
    DOCKER_CONTAINER: _container_create,
}
_DOCKER_DELETE: dict[str, Callable[[_Docker, Entry], None]] = {
    DOCKER_IMAGE: _image_delete,
    DOCKER_VOLUME: _volume_delete,
    DOCKER_CONTAINER: _container_delete,
}


def apply_stack(
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    state_path: Path,
    log: Callable[[str], None] = print,
) -> tuple[Synthesis, list[Change]]:
    """Apply one stack (in this process: one apply per process, as with synthesis)."""
    applier = Applier(state_path, log)
    try:
        synthesis = synthesize(stack, config, secret_keys, handler=applier.handle)
        applier.finish()
    finally:
        applier.close()
    return synthesis, applier.changes


def destroy(state_path: Path, log: Callable[[str], None] = print, *, exclude_protected: bool = False) -> list[Change]:
    """Delete everything in the state, newest first (what `pulumi destroy` would).

    A protected resource fails the destroy, unless ``exclude_protected`` (the CLI's
    ``--exclude-protected``): then protected resources stay in the state, and the log
    names them.
    """
    applier = Applier(state_path, log)
    try:
        applier.finish(exclude_protected=exclude_protected)
    finally:
        applier.close()
    return applier.changes


def main() -> int:
    """``python -m tools.applier``: a JSON request on stdin (secrets never on argv).

    {"action": "apply"|"destroy", "stack": ..., "config": {...}, "secret_keys": [...],
    "state": "path", "exclude_protected": false}; prints the changes as JSON lines on
    stdout, progress on stderr.
    """
    import sys

    request = json.load(sys.stdin)
    state_path = Path(request["state"])

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if request["action"] == "destroy":
            changes = destroy(state_path, log, exclude_protected=bool(request.get("exclude_protected")))
        else:
            _, changes = apply_stack(request["stack"], request["config"], request["secret_keys"], state_path, log)
    except ApplyError as exc:
        print(f"apply failed: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(json.dumps(asdict(change)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
