"""The pack served the way the Pulumi CLI serves it, driven over gRPC as the engine drives it.

``python -m pulumi.policy <engine> policies`` is how the CLI starts a Python pack: it
runs ``__main__.py``, which builds the ``PolicyPack`` and prints the port of its
analyzer server. The tests then call it like the engine: ``GetAnalyzerInfo``,
``Configure`` (the ``--policy-pack-config`` file), ``Analyze`` per resource (inputs,
secrets marked as the engine sends them) and ``AnalyzeStack``.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]  # no stubs in the venv (types-grpcio is not a dependency)
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policies import rules
from tests.policies.conftest import SynthesizedStack
from tools.stack.synth import SECRET_SIG, SIG_KEY

pytestmark = pytest.mark.policies

PACK = Path(rules.__file__).parents[1]  # policies/, the package policies/rules/ is in
START_TIMEOUT = 60


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    process = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:0", str(PACK)],
        cwd=PACK,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=START_TIMEOUT)
        assert ready, "the pack printed no port"
        line = process.stdout.readline().decode().strip()
        assert line.isdigit(), f"expected a port, got {line!r}"
        with grpc.insecure_channel(f"127.0.0.1:{line}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(dict(value), struct_pb2.Struct())


def _configure(stub: analyzer_pb2_grpc.AnalyzerStub, config: Mapping[str, Mapping[str, Any]]) -> None:
    """Every policy at its own level, with the given options, as the CLI sends a config file."""
    levels = {"mandatory": analyzer_pb2.MANDATORY, "advisory": analyzer_pb2.ADVISORY}
    stub.Configure(
        analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={
                p.name: analyzer_pb2.PolicyConfig(
                    enforcementLevel=levels[p.enforcement_level.value], properties=_struct(config.get(p.name, {}))
                )
                for p in rules.POLICIES
            }
        )
    )


def _level(diagnostic: Any) -> str:
    return "mandatory" if diagnostic.enforcementLevel == analyzer_pb2.MANDATORY else "advisory"


def test_analyzer_info_lists_every_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "forgeway"
    served = {
        p.name: ("mandatory" if p.enforcementLevel == analyzer_pb2.MANDATORY else "advisory") for p in info.policies
    }
    assert served == {p.name: p.enforcement_level.value for p in rules.POLICIES}
    schema = next(p.configSchema for p in info.policies if p.name == "vps-forwarding-ports")
    assert json_format.MessageToDict(schema.properties)["allowedPorts"]["default"] == [80, 443, 22, 5050, 8443]


def test_analyze_refuses_a_floating_image(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    _configure(analyzer, {})
    response = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(
            type="docker:index/remoteImage:RemoteImage",
            name="jetson-gitlab-image",
            urn="urn:pulumi:prod::forgeway::docker:index/remoteImage:RemoteImage::jetson-gitlab-image",
            properties=_struct({"name": "gitlab/gitlab-ce:latest", "platform": "linux/arm64"}),
            options=analyzer_pb2.AnalyzerResourceOptions(),
        )
    )
    found = [(d.policyName, _level(d)) for d in response.diagnostics]
    assert found == [("images-pinned", "mandatory")]
    assert "jetson-gitlab-image" in response.diagnostics[0].message
    assert "pin a fixed version tag" in response.diagnostics[0].message


def _unpinned_command() -> analyzer_pb2.AnalyzeRequest:
    connection = {SIG_KEY: SECRET_SIG, "value": {"host": "192.168.1.50", "user": "forgeway", "privateKey": "x"}}
    return analyzer_pb2.AnalyzeRequest(
        type="command:remote:Command",
        name="jetson-arch",
        urn="urn:pulumi:lab::forgeway::command:remote:Command::jetson-arch",
        properties=_struct({"create": "true", "connection": connection}),
        options=analyzer_pb2.AnalyzerResourceOptions(additionalSecretOutputs=["connection"]),
    )


def test_secret_connection_is_read_and_unpinned_is_mandatory(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    _configure(analyzer, {})
    found = sorted((d.policyName, _level(d)) for d in analyzer.Analyze(_unpinned_command()).diagnostics)
    assert found == [("ssh-host-keys-pinned", "mandatory"), ("ssh-host-keys-unpinned", "advisory")]


def test_the_waiver_leaves_a_warning(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    _configure(analyzer, {"ssh-host-keys-pinned": {"allowUnpinnedHostKeys": True}})
    try:
        found = [(d.policyName, _level(d)) for d in analyzer.Analyze(_unpinned_command()).diagnostics]
    finally:
        _configure(analyzer, {})
    assert found == [("ssh-host-keys-unpinned", "advisory")]


def test_the_lab_stack_passes_analyze_stack(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, lab_synth: SynthesizedStack
) -> None:
    _configure(analyzer, {})
    by_urn = {r.urn: r for r in lab_synth.synth.resources}
    resources = []
    for r in lab_synth.synth.resources:
        provider_urn = r.provider.rsplit("::", 1)[0] if r.provider else ""
        provider = None
        if provider_urn in by_urn:
            p = by_urn[provider_urn]
            provider = analyzer_pb2.AnalyzerProviderResource(
                type=p.type, urn=p.urn, name=p.name, properties=_struct(p.inputs)
            )
        resources.append(
            analyzer_pb2.AnalyzerResource(
                type=r.type,
                urn=r.urn,
                name=r.name,
                properties=_struct(r.inputs),
                options=analyzer_pb2.AnalyzerResourceOptions(
                    protect=r.protect, additionalSecretOutputs=r.additional_secret_outputs
                ),
                provider=provider,
                parent=r.parent,
            )
        )
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources))
    assert [d.message for d in response.diagnostics] == []
