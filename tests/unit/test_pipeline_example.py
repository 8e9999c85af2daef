"""The multi-arch pipeline users copy (examples/pipeline/multiarch.gitlab-ci.yml) is the one
the README shows (issue 21's "Done when"), and it fits what forgeway renders: dind over TLS with the client
certificates in the volume the runner shares, the registry CA where dind and buildx read it.

The lab drives a dind-shaped daemon with this file's variables (tests/lab/test_lab_dind_tls.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.render.buildkitd import JOB_CERTS_D, JOB_PATH, NO_ATTESTATIONS, render_buildkitd_toml
from components.render.runner_config import DIND_CERTS_CLIENT, RunnerSettingsView, job_volumes

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "examples" / "pipeline" / "multiarch.gitlab-ci.yml"
README = ROOT / "README.md"


def _view(**changes: Any) -> RunnerSettingsView:
    base: dict[str, Any] = {"name": "b", "url": "https://g", "arch": "amd64", "concurrent": 1, "default_image": "i"}
    return RunnerSettingsView(token="glrt-" + "x" * 20, **{**base, **changes})


def pipeline() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PIPELINE.read_text())
    return loaded


def _readme_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)


def test_the_readme_shows_the_example_file_verbatim() -> None:
    assert PIPELINE.read_text() in _readme_blocks()


def test_dind_is_reached_over_tls_with_the_shared_client_certificates() -> None:
    job = pipeline()["build-image"]
    (service,) = job["services"]
    variables = job["variables"]
    assert service["name"].endswith("-dind") and service["alias"] == "docker"
    assert variables["DOCKER_HOST"] == "tcp://docker:2376"
    assert variables["DOCKER_TLS_CERTDIR"] == "/certs" and variables["DOCKER_TLS_VERIFY"] == "1"
    # dind writes <certdir>/client; the runner shares exactly that volume with job and service
    assert variables["DOCKER_CERT_PATH"] == variables["DOCKER_TLS_CERTDIR"] + "/client" == DIND_CERTS_CLIENT
    assert DIND_CERTS_CLIENT in job_volumes(_view(privileged=True))


def test_the_registry_ca_is_where_dind_and_buildx_read_it() -> None:
    script = " ".join(pipeline()["build-image"]["script"])
    assert f"--buildkitd-config {JOB_PATH}" in script
    # job and services (dind) alike: docker's certs.d is forgeway's, read-only
    assert any(v.endswith(f":{JOB_CERTS_D}:ro") for v in job_volumes(_view(ca_registries=("r:5050",))))


def build_command() -> list[str]:
    """The pipeline's ``docker buildx build`` words."""
    (line,) = [str(s) for s in pipeline()["build-image"]["script"] if str(s).startswith("docker buildx build")]
    return line.split()


def built_platforms() -> str:
    words = build_command()
    return words[words.index("--platform") + 1]


def test_the_build_pushes_an_index_of_exactly_its_platforms() -> None:
    words = build_command()
    assert all(flag in words for flag in NO_ATTESTATIONS) and "--push" in words
    assert sorted(built_platforms().split(",")) == ["linux/amd64", "linux/arm64"]
    # the shipped buildkitd.toml cannot change that, and says which flags do
    assert " ".join(NO_ATTESTATIONS) in render_buildkitd_toml(["r:5050"])


def test_the_readme_says_what_each_setting_is_for() -> None:
    text = README.read_text().split("What each setting is for:", 1)[1].split("\n\n", 2)[1]
    (service,) = pipeline()["build-image"]["services"]
    settings = [*pipeline()["build-image"]["variables"], *NO_ATTESTATIONS, *service["command"], "certs.d", JOB_PATH]
    # one bullet per setting: each named at the start of its own line of explanation
    bullets = [b for b in text.split("\n- ") if b.strip()]
    for name in settings:
        assert any(name in b for b in bullets), f"README.md does not say what {name} is for"
    assert all(len(b.split()) >= 8 for b in bullets), "a setting named without what it is for"
