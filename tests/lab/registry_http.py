"""Push and delete images over the registry HTTP API v2, with no docker and nothing pulled:
blobs and manifests crafted in Python (tests/lab/test_lab_registry_gc.py).

The registry stand-in lives in a namespace the test process is not in, so the requests run
there: ``python -m tests.lab.registry_http`` reads one JSON request on stdin (registry,
CA file, user, password, operations) and prints one JSON answer; :func:`run` does that in a
namespace. The password travels on stdin only. Operations:

* ``{"blob": "<base64>"}``: a monolithic upload (``POST /blobs/uploads/``, then ``PUT`` at the
  Location with ``digest``), answered with the blob's digest and size;
* ``{"manifest": "<base64>", "ref": TAG, "media_type": ...}``: ``PUT /manifests/<ref>``;
* ``{"delete": DIGEST}``: ``DELETE /manifests/<digest>``;
* ``{"get": TAG}``: ``GET /manifests/<tag>`` (status only);
* ``{"blob_get": DIGEST}``: ``GET /blobs/<digest>`` (status, and whether the bytes match);
* ``{"loop": {"stop_file": PATH, "max_seconds": N, "prefix": P}}``: push small images (a random
  layer, its config, its manifest tagged ``P-<i>``) one after another until PATH exists,
  answered with each attempt's time, step statuses and digests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """One platform's image: config and layer blobs, and the manifest naming them."""

    platform: dict[str, str]
    layer: bytes
    config: bytes = b""
    manifest: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rootfs = {"type": "layers", "diff_ids": [digest(self.layer)]}
        self.config = json.dumps({**self.platform, "rootfs": rootfs, "config": {}}, sort_keys=True).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest(self.layer), "size": len(self.layer)}],
            **self.extra,
        }).encode()  # fmt: skip

    @property
    def size(self) -> int:
        """What it stores in the registry: its blobs and its manifest (a blob too)."""
        return len(self.layer) + len(self.config) + len(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": OCI_MANIFEST, "digest": digest(self.manifest), "size": len(self.manifest),
                "platform": self.platform}  # fmt: skip

    def push_ops(self, ref: str | None = None) -> list[dict[str, str]]:
        ops = [{"blob": base64.b64encode(b).decode()} for b in (self.layer, self.config)]
        manifest = base64.b64encode(self.manifest).decode()
        return [*ops, {"manifest": manifest, "ref": ref or digest(self.manifest), "media_type": OCI_MANIFEST}]


def index(entries: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}).encode()


ROOT = Path(__file__).resolve().parents[2]


def start(argv_prefix: Sequence[str], request: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The operations of ``request``, started from a namespace (``argv_prefix``: its ip netns words)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [*argv_prefix, sys.executable, "-m", "tests.lab.registry_http"]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(json.dumps(request).encode())
    process.stdin.close()
    return process


def answers(process: subprocess.Popen[bytes], timeout: float = 120) -> list[dict[str, Any]]:
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()
    assert process.wait(timeout) == 0, f"registry_http: {err.decode()[-2000:]}"
    found: list[dict[str, Any]] = json.loads(out)
    return found


def run(argv_prefix: Sequence[str], request: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the operations of ``request`` from a namespace, and their answers."""
    return answers(start(argv_prefix, request))


class _Client:
    def __init__(self, request: dict[str, Any]) -> None:
        self.context = ssl.create_default_context(cafile=request["ca"])
        self.auth = "Basic " + base64.b64encode(f"{request['user']}:{request['password']}".encode()).decode()
        self.base, self.name = f"https://{request['registry']}", request["name"]

    def call(self, method: str, url: str, body: bytes | None = None, ctype: str | None = None) -> dict[str, Any]:
        # distribution answers an OCI manifest only to a client that accepts OCI types
        headers = {"Authorization": self.auth, "Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
        if ctype:
            headers["Content-Type"] = ctype
        full = url if url.startswith("https://") else self.base + url
        req = urllib.request.Request(full, data=body, method=method, headers=headers)  # noqa: S310 - https only
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=60) as r:  # noqa: S310 - https, built here
                body = r.read().decode(errors="replace")[:300]
                return {"status": r.status, "location": r.headers.get("Location"), "body": body}
        except urllib.error.HTTPError as err:
            return {"status": err.code, "location": None, "body": err.read().decode(errors="replace")[:300]}

    def blob(self, data: bytes) -> dict[str, Any]:
        start = self.call("POST", f"/v2/{self.name}/blobs/uploads/")
        if start["status"] != 202:
            return start
        sep = "&" if "?" in start["location"] else "?"
        put = self.call("PUT", f"{start['location']}{sep}digest={digest(data)}", data, "application/octet-stream")
        return {**put, "digest": digest(data), "size": len(data)}

    def push(self, image: Image, ref: str) -> list[int]:
        """The statuses of each step, up to the first that failed."""
        statuses = []
        for blob in (image.layer, image.config):
            statuses.append(self.blob(blob)["status"])
            if statuses[-1] != 201:
                return statuses
        statuses.append(self.call("PUT", f"/v2/{self.name}/manifests/{ref}", image.manifest, OCI_MANIFEST)["status"])
        return statuses

    def loop(self, stop_file: str, max_seconds: float, prefix: str) -> list[dict[str, Any]]:
        answers, deadline, i = [], time.monotonic() + max_seconds, 0
        while not os.path.exists(stop_file) and time.monotonic() < deadline:
            image = Image({"os": "linux", "architecture": "amd64"}, os.urandom(1024))
            began = time.time()
            statuses = self.push(image, f"{prefix}-{i}")
            blobs = [digest(image.layer), digest(image.config)]
            answers.append(
                {
                    "ref": f"{prefix}-{i}",
                    "t": began,
                    "statuses": statuses,
                    "manifest": digest(image.manifest),
                    "blobs": blobs,
                }
            )
            i += 1
        return answers

    def op(self, op: dict[str, Any]) -> list[dict[str, Any]]:
        name = self.name
        if "loop" in op:
            return self.loop(op["loop"]["stop_file"], op["loop"]["max_seconds"], op["loop"]["prefix"])
        if "blob" in op:
            return [self.blob(base64.b64decode(op["blob"]))]
        if "manifest" in op:
            data = base64.b64decode(op["manifest"])
            return [self.call("PUT", f"/v2/{name}/manifests/{op['ref']}", data, op["media_type"])]
        if "delete" in op:
            return [self.call("DELETE", f"/v2/{name}/manifests/{op['delete']}")]
        if "blob_get" in op:
            return [self.call("GET", f"/v2/{name}/blobs/{op['blob_get']}")]
        return [self.call("GET", f"/v2/{name}/manifests/{op['get']}")]


def _main() -> int:
    request = json.load(sys.stdin)
    client = _Client(request)
    json.dump([answer for op in request["ops"] for answer in client.op(op)], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
