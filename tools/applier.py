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
- ``tls:index/privateKey:PrivateKey``, ``selfSignedCert``: real keys and certificates
  (cryptography).
- ``pulumi:providers:*``: recorded, nothing to do.
Anything else is refused by name, so the lab never pretends.

State (like the engine's checkpoint, but plain JSON with mode 0600 under the lab
directory) maps ``type::name`` to inputs and outputs. On the next run each resource
is created, left alone (inputs equal), updated, or replaced (a replace-on-change input
such as ``triggers`` changed: the new one is created, then the old one deleted), and
resources the program no longer registers are deleted in reverse creation order.
Not emulated: ``delete_before_replace``, ``protect``, ``retain_on_delete`` (the mock
monitor does not hand resource options to ``new_resource``), previews, refresh, and
parallelism (resources are applied one at a time, in the order the SDK resolves them,
which respects dependencies).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.render.ssh import SshTarget, ssh_destination, ssh_options
from tools.synth import Synthesis, synthesize, unwrap

__all__ = ["Applier", "ApplyError", "Change", "apply_stack", "destroy"]

# Inputs whose change replaces the resource (the providers' replace-on-change sets);
# "*" means every input.
REPLACE_ON = {
    "command:remote:Command": {"triggers"},
    "random:index/randomBytes:RandomBytes": {"length", "keepers"},
    "random:index/randomPassword:RandomPassword": {"*"},
    "tls:index/privateKey:PrivateKey": {"*"},
    "tls:index/selfSignedCert:SelfSignedCert": {"*"},
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

    # -- called by the mock monitor, from worker threads --

    def handle(self, args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:
            return f"{args.name}-component", dict(args.inputs)  # components do nothing themselves
        with self._lock:
            return self._handle(args.typ, args.name, unwrap(args.inputs))

    def _handle(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = f"{typ}::{name}"
        if key in self._seen:
            raise ApplyError(f"{key} is registered twice in one run")
        self._seen.add(key)
        previous = self.state.entries.get(key)
        if previous is not None and previous.inputs == inputs:
            self.changes.append(Change("same", typ, name))
            return previous.id, previous.outputs
        if previous is None:
            op = "create"
        else:
            changed = {k for k in {*inputs, *previous.inputs} if inputs.get(k) != previous.inputs.get(k)}
            replace_on = REPLACE_ON.get(typ, set())
            op = "replace" if "*" in replace_on or changed & replace_on else "update"
        self.log(f"{op:8} {typ} {name}")
        if op == "update":
            assert previous is not None
            outputs = self._update(typ, name, inputs, previous)
        else:
            outputs = self._create(typ, name, inputs)
        entry = Entry(typ, name, f"{name}-{self.state.next_seq}", self.state.next_seq, inputs, outputs)
        self.state.next_seq += 1
        if op == "replace":
            assert previous is not None
            self._delete(previous)  # create-then-delete, the engine's default order
        self.state.entries[key] = entry
        self.state.save()
        self.changes.append(Change(op, typ, name))
        return entry.id, outputs

    def finish(self) -> None:
        """Delete what the program no longer registers, newest first."""
        stale = sorted((e for k, e in self.state.entries.items() if k not in self._seen), key=lambda e: -e.seq)
        for entry in stale:
            self.log(f"{'delete':8} {entry.type} {entry.name}")
            self._delete(entry)
            del self.state.entries[f"{entry.type}::{entry.name}"]
            self.state.save()
            self.changes.append(Change("delete", entry.type, entry.name))

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    # -- per type --

    def _create(self, typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if typ == "command:remote:Command":
            return self._command(name, inputs, "create", inputs.get("create"))
        if typ == "random:index/randomBytes:RandomBytes":
            raw = os.urandom(int(inputs["length"]))
            return {**inputs, "base64": base64.b64encode(raw).decode(), "hex": raw.hex()}
        if typ == "random:index/randomPassword:RandomPassword":
            return {**inputs, "result": base64.urlsafe_b64encode(os.urandom(int(inputs["length"]))).decode()}
        if typ == "tls:index/privateKey:PrivateKey":
            return {**inputs, **_tls_private_key(inputs)}
        if typ == "tls:index/selfSignedCert:SelfSignedCert":
            return {**inputs, "certPem": _tls_self_signed(inputs)}
        if typ.startswith("pulumi:providers:"):
            return dict(inputs)
        raise ApplyError(f"the lab applier does not emulate {typ} (resource {name})")

    def _update(self, typ: str, name: str, inputs: dict[str, Any], previous: Entry) -> dict[str, Any]:
        if typ == "command:remote:Command":
            script = inputs.get("update") or inputs.get("create")
            return self._command(name, inputs, "update", script)
        if typ.startswith("pulumi:providers:"):
            return dict(inputs)
        # Types whose every input replaces never get here; for the others keep outputs.
        return {**previous.outputs, **inputs}

    def _delete(self, entry: Entry) -> None:
        if entry.type == "command:remote:Command" and entry.inputs.get("delete"):
            env = {
                "PULUMI_COMMAND_STDOUT": str(entry.outputs.get("stdout", "")),
                "PULUMI_COMMAND_STDERR": str(entry.outputs.get("stderr", "")),
            }
            self._command(entry.name, entry.inputs, "delete", entry.inputs["delete"], extra_env=env)

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


def _tls_self_signed(inputs: Mapping[str, Any]) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    subject = inputs.get("subject") or {}
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, subject.get("commonName", "forgeway"))]
        + (
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"])]
            if subject.get("organization")
            else []
        )
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
    )
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


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


def destroy(state_path: Path, log: Callable[[str], None] = print) -> list[Change]:
    """Delete everything in the state, newest first (what `pulumi destroy` would)."""
    applier = Applier(state_path, log)
    try:
        applier.finish()
    finally:
        applier.close()
    return applier.changes


def main() -> int:
    """``python -m tools.applier``: a JSON request on stdin (secrets never on argv).

    {"action": "apply"|"destroy", "stack": ..., "config": {...}, "secret_keys": [...],
    "state": "path"}; prints the changes as JSON lines on stdout, progress on stderr.
    """
    import sys

    request = json.load(sys.stdin)
    state_path = Path(request["state"])

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if request["action"] == "destroy":
            changes = destroy(state_path, log)
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
