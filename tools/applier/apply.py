# Over 400 lines on purpose: one engine step loop (ordering, parallel workers, protect, replace,
# delete) for every type, which reads as one contract; each provider's emulation is already its
# own module (applier_docker, applier_tls, applier_refresh, applier_state).
"""The lab's applier: run the program under the mock monitor and really do what the
providers would, for the resource types forgeway uses.

This is not the Pulumi engine. What it emulates, per type:
- ``command:remote:Command``: runs ``create`` (or ``update``, else ``create`` again on
  an input change; ``delete`` on delete) on the host over SSH with the real ``ssh``
  binary: the connection's pinned host key (the same ssh options the docker provider
  gets), its private key through a private ssh-agent, a jump host as ProxyCommand,
  ``stdin`` piped. ``environment`` goes as SSH env requests (ssh ``SendEnv``), as the
  provider's session.Setenv does (remote/commandOutputs.go): sshd sets only names its
  ``AcceptEnv`` allows, and a refused one fails the command before it runs (the session
  checks which names arrived: OpenSSH's client asks no reply, Go's ssh does). With
  ``addPreviousOutputInEnv`` (default true), update and delete send the previous
  non-empty stdout/stderr as ``PULUMI_COMMAND_STDOUT/STDERR`` the same way; a refusal
  is a logged warning, as in the provider.
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
  resource's ``pulumi:providers:docker``, one ssh per call (tools/applier/docker_api.py), with
  the provider's own ssh options. The ssh key is the applier's agent's: the
  ``privateKey`` of every Command connection registered in this run, else (nothing
  registered yet, or ``destroy``) the first one found in the state's Commands.
  "Pull" is an inspect: the lab has no registry, so a missing image, or one whose
  architecture is not ``platform``'s, fails. Volumes are created and removed; a
  container is created, its ``uploads`` put in (a tar, as the provider does), started,
  waited for (running; healthy with ``wait``), updated in place through
  ContainerUpdate for ``restart``/``maxRetryCount``/``cpuShares``/``cpuSet``/``memory``/
  ``memorySwap``, and on delete stopped with its stop signal (``stopSignal``, else the
  image's) and ``destroyGraceSeconds`` as the timeout (0 when unset: SIGKILL at once), then
  force-removed (anonymous volumes with ``removeVolumes``, named ones never); a stop that
  ran out of grace is logged (tools/applier/docker.py _container_delete). Inputs not in ``_DOCKER_INPUTS``
  are refused by name. A container is always replaced delete-first (the bridge sets
  DeleteBeforeReplace for it), a volume whose ``name`` the program sets too (the
  bridge's rule for a name it did not autoname); a missing name is autonamed
  ``<resource name>-<7 hex>``.
- ``command:local:Command`` (tools/applier/local_command.py): run on this machine as the
  deploying user (interpreter, dir, environment, stdin, previous output in env).
- ``pulumi:providers:gitlab``, ``gitlab:index/userRunner:UserRunner`` (tools/applier/gitlab.py):
  GitLab's REST API over TLS with the provider's token, CA file and the lab's ``resolve`` map.
- ``pulumi:providers:*``: recorded, nothing to do.
Anything else is refused by name, so the lab never pretends.

State (like the engine's checkpoint, but plain JSON with mode 0600 under the lab
directory) maps ``type::name`` to inputs, outputs and the resource options below. On
the next run each resource is created, left alone (inputs equal), updated (keeping its
id), or replaced (a replace-on-change input such as ``triggers`` changed: the new one
is created, then the old one deleted; the other way round with ``deleteBeforeReplace``
or where the provider asks for it), and resources the program no longer registers are
deleted in reverse creation order.

Resource options, as the engine honours them (tools/stack/synth.py hands them over):
- ``protect``: deleting the resource (gone from the program, or ``destroy``) fails
  naming it; so does a replace while the state and the program both protect it.
  ``destroy(exclude_protected=True)`` (``pulumi destroy --exclude-protected``) leaves
  protected resources in the state (not what they depend on) and logs them.
- ``retainOnDelete``: a delete (or the delete half of a replace) drops the resource
  from the state and leaves it on the host; the log says it was retained.
- ``deleteBeforeReplace``: the old resource is deleted before its replacement is made.
Parallelism: as the engine, a resource starts once its dependencies are done, and
independent resources run at the same time. The SDK calls ``handle`` for a resource only
after its inputs and ``dependsOn`` have resolved, from a pool of ``WORKERS`` threads (the
engine's ``--parallel`` default is unbounded); each resource first waits a delay drawn
from the apply's seed (at most ``MAX_DELAY_S``), so independent resources start in an
order that differs per seed. The seed is printed at the start of each apply and set with
``FORGEWAY_APPLY_SEED`` (``python -m tools.lab up --seed``); it fixes the delays, not
the threads' timing, so a seed makes an order likely, not certain. After a resource
fails no new one starts (those under way finish) and the first failure is reported.
Deletes of resources the program no longer registers (``finish``, and ``destroy``) run
one at a time, each after everything that depends on it (the dependencies the SDK sent:
dependsOn, property dependencies, parent, provider), newest first among those free to go;
the engine runs independent deletes in parallel.

``refresh`` reads live state back as each provider does (tools/applier/refresh.py).
Not emulated: previews, ``ignoreChanges``,
``replaceOnChanges``, parallel deletes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.render.ssh import SshTarget, ssh_destination, ssh_options
from tools.applier.docker import (
    _CONTAINER_INPUTS,
    _CONTAINER_STATE_ONLY,
    _CONTAINER_UPDATES,
    _DOCKER_CREATE,
    _DOCKER_DELETE,
    _DOCKER_INPUTS,
    DOCKER_CONTAINER,
    DOCKER_IMAGE,
    DOCKER_NETWORK,
    DOCKER_VOLUME,
    _container_update,
    _Docker,
    _docker_inputs,
    _provider_deletes_first,
    _secret_values,
)
from tools.applier.docker_api import DockerClient, DockerHost
from tools.applier.gitlab import GITLAB_TYPES, RUNNER_REPLACE_ON, USER_RUNNER, GitLab
from tools.applier.local_command import LOCAL_COMMAND, run_local
from tools.applier.state import ApplyError, Change, Entry, State, delete_order, key_of_urn
from tools.applier.tls import _TLS_EMULATIONS, _due_for_renewal
from tools.hostssh import SshAgent  # the private agent, shared with the tools that reach hosts
from tools.stack.synth import RegistrationOptions, Synthesis, synthesize, unwrap

__all__ = ["Applier", "ApplyError", "Change", "apply_stack", "destroy"]

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
    DOCKER_NETWORK: {"*"},
    DOCKER_CONTAINER: _CONTAINER_INPUTS - _CONTAINER_UPDATES - _CONTAINER_STATE_ONLY,
    LOCAL_COMMAND: {"triggers"},
    USER_RUNNER: RUNNER_REPLACE_ON,
}
COMMAND_TIMEOUT_S = 300
SEED_ENV = "FORGEWAY_APPLY_SEED"
# Each resource waits up to this long (drawn from the seed) before it is applied.
MAX_DELAY_S = 0.5
# Worker threads the SDK calls handle from: the engine's own default is unbounded
# (`pulumi up --parallel`, default 2147483647); the mock path's default executor has
# min(32, cores + 4) threads (concurrent.futures.ThreadPoolExecutor), 6 on a 2-core machine.
WORKERS = 64


# --- SSH -------------------------------------------------------------------------


def _target(conn: Mapping[str, Any]) -> SshTarget:
    return SshTarget(
        address=conn["host"],
        port=int(conn.get("port", 22)),
        user=conn.get("user", "root"),
        host_key=conn.get("hostKey"),
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFUSED = "forgeway-applier-setenv-refused:"  # a marker line on stderr, never a value
PREVIOUS_OUTPUT_ENV = ("PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR")


def _env_check(required: Mapping[str, str], optional: Mapping[str, str]) -> str:
    """Shell lines that report each variable sshd did not set (names only, no values).

    pulumi-command sends ``environment`` as SSH "env" requests (session.Setenv in
    provider/pkg/provider/remote/commandOutputs.go, v1.2.1) with want-reply, so a
    variable that sshd refuses (it accepts only names matching AcceptEnv) fails the
    command before it runs; PULUMI_COMMAND_STDOUT/STDERR are sent the same way but a
    refusal is only a warning. OpenSSH's client sends "env" without want-reply and
    says nothing, so the session itself checks which variables arrived.
    """
    lines = []
    for name in sorted(required):
        lines.append(f'[ -n "${{{name}+x}}" ] || {{ echo {_REFUSED}{name} >&2; exit 255; }}')
    for name in sorted(optional):
        lines.append(f'[ -n "${{{name}+x}}" ] || echo {_REFUSED}{name} >&2')
    return "".join(line + "\n" for line in lines)


# --- the applier --------------------------------------------------------------------


def apply_seed(seed: int | None = None) -> int:
    """The seed of an apply's order: ``seed``, else FORGEWAY_APPLY_SEED, else a fresh one."""
    if seed is not None:
        return seed
    text = os.environ.get(SEED_ENV, "").strip()
    if not text:
        return random.SystemRandom().randrange(1 << 32)
    try:
        return int(text)
    except ValueError as exc:
        raise ApplyError(f"{SEED_ENV}={text!r}: expected an integer seed") from exc


class Applier:
    """Performs resources as the SDK resolves them; see the module docstring."""

    def __init__(
        self,
        state_path: Path,
        log: Callable[[str], None] = print,
        *,
        seed: int | None = None,
        max_delay_s: float = MAX_DELAY_S,
        resolve: Mapping[str, str] | None = None,
        resolve6: Mapping[str, str] | None = None,
        replace: Collection[str] = (),
    ) -> None:
        self.state = State.load(state_path)
        # `pulumi up --replace URN`: each is replaced (in the engine's order) even if unchanged.
        self._replace = {key_of_urn(urn) for urn in replace}
        self.log = log
        self.gitlab = GitLab(resolve, log)  # resolve: the lab's stand-in for DNS (tools/applier/gitlab.py)
        # And in the containers it creates, with the IPv6 addresses (AAAA) too (tools/applier/docker.py).
        self.container_names = {name: [address] for name, address in (resolve or {}).items()}
        for name, address in (resolve6 or {}).items():
            self.container_names.setdefault(name, []).append(address)
        self.changes: list[Change] = []
        self.seed = apply_seed(seed)
        self._max_delay_s = max_delay_s
        self._seen: set[str] = set()
        self._lock = threading.Lock()  # the state, changes, seen keys and the first failure
        self._failed: str | None = None  # the first resource that failed: nothing new starts after it
        self.first_error: Exception | None = None  # its error, the one an apply reports
        self._agent: SshAgent | None = None
        self._agent_lock = threading.Lock()
        self._command_keys: list[str] = []  # privateKeys of Command connections registered in this run

    # -- called by the mock monitor, from worker threads --

    def handle(self, args: Any) -> tuple[str, dict[str, Any]]:
        """Apply one resource. Calls come concurrently, each once its dependencies are done."""
        if not args.custom:
            return f"{args.name}-component", dict(args.inputs)  # components do nothing themselves
        options = getattr(args, "options", None) or RegistrationOptions()
        key = f"{args.typ}::{args.name}"
        # A per-resource delay drawn from the seed: independent resources start in a
        # different order for each seed, and dependents still wait (the SDK calls handle
        # only once a resource's inputs and dependsOn have resolved).
        time.sleep(self.delay(key))
        with self._lock:
            if self._failed is not None:
                # As the engine: once a step fails, no new step starts (in-flight ones finish).
                raise ApplyError(f"{key}: not applied, {self._failed} failed first")
        try:
            return self._handle(args.typ, args.name, unwrap(args.inputs), getattr(args, "provider", "") or "", options)
        except Exception as exc:
            with self._lock:
                if self._failed is None:
                    self._failed, self.first_error = key, exc
            raise

    def delay(self, key: str) -> float:
        """Seconds resource ``key`` (``type::name``) waits before it is applied under this seed."""
        return random.Random(f"{self.seed}:{key}").random() * self._max_delay_s  # noqa: S311 (an order, not a secret)

    def _handle(
        self, typ: str, name: str, inputs: dict[str, Any], provider: str, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        key = f"{typ}::{name}"
        flags: dict[str, Any] = {
            "protect": options.protect,
            "retain_on_delete": options.retain_on_delete,
            "delete_before_replace": options.delete_before_replace,
            "dependencies": sorted({key_of_urn(urn) for urn in options.dependencies}),
        }
        with self._lock:
            if key in self._seen:
                raise ApplyError(f"{key} is registered twice in one run")
            self._seen.add(key)
            if typ == "command:remote:Command":
                self._note_keys(inputs.get("connection") or {})
            uses_provider = typ.startswith("docker:") or typ == USER_RUNNER
            provider_inputs = self._provider_inputs(key, provider) if uses_provider else {}
            previous = self.state.entries.get(key)
            forced = previous is not None and key in self._replace
            if previous is not None and not forced and previous.inputs == inputs and not _due_for_renewal(previous):
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
            op = "replace" if forced or "*" in replace_on or changed & replace_on else "update"
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
                with self._lock:
                    del self.state.entries[key]  # gone: a failing create must not leave it in the state
                    self.state.save()
                resource_id, outputs = self._create(typ, name, inputs, provider_inputs)
            else:
                resource_id, outputs = self._create(typ, name, inputs, provider_inputs)
                self._remove(previous)  # create-then-delete, the engine's default order
        with self._lock:  # seq is the order of completion: a dependent's is above its dependencies'
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
        """Delete what the program no longer registers, dependents first (state.delete_order).

        A protected resource stops the run (as in the engine), unless
        ``exclude_protected``, which leaves it in the state and says so.
        """
        stale = delete_order(e for k, e in self.state.entries.items() if k not in self._seen)
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
        with self._agent_lock:
            if self._agent is not None:
                self._agent.close()
                self._agent = None

    # -- per type --

    def _create(
        self, typ: str, name: str, inputs: dict[str, Any], provider_inputs: Mapping[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        """(resource id, or None for "name-seq"; outputs) of a new resource."""
        if typ in ("command:remote:Command", LOCAL_COMMAND):
            local = typ == LOCAL_COMMAND
            return None, run_local(name, inputs, "create") if local else self._command(
                name, inputs, "create", inputs.get("create")
            )
        if typ == "random:index/randomBytes:RandomBytes":
            raw = os.urandom(int(inputs["length"]))
            return None, {**inputs, "base64": base64.b64encode(raw).decode(), "hex": raw.hex()}
        if typ == "random:index/randomPassword:RandomPassword":
            return None, {**inputs, "result": random_password(inputs)}
        if typ in _TLS_EMULATIONS:
            return None, {**inputs, **_TLS_EMULATIONS[typ](inputs)}
        if typ in _DOCKER_CREATE:
            return _DOCKER_CREATE[typ](self._docker(typ, name, provider_inputs, inputs), name, inputs)
        if typ in GITLAB_TYPES or typ.startswith("pulumi:providers:"):
            gitlab = typ in GITLAB_TYPES
            return self.gitlab.create(typ, name, inputs, provider_inputs) if gitlab else (None, dict(inputs))
        raise ApplyError(f"the lab applier does not emulate {typ} (resource {name})")

    def _update(
        self, typ: str, name: str, inputs: dict[str, Any], previous: Entry, provider_inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        if typ == "command:remote:Command":
            script = inputs.get("update") or inputs.get("create")
            return self._command(name, inputs, "update", script, previous=previous.outputs)
        if typ == LOCAL_COMMAND:
            return run_local(name, inputs, "update", previous.outputs)
        if typ in GITLAB_TYPES:
            return self.gitlab.update(typ, name, inputs, previous, provider_inputs)
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
        """Delete one resource on its host (called without the state lock)."""
        if entry.type == "command:remote:Command" and entry.inputs.get("delete"):
            # The provider deletes with the state's inputs (environment included) and outputs.
            self._command(entry.name, entry.inputs, "delete", entry.inputs["delete"], previous=entry.outputs)
        if entry.type == LOCAL_COMMAND:
            run_local(entry.name, entry.inputs, "delete", entry.outputs)
        if entry.type in (*_DOCKER_DELETE, USER_RUNNER):
            # The provider as it is now, if it is still in the state; else as it was.
            with self._lock:
                current = self._provider_entry(entry.provider)
            provider_inputs = current.inputs if current is not None else entry.provider_inputs
            if entry.type == USER_RUNNER:
                self.gitlab.delete(entry, provider_inputs)
                return
            _DOCKER_DELETE[entry.type](self._docker(entry.type, entry.name, provider_inputs, entry.inputs), entry)

    # -- ssh and docker plumbing --

    def _agent_with(self, keys: list[str]) -> SshAgent:
        """The apply's ssh-agent (started on first use) holding ``keys``."""
        with self._agent_lock:
            if self._agent is None:
                self._agent = SshAgent()
            agent = self._agent
        for key in keys:
            agent.add(key)
        return agent

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
            if entry.type.startswith("pulumi:providers:") and entry.id == provider_id:
                return entry
        return None

    def _provider_inputs(self, key: str, reference: str) -> dict[str, Any]:
        entry = self._provider_entry(reference)
        if entry is None and key.startswith(USER_RUNNER):
            raise ApplyError(f"{key}: its gitlab provider {reference or '(default)'} is not applied; the lab reaches "
                             "GitLab only through an explicit pulumi:providers:gitlab")  # fmt: skip
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
        with self._lock:
            keys = list(self._command_keys) or [k for k in (self._state_key(),) if k]
        if not keys:
            raise ApplyError(
                f"{typ} {name}: no ssh key for docker host {host.label}: the applier uses the privateKey of the "
                "program's Command connections, and none is registered or in the state"
            )
        client = DockerClient(host, self._agent_with(keys).env())
        return _Docker(
            client, f"{typ} {name}", host.label, _secret_values(inputs), self.log, lab_names=self.container_names
        )

    def _command(
        self,
        name: str,
        inputs: Mapping[str, Any],
        step: str,
        script: str | None,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``script`` as pulumi-command does (remote/commandOutputs.go, ``run``):
        ``environment`` and, with ``addPreviousOutputInEnv`` (default true), the
        ``previous`` outputs' non-empty stdout/stderr as SSH env requests."""
        outputs = {**inputs, "stdout": "", "stderr": ""}
        if not script:
            return outputs
        conn = inputs["connection"]
        env = {str(k): str(v) for k, v in (inputs.get("environment") or {}).items()}
        previous_env: dict[str, str] = {}
        if previous is not None and inputs.get("addPreviousOutputInEnv", True) is not False:
            for var, out in zip(PREVIOUS_OUTPUT_ENV, ("stdout", "stderr"), strict=True):
                if previous.get(out):
                    previous_env[var] = str(previous[out])
        for var in (*env, *previous_env):
            if not _ENV_NAME.fullmatch(var):
                raise ApplyError(f"{name}: environment variable name {var!r} is not a shell name")
        done = self._ssh(conn, _env_check(env, previous_env) + script, inputs.get("stdin"), {**env, **previous_env})
        kept: list[str] = []
        refused: list[str] = []
        for line in done.stderr.splitlines(keepends=True):
            (refused if line.startswith(_REFUSED) else kept).append(line)
        stderr = "".join(kept)
        for line in refused:
            var = line.strip().removeprefix(_REFUSED)
            if var in env:
                raise ApplyError(
                    f"{name}: `{step}` on host {conn['host']}: could not set environment variable {var!r}: its sshd "
                    "does not accept it (AcceptEnv); pulumi-command fails the same way"
                )
            self.log(f"warning: {name}: unable to set {var!r} on host {conn['host']} (its sshd does not accept it)")
        if done.returncode != 0:
            raise ApplyError(
                f"{name}: `{step}` failed on host {conn['host']} (exit {done.returncode}): "
                f"{stderr.strip()[-2000:] or done.stdout.strip()[-2000:]}"
            )
        return {**outputs, "stdout": done.stdout.rstrip("\n"), "stderr": stderr.rstrip("\n")}

    def _ssh(
        self, conn: Mapping[str, Any], command: str, stdin: str | None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``command`` over ssh; ``env`` goes as SSH env requests (SendEnv: the values
        stay in ssh's own environment, off every command line)."""
        agent = self._agent_with(
            [holder["privateKey"] for holder in (conn, conn.get("proxy") or {}) if holder.get("privateKey")]
        )
        target = _target(conn)
        jump = _target(conn["proxy"]) if conn.get("proxy") else None
        argv = [
            "ssh",
            *ssh_options(target, jump),
            "-o",
            f"ConnectTimeout={int(conn.get('perDialTimeout', 15))}",
            *(arg for var in sorted(env or {}) for arg in ("-o", f"SendEnv={var}")),
            ssh_destination(target),
            command,
        ]
        # pulumi-command dials again after a failed dial, up to the connection's dialErrorLimit
        # (default 10; -1: no limit). A dial refused for a moment (an sshd reloading its
        # config re-execs and closes its listener, as the VPS's backup SFTP step does while a
        # runner's command jumps through it) is retried here as there; a command never ran.
        limit = int(conn.get("dialErrorLimit", DIAL_ERROR_LIMIT))
        attempt = 1
        while True:
            try:
                done = subprocess.run(
                    argv,
                    input=stdin or "",
                    capture_output=True,
                    text=True,
                    env={**agent.env(), **(env or {})},
                    timeout=COMMAND_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise ApplyError(f"host {conn['host']}: no answer within {COMMAND_TIMEOUT_S} s") from exc
            if not dial_failed(done) or (limit >= 0 and attempt >= limit):
                return done
            time.sleep(min(0.2 * attempt, 1.0))
            attempt += 1


# pulumi-command's Connection.dialErrorLimit default.
DIAL_ERROR_LIMIT = 10
# What ssh says when it could not open the session (connecting, or in the identification
# exchange, a jump host's included), before any command ran.
_DIAL_ERRORS = ("ssh: connect to host ", "kex_exchange_identification:", "Connection closed by ")


def dial_failed(done: subprocess.CompletedProcess[str]) -> bool:
    """ssh's exit 255 with nothing from a command and a dial error on stderr."""
    if done.returncode != 255 or done.stdout:
        return False
    return any(line.startswith(_DIAL_ERRORS) for line in done.stderr.splitlines())


def apply_stack(
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    state_path: Path,
    log: Callable[[str], None] = print,
    *,
    seed: int | None = None,
    resolve: Mapping[str, str] | None = None,
    resolve6: Mapping[str, str] | None = None,
    replace: Collection[str] = (),
) -> tuple[Synthesis, list[Change]]:
    """Apply one stack (in this process: one apply per process, as with synthesis).

    ``seed`` (else FORGEWAY_APPLY_SEED, else a fresh one, printed) draws each
    resource's delay, hence the order in which independent resources run."""
    applier = Applier(state_path, log, seed=seed, resolve=resolve, resolve6=resolve6, replace=replace)
    log(f"apply seed {applier.seed} (repeat its delays with {SEED_ENV}={applier.seed})")
    try:
        try:
            synthesis = synthesize(stack, config, secret_keys, handler=applier.handle, workers=WORKERS)
        except Exception:
            if applier.first_error is not None:
                # The SDK may surface any of the failed registrations: report the first.
                raise applier.first_error from None
            raise
        applier.finish()
    finally:
        applier.close()
    return synthesis, applier.changes


def destroy(
    state_path: Path,
    log: Callable[[str], None] = print,
    *,
    exclude_protected: bool = False,
    resolve: Mapping[str, str] | None = None,
) -> list[Change]:
    """Delete everything in the state, dependents first (what `pulumi destroy` would).

    A protected resource fails the destroy, unless ``exclude_protected`` (the CLI's
    ``--exclude-protected``): then protected resources stay in the state, and the log
    names them.
    """
    applier = Applier(state_path, log, seed=0, resolve=resolve)  # deletes run one at a time: no order to draw
    try:
        applier.finish(exclude_protected=exclude_protected)
    finally:
        applier.close()
    return applier.changes


# The provider's character sets (terraform-provider-random, internal/random/string.go).
_PASSWORD_SETS = {
    "lower": "abcdefghijklmnopqrstuvwxyz",
    "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "numeric": "0123456789",
    "special": "!@#$%&*()-_=+[]{}<>:?",
}


def random_password(inputs: Mapping[str, Any]) -> str:
    """random_password's ``result`` as the provider makes it: exactly ``length`` characters
    from the enabled sets (``special`` replaced by ``overrideSpecial``), at least each
    ``min*`` of its set, shuffled."""
    import secrets

    sets = dict(_PASSWORD_SETS)
    if inputs.get("overrideSpecial") is not None:
        sets["special"] = str(inputs["overrideSpecial"])
    enabled = {k: v for k, v in sets.items() if inputs.get(k, True) is not False and v}
    chars = [secrets.choice(enabled[k]) for k in enabled for _ in range(int(inputs.get(f"min{k.title()}") or 0))]
    length = int(inputs["length"])
    if len(chars) > length:
        raise ApplyError(f"random_password: the min* counts ({len(chars)}) exceed length {length}")
    pool = "".join(enabled.values())
    chars += [secrets.choice(pool) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def main() -> int:
    """``python -m tools.applier``: a JSON request on stdin (secrets never on argv).

    {"action": "apply"|"destroy"|"refresh", "stack": ..., "config": {...}, "secret_keys": [...],
    "state": "path", "exclude_protected": false, "seed": null, "resolve": {"name": "address"},
    "resolve6": {"name": "IPv6 address"}, "replace": [urn, ...]}; prints the
    changes as JSON lines on stdout, progress on stderr. ``refresh`` (tools/applier/refresh.py) needs only "state".
    "resolve" is the lab's stand-in for DNS: where the deployer's HTTP clients (the gitlab
    provider's) connect for a name; TLS still checks the name (tools/applier/gitlab.py).
    Containers the apply creates resolve those names to both maps' addresses (A and AAAA).
    """
    import sys

    request = json.load(sys.stdin)
    state_path = Path(request["state"])
    resolve = {str(k): str(v) for k, v in (request.get("resolve") or {}).items()}
    resolve6 = {str(k): str(v) for k, v in (request.get("resolve6") or {}).items()}

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if request["action"] == "refresh":
            from tools.applier.refresh import refresh

            changes = refresh(state_path, log, resolve=resolve)
        elif request["action"] == "destroy":
            exclude = bool(request.get("exclude_protected"))
            changes = destroy(state_path, log, exclude_protected=exclude, resolve=resolve)
        else:
            seed = request.get("seed")
            _, changes = apply_stack(
                request["stack"], request["config"], request["secret_keys"], state_path, log,
                seed=None if seed is None else int(seed), resolve=resolve, resolve6=resolve6,
                replace=[str(urn) for urn in request.get("replace") or []],
            )  # fmt: skip
    except ApplyError as exc:
        print(f"apply failed: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(json.dumps(asdict(change)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
