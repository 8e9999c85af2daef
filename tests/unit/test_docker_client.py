"""components/render/docker_client.py: certs.d/trust-store CAs, the proxy drop-in, the manifest."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from components.render.docker_client import (
    DROPIN_PATH,
    MANIFEST,
    TRUST_PATH,
    DockerClientSettings,
    no_proxy_entries,
    render_docker_client,
)
from tests.certs import make_ca

pytestmark = pytest.mark.unit


CA = make_ca("forgeway-test-ca").pem


def settings(**changes: object) -> DockerClientSettings:
    base = DockerClientSettings(
        registries=("registry.forgeway.lab:5050", "10.8.0.1:5050"),
        ca_pem=CA,
        gitlab_host="gitlab.forgeway.lab",
        tunnel_subnet="10.8.0.0/24",
        http_proxy="http://proxy.corp:3128",
        https_proxy="http://proxy.corp:3128",
        no_proxy=(".corp.internal",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _environment(dropin: str) -> dict[str, str]:
    (line,) = [line for line in dropin.splitlines() if line.startswith("Environment=")]
    words = shlex.split(line.removeprefix("Environment="))
    return dict(word.replace("%%", "%").split("=", 1) for word in words)


def test_no_proxy_always_holds_forgeway_endpoints() -> None:
    files = render_docker_client(settings())
    env = _environment(files.texts["forgeway-proxy.conf"])
    no_proxy = env["NO_PROXY"].split(",")
    assert no_proxy == [
        "localhost",
        "127.0.0.1",
        "registry.forgeway.lab",
        "10.8.0.1",
        "gitlab.forgeway.lab",
        "10.8.0.0/24",
        ".corp.internal",
    ]
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == "http://proxy.corp:3128"


def test_no_proxy_without_extras_and_duplicates_once() -> None:
    s = settings(no_proxy=(), gitlab_host="10.8.0.1", registries=("10.8.0.1:5050", "10.8.0.1:443"))
    assert no_proxy_entries(s) == ["localhost", "127.0.0.1", "10.8.0.1", "10.8.0.0/24"]


def test_only_https_proxy() -> None:
    env = _environment(render_docker_client(settings(http_proxy=None)).texts["forgeway-proxy.conf"])
    assert set(env) == {"HTTPS_PROXY", "NO_PROXY"}


def test_files_and_manifest() -> None:
    files = render_docker_client(settings())
    paths = {f.path: f for f in files.managed}
    assert set(paths) == {
        "etc/docker/certs.d/10.8.0.1:5050/ca.crt",
        "etc/docker/certs.d/registry.forgeway.lab:5050/ca.crt",
        "etc/docker/forgeway-jobs/certs.d/10.8.0.1:5050/ca.crt",
        "etc/docker/forgeway-jobs/certs.d/registry.forgeway.lab:5050/ca.crt",
        "etc/docker/forgeway-jobs/buildkitd.toml",
        TRUST_PATH,
        DROPIN_PATH,
    }
    assert TRUST_PATH == "usr/local/share/ca-certificates/forgeway-ca.crt"
    assert DROPIN_PATH == "etc/systemd/system/docker.service.d/forgeway-proxy.conf"
    assert all(f.mode == "0644" for f in files.managed)
    staged = files.staged()
    assert set(staged) == {*(f.name for f in files.managed), MANIFEST}
    assert all("/" not in name for name in staged)
    for f in files.managed:
        if f.kind in ("cert", "trust") or f.path.endswith("ca.crt"):
            assert staged[f.name] == CA  # normalised PEM equals the input here
    lines = [line.split(" ") for line in staged[MANIFEST].splitlines()]
    assert [(k, m, n, p) for k, m, n, p in lines] == [(f.kind, f.mode, f.name, f.path) for f in files.managed]


def test_no_proxy_no_dropin() -> None:
    files = render_docker_client(settings(http_proxy=None, https_proxy=None, no_proxy=()))
    assert [f.kind for f in files.managed] == ["cert", "cert", "plain", "plain", "plain", "trust"]
    assert "dropin" not in files.manifest


def test_credentials_make_the_dropin_owner_only_and_percent_is_escaped() -> None:
    files = render_docker_client(settings(http_proxy="http://user:p%40ss@proxy.corp:3128"))
    (dropin,) = [f for f in files.managed if f.kind == "dropin"]
    assert dropin.mode == "0600"
    text = files.texts[dropin.name]
    assert "p%%40ss" in text  # systemd specifier escaping
    assert _environment(text)["HTTP_PROXY"] == "http://user:p%40ss@proxy.corp:3128"


def test_deterministic() -> None:
    one = render_docker_client(settings()).staged()
    shuffled = settings(registries=("10.8.0.1:5050", "registry.forgeway.lab:5050", "10.8.0.1:5050"))
    assert render_docker_client(settings()).staged() == one
    # order and duplicates of the registry list do not change the files
    assert {k: v for k, v in render_docker_client(shuffled).staged().items() if k != "forgeway-proxy.conf"} == {
        k: v for k, v in one.items() if k != "forgeway-proxy.conf"
    }


def _verify(unit_dir: Path) -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd (tools/ci/apt-packages.txt)")
    done = subprocess.run(
        [tool, "verify", str(unit_dir / "docker.service")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_TARGET": "console", "SYSTEMD_LOG_COLOR": "0"},
        timeout=60,
    )
    return f"rc={done.returncode}\n{done.stdout}{done.stderr}"


def _unit_dir(tmp_path: Path, dropin: str) -> Path:
    (tmp_path / "docker.service.d").mkdir()
    (tmp_path / "docker.service").write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    (tmp_path / "docker.service.d" / "forgeway-proxy.conf").write_text(dropin)
    return tmp_path


@pytest.mark.parametrize("proxy", ["http://proxy.corp:3128", "http://user:p%40ss@[2001:db8::1]:3128"])
def test_dropin_passes_systemd_analyze_verify(tmp_path: Path, proxy: str) -> None:
    text = render_docker_client(settings(http_proxy=proxy)).texts["forgeway-proxy.conf"]
    out = _verify(_unit_dir(tmp_path, text))
    assert "forgeway-proxy.conf" not in out and out.startswith("rc=0"), out


def test_verify_would_catch_a_broken_dropin(tmp_path: Path) -> None:
    """The check above is not vacuous: systemd-analyze names a drop-in it cannot parse."""
    out = _verify(_unit_dir(tmp_path, '[Service]\nEnvironment="HTTP_PROXY=http://a b" "NO_PROXY=x\n'))
    assert "forgeway-proxy.conf" in out, out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"http_proxy": 'http://proxy"\nExecStartPre=/bin/evil'}, "http_proxy"),
        ({"http_proxy": "http://proxy:3128\n"}, "http_proxy"),
        ({"https_proxy": "http://pro xy:3128"}, "https_proxy"),
        ({"https_proxy": "http://proxy\\:3128"}, "https_proxy"),
        ({"https_proxy": "ftp://proxy:21"}, "https_proxy"),
        ({"https_proxy": "http://proxy:99999"}, "bad port"),
        ({"https_proxy": ""}, "https_proxy"),
        ({"no_proxy": ('a"b',)}, "no_proxy"),
        ({"no_proxy": ("a,b",)}, "no_proxy"),
        ({"no_proxy": ("a\nb",)}, "no_proxy"),
        ({"no_proxy": ("",)}, "no_proxy"),
        ({"gitlab_host": "gitlab\nEnvironment=X=1"}, "gitlab_host"),
        ({"gitlab_host": "git lab"}, "gitlab_host"),
        ({"gitlab_host": "gitlab\n"}, "gitlab_host"),
        ({"no_proxy": ("corp\n",)}, "no_proxy"),
        ({"tunnel_subnet": "10.8.0.1/24"}, "tunnel_subnet"),
        ({"tunnel_subnet": "10.8.0.0/24\n"}, "tunnel_subnet"),
        ({"registries": ("registry",)}, "registry endpoint"),
        ({"registries": ("registry:0",)}, "registry endpoint"),
        ({"registries": ("registry:05050",)}, "registry endpoint"),
        ({"registries": ("../../etc:443",)}, "registry endpoint"),
        ({"registries": ("reg/istry:443",)}, "registry endpoint"),
        ({"registries": ("reg istry:443",)}, "registry endpoint"),
        ({"registries": ("[::1]:5000",)}, "IPv6"),
        ({"registries": ()}, "registries"),
        ({"ca_pem": "not a cert"}, "ca_pem"),
        ({"ca_pem": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"}, "ca_pem"),
        ({"http_proxy": None, "https_proxy": None}, "no_proxy"),  # extras without a proxy
    ],
)
def test_hostile_values_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_docker_client(settings(**changes))


def test_lets_encrypt_with_a_proxy_installs_the_drop_in_alone() -> None:
    files = render_docker_client(settings(ca_pem=None, http_proxy="http://proxy.home.arpa:3128"))
    assert [f.kind for f in files.managed] == ["dropin"]
    assert "ca.crt" not in files.manifest


def test_nothing_to_install_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to install"):
        render_docker_client(settings(ca_pem=None, http_proxy=None, https_proxy=None))


def test_jobs_get_a_buildkitd_toml_naming_each_endpoints_ca_where_jobs_see_it() -> None:
    files = render_docker_client(settings())
    by_path = {f.path: files.texts[f.name] for f in files.managed}
    parsed = tomllib.loads(by_path["etc/docker/forgeway-jobs/buildkitd.toml"])
    assert parsed == {
        "registry": {
            "10.8.0.1:5050": {"ca": ["/etc/docker/certs.d/10.8.0.1:5050/ca.crt"]},
            "registry.forgeway.lab:5050": {"ca": ["/etc/docker/certs.d/registry.forgeway.lab:5050/ca.crt"]},
        }
    }
    # every CA it names is in the job directory, which jobs see as /etc/docker/certs.d
    for endpoint, entry in parsed["registry"].items():
        (job_path,) = entry["ca"]
        host_path = "etc/docker/forgeway-jobs/certs.d/" + job_path.removeprefix("/etc/docker/certs.d/")
        assert by_path[host_path] == CA, endpoint


def test_no_buildkitd_toml_without_a_ca() -> None:
    files = render_docker_client(settings(ca_pem=None))
    assert [f.kind for f in files.managed] == ["dropin"]
