"""HTTP over a pipe (tools/applier/docker_api.py): requests, response framing, errors, the ssh argv."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tools.applier.docker import _container_body, _docker_inputs, _upload_tar, go_duration_ns
from tools.applier.docker_api import API_VERSION, DockerApiError, DockerHost, build_request, read_response, redact
from tools.applier.state import ApplyError

pytestmark = pytest.mark.unit


def _pipe(*parts: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(b"".join(parts)))


def test_request_is_versioned_closes_and_frames_its_body() -> None:
    raw = build_request("POST", "/containers/create", query={"name": "app", "force": True}, body=b'{"a":1}')
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == f"POST /{API_VERSION}/containers/create?name=app&force=1 HTTP/1.1"
    assert "Connection: close" in lines
    assert "Content-Length: 7" in lines
    assert body == b'{"a":1}'


def test_content_length_body() -> None:
    response = read_response(
        _pipe(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n", b'{"Id":"x"}\n')
    )
    assert (response.status, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {"Id": "x"}


def test_chunked_body_with_extensions_and_trailers() -> None:
    stream = _pipe(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b'4;ext=1\r\n{"a"\r\n',
        b"3\r\n:1}\r\n",
        b"0\r\nX-Trailer: y\r\n\r\n",
    )
    assert read_response(stream).json() == {"a": 1}


def test_interim_response_is_skipped_and_204_has_no_body() -> None:
    response = read_response(_pipe(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert (response.status, response.body) == (204, b"")


def test_body_to_end_of_stream_without_framing() -> None:
    assert read_response(_pipe(b"HTTP/1.0 200 OK\r\n\r\nplain")).body == b"plain"


def test_error_body_gives_the_daemons_message() -> None:
    body = json.dumps({"message": "No such image: nope:1"}).encode()
    response = read_response(_pipe(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body), body))
    assert (response.status, response.message()) == (404, "No such image: nope:1")
    text = read_response(_pipe(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"))
    assert text.message() == "oops"


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # ssh died before answering
        b"SSH-2.0-OpenSSH\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_broken_responses_raise(raw: bytes) -> None:
    with pytest.raises(DockerApiError):
        read_response(_pipe(raw))


def test_ssh_argv_is_the_docker_connection_helpers() -> None:
    opts = ["-o", "BatchMode=yes", "-p", "2222", "-o", "KnownHostsCommand=/bin/echo %H ssh-ed25519 AAAA"]
    host = DockerHost.from_provider({"host": "ssh://forgeway@203.0.113.5", "sshOpts": json.dumps(opts)})
    assert host.argv() == [
        "ssh", *opts, "-o", "ConnectTimeout=30", "-T", "-l", "forgeway", "--", "203.0.113.5",
        "docker", "system", "dial-stdio",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="ssh://"):
        DockerHost.from_provider({"host": "tcp://203.0.113.5:2376"})


def test_redact_replaces_longest_secret_first() -> None:
    assert redact("token=abcdef and abc", ["abc", "abcdef"]) == "token=[secret] and [secret]"


def test_go_durations() -> None:
    assert go_duration_ns("30s") == 30 * 10**9
    assert go_duration_ns("1m30s") == 90 * 10**9
    assert go_duration_ns("1.5h") == 5400 * 10**9
    assert go_duration_ns("500ms") == 5 * 10**8
    assert go_duration_ns("0") == 0
    with pytest.raises(ValueError):
        go_duration_ns("30")


def test_container_body_as_the_provider_builds_it() -> None:
    body = _container_body(
        {
            "image": "sha256:abc",
            "envs": ["A=1"],
            "ports": [{"internal": 80, "external": 8080, "ip": "203.0.113.5"}],
            "volumes": [
                {"volumeName": "data", "containerPath": "/data", "readOnly": True},
                {"containerPath": "/scratch"},
            ],
            "memory": 64,
            "memorySwap": -1,
            "shmSize": 256,
            "healthcheck": {"tests": ["CMD", "true"], "interval": "30s", "retries": 3},
        }
    )
    host = body["HostConfig"]
    assert body["ExposedPorts"] == {"80/tcp": {}}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "203.0.113.5", "HostPort": "8080"}]}
    assert host["Binds"] == ["data:/data:ro"] and body["Volumes"] == {"/scratch": {}}
    assert (host["Memory"], host["MemorySwap"], host["ShmSize"]) == (64 << 20, -1, 256 << 20)
    assert body["Healthcheck"] == {
        "Test": ["CMD", "true"],
        "Interval": 30 * 10**9,
        "Timeout": 0,
        "StartPeriod": 0,
        "Retries": 3,
    }
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert host["NetworkMode"] == "bridge"  # the schema default, sent (a refresh reads it back)


def test_lab_containers_resolve_the_public_names_to_both_families(tmp_path: Path) -> None:
    """The lab's DNS stand-in: A and AAAA, as DNS gives them (an IPv6-only runner host needs the AAAA)."""
    from tools.applier.apply import Applier

    applier = Applier(
        tmp_path / "state.json", lambda _: None, resolve={"gitlab.example": "203.0.113.10"},
        resolve6={"gitlab.example": "2001:db8::10"},
    )  # fmt: skip
    body = _container_body({"image": "sha256:abc"}, applier.container_names)
    assert body["HostConfig"]["ExtraHosts"] == ["gitlab.example:203.0.113.10", "gitlab.example:2001:db8::10"]
    assert "ExtraHosts" not in _container_body({"image": "sha256:abc"})["HostConfig"]  # not an input


def test_unknown_docker_inputs_are_refused_by_name() -> None:
    typ = "docker:index/container:Container"
    with pytest.raises(ApplyError, match=r"gpus, uploads.source of docker:index/container:Container"):
        _docker_inputs(typ, {"image": "x", "gpus": "all", "uploads": [{"file": "/a", "source": "/etc/passwd"}]})


def test_upload_is_one_file_with_the_providers_mode() -> None:
    import tarfile

    data = _upload_tar({"file": "/srv/run.sh", "content": "#!/bin/sh\n", "executable": True})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
    assert (member.name, member.mode, member.size) == ("/srv/run.sh", 0o744, 10)


def test_program_hosts_come_first_and_win_over_the_labs_names() -> None:
    """The provider's `host` blocks (woodpecker-server's Gitea at the tunnel address) are
    ExtraHosts; a lab name they also give is left out, as /etc/hosts wins over DNS."""
    given = _docker_inputs(
        "docker:index/container:Container",
        {"image": "i", "hosts": [{"host": "gitea.forgeway.test", "ip": "10.8.0.2"}]},
    )
    lab = {"gitea.forgeway.test": ["203.0.113.10"], "gitlab.forgeway.test": ["203.0.113.10"]}
    body = _container_body(given, lab)
    assert body["HostConfig"]["ExtraHosts"] == ["gitea.forgeway.test:10.8.0.2", "gitlab.forgeway.test:203.0.113.10"]
    with pytest.raises(ApplyError, match=r"hosts\.alias"):
        _docker_inputs("docker:index/container:Container", {"image": "i", "hosts": [{"host": "a", "alias": "b"}]})
