"""The registry stand-in read by tools.imagecheck, and garbage-collected by forgeway's timer
service (issue 21), on the GitLab stand-in in a namespace of its own (tests/lab/standin_host.py:
a real dockerd, the program's container settings, docker-registry behind nginx's basic auth, its
``gitlab-ctl registry-garbage-collect`` doing what omnibus's does).

Images are crafted and pushed over the registry API from the namespace (tests/lab/registry_http.py):
nothing is pulled and no docker builds them. The timer's service is installed by the program's
own command (registry-gc-up.sh through the host-service seam, FORGEWAY_ETC under the test's
tree, systemd units as files) and its ExecStart run as systemd would run it: this namespace host
runs no systemd (the booting hosts of `make lab` do; not exercised here). A tag is deleted as
GitLab deletes one on a registry without its tag-delete API: the tag moves to a throwaway
manifest, which is then deleted by digest, so the image's own manifest stays, untagged.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.gitlab import CONTAINER_NAME
from components.host_service import HostService
from components.registry_gc import STORAGE, settings_file
from components.scripts import script
from tests.lab.registry_http import OCI_INDEX, ROOT, Image, digest, index, run, start
from tests.lab.registry_http import answers as answers_of
from tests.lab.standin_host import ADDRESS, PASSWORD, Host, standin_host, started
from tools.lab.docker import docker_env
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

REGISTRY = f"{ADDRESS}:5050"  # in the certificate's names
BOTH = "linux/amd64,linux/arm64"


class Forge:
    def __init__(self, host: Host, ca: Path) -> None:
        self.host, self.ca = host, ca
        self.etc = host.scratch / "root" / "etc"
        self.etc.mkdir(parents=True)
        self.prefix = Machine("host", host.netns).argv([])

    def request(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "registry": REGISTRY,
            "ca": str(self.ca),
            "user": "root",
            "password": PASSWORD,
            "name": name,
            "ops": ops,
        }

    def client(self, name: str, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return run(self.prefix, self.request(name, ops))

    def env(self) -> dict[str, str]:
        return {**os.environ, **docker_env(self.host.daemon), "FORGEWAY_ETC": str(self.etc), "FORGEWAY_SYSTEMD": "yes"}

    def stored(self) -> int:
        """Bytes of every file under the registry's storage, counted in the GitLab container."""
        sizes = self.host.docker("exec", CONTAINER_NAME, "find", STORAGE, "-type", "f", "-printf", "%s\n").stdout
        return sum(int(line) for line in sizes.split())

    def collect(self) -> dict[str, Any]:
        """The timer's service: its ExecStart, as systemd runs it (root, no arguments)."""
        unit = (self.etc / "systemd" / "system" / "forgeway-registry-gc.service").read_text()
        (exec_start,) = re.findall(r'^ExecStart="([^"]+)"$', unit, re.MULTILINE)
        done = subprocess.run([exec_start], env=self.env(), capture_output=True, text=True, timeout=300, check=False)
        print(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        status: dict[str, Any] = json.loads((self.etc.parent / "var/lib/forgeway/registry-gc/status.json").read_text())
        return status


@pytest.fixture(scope="module")
def forge() -> Iterator[Forge]:
    with standin_host() as host:
        made = Forge(host, started(host, CONTAINER_NAME))
        service = HostService(
            stage="registry-gc", up="registry-gc-up.sh", down="registry-gc-down.sh",
            args=["Sun *-*-* 04:30:00", "120"],
            files={"forgeway-registry-gc.sh": script("forgeway-registry-gc.sh"), "settings": settings_file()},
        )  # fmt: skip
        create_cmd = service.create()
        assert isinstance(create_cmd, str)
        up = subprocess.run(["sh", "-c", create_cmd], env=made.env(), capture_output=True, text=True, check=False)
        assert up.returncode == 0, up.stderr
        yield made


def _check(forge: Forge, name: str, ref: str, platforms: str) -> subprocess.CompletedProcess[str]:
    argv = [
        *forge.prefix, sys.executable, "-m", "tools.imagecheck", f"{REGISTRY}/{name}:{ref}", "--platform", platforms,
        "--ca", str(forge.ca), "--user", "root", "--password-stdin",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60, check=False)  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_checker_passes_exactly_the_platforms_pushed_and_fails_an_attestation(forge: Forge) -> None:
    name = "root/imagecheck-lab"
    amd = Image({"os": "linux", "architecture": "amd64"}, os.urandom(4096))
    arm = Image({"os": "linux", "architecture": "arm64"}, os.urandom(4096))
    # buildx's provenance manifest: an in-toto layer, platform unknown/unknown, its annotations
    statement = json.dumps(
        {"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"digest": digest(amd.manifest)}]}
    )
    attestation = Image({"os": "unknown", "architecture": "unknown"}, statement.encode())
    annotations = {
        "vnd.docker.reference.digest": digest(amd.manifest),
        "vnd.docker.reference.type": "attestation-manifest",
    }
    attested = {**attestation.descriptor(), "annotations": annotations}
    ops = [
        *amd.push_ops(), *arm.push_ops(), *attestation.push_ops(),
        {"manifest": _b64(index([amd.descriptor(), arm.descriptor()])), "ref": "two", "media_type": OCI_INDEX},
        {"manifest": _b64(index([amd.descriptor(), arm.descriptor(), attested])), "ref": "attested",
         "media_type": OCI_INDEX},
    ]  # fmt: skip
    pushed = forge.client(name, ops)
    assert [a["status"] for a in pushed] == [201] * len(ops), pushed

    passed = _check(forge, name, "two", BOTH)
    print(f"\n{passed.stdout}{passed.stderr}")
    assert passed.returncode == 0 and "ok: exactly linux/amd64, linux/arm64" in passed.stdout, passed
    failed = _check(forge, name, "attested", BOTH)
    print(f"{failed.stdout}{failed.stderr}")
    assert failed.returncode == 1, failed
    assert "FAIL unknown/unknown" in failed.stdout and "--provenance=false --sbom=false" in failed.stdout, failed
    missing = _check(forge, name, "two", BOTH + ",linux/arm/v7")
    assert missing.returncode == 1 and "linux/arm/v7: asked for, but the index has no manifest" in missing.stdout


def _intact(forge: Forge, name: str, ref: str, blobs: list[str]) -> list[int]:
    return [a["status"] for a in forge.client(name, [{"get": ref}, *({"blob_get": b} for b in blobs)])]


def test_deleting_a_tag_then_the_timers_service_frees_that_images_space(forge: Forge) -> None:
    name = "root/gc-lab"
    forge.collect()  # what other tests left untagged goes first: this run's figure is ours alone
    keep = Image({"os": "linux", "architecture": "amd64"}, os.urandom(256 << 10))
    drop = Image({"os": "linux", "architecture": "arm64"}, os.urandom(512 << 10))
    pushed = forge.client(name, [*keep.push_ops("keep"), *drop.push_ops("drop")])
    assert [a["status"] for a in pushed] == [201] * 6, pushed
    dummy = Image({"os": "linux", "architecture": "amd64"}, b"", extra={"annotations": {"forgeway": "untag"}})
    moved = forge.client(name, [*dummy.push_ops("drop"), {"delete": digest(dummy.manifest)}])
    assert [a["status"] for a in moved] == [201, 201, 201, 202], moved
    assert forge.client(name, [{"get": "drop"}, {"get": digest(drop.manifest)}])[1]["status"] == 200  # untagged, kept

    before = forge.stored()
    status = forge.collect()
    after = forge.stored()
    freed = before - after
    # drop's blobs and manifest, the throwaway's, and drop's revision link (distribution keeps
    # _manifests/revisions/sha256/<digest>/link, 71 bytes: "sha256:" and 64 hex digits)
    expected = drop.size + dummy.size + len(digest(drop.manifest))
    print(f"\nregistry storage {before} -> {after}: freed {freed} (expected {expected}); status {status}")
    assert freed == expected, (freed, expected)
    assert status["result"] == "ok" and status["freed_bytes"] == freed, status
    assert (status["bytes_before"], status["bytes_after"]) == (before, after), status
    assert _intact(forge, name, "keep", [digest(keep.layer), digest(keep.config)]) == [200, 200, 200]
    assert forge.client(name, [{"get": digest(drop.manifest)}])[0]["status"] == 404


def test_a_push_during_the_window_is_refused_and_no_tagged_data_is_lost(forge: Forge, tmp_path: Path) -> None:
    name = "root/gc-window"
    stop = tmp_path / "stop"
    loop = {"stop_file": str(stop), "max_seconds": 120, "prefix": f"loop{time.time_ns()}"}
    pushing = start(forge.prefix, forge.request(name, [{"loop": loop}]))
    time.sleep(2)
    window_start = time.time()
    status = forge.collect()
    window_end = time.time()
    time.sleep(2)
    stop.touch()
    attempts = answers_of(pushing)
    refused = [a for a in attempts if a["statuses"] and a["statuses"][-1] != 201]
    print(f"\n{len(attempts)} pushes, {len(refused)} refused; window {window_end - window_start:.2f}s; {status}")
    assert status["result"] == "ok", status
    assert refused, "no push was refused while the registry was collected"
    assert all(a["statuses"][-1] in (502, 503) for a in refused), refused
    assert all(window_start - 1 <= a["t"] <= window_end for a in refused), "a push failed outside the window"
    before = [a for a in attempts if a["t"] < window_start - 1]
    after = [a for a in attempts if a["t"] > window_end]
    assert before and after and all(a["statuses"][-1] == 201 for a in before + after)
    tagged = [a for a in attempts if a["statuses"] == [201, 201, 201]]  # layer, config, manifest
    in_window = [t for t in tagged if window_start - 1 <= t["t"] <= window_end]
    for a in tagged[:: max(1, len(tagged) // 20)] + in_window:
        assert _intact(forge, name, a["ref"], a["blobs"]) == [200, 200, 200], a
