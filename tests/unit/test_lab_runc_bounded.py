"""tools/lab/runc_bounded.py: which capabilities a reduced bounding set lacks, and what it takes out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tools.lab import runc_bounded
from tools.lab.runc_bounded import bound, missing

pytestmark = pytest.mark.unit

FULL = "CapInh:\t0000000000000000\nCapBnd:\t000001ffffffffff\n"
NO_SYS_RESOURCE = "CapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"  # this session's sandbox


def test_missing_names_the_capabilities_outside_the_bounding_set() -> None:
    assert missing(FULL, 40) == []
    assert missing(NO_SYS_RESOURCE, 40) == ["CAP_SYS_RESOURCE"]
    # a kernel that knows fewer: nothing above cap_last_cap counts as missing
    assert missing("CapBnd:\t0000000000ffffff\n", 23) == []
    assert missing("CapBnd:\t0000000000fffffe\n", 23) == ["CAP_CHOWN"]


def test_the_numbering_is_the_kernels() -> None:
    assert runc_bounded.NAMES.index("SYS_ADMIN") == 21 and runc_bounded.NAMES.index("SYS_RESOURCE") == 24
    assert len(runc_bounded.NAMES) == 41 and runc_bounded.NAMES[-1] == "CHECKPOINT_RESTORE"


def test_bound_takes_them_out_of_every_set_and_nothing_else() -> None:
    everything = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"]
    sets = {kind: list(everything) for kind in ("bounding", "effective", "permitted", "inheritable")}
    config: dict[str, object] = {"process": {"capabilities": sets, "args": ["sh"]}, "root": {"path": "rootfs"}}
    out = bound(json.loads(json.dumps(config)), ["CAP_SYS_RESOURCE"])
    process = out["process"]
    assert isinstance(process, dict)
    assert all(names == ["CAP_CHOWN", "CAP_SYS_ADMIN"] for names in process["capabilities"].values())
    assert process["args"] == ["sh"] and out["root"] == {"path": "rootfs"}


def test_main_rewrites_a_new_containers_config_and_execs_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"process": {"capabilities": {"bounding": ["CAP_KILL", "CAP_SYS_RESOURCE"]}}}))
    execs: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(runc_bounded, "missing", lambda: ["CAP_SYS_RESOURCE"])
    monkeypatch.setattr("tools.lab.runc_bounded.os.execvp", lambda file, args: execs.append((file, args)))
    argv = ["--root", "/run/x", "create", "--bundle", str(tmp_path), "--pid-file", "p", "id1"]
    runc_bounded.main(argv)
    assert json.loads(spec.read_text())["process"]["capabilities"] == {"bounding": ["CAP_KILL"]}
    assert execs == [("runc", ["runc", *argv])]
    # any other command passes through untouched
    spec.write_text("not json: must not be read")
    runc_bounded.main(["--root", "/run/x", "delete", "id1"])
    assert spec.read_text() == "not json: must not be read"
    assert execs[-1] == ("runc", ["runc", "--root", "/run/x", "delete", "id1"])


def test_the_runtime_sends_only_create_and_run_through_python(tmp_path: Path) -> None:
    """tools/lab/runc_bounded.sh, the path dockerd is given, with a runc that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "runc").write_text(f'#!/bin/sh\necho "$*" >>{calls}\n')
    (bin_dir / "runc").chmod(0o755)
    spec = tmp_path / "config.json"
    caps = [f"CAP_{name}" for name in runc_bounded.NAMES]
    spec.write_text(json.dumps({"process": {"capabilities": {"bounding": caps}}}))
    runtime = Path(runc_bounded.__file__).with_suffix(".sh")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    for argv in (["--root", "/r", "create", "--bundle", str(tmp_path), "c1"], ["--root", "/r", "delete", "c1"]):
        subprocess.run([str(runtime), *argv], env=env, check=True, timeout=30)
    assert calls.read_text().splitlines() == [f"--root /r create --bundle {tmp_path} c1", "--root /r delete c1"]
    kept = json.loads(spec.read_text())["process"]["capabilities"]["bounding"]
    assert kept == [c for c in caps if c not in missing()]  # this machine's own bounding set
