"""The lab applier's pulumi-gitlab emulation (tools/applier/gitlab.py, gitlab_api.py).

A small fake GitLab API (tests/unit/applier_gitlab_fake.py: http.server over TLS,
localhost only, a throwaway CA); ``Applier.handle`` is called as the SDK calls it, with the
inputs pulumi-gitlab 10.4.0 sends (camelCase; provider config JSON-encoded, numbers as
floats). The name ``gitlab.forgeway.test`` resolves only through the applier's resolve map
(the lab's stand-in for DNS) to 127.0.0.1, and TLS checks the certificate against that name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.certs import make_ca
from tests.unit.applier_gitlab_fake import NAME, TOKEN, FakeGitLab, fake_gitlab, server_context
from tools.applier.apply import Applier, ApplyError
from tools.applier.refresh import refresh
from tools.stack.synth import SECRET_SIG, SIG_KEY, RegistrationOptions

pytestmark = pytest.mark.unit

PROVIDER = "pulumi:providers:gitlab"
RUNNER = "gitlab:index/userRunner:UserRunner"


@pytest.fixture
def gitlab(tmp_path: Path) -> Iterator[SimpleNamespace]:
    with fake_gitlab(tmp_path) as served:
        yield served


# --- driving the applier as the SDK does ---------------------------------------------


def _secret(value: Any) -> dict[str, Any]:
    return {SIG_KEY: SECRET_SIG, "value": value}


def _args(typ: str, name: str, inputs: dict[str, Any], provider: str = "") -> SimpleNamespace:
    args = SimpleNamespace(typ=typ, name=name, custom=True, inputs=inputs, provider=provider)
    args.options = RegistrationOptions()
    return args


def _provider_inputs(g: SimpleNamespace, **extra: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {"baseUrl": g.base, "token": _secret(TOKEN), "cacertFile": str(g.ca_file)}
    inputs["earlyAuthCheck"] = "true"  # the SDK JSON-encodes non-string provider config
    inputs.update(extra)
    return inputs


def _runner_inputs(**extra: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "runnerType": "instance_type",
        "description": "forgeway runner on runner-amd64",
        "tagLists": ["amd64", "docker"],
        "untagged": False,
        "accessLevel": "ref_protected",
        "locked": True,
        "maximumTimeout": 3600.0,  # protobuf numbers arrive as floats
        "paused": False,
    }
    inputs.update(extra)
    return inputs


@dataclass
class Run:
    applier: Applier
    log: list[str]


def _run(
    g: SimpleNamespace,
    runner: dict[str, Any] | None,
    provider: dict[str, Any] | None = None,
    resolve: dict[str, str] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """One `up`: the provider, then (if given) the runner through it, then the deletes."""
    log: list[str] = []
    applier = Applier(
        g.tmp / "state.json",
        log.append,
        seed=0,
        max_delay_s=0,
        resolve={NAME: "127.0.0.1"} if resolve is None else resolve,
    )
    provider_id, _ = applier.handle(_args(PROVIDER, "gitlab-api", provider or _provider_inputs(g)))
    outputs: dict[str, Any] = {}
    if runner is not None:
        reference = f"urn:pulumi:lab::forgeway::{PROVIDER}::gitlab-api::{provider_id}"
        runner_id, outputs = applier.handle(_args(RUNNER, "runner-amd64-runner-registration", runner, reference))
        outputs = {**outputs, "id": runner_id}
    applier.finish()
    applier.close()
    return Run(applier, log), outputs


def _ops(run: Run) -> list[tuple[str, str]]:
    return [(c.op, c.type) for c in run.applier.changes]


# --- gitlab: the provider and UserRunner ---------------------------------------------


def test_create_update_replace_and_delete_go_to_gitlabs_api_with_a_bearer_token(gitlab: SimpleNamespace) -> None:
    fake: FakeGitLab = gitlab.fake
    run, out = _run(gitlab, _runner_inputs())
    assert _ops(run) == [("create", PROVIDER), ("create", RUNNER)]
    runner_id = out["id"]
    assert runner_id == "42" and list(fake.runners) == [42]
    assert out["token"] == _secret(fake.runners[42]["token"])  # a secret output, as the SDK marks it
    assert out["accessLevel"] == "ref_protected" and out["maximumTimeout"] == 3600
    methods = [(m, p) for m, p, _, _ in fake.requests]
    assert methods == [("GET", "/api/v4/user"), ("POST", "/api/v4/user/runners"), ("GET", "/api/v4/runners/42")]
    assert all(
        h["authorization"] == f"Bearer {TOKEN}" and h["host"] == f"{NAME}:{fake.port}" for _, _, h, _ in fake.requests
    )
    assert "private-token" not in fake.requests[1][2]
    assert fake.requests[1][3] == {
        "runner_type": "instance_type",
        "description": "forgeway runner on runner-amd64",
        "paused": False,
        "locked": True,
        "run_untagged": False,
        "tag_list": ["amd64", "docker"],
        "access_level": "ref_protected",
        "maximum_timeout": 3600,
    }
    state = json.loads((gitlab.tmp / "state.json").read_text())
    entry = state["entries"][f"{RUNNER}::runner-amd64-runner-registration"]
    assert entry["id"] == "42" and entry["outputs"]["token"][SIG_KEY] == SECRET_SIG
    assert state["entries"][f"{PROVIDER}::gitlab-api"]["outputs"]["token"] == _secret(TOKEN)

    # Same inputs: nothing happens to the runner.
    fake.requests.clear()
    run, out = _run(gitlab, _runner_inputs())
    assert _ops(run) == [("same", PROVIDER), ("same", RUNNER)] and fake.requests == []

    # accessLevel and tags update in place: PUT, same id, same token.
    token = fake.runners[42]["token"]
    run, out = _run(gitlab, _runner_inputs(accessLevel="not_protected", tagLists=["amd64"]))
    assert _ops(run) == [("same", PROVIDER), ("update", RUNNER)]
    assert ("PUT", "/api/v4/runners/42") in [(m, p) for m, p, _, _ in fake.requests]
    assert fake.runners[42]["access_level"] == "not_protected" and fake.runners[42]["tag_list"] == ["amd64"]
    assert out["id"] == "42" and out["token"] == _secret(token)

    # runnerType/groupId force a replacement: a new runner first, then the old one deleted.
    fake.requests.clear()
    run, out = _run(gitlab, _runner_inputs(runnerType="group_type", groupId=7.0))
    assert _ops(run) == [("same", PROVIDER), ("replace", RUNNER)]
    assert [(m, p) for m, p, _, _ in fake.requests if m != "GET"] == [
        ("POST", "/api/v4/user/runners"),
        ("DELETE", "/api/v4/runners/42"),
    ]
    assert fake.requests[1][3]["group_id"] == 7
    assert out["id"] == "43" and list(fake.runners) == [43] and out["token"] != _secret(token)

    # Gone from the program: deleted in GitLab.
    run, _ = _run(gitlab, None)
    assert _ops(run) == [("same", PROVIDER), ("delete", RUNNER)]
    assert fake.runners == {}


def test_a_404_on_delete_fails_as_the_provider_fails_and_refresh_drops_it(gitlab: SimpleNamespace) -> None:
    _run(gitlab, _runner_inputs())
    gitlab.fake.runners.clear()  # deleted in GitLab behind Pulumi's back
    with pytest.raises(ApplyError, match=r"Unable to delete runner 42 .*refresh.*404"):
        _run(gitlab, None)
    log: list[str] = []
    changes = refresh(gitlab.tmp / "state.json", log.append, resolve={NAME: "127.0.0.1"})
    assert [(c.op, c.type) for c in changes] == [("same", PROVIDER), ("gone", RUNNER)]
    run, _ = _run(gitlab, None)
    assert _ops(run) == [("same", PROVIDER)]


def test_refresh_reads_access_level_and_tags_back_as_drift_and_the_next_up_corrects_it(
    gitlab: SimpleNamespace,
) -> None:
    _run(gitlab, _runner_inputs())
    assert [(c.op) for c in refresh(gitlab.tmp / "state.json", lambda _: None, resolve={NAME: "127.0.0.1"})] == [
        "same",
        "same",
    ]
    gitlab.fake.runners[42].update(access_level="not_protected", tag_list=["docker", "amd64", "extra"])
    log: list[str] = []
    changes = refresh(gitlab.tmp / "state.json", log.append, resolve={NAME: "127.0.0.1"})
    assert [c.op for c in changes] == ["same", "read"]
    assert any("accessLevel, tagLists" in line for line in log), log
    state = json.loads((gitlab.tmp / "state.json").read_text())
    inputs = state["entries"][f"{RUNNER}::runner-amd64-runner-registration"]["inputs"]
    assert inputs["accessLevel"] == "not_protected" and inputs["tagLists"] == ["amd64", "docker", "extra"]
    # Tags in another order are the same set: no drift.
    gitlab.fake.runners[42].update(access_level="ref_protected", tag_list=["docker", "amd64"])
    refresh(gitlab.tmp / "state.json", lambda _: None, resolve={NAME: "127.0.0.1"})
    state = json.loads((gitlab.tmp / "state.json").read_text())
    assert state["entries"][f"{RUNNER}::runner-amd64-runner-registration"]["inputs"]["tagLists"] == [
        "amd64",
        "docker",
    ]
    gitlab.fake.runners[42].update(access_level="not_protected")
    refresh(gitlab.tmp / "state.json", lambda _: None, resolve={NAME: "127.0.0.1"})
    run, _ = _run(gitlab, _runner_inputs())
    assert _ops(run) == [("same", PROVIDER), ("update", RUNNER)]
    assert gitlab.fake.runners[42]["access_level"] == "ref_protected"


def test_a_wrong_token_fails_the_early_auth_check_without_showing_the_token(gitlab: SimpleNamespace) -> None:
    gitlab.fake.echo_auth_in_errors = True
    wrong = "glpat-not-the-right-one-123456"
    with pytest.raises(ApplyError) as failure:
        _run(gitlab, _runner_inputs(), provider=_provider_inputs(gitlab, token=_secret(wrong)))
    message = str(failure.value)
    assert f"early auth check failed: GET {gitlab.base}user: 401" in message
    assert wrong not in message and "[secret]" in message
    # earlyAuthCheck "false": the provider is configured without a request.
    gitlab.fake.requests.clear()
    _run(gitlab, None, provider=_provider_inputs(gitlab, token=_secret(wrong), earlyAuthCheck="false"))
    assert gitlab.fake.requests == []


def test_verification_uses_the_cacert_file_and_fails_naming_it(gitlab: SimpleNamespace) -> None:
    other = make_ca("forgeway test CA other").write(gitlab.tmp / "ca-other.pem")
    with pytest.raises(ApplyError) as failure:
        _run(gitlab, None, provider=_provider_inputs(gitlab, cacertFile=str(other)))
    message = str(failure.value)
    assert "certificate verify failed" in message and f"cacertFile {other}" in message, message
    assert f"{NAME}:{gitlab.fake.port} (at 127.0.0.1)" in message
    assert gitlab.fake.requests == []
    # Without cacertFile the system's CAs do not know the lab CA either.
    with pytest.raises(ApplyError, match=r"certificate verify failed.*the system's CAs"):
        _run(gitlab, None, provider={k: v for k, v in _provider_inputs(gitlab).items() if k != "cacertFile"})
    # insecure (JSON-encoded) turns verification off, as the provider's InsecureSkipVerify.
    _run(gitlab, None, provider=_provider_inputs(gitlab, cacertFile=str(other), insecure="true"))
    assert [m for m, _, _, _ in gitlab.fake.requests] == ["GET"]


def test_the_resolve_map_stands_in_for_dns_while_tls_checks_the_name(gitlab: SimpleNamespace) -> None:
    with pytest.raises(ApplyError, match=f"cannot reach {NAME}:{gitlab.fake.port} \\(at {NAME}\\)"):
        _run(gitlab, None, resolve={})  # the name is in no DNS: only the lab's map knows it
    # A name the certificate does not carry, mapped to the same server: TLS refuses it.
    other_base = gitlab.base.replace(NAME, "other.forgeway.test")
    with pytest.raises(ApplyError, match="certificate verify failed: Hostname mismatch"):
        _run(
            gitlab,
            None,
            provider=_provider_inputs(gitlab, baseUrl=other_base),
            resolve={"other.forgeway.test": "127.0.0.1"},
        )
    assert gitlab.fake.requests == []
    # The name only as the certificate's CN (no SAN): Go's crypto/x509 refuses it, so must the lab.
    gitlab.server.context = server_context(gitlab.tmp, gitlab.ca, san=False)
    with pytest.raises(ApplyError, match="certificate verify failed: Hostname mismatch"):
        _run(gitlab, None)


def test_inputs_the_emulation_does_not_know_are_refused_by_name(gitlab: SimpleNamespace) -> None:
    with pytest.raises(ApplyError, match=f"does not emulate clientCert, configFile of {PROVIDER}"):
        _run(gitlab, None, provider=_provider_inputs(gitlab, clientCert="/c.pem", configFile="/x"))
    with pytest.raises(ApplyError, match=f"does not emulate runUntagged of {RUNNER}"):
        _run(gitlab, _runner_inputs(runUntagged=True))
    with pytest.raises(ApplyError, match="group_type needs groupId"):
        _run(gitlab, _runner_inputs(runnerType="group_type"))
    with pytest.raises(ApplyError, match="maximumTimeout 300: must be at least 600"):
        _run(gitlab, _runner_inputs(maximumTimeout=300.0))
    assert [p for _, p, _, _ in gitlab.fake.requests if p != "/api/v4/user"] == []
    with pytest.raises(ApplyError, match="token is not set"):
        _run(gitlab, None, provider=_provider_inputs(gitlab, token=None))


def test_a_base_url_without_the_slash_or_api_path_is_completed_as_client_go_does(gitlab: SimpleNamespace) -> None:
    for base in (gitlab.base.rstrip("/"), gitlab.base.removesuffix("api/v4/")):
        gitlab.fake.requests.clear()
        _run(gitlab, None, provider=_provider_inputs(gitlab, baseUrl=base))
        assert [(m, p) for m, p, _, _ in gitlab.fake.requests] == [("GET", "/api/v4/user")]


def test_headers_go_on_every_request_and_429_is_retried_as_often_as_retries_says(gitlab: SimpleNamespace) -> None:
    gitlab.fake.too_many = 3  # retries unset: the provider's default, 10
    _run(gitlab, None)
    gitlab.fake.requests.clear()
    gitlab.fake.too_many = 2
    provider = _provider_inputs(gitlab, headers='{"X-Forgeway-Lab": "1"}', retries="2")
    _run(gitlab, _runner_inputs(), provider=provider)
    assert len(gitlab.fake.runners) == 1
    assert all(h.get("x-forgeway-lab") == "1" for _, _, h, _ in gitlab.fake.requests)
    gitlab.fake.too_many = 2
    with pytest.raises(ApplyError, match="429"):
        _run(gitlab, _runner_inputs(), provider=_provider_inputs(gitlab, retries="1"))


def test_the_tokens_never_reach_the_log_or_an_error(gitlab: SimpleNamespace) -> None:
    gitlab.fake.echo_auth_in_errors = True
    lines: list[str] = []
    run, out = _run(gitlab, _runner_inputs())
    lines += run.log
    runner_token = out["token"]["value"]
    gitlab.fake.runners.clear()
    with pytest.raises(ApplyError) as failure:
        _run(gitlab, None)
    lines.append(str(failure.value))
    assert "404 Not found Bearer [secret]" in str(failure.value)  # the server's echo, redacted
    text = "\n".join(lines)
    assert TOKEN not in text and runner_token not in text
    assert any("GitLab runner 42 (ref_protected)" in line for line in lines)


# --- the real SDKs under the mock monitor, through the applier ------------------------

_PROGRAM = """
import pulumi, pulumi_command as command, pulumi_gitlab as gitlab

ca = command.local.Command("gitlab-api-ca", create='cat > "$CA_FILE"', stdin=open({ca!r}).read(),
                           environment={{"CA_FILE": {copy!r}}})
api = gitlab.Provider("gitlab-api", base_url={base!r}, token=pulumi.Output.secret({token!r}),
                      cacert_file=ca.stdout.apply(lambda _: {copy!r}), early_auth_check=True)
runner = gitlab.UserRunner("runner-amd64-runner-registration", runner_type="instance_type",
                           description="runner-amd64", tag_lists=["amd64"], untagged=False,
                           access_level="ref_protected", locked=True, maximum_timeout=3600, paused=False,
                           opts=pulumi.ResourceOptions(provider=api))
pulumi.export("runner_id", runner.id)
pulumi.export("runner_token", runner.token)
"""

_DRIVER = """
import json, sys
from pathlib import Path
from tools.applier.apply import Applier
from tools.stack.synth import synthesize

request = json.load(sys.stdin)
applier = Applier(Path(request["state"]), lambda line: print(line, file=sys.stderr), seed=0, max_delay_s=0,
                  resolve=request["resolve"])
synthesis = synthesize("lab", {}, [], handler=applier.handle, program=Path(request["program"]), project="a17")
applier.finish()
applier.close()
print(json.dumps(synthesis.outputs))
"""


def _python(args: list[str], request: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """This repository's python in a process of its own (one synthesis per process), request on stdin."""
    root = Path(__file__).resolve().parent.parent.parent
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, *args], input=json.dumps(request), capture_output=True, text=True, cwd=root, env=env,
        timeout=300, check=False,
    )  # fmt: skip


def test_the_real_sdks_wire_shapes_apply_and_the_runner_token_reaches_the_program_as_a_secret(
    gitlab: SimpleNamespace,
) -> None:
    """pulumi_gitlab 10.4.0 and pulumi_command as the program uses them (JSON-encoded provider
    config, float numbers, ``additional_secret_outputs``), in a subprocess (one synthesis per process)."""
    pytest.importorskip("pulumi_gitlab")  # pinned by the issue-17 program's requirements
    program = gitlab.tmp / "prog" / "__main__.py"
    program.parent.mkdir()
    (program.parent / "Pulumi.yaml").write_text("name: a17\nruntime: python\n")
    copy = str(gitlab.tmp / "lab-ca.pem")
    program.write_text(_PROGRAM.format(ca=str(gitlab.ca_file), copy=copy, base=gitlab.base, token=TOKEN))
    request = {"state": str(gitlab.tmp / "state.json"), "resolve": {NAME: "127.0.0.1"}, "program": str(program)}
    done = _python(["-c", _DRIVER], request)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = json.loads(done.stdout.strip().splitlines()[-1])
    assert outputs["runner_id"] == "42" and list(gitlab.fake.runners) == [42]
    assert outputs["runner_token"] == _secret(gitlab.fake.runners[42]["token"])
    assert Path(copy).read_text() == gitlab.ca_file.read_text()
    sent = gitlab.fake.requests[1][3]["maximum_timeout"]
    assert sent == 3600 and type(sent) is int  # GitLab's Integer param; the SDK sends a float
    assert TOKEN not in done.stderr and gitlab.fake.runners[42]["token"] not in done.stderr


def test_the_applier_request_carries_the_resolve_map_to_refresh_and_destroy(gitlab: SimpleNamespace) -> None:
    """``python -m tools.applier`` with the lab's JSON request: ``resolve`` reaches every action."""
    _run(gitlab, _runner_inputs())

    def applier(action: str, resolve: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return _python(
            ["-m", "tools.applier"], {"action": action, "state": str(gitlab.tmp / "state.json"), "resolve": resolve}
        )

    done = applier("refresh", {})
    assert done.returncode == 1 and f"cannot reach {NAME}" in done.stderr
    done = applier("refresh", {NAME: "127.0.0.1"})
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["op"] for line in done.stdout.splitlines()] == ["same", "same"]
    done = applier("destroy", {NAME: "127.0.0.1"})
    assert done.returncode == 0, done.stderr
    assert gitlab.fake.runners == {} and ("DELETE", "/api/v4/runners/42") in [
        (m, p) for m, p, _, _ in gitlab.fake.requests
    ]
