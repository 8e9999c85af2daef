"""`python -m tools.doctor` on the `make lab` topology: clean on the applied lab; then each
item broken in turn, doctor naming it and its repair, the repair run, doctor clean again.

One applied lab (the session's), breaks in sequence, no apply from nothing: every test
starts from a clean doctor run and leaves the lab as it found it. A repair named as
``pulumi up --replace URN`` is run as the applier's request with ``"replace": [URN]``
(tools/applier/apply.py: the CLI's semantics); a unit is restarted or started inside the
host, as `sudo systemctl` there would. FIXED names: run under ``flock /tmp/fwl.lock``.

An expired certificate is made as a year without `pulumi up` makes it: the program's
server certificate, re-signed by the stack's CA with the same key, names and uses but
dates a year back, in the state and where GitLab's nginx reads it (restarted as omnibus's
``gitlab-ctl restart nginx``); doctor must see it on every docker host, through the VPS.

A full disk is made on a small file system: the lab's docker data roots are on this
machine's big disk, so runner-amd's dockerd is moved, for that test only, onto a tmpfs
over its data root holding a copy of its data (inside that host's mount namespace), which
old unused images fill past the stack's threshold; the prune unit doctor names empties
it. The tmpfs goes after the test, pass or fail, and dockerd is back on its own data
(docs/doctor.md, Limits). What the lab cannot do, said plainly: gitlab-runner verify and
the API token's expiry are not in the stand-in images (doctor says so as ``info``).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from components.gitlab import CONTAINER_NAME as GITLAB
from tests.lab.make_lab import LAB_DIR, REGISTRY, SEEDS, MakeLab
from tests.stacks import ROOT
from tests.unit.test_doctor_registry import backdated
from tools.lab.machine import Machine

BACKUP_STATUS = "/var/lib/forgeway/backup/status.json"
REGISTRY_GC_STATUS = "/var/lib/forgeway/registry-gc/status.json"  # components/registry_gc.py STATUS
DOCKER_HOSTS = ("home", "runner-arm", "runner-amd")
SERVER_CERT = "::gitlab-tls-cert"  # state keys end so (components/pki.py ForgeTls)


def doctor(*args: str) -> tuple[int, dict[str, Any], str]:
    """``python -m tools.doctor --stack lab --json ARGS``: (exit status, the document, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.doctor", "--stack", "lab", "--json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.stdout, f"doctor printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    return done.returncode, json.loads(done.stdout), done.stderr


def problems(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in document["findings"] if f["status"] in ("warn", "fail")]


def assert_clean(tries: int = 1, wait_s: float = 5) -> dict[str, Any]:
    """Doctor exits 0 with no problem (``tries``: a handshake or a container may take a moment)."""
    for attempt in range(tries):
        code, document, stderr = doctor()
        if code == 0 and not problems(document):
            return document
        if attempt + 1 < tries:
            time.sleep(wait_s)
    raise AssertionError(f"doctor not clean (exit {code}): {problems(document)} {stderr[-1000:]}")


def the_problem(document: dict[str, Any], host: str, item: str) -> dict[str, Any]:
    """The one problem doctor reports (on ``host``, about ``item``), with its repair; an
    unreachable registry it cuts off on docker hosts is named with that same repair."""
    found = problems(document)
    primary = [f for f in found if f"(follows from {host} {item})" not in f["detail"]]
    assert [(f["host"], f["item"]) for f in primary] == [(host, item)], found
    assert primary[0]["repair"], primary[0]
    for consequence in (f for f in found if f not in primary):
        assert consequence["item"] == "registry-tls" and consequence["repair"] == primary[0]["repair"], consequence
    return primary[0]


def run_repair(lab: MakeLab, repair: dict[str, Any]) -> None:
    """The named repair as the lab runs it."""
    if repair["kind"] == "run":  # `sudo COMMAND` on the host
        done = lab.machine(repair["host"]).inside.execute(["sh", "-c", repair["subject"]], timeout=300)
        assert done.returncode == 0, f"{repair['text']}: {done.stdout} {done.stderr}"
        return
    if repair["kind"] in ("restart", "start"):
        done = lab.machine(repair["host"]).inside.execute(["systemctl", repair["kind"], repair["subject"]], timeout=300)
        assert done.returncode == 0, f"{repair['text']}: {done.stderr}"
        return
    from tools.lab.config import lab_config
    from tools.lab.layout import STATE
    from tools.lab.topology import _applier_run
    from tools.stack.synth import stack_config_strings

    assert repair["kind"] == "replace", repair
    config, secret_keys = lab_config(lab.topology)
    request = {"action": "apply", "stack": "lab", "config": stack_config_strings(config), "secret_keys": secret_keys,
               "state": str(STATE), "seed": SEEDS[0], "replace": [repair["subject"]]}  # fmt: skip
    done = _applier_run(request)
    assert done.returncode == 0, done.stderr[-3000:]
    replaced = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(c["op"] == "replace" and repair["subject"].endswith(f"::{c['name']}") for c in replaced), replaced


def test_doctor_is_clean_on_the_applied_lab(make_lab: MakeLab) -> None:
    document = assert_clean()
    record = os.environ.get("FORGEWAY_DOCTOR_RECORD")  # the unit tests' recordings (tests/unit/doctor/)
    if record:
        doctor("--record", record)
    items = {(f["host"], f["item"]) for f in document["findings"]}
    for wanted in [("vps", "tunnel"), ("vps", "forwarding"), ("vps", "ip_forward"), ("vps", "admin-ssh"),
                   ("home", "tunnel"), ("home", "gitlab liveness"), ("home", "gitlab readiness"), ("home", "disk"),
                   ("home", "backup"), ("home", "registry-gc"), ("home", "registry-gc timer"),
                   ("runner-amd", "runner"), ("runner-arm", "disk"),
                   *((h, "registry-tls") for h in DOCKER_HOSTS)]:  # fmt: skip
        assert wanted in items, (wanted, sorted(items))
    tls = [f["detail"] for f in document["findings"] if f["item"] == "registry-tls"]
    assert all(d.startswith(f"{REGISTRY}: certificate expires ") and "verified with" in d for d in tls), tls
    peers = [f["detail"] for f in document["findings"] if f["host"] == "vps" and f["item"] == "tunnel"]
    assert len(peers) == 3 and all("handshake" in p and "endpoint" in p for p in peers), peers
    # Human-readable by default, and nothing secret in it (the deployer's key, GitLab's root password).
    text = subprocess.run([sys.executable, "-m", "tools.doctor", "--stack", "lab"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False).stdout  # fmt: skip
    assert text.endswith("all well (exit 0)\n"), text
    if record:
        Path(record, "clean.txt").write_text(text)
    password = make_lab.state()["random:index/randomPassword:RandomPassword::home-gitlab-root-password"]["outputs"]
    assert password["result"] not in text and "PRIVATE KEY" not in text


def test_a_flushed_forwarding_table_is_named_with_its_unit(make_lab: MakeLab) -> None:
    assert_clean()
    make_lab.machine("vps").inside.succeed(["nft", "flush", "table", "ip", "forgeway"])
    code, document, _ = doctor()
    if record := os.environ.get("FORGEWAY_DOCTOR_RECORD"):
        Path(record, "broken-forwarding.json").write_text(json.dumps(document, indent=1))
    problem = the_problem(document, "vps", "forwarding")
    assert code == 2 and "differs from the program's" in problem["detail"], problem
    assert problem["repair"]["kind"] == "restart" and problem["repair"]["subject"] == "forgeway-nftables.service"
    run_repair(make_lab, problem["repair"])
    assert_clean()


def test_a_killed_wireguard_go_is_named_with_its_unit(make_lab: MakeLab) -> None:
    assert_clean()
    home = make_lab.machine("home").inside
    home.succeed("kill $(cat /run/forgeway/wg0.pid)")
    home.wait_until_fails(["ip", "link", "show", "wg0"], timeout=10)
    if record := os.environ.get("FORGEWAY_DOCTOR_RECORD"):  # a broken run's text, for the README
        text = subprocess.run([sys.executable, "-m", "tools.doctor", "--stack", "lab"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        Path(record, "broken-tunnel.txt").write_text(f"{text.stdout}[exit {text.returncode}]\n")
    code, document, _ = doctor()
    problem = the_problem(document, "home", "tunnel")
    assert code == 2 and "the interface is down" in problem["detail"], problem
    assert (problem["repair"]["host"], problem["repair"]["subject"]) == ("home", "forgeway-tunnel@wg0.service")
    run_repair(make_lab, problem["repair"])
    assert_clean(tries=6)


def test_a_stopped_runner_is_named_with_its_replace(make_lab: MakeLab) -> None:
    assert_clean()
    make_lab.machine("runner-amd").docker("stop", "forgeway-runner")
    code, document, _ = doctor()
    problem = the_problem(document, "runner-amd", "runner")
    assert code == 2 and "not running" in problem["detail"], problem
    urn = "urn:pulumi:lab::forgeway::forgeway:runners:RunnerHost$docker:index/container:Container::runner-amd-runner"
    assert problem["repair"]["text"] == f"pulumi up --replace '{urn}'", problem
    run_repair(make_lab, problem["repair"])
    assert_clean(tries=6)


SMALL_DISK = "/run/fwl-doctor-disk"  # runner-amd: where its docker data root is seen while a tmpfs covers it
FILL_IMAGE = "fwl-doctor-fill"


def fill_image(tag: int, size: int) -> bytes:
    """A ``docker load`` archive: image FILL_IMAGE:TAG, one layer of ``size`` random bytes,
    created in 2020 (older than any runners.prune.keep_hours: the prune unit removes it)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as layer:
        info = tarfile.TarInfo(f"fill-{tag}")
        info.size = size
        layer.addfile(info, io.BytesIO(os.urandom(size)))
    layer_tar = data.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2020-01-01T00:00:00Z", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
    }).encode()  # fmt: skip
    name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": name, "RepoTags": [f"{FILL_IMAGE}:{tag}"], "Layers": ["layer.tar"]}]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as out:
        for member, body in (("layer.tar", layer_tar), (name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size = len(body)
            out.addfile(info, io.BytesIO(body))
    return archive.getvalue()


def _disk_use(document: dict[str, Any], host: str) -> tuple[str, int, int]:
    """(mount point, use percent, threshold) of ``host``'s disk finding."""
    detail = next(f["detail"] for f in document["findings"] if (f["host"], f["item"]) == (host, "disk"))
    mount, rest = detail.split(": ", 1)
    return mount, int(rest.split("% used")[0]), int(detail.rsplit("(threshold ", 1)[1].rstrip("%)"))


def _small_docker_root(host: Machine, root: str) -> int:
    """Docker's data root on ``host`` moved onto a tmpfs about twice its size, inside the
    host's mount namespace: dockerd stopped, the tmpfs mounted over ROOT, the data copied
    onto it, dockerd started again (its containers restart). Returns the tmpfs's size in KiB."""
    host.succeed(["systemctl", "stop", "docker.socket", "docker.service"], timeout=120)
    used_kib = int(host.succeed(["du", "-sk", root]).split()[0])
    size_kib = max(2 * used_kib, 256 * 1024)
    # The bind is made private first: else the tmpfs mounted over ROOT propagates onto it.
    tmpfs = f"mount -t tmpfs -o size={size_kib}k,mode=0710 fwl-doctor-disk {root}"
    host.succeed(f"mkdir -p {SMALL_DISK}/data && mount --bind {root} {SMALL_DISK}/data && "
                 f"mount --make-private {SMALL_DISK}/data && {tmpfs} && "
                 f"cp -a {SMALL_DISK}/data/. {root}/ && umount {SMALL_DISK}/data", timeout=300)  # fmt: skip
    host.succeed(["systemctl", "start", "docker.socket", "docker.service"], timeout=120)
    return size_kib


def _docker_root_back(host: Machine, root: str) -> None:
    """Undo :func:`_small_docker_root` (whatever part of it ran): dockerd stopped, the bind
    and the tmpfs unmounted, SMALL_DISK removed, dockerd started on its own data again."""
    host.execute(["systemctl", "stop", "docker.socket", "docker.service"], timeout=120)
    for mount in (f"{SMALL_DISK}/data", root):
        for _ in range(3):  # (mounted more than once by a retried setup)
            source = host.execute(["findmnt", "-rn", "-M", mount, "-o", "SOURCE"]).stdout.strip()
            if (mount == root and source != "fwl-doctor-disk") or not source:
                break  # nothing of ours mounted there
            if host.execute(["umount", "-R", mount]).returncode != 0:
                host.succeed(["umount", "-l", mount])
    host.execute(["rmdir", f"{SMALL_DISK}/data", SMALL_DISK])  # rmdir: never into what may still be docker's data
    host.succeed(["systemctl", "start", "docker.socket", "docker.service"], timeout=120)


def _use(host: Machine, root: str) -> int:
    return int(host.succeed(f"df -P {root} | awk 'NR == 2 {{ sub(/%$/, \"\", $5); print $5 }}'").strip())


def test_a_disk_past_the_threshold_is_named_with_the_prune_unit(make_lab: MakeLab) -> None:
    """runner-amd's docker data root on a small file system (a tmpfs over it, with a copy of
    its data), filled past runners.prune.threshold_percent with unused images of 2020: doctor
    names the disk and the prune unit; the unit prunes them; doctor is clean. The host's own
    data root, under the tmpfs, is not touched, and comes back as it was."""
    document = assert_clean()
    runner = make_lab.machine("runner-amd")
    host = runner.inside
    root = runner.docker("info", "--format", "{{.DockerRootDir}}").strip()
    _, before, threshold = _disk_use(document, "runner-amd")
    assert before < threshold
    try:
        size_kib = _small_docker_root(host, root)
        assert host.succeed(["findmnt", "-rn", "-M", root, "-o", "FSTYPE"]).strip() == "tmpfs"
        assert "fwl-doctor-disk" not in Path("/proc/self/mounts").read_text()  # in that host's namespace only
        runner.docker("info", "--format", "{{.ID}}")  # dockerd answers on its data copy
        # Fill to between the threshold and the 95 % that fails, in steps of 1/20 (a load
        # needs its layer twice while it unpacks it).
        step = size_kib * 1024 // 20
        for tag in range(20):
            if _use(host, root) >= threshold + 5:
                break
            runner.docker("load", stdin=fill_image(tag, step))
        code, document, _ = doctor()
        problem = the_problem(document, "runner-amd", "disk")
        mount, used, _ = _disk_use(document, "runner-amd")
        assert code in (1, 2) and mount == root and threshold <= used, problem
        assert (problem["repair"]["kind"], problem["repair"]["subject"]) == ("start", "forgeway-docker-prune.service")
        run_repair(make_lab, problem["repair"])
        assert runner.docker("images", "-q", FILL_IMAGE).strip() == ""  # the prune removed them
        after = assert_clean(tries=3)
        assert _disk_use(after, "runner-amd")[1] < threshold
    finally:
        _docker_root_back(host, root)
    assert host.execute(["findmnt", "-rn", "-M", root, "-o", "FSTYPE"]).stdout.strip() != "tmpfs"  # (none: exit 1)
    assert host.execute(["test", "-e", SMALL_DISK]).returncode != 0
    assert_clean(tries=12)  # the runner container back on the host's own data


def test_a_failed_backup_is_named_with_the_backup_unit(make_lab: MakeLab) -> None:
    assert_clean()
    home = make_lab.machine("home").inside
    before = home.execute(["cat", BACKUP_STATUS])
    failed = {"result": "failed", "started": "2026-12-07T03:00:00Z", "finished": "2026-12-07T03:01:00Z",
              "snapshot": None, "gitlab_version": "17.11.3", "backup_file": None, "repository": "sftp:vps:/backup",
              "duration_seconds": 60.0, "added_bytes": None, "error": "restic: repository is locked"}  # fmt: skip
    home.succeed(f"mkdir -p $(dirname {BACKUP_STATUS}) && cat >{BACKUP_STATUS}", stdin=json.dumps(failed))
    try:
        code, document, _ = doctor()
        problem = the_problem(document, "home", "backup")
        assert code == 2 and "repository is locked" in problem["detail"], problem
        assert (problem["repair"]["kind"], problem["repair"]["subject"]) == ("start", "forgeway-backup.service")
        if home.execute(["systemctl", "cat", "forgeway-backup.service"]).returncode == 0:
            run_repair(make_lab, problem["repair"])  # backups installed by the program (issue 18)
        elif before.returncode == 0:
            home.succeed(f"cat >{BACKUP_STATUS}", stdin=before.stdout)
        else:  # no backups on this lab: what doctor then sees
            home.succeed(["rm", "-f", BACKUP_STATUS])
        assert_clean()
    finally:
        if before.returncode != 0:
            home.execute(["rm", "-f", BACKUP_STATUS])


def test_a_stopped_registry_gc_timer_and_a_failed_collection_are_named_with_their_units(make_lab: MakeLab) -> None:
    """The registry's garbage collection on the GitLab host: its timer stopped, named with
    the timer, which is started, doctor clean; then a failed last run in its status.json,
    named with the service, which is started: a real collection, doctor clean."""
    assert_clean()
    home = make_lab.machine("home").inside
    before = home.execute(["cat", REGISTRY_GC_STATUS])
    home.succeed(["systemctl", "stop", "forgeway-registry-gc.timer"])
    try:
        code, document, _ = doctor()
        problem = the_problem(document, "home", "registry-gc timer")
        assert code == 1 and "forgeway-registry-gc.timer is inactive" in problem["detail"], problem
        assert (problem["repair"]["kind"], problem["repair"]["subject"]) == ("start", "forgeway-registry-gc.timer")
        run_repair(make_lab, problem["repair"])
        assert_clean()
        failed = {"result": "failed", "started": "2026-12-06T04:30:00Z", "finished": "2026-12-06T04:31:00Z",
                  "duration_seconds": 60.0, "bytes_before": 1000, "bytes_after": None, "freed_bytes": None,
                  "error": "gitlab-ctl registry-garbage-collect -m failed: boom"}  # fmt: skip
        home.succeed(f"cat >{REGISTRY_GC_STATUS}", stdin=json.dumps(failed))
        code, document, _ = doctor()
        problem = the_problem(document, "home", "registry-gc")
        assert code == 1 and problem["detail"].endswith("failed: boom"), problem
        assert (problem["repair"]["kind"], problem["repair"]["subject"]) == ("start", "forgeway-registry-gc.service")
        # The named repair, run: a real collection of the stand-in's registry (the make-lab
        # run of 2026-12-07 failed here on a registry nothing was pushed to: now ok, freed 0).
        run_repair(make_lab, problem["repair"])
        ran = json.loads(home.succeed(["cat", REGISTRY_GC_STATUS]))
        assert ran["result"] == "ok" and isinstance(ran["freed_bytes"], int), ran
        assert_clean()
    finally:
        home.execute(["systemctl", "start", "forgeway-registry-gc.timer"])
        if before.returncode == 0:
            home.execute(f"cat >{REGISTRY_GC_STATUS}", stdin=before.stdout)
        else:
            home.execute(["rm", "-f", REGISTRY_GC_STATUS])


def _state_entry(suffix: str) -> tuple[str, dict[str, Any]]:
    entries: dict[str, Any] = json.loads((LAB_DIR / "state.json").read_text())["entries"]
    return next((urn, entry) for urn, entry in entries.items() if urn.endswith(suffix))


def test_an_expired_registry_certificate_is_named_with_its_replace(make_lab: MakeLab) -> None:
    assert_clean()
    key, leaf = _state_entry(SERVER_CERT)
    urn = f"urn:pulumi:lab::forgeway::forgeway:pki:ServerCertificate${key}"  # what `pulumi up --replace` takes
    ca_pem = _state_entry("::ca-cert")[1]["outputs"]["certPem"]
    old_pem = leaf["outputs"]["certPem"]
    end = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(days=2)
    pem, start = backdated(old_pem, ca_pem, _state_entry("::ca-key")[1]["outputs"]["privateKeyPem"], end)
    # The state as a year without `up` leaves it (a plain `up` would now renew it, too) ...
    state_file = LAB_DIR / "state.json"
    state = json.loads(state_file.read_text())
    state["entries"][key]["outputs"].update(certPem=pem, validityStartTime=f"{start:%Y-%m-%dT%H:%M:%SZ}",
                                            validityEndTime=f"{end:%Y-%m-%dT%H:%M:%SZ}")  # fmt: skip
    state_file.write_text(json.dumps(state, indent=1))
    # ... and the chain GitLab serves (components/gitlab.py: /etc/gitlab/ssl/<name>.crt, the certificate then the CA)
    home = make_lab.machine("home")
    served = home.docker("exec", GITLAB, "sh", "-c", "ls /etc/gitlab/ssl/*.crt").split()
    for path in served:
        assert home.docker("exec", GITLAB, "cat", path).startswith(old_pem.strip()), path
        home.docker("exec", "-i", GITLAB, "sh", "-c", f"cat >{path}", stdin=(pem + ca_pem).encode())
    home.docker("exec", GITLAB, "gitlab-ctl", "restart", "nginx")
    code, document, _ = doctor()
    if record := os.environ.get("FORGEWAY_DOCTOR_RECORD"):
        text = subprocess.run([sys.executable, "-m", "tools.doctor", "--stack", "lab"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        Path(record, "broken-registry.txt").write_text(f"{text.stdout}[exit {text.returncode}]\n")
    found = problems(document)
    assert code == 2 and [(f["host"], f["item"]) for f in found] == [(h, "registry-tls") for h in DOCKER_HOSTS], found
    for problem in found:
        assert f"certificate expired {end.date().isoformat()} (2 days ago)" in problem["detail"], problem
        assert "verified with" in problem["detail"], problem  # the chain is the CA's: only its date is wrong
        assert (problem["repair"]["kind"], problem["repair"]["subject"]) == ("replace", urn), problem
    run_repair(make_lab, found[0]["repair"])
    assert_clean(tries=12, wait_s=10)
    renewed = _state_entry(SERVER_CERT)[1]["outputs"]["certPem"]
    assert renewed not in (pem, old_pem)  # a new certificate, and the new container serves it
    for path in served:
        assert home.docker("exec", GITLAB, "cat", path).startswith(renewed.strip()), path


def test_a_removed_registry_trust_is_named_with_the_staged_install(make_lab: MakeLab) -> None:
    assert_clean()
    runner = make_lab.machine("runner-arm").inside
    ca = f"/etc/docker/certs.d/{REGISTRY}/ca.crt"
    runner.succeed(["rm", ca])
    code, document, _ = doctor()
    problem = the_problem(document, "runner-arm", "registry-tls")
    assert code == 2 and f"{ca} is missing or unreadable" in problem["detail"], problem
    stage = "/etc/forgeway/stage/docker-client"
    assert problem["repair"]["text"].startswith(f"on runner-arm: sudo sh {stage}/docker-client-up.sh {stage}")
    run_repair(make_lab, problem["repair"])
    runner.succeed(["test", "-s", ca])
    assert_clean()
