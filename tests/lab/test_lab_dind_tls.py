"""docker-in-docker over TLS as the runner wires it (issue 21), with the README pipeline's settings.

In a namespace of its own with a real dockerd and the GitLab stand-in (tests/lab/standin_host.py),
a job is modelled as the docker executor runs one with a service: a per-build network, the
service ``docker:dind`` (the lab's dind stand-in: Debian's docker.io, started as
dockerd-entrypoint.sh starts it) privileged with the network alias ``docker``, and the job
container beside it; both get the volumes of the config.toml forgeway renders for a privileged
runner with own-ca (components/render/runner_config.py): the anonymous ``/certs/client`` volume
they share, and forgeway's job certs.d read-only. The job's variables are the pipeline's
(examples/pipeline/multiarch.gitlab-ci.yml, shown in docs/runners.md).

Checked: the job's docker client reaches dind on 2376 with the client certificate from the
shared volume; 2375 is closed; without the client certificate dind refuses the connection;
and dind, trusting the registry only through the certs.d it was given, pushes to the forge's
registry (the GitLab stand-in, reached by its name on the build network). Not exercised: the
real docker:dind image and gitlab-runner itself (the lab's stand-ins), BuildKit.

Needs root, docker.io and debootstrap: fails loudly without them, never skips.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.render.buildkitd import JOBS_DIR
from components.render.runner_config import DIND_CERTS_CLIENT, RunnerSettingsView, job_volumes
from tests.lab.standin_host import DOMAIN, PASSWORD, Host, standin_host, started
from tests.unit.test_pipeline_example import pipeline
from tools.lab.images import DIND_STANDIN, ensure_image

pytestmark = pytest.mark.lab

NETWORK = "fwl-dind-build"
REGISTRY = f"{DOMAIN}:5050"  # the forge's registry, by the name its certificate holds


def _volumes(host: Host, ca: Path) -> list[str]:
    """The job's and service's volumes from the rendered config.toml, forgeway's job directory
    put in the test's scratch directory (the daemon runs on this machine: not its /etc)."""
    view = RunnerSettingsView(
        name="builder", url=f"https://{DOMAIN}", token="glrt-" + "x" * 20, arch="amd64", concurrent=1,
        default_image=DIND_STANDIN, privileged=True, protected_only=True, ca_registries=(REGISTRY,),
    )  # fmt: skip
    jobs = host.scratch / "forgeway-jobs"
    (jobs / "certs.d" / REGISTRY).mkdir(parents=True)
    shutil.copy(ca, jobs / "certs.d" / REGISTRY / "ca.crt")
    (jobs / "buildkitd.toml").write_text("")
    volumes = [v.replace(f"/{JOBS_DIR}", str(jobs)) for v in job_volumes(view)]
    assert DIND_CERTS_CLIENT in volumes
    return volumes


class Build:
    def __init__(self, host: Host, volumes: list[str], gitlab_ip: str) -> None:
        self.host, self.gitlab_ip = host, gitlab_ip
        # the runner makes one volume per build for a bare path, shared by job and services
        self.mounts: list[str] = []
        for v in volumes:
            if ":" in v:
                self.mounts += ["-v", v]
            else:
                name = "fwl-build-" + v.strip("/").replace("/", "-")
                host.docker("volume", "create", name)
                self.mounts += ["-v", f"{name}:{v}"]

    def job(self, script: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        # the job's variables through a file the runner's way (not -e NAME: the host's own
        # client would read DOCKER_HOST and the rest from that environment too), values off
        # the command line; one line each, taken literally
        assert all("\n" not in v for v in env.values())
        variables = self.host.scratch / "job.env"
        variables.touch(mode=0o600)
        variables.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        try:
            args = ["run", "--rm", "-i", "--network", NETWORK, *self.mounts, "--env-file", str(variables)]
            return self.host.docker(*args, "--entrypoint", "sh", DIND_STANDIN, "-c", script, input=stdin,
                                    check=False, timeout=180)  # fmt: skip
        finally:
            variables.unlink()


@pytest.fixture(scope="module")
def build() -> Iterator[Build]:
    with standin_host() as host:
        print(f"ensure_image dind: {ensure_image(host.daemon, DIND_STANDIN)}")
        ca = started(host, "gitlab")
        host.docker("network", "create", NETWORK)
        host.docker("network", "connect", NETWORK, "gitlab")
        inspect = json.loads(host.docker("inspect", "gitlab").stdout)[0]
        made = Build(host, _volumes(host, ca), inspect["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])
        job = pipeline()["build-image"]
        (service,) = job["services"]
        tls = job["variables"]["DOCKER_TLS_CERTDIR"]
        host.docker(
            "run", "-d", "--name", "fwl-dind", "--privileged", "--network", NETWORK, "--network-alias",
            service["alias"], "--add-host", f"{DOMAIN}:{made.gitlab_ip}", *made.mounts, "-e",
            f"DOCKER_TLS_CERTDIR={tls}", DIND_STANDIN, *service["command"],
        )  # fmt: skip
        yield made
        print(host.docker("logs", "fwl-dind", check=False).stderr.decode()[-2000:])


def _pipeline_env() -> dict[str, str]:
    return {k: str(v) for k, v in pipeline()["build-image"]["variables"].items()}


def _wait_for_dind(build: Build) -> str:
    done = build.job("for i in $(seq 60); do docker version --format '{{.Server.Version}}' && exit 0; sleep 1; done; "
                     "exit 1", _pipeline_env())  # fmt: skip
    assert done.returncode == 0, (
        done.stderr.decode() + build.host.docker("logs", "fwl-dind", check=False).stderr.decode()
    )
    return done.stdout.decode().strip().splitlines()[-1]


def test_the_job_reaches_dind_over_tls_with_the_shared_client_certificate(build: Build) -> None:
    env = _pipeline_env()
    assert env["DOCKER_HOST"] == "tcp://docker:2376"
    version = _wait_for_dind(build)
    print(f"\ndind (docker.io {version}) answers on 2376 with the client certificate of {env['DOCKER_CERT_PATH']}")
    listed = build.job(f"ls {DIND_CERTS_CLIENT}", env).stdout.decode().split()
    assert listed == ["ca.pem", "cert.pem", "key.pem"], listed


def test_2375_is_closed_and_dind_refuses_a_client_without_its_certificate(build: Build) -> None:
    _wait_for_dind(build)
    closed = build.host.docker("run", "--rm", "--network", NETWORK, "--entrypoint", "bash", DIND_STANDIN, "-c",
                               "exec 3<>/dev/tcp/docker/2375", check=False)  # fmt: skip
    assert closed.returncode != 0 and b"refused" in closed.stderr, closed.stderr
    no_cert = build.job(f"docker --tlsverify --tlscacert {DIND_CERTS_CLIENT}/ca.pem -H tcp://docker:2376 version", {})
    assert no_cert.returncode != 0, no_cert.stdout
    assert b"certificate" in no_cert.stderr or b"tls" in no_cert.stderr.lower(), no_cert.stderr


def test_dind_trusts_the_registry_ca_it_was_given_and_pushes_to_the_forge(build: Build) -> None:
    _wait_for_dind(build)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = os.urandom(64 << 10)
        info = tarfile.TarInfo("payload")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    image = f"{REGISTRY}/root/dind-lab:1"
    env = {**_pipeline_env(), "REGISTRY_PASSWORD": PASSWORD}
    script = (
        f"docker import - {image} >/dev/null && "
        f'printf %s "$REGISTRY_PASSWORD" | docker login {REGISTRY} -u root --password-stdin && '
        f"docker push {image}"
    )
    pushed = build.job(script, env, stdin=layer.getvalue())
    assert pushed.returncode == 0, pushed.stderr.decode() + pushed.stdout.decode()
    assert b"digest: sha256:" in pushed.stdout, pushed.stdout
    assert PASSWORD.encode() not in pushed.stdout + pushed.stderr
