"""``make bench``: the memory the lab's stand-ins of GitLab, Gitea and Woodpecker use, for scale.

NOT a claim about the real forges: the stand-ins are small Python programs, nginx, sshd and
Debian's docker-registry built from Debian (tools/lab/images.py), that answer on the forges'
ports and API paths; omnibus GitLab and gitea/gitea are not in them. What the real forges
need is in their own documentation (README, "Gitea instead of GitLab").

Each stand-in runs as the lab tests run it, in a namespace of its own with its own dockerd
(tests/lab/standin_host.py, tests/lab/test_gitea_standin_image.py): started, ready (GitLab's
health check, Gitea's /api/v1/version, Woodpecker's /healthz), then left idle a few seconds,
and read with ``docker stats`` (the container's cgroup memory, page cache excluded, as the
docker CLI computes it) several times. Needs root and what the lab tests need.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.certs import gitlab_ssl
from tests.lab.netns import isolated_netns, require_docker_tools
from tests.lab.standin_host import Host, standin_host, started
from tests.lab.test_gitea_standin import CREATE_ADMIN, token_args
from tests.lab.test_gitea_standin_image import ADDRESS, DOMAIN, NETWORK, Stand
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import GITEA_STANDIN, WOODPECKER_AGENT_STANDIN, WOODPECKER_SERVER_STANDIN, ensure_image

SETTLE = 5.0  # seconds idle after ready, before the first sample
SAMPLES = 5
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "kB": 1000, "MB": 10**6, "GB": 10**9}


def mem_bytes(host: Host, name: str) -> int:
    """The container's memory as ``docker stats`` shows it (``MemUsage``'s first half)."""
    out = host.docker("stats", "--no-stream", "--format", "{{json .}}", name).stdout
    usage = json.loads(out)["MemUsage"].split("/")[0].strip()
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]+)", usage)
    if not m or m.group(2) not in _UNITS:
        raise RuntimeError(f"docker stats {name}: cannot read {usage!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def sampled(host: Host, names: list[str]) -> dict[str, list[int]]:
    time.sleep(SETTLE)
    seen: dict[str, list[int]] = {n: [] for n in names}
    for _ in range(SAMPLES):
        for name in names:
            seen[name].append(mem_bytes(host, name))
        time.sleep(1.0)
    return seen


def gitlab_standin() -> dict[str, list[int]]:
    with standin_host() as host:
        started(host, "gitlab")
        return {"GitLab stand-in (forgeway-gitlab)": sampled(host, ["gitlab"])["gitlab"]}


@contextlib.contextmanager
def gitea_host() -> Iterator[Stand]:
    """As tests/lab/test_gitea_standin_image.py's host: a namespace, its CA and dockerd, Gitea started."""
    require_docker_tools("curl")
    scratch = Path(tempfile.mkdtemp(prefix="fwgm-"))
    try:
        with isolated_netns("fwgm", ADDRESS) as netns:
            daemon = None
            try:
                gitlab_ssl(scratch, DOMAIN, ADDRESS, "forgeway bench CA")
                (scratch / "etc-docker").mkdir()
                daemon = start_dockerd(netns, scratch / "docker", index=15, etc_docker=scratch / "etc-docker")
                for image in (GITEA_STANDIN, WOODPECKER_SERVER_STANDIN, WOODPECKER_AGENT_STANDIN):
                    ensure_image(daemon, image)
                host = Stand(netns, daemon, scratch)
                host.docker("network", "create", NETWORK)
                host.start_gitea()
                yield host
            finally:
                if daemon is not None:
                    stop_dockerd(daemon)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def gitea_and_woodpecker_standins() -> dict[str, list[int]]:
    with gitea_host() as host:
        host.docker("exec", "-u", "git", "gitea", "gitea", *CREATE_ADMIN)
        token = host.docker("exec", "-u", "git", "gitea", "gitea", *token_args("bench", "all")).stdout.decode().strip()
        url = f"http://{ADDRESS}:8000"
        status, app = host.api(
            "POST",
            "/user/applications/oauth2",
            token,
            {"name": "woodpecker", "redirect_uris": [f"{url}/authorize"], "confidential_client": True},
        )
        if status != 201:
            raise RuntimeError(f"Gitea stand-in: the OAuth app was not made ({status}): {app}")
        secrets = host.scratch / "wp"
        secrets.mkdir()
        for name, value in (("client", app["client_id"]), ("secret", app["client_secret"]), ("agent", "bench")):
            (secrets / name).write_text(value + "\n")
            (secrets / name).chmod(0o600)
        mount = ["-v", f"{secrets}:/run/wp:ro"]
        server_env = {
            "WOODPECKER_HOST": url,
            "WOODPECKER_GITEA": "true",
            "WOODPECKER_GITEA_URL": f"https://{ADDRESS}",
            "WOODPECKER_GITEA_CLIENT_FILE": "/run/wp/client",
            "WOODPECKER_GITEA_SECRET_FILE": "/run/wp/secret",
            "WOODPECKER_AGENT_SECRET_FILE": "/run/wp/agent",
            "WOODPECKER_ADMIN": "forgeway",
            "SSL_CERT_FILE": "/etc/ssl/forgeway-ca.crt",
        }
        env_args = [a for k, v in server_env.items() for a in ("-e", f"{k}={v}")]
        host.docker(
            "run", "-d", "--name", "woodpecker-server", "--network", NETWORK, "-p", f"{ADDRESS}:8000:8000", *mount,
            "-v", f"{host.ca}:/etc/ssl/forgeway-ca.crt:ro", *env_args, "-v", "fwgt-wp:/var/lib/woodpecker",
            WOODPECKER_SERVER_STANDIN,
        )  # fmt: skip
        host.wait_ready("woodpecker-server", ["curl", "-sSf", "--max-time", "5", f"{url}/healthz"])
        host.docker(
            "run", "-d", "--name", "woodpecker-agent", "--network", NETWORK, *mount,
            "-v", f"{host.daemon.socket}:/var/run/docker.sock",
            "-e", "WOODPECKER_SERVER=woodpecker-server:9000", "-e", "WOODPECKER_AGENT_SECRET_FILE=/run/wp/agent",
            "-e", "WOODPECKER_BACKEND=docker", "-e", "WOODPECKER_HOSTNAME=bench",
            WOODPECKER_AGENT_STANDIN,
        )  # fmt: skip
        seen = sampled(host, ["gitea", "woodpecker-server", "woodpecker-agent"])
        return {
            "Gitea stand-in (forgeway-gitea)": seen["gitea"],
            "Woodpecker server stand-in": seen["woodpecker-server"],
            "Woodpecker agent stand-in (one per runner host)": seen["woodpecker-agent"],
        }


def main() -> int:
    started_at = time.monotonic()
    figures = {**gitlab_standin(), **gitea_and_woodpecker_standins()}
    print("\nlab stand-ins' memory (docker stats, idle after ready; median and max of 5 samples, MiB)")
    print("NOT the real forges: small stand-ins built from Debian packages; see the README for what")
    print("GitLab's and Gitea's own documentation say they need.")
    for name, values in figures.items():
        mib = [v / (1 << 20) for v in values]
        print(f"  {name:<50} {statistics.median(mib):8.1f} {max(mib):8.1f}")
    print(f"({time.monotonic() - started_at:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
