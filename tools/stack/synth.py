# Over 400 lines on purpose: the recording monitor and the wire-format helpers its readers use are
# one contract with the SDK's mocks (pulumi/runtime/mocks.py); the stand-in states go with them.
"""Run the forgeway program under Pulumi's mock monitor and record what it registers.

This is not the Pulumi engine: no provider runs and nothing is created. The SDK's
MockMonitor answers each registration; a recording subclass keeps every request's
type, name, parent, provider, dependencies, options and inputs (as the wire format
has them, so secret values stay wrapped in Pulumi's secret marker), and the stack
outputs. Tests, the benchmark and the offline plan read that record.

The program is forgeway's own ``__main__.py`` unless ``synthesize`` is given another
one (``examples/consumer``): a ``pulumi.StackReference`` is answered with the outputs
passed as ``stack_references``, in the shape the engine's builtin provider gives
(``name``, ``outputs`` with secrets where they were, ``secretOutputNames``).

One synthesis per process: the Pulumi runtime keeps global state. Use
``python -m tools.stack.synth`` (or ``synthesize_in_subprocess``) for a second stack.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import runpy
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
PROJECT = "forgeway"
PROGRAM = ROOT / "__main__.py"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
# Pulumi's wire marker for a secret value: {SIG_KEY: SECRET_SIG, "value": ...}
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (a marker, not a password)

__all__ = [
    "STACK_REFERENCE",
    "Registration",
    "RegistrationOptions",
    "Synthesis",
    "contains_secret",
    "is_secret_value",
    "stack_config_strings",
    "stack_reference_state",
    "synthesize",
    "synthesize_in_subprocess",
    "unwrap",
]


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str
    dependencies: list[str]
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    additional_secret_outputs: list[str]
    ignore_changes: list[str]
    replace_on_changes: list[str]
    inputs: dict[str, Any]
    read: bool = False  # a ReadResource (e.g. a StackReference), not a RegisterResource
    custom_timeouts: dict[str, str] = field(default_factory=dict)  # create/update/delete, as given


@dataclass(frozen=True)
class RegistrationOptions:
    """Resource options the engine honours that the mock monitor does not hand to
    ``new_resource``: a custom handler finds them as ``args.options``."""

    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    dependencies: tuple[str, ...] = ()  # URNs: dependsOn, property dependencies, parent, provider reference


def _dependencies(request: Any) -> tuple[str, ...]:
    """Every URN a RegisterResource request depends on (sorted, each once)."""
    urns = {*request.dependencies, *(u for deps in request.propertyDependencies.values() for u in deps.urns)}
    urns |= {u for u in (request.parent, request.provider) if u}
    return tuple(sorted(urns))


# The options of the RegisterResource request being answered on this thread: the mock
# monitor calls new_resource synchronously inside RegisterResource, on the same thread.
_registering = threading.local()


@dataclass
class Synthesis:
    stack: str
    seconds: float
    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.resources}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Synthesis:
        return cls(
            stack=data["stack"],
            seconds=data["seconds"],
            resources=[Registration(**r) for r in data["resources"]],
            outputs=data["outputs"],
        )


def is_secret_value(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def contains_secret(value: Any) -> bool:
    if is_secret_value(value):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


def unwrap(value: Any) -> Any:
    """The value with secret markers removed (for assertions on content)."""
    if is_secret_value(value):
        return unwrap(value.get("value"))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _from_wire(value: Any) -> Any:
    """A wire-format value with every secret marker turned back into a secret Output."""
    import pulumi

    if is_secret_value(value):
        return pulumi.Output.secret(_from_wire(value.get("value")))
    if isinstance(value, dict):
        return {k: _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


def stack_reference_state(name: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the engine's builtin provider reads for a StackReference (pulumi/pulumi
    pkg/resource/deploy/builtins.go, readStackReference): the outputs with their secrets
    in place, and the sorted names of the outputs that contain one. The SDK makes the
    whole ``outputs`` property secret and each ``get_output(name)`` secret exactly when
    ``name`` is in ``secretOutputNames`` (pulumi/stack_reference.py)."""
    return {
        "name": name,
        "outputs": {k: _from_wire(v) for k, v in outputs.items()},
        "secretOutputNames": sorted(k for k, v in outputs.items() if contains_secret(v)),
    }


def stack_config_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Config values as the CLI hands them to a program: strings, objects as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def _mock_state(typ: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What a provider would return: the inputs, plus the outputs the program reads."""
    import datetime
    import hashlib

    import pulumi

    def mock_pem(label: str) -> str:
        # PEM-armoured, distinct per resource: the body names the type and digests the inputs.
        digest = hashlib.sha256(json.dumps(unwrap(inputs), sort_keys=True, default=str).encode()).hexdigest()[:32]
        body = base64.b64encode(f"mock {typ} {digest}".encode()).decode()
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"

    state = dict(inputs)
    if typ == "random:index/randomBytes:RandomBytes":
        raw = os.urandom(int(inputs.get("length", 32)))
        state["base64"] = pulumi.Output.secret(base64.b64encode(raw).decode())
        state["hex"] = pulumi.Output.secret(raw.hex())
    elif typ == "random:index/randomPassword:RandomPassword":
        # As long as asked, letters and digits only (every class the provider may be told to use).
        length = int(inputs.get("length", 24))
        state["result"] = pulumi.Output.secret(base64.b32encode(os.urandom(length)).decode()[:length].lower())
    elif typ == "tls:index/privateKey:PrivateKey":
        state["privateKeyPem"] = pulumi.Output.secret("-----BEGIN PRIVATE KEY-----\nmock\n-----END PRIVATE KEY-----\n")
        state["publicKeyPem"] = "-----BEGIN PUBLIC KEY-----\nmock\n-----END PUBLIC KEY-----\n"
    elif typ == "tls:index/certRequest:CertRequest":
        state["certRequestPem"] = mock_pem("CERTIFICATE REQUEST")
        state["keyAlgorithm"] = "ECDSA"
    elif typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
        # Distinct per certificate (a chain's parts can be told apart), with the
        # validity outputs the provider computes. A CA certificate is a real one (the
        # program parses it to render trust files), made the way the lab's applier does.
        state["certPem"] = _real_ca_pem() if inputs.get("isCaCertificate") else mock_pem("CERTIFICATE")
        start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        end = start + datetime.timedelta(hours=int(inputs.get("validityPeriodHours", 0)))
        state["validityStartTime"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        state["validityEndTime"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
        state["readyForRenewal"] = False
        if typ == "tls:index/locallySignedCert:LocallySignedCert":
            state["caKeyAlgorithm"] = "ECDSA"
    elif typ == "docker:index/remoteImage:RemoteImage":
        # The pulled image's id, as the provider reports it (a digest of the content).
        image_id = "sha256:" + hashlib.sha256(str(inputs.get("name")).encode()).hexdigest()
        state["imageId"] = image_id
        state["repoDigest"] = f"{str(inputs.get('name')).rsplit(':', 1)[0]}@{image_id}"
    elif typ in ("command:remote:Command", "command:local:Command"):
        state.setdefault("stdout", "")
        state.setdefault("stderr", "")
    elif typ == "gitlab:index/userRunner:UserRunner":
        # The runner's authentication token, which POST /user/runners returns once.
        state["token"] = pulumi.Output.secret("glrt-" + base64.urlsafe_b64encode(os.urandom(15)).decode())
    return state


def _real_ca_pem() -> str:
    from tools.applier.tls import _tls_private_key, _tls_self_signed  # the applier's own emulation

    key = _tls_private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    inputs = {"privateKeyPem": key, "isCaCertificate": True, "validityPeriodHours": 24}
    pem: str = _tls_self_signed(inputs)["certPem"]
    return pem


def _registration(request: Any, urn: str, inputs: dict[str, Any], *, read: bool = False) -> Registration:
    """One record from a RegisterResource request, or a ReadResource one (``read``: a read has
    no options, and is always custom)."""
    return Registration(
        urn=urn,
        type=request.type,
        name=request.name,
        parent=request.parent,
        custom=True if read else bool(request.custom),
        provider=request.provider,
        dependencies=sorted(request.dependencies),
        protect=False if read else bool(request.protect),
        retain_on_delete=False if read else bool(request.retainOnDelete),
        delete_before_replace=False if read else bool(request.deleteBeforeReplace),
        additional_secret_outputs=list(request.additionalSecretOutputs),
        ignore_changes=[] if read else list(request.ignoreChanges),
        replace_on_changes=[] if read else list(request.replaceOnChanges),
        inputs=inputs,
        read=read,
        custom_timeouts={} if read else _custom_timeouts(request.customTimeouts),
    )


def _custom_timeouts(timeouts: Any) -> dict[str, str]:
    """The request's customTimeouts that are set (e.g. ``{"delete": "65m"}``)."""
    return {op: str(getattr(timeouts, op)) for op in ("create", "update", "delete") if getattr(timeouts, op, "")}


ResourceHandler = Callable[[Any], tuple[str, dict[str, Any]]]


def synthesize(
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    handler: ResourceHandler | None = None,
    *,
    program: Path = PROGRAM,
    project: str = PROJECT,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int | None = None,
) -> Synthesis:
    """Run a program (forgeway's __main__.py by default) once under mocks in this
    process and return the record.

    ``handler(MockResourceArgs) -> (id, state)`` replaces the default mock (echo the
    inputs, add the outputs the program reads); the lab's applier passes one that
    really performs each resource. The handler's args carry ``options``
    (:class:`RegistrationOptions`: protect, retainOnDelete, deleteBeforeReplace of the
    request); the default mock path does not change.

    ``program`` and ``project`` name another Pulumi program (its directory goes on
    ``sys.path``, as the Python language host does). ``stack_references`` maps a stack
    name (``org/project/stack``) to its outputs in wire format (a ``Synthesis.outputs``):
    the answer to a ``StackReference`` to that stack; any other name fails, as the
    engine does for a stack that does not exist.

    ``workers`` sizes the thread pool the SDK registers resources from (its
    ``run_in_executor(None, …)`` calls use the event loop's default executor, which has
    min(32, cores + 4) threads): at most that many ``handler`` calls run at once.
    """
    import pulumi
    from google.protobuf import json_format
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime.settings import set_root_resource
    from pulumi.runtime.stack import run_in_stack
    from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

    record = Synthesis(stack=stack, seconds=0.0)

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
            if args.typ == STACK_REFERENCE:
                # A read: the SDK sets the id to the referenced stack's name.
                name = str(args.inputs.get("name") or args.resource_id)
                known = stack_references or {}
                if name not in known:
                    raise RuntimeError(f"unknown stack {name!r} (stack_references has {sorted(known)})")
                return name, stack_reference_state(name, known[name])
            if handler is not None:
                args.options = getattr(_registering, "options", None) or RegistrationOptions()  # type: ignore[attr-defined]
                return handler(args)
            return f"{args.name}-id", _mock_state(args.typ, args.inputs)

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
            return {}, None

    class RecordingMonitor(pulumi_mocks.MockMonitor):
        def RegisterResource(self, request: Any) -> Any:  # gRPC method name
            _registering.options = RegistrationOptions(
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                dependencies=_dependencies(request),
            )
            try:
                response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
            finally:
                _registering.options = None
            if request.type != "pulumi:pulumi:Stack":
                record.resources.append(_registration(request, response.urn, json_format.MessageToDict(request.object)))
            return response

        def ReadResource(self, request: Any) -> Any:  # gRPC method name
            response = super().ReadResource(request)  # type: ignore[no-untyped-call]
            inputs = json_format.MessageToDict(request.properties)
            record.resources.append(_registration(request, response.urn, inputs, read=True))
            return response

        def RegisterResourceOutputs(self, request: Any) -> Any:
            if request.urn.endswith(f"pulumi:pulumi:Stack::{project}-{stack}"):
                record.outputs = json_format.MessageToDict(request.outputs)
            return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]

    os.environ["FORGEWAY_NO_DNS"] = "1"  # no lookups leave this machine from a test (__main__.py)
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=RecordingMonitor(mocks))
    pulumi.runtime.set_all_config(dict(config), secret_keys)
    sys.path.insert(0, str(ROOT))
    if program.parent != ROOT:
        sys.path.insert(0, str(program.parent))

    def run_program() -> None:
        runpy.run_path(str(program), run_name="__main__")

    started = time.perf_counter()
    # set_mocks registers (and closes) a root stack of its own; drop it so the program
    # runs inside a fresh one whose outputs are registered at the end, as under the CLI.
    set_root_resource(None)  # type: ignore[arg-type]  # the SDK accepts None: "no root yet"
    if workers is not None:
        # As the language host does for `--parallel` (pulumi/pulumi#11116).
        _ensure_event_loop().set_default_executor(ThreadPoolExecutor(max_workers=workers))  # type: ignore[no-untyped-call]
    _sync_await(run_in_stack(run_program))
    record.seconds = time.perf_counter() - started
    return record


def synthesize_in_subprocess(
    stack: str,
    config: Mapping[str, Any],
    secret_keys: list[str],
    *,
    program: Path = PROGRAM,
    project: str = PROJECT,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
) -> Synthesis:
    """Synthesize in a fresh Python process (the runtime is one-stack-per-process).
    The keywords are :func:`synthesize`'s."""
    payload = json.dumps(
        {
            "stack": stack,
            "config": stack_config_strings(config),
            "secret_keys": secret_keys,
            "program": str(program),
            "project": project,
            "stack_references": stack_references or {},
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "tools.stack.synth"],
        input=payload,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"synthesis of {project} stack {stack!r} failed:\n{done.stderr[-4000:]}")
    return Synthesis.from_json(json.loads(done.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    # Config arrives on stdin so secret values never reach a command line.
    request = json.load(sys.stdin)
    record = synthesize(
        request["stack"],
        request["config"],
        request["secret_keys"],
        program=Path(request.get("program", PROGRAM)),
        project=request.get("project", PROJECT),
        stack_references=request.get("stack_references"),
    )
    json.dump(asdict(record), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
