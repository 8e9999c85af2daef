"""The runner hosts of `make lab`: the runner, its daemon.json, what a job sees, multiarch and prune."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest

from tests.lab.make_lab import REGISTRY, STANDIN_RUNNER, MakeLab, run_unit
from tools.lab.machine import Machine


def _runner_logs(runner: Machine, timeout: float = 15) -> str:
    """The runner's log once the stand-in says ready (it checks config.toml, the CA and the socket first)."""
    deadline = time.monotonic() + timeout
    while "runner-standin ready" not in (logs := runner.docker_execute("logs", "forgeway-runner").stdout):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return logs


def test_runners_run_with_their_config_and_a_merged_daemon_json(make_lab: MakeLab) -> None:
    from tools.lab.layout import SEEDED_DAEMON_JSON

    for name in ("runner-arm", "runner-amd"):
        runner = make_lab.machine(name)
        logs = _runner_logs(runner)
        assert f"runner-standin ready: {name} https://gitlab.forgeway.test" in logs, logs
        daemon = json.loads(runner.path("/etc/docker/daemon.json").read_text())
        assert daemon["labels"] == json.loads(SEEDED_DAEMON_JSON)["labels"], "the host's own key was lost"
        assert daemon["mtu"] == 1420 and daemon["log-driver"] == "json-file", daemon
        # dockerd runs with it: the default bridge has the tunnel MTU
        mtu = runner.docker("network", "inspect", "bridge", "--format", "{{json .Options}}")
        assert '"com.docker.network.driver.mtu":"1420"' in mtu, mtu
    # runner-arm is declared arm64: its image is what the applier checked was linux/arm64
    arm = make_lab.machine("runner-arm")
    assert arm.docker("image", "inspect", "--format", "{{.Architecture}}", STANDIN_RUNNER).strip() == "arm64"


def test_jobs_get_ipv6_and_reach_another_lab_host(make_lab: MakeLab) -> None:
    """On docker's default bridge and on a per-job network (IPv6, no subnet given, as the
    runner makes one): an address from runners.ipv6_prefix, and home reached over IPv6."""
    server = (
        "import socket; s=socket.create_server(('fd00:198:51:100::2', 8099), family=socket.AF_INET6);"
        "s.settimeout(60)\nwhile True:\n c,a=s.accept(); c.sendall(('seen '+a[0]+'\\n').encode()); c.close()"
    )
    probe = (
        "import socket; s=socket.create_connection(('fd00:198:51:100::2', 8099), 5);print(s.recv(100).decode().strip())"
    )
    addresses = (
        "import socket; print([a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET6)])"
    )
    runner = make_lab.machine("runner-amd")
    # home listens on its LAN ULA; a container on runner-amd connects, as a job would.
    with make_lab.machine("home").background(["python3", "-c", server]):
        make_lab.machine("home").wait_for_open_port(8099, "fd00:198:51:100::2", timeout=10)
        for network in ("bridge", "forgeway-lab-job"):
            if network != "bridge":  # a per-job network, as the runner makes one: IPv6, no subnet given
                made = runner.docker("network", "create", "--ipv6", network)
                assert made.strip(), "docker could not make an IPv6 job network on runner-amd"
            try:
                run = ["run", "--rm", "--network", network, "--entrypoint", "python3", STANDIN_RUNNER, "-c"]
                ran = runner.docker_execute(*run, addresses).stdout
                assert "fd00:f0e5:7a1b:" in ran, f"{network}: no address from runners.ipv6_prefix: {ran!r}"
                seen = runner.docker_execute(*run, probe).stdout
                # NAT66: home sees the runner host's own ULA
                assert seen.startswith("seen fd00:198:51:100::4"), f"{network}: {seen!r}"
            finally:
                if network != "bridge":
                    runner.docker_execute("network", "rm", network)


def test_a_job_sees_the_registry_ca_in_certs_d_and_a_buildkitd_toml_that_names_it(make_lab: MakeLab) -> None:
    """A container started as the docker executor starts a job (the volumes of the
    config.toml the runner was given) finds the stack CA where docker looks for the
    registry's, and a buildkitd.toml whose every ``ca`` is a file holding that CA."""
    ca = Path(make_lab.ca_certificate()).read_text()
    for name in ("runner-arm", "runner-amd"):
        runner = make_lab.machine(name)
        rendered = runner.docker("exec", "forgeway-runner", "cat", "/etc/gitlab-runner/config.toml")
        volumes = tomllib.loads(rendered)["runners"][0]["docker"]["volumes"]
        binds = [arg for volume in volumes if volume.count(":") >= 1 for arg in ("-v", volume)]
        check = (
            "import pathlib, tomllib, json\n"
            "cfg = tomllib.loads(pathlib.Path('/etc/forgeway/buildkitd.toml').read_text())\n"
            "print(json.dumps({r: [pathlib.Path(p).read_text() for p in v['ca']] for r, v in cfg['registry'].items()}))"
        )
        seen = runner.docker_execute("run", "--rm", *binds, "--entrypoint", "python3", STANDIN_RUNNER, "-c", check)
        assert seen.stdout.strip(), f"{name}: the job container could not read its buildkitd.toml (volumes {volumes})"
        cas = json.loads(seen.stdout)
        assert REGISTRY in cas, cas.keys()
        assert all(texts == [ca] for texts in cas.values()), f"{name}: a buildkitd ca is not the stack CA"
        listing = runner.docker("run", "--rm", *binds, STANDIN_RUNNER, "ls", "/etc/docker/certs.d")
        assert REGISTRY in listing.split(), listing


def test_multiarch_runs_arm64_programs_on_the_amd64_runner_and_boot_registers_qemu_again(make_lab: MakeLab) -> None:
    """runner-amd has runner.multiarch: a container of an arm64 image runs there through the
    QEMU handler binfmt-up.sh registered (this machine is x86_64: without it, exec fails).
    A reboot forgets the handler; the installed boot unit registers it again."""
    from tools.lab.binfmt import handlers, unregister
    from tools.lab.images import HELLO_ARM64

    runner = make_lab.machine("runner-amd")
    hello = ["run", "--rm", HELLO_ARM64]
    assert runner.docker(*hello).strip() == "hello from aarch64"
    ours = runner.path("/etc/forgeway/binfmt/ours")
    assert "qemu-aarch64" in handlers()
    if not ours.exists() or "qemu-aarch64" not in ours.read_text().split():
        pytest.skip(
            "SKIPPED LOUDLY: this machine had qemu-aarch64 registered before the lab; the reboot half "
            "would remove the machine's own handler, so it is not run"
        )
    # The arch check on runner-arm is a uname shim: it never asks for amd64 emulation.
    assert "qemu-x86_64" not in ours.read_text()
    unregister("qemu-aarch64")  # what a reboot does to binfmt_misc
    try:
        lost = runner.docker_execute(*hello).stdout
        assert "hello from aarch64" not in lost, "the arm64 program ran without a handler: the test proves nothing"
    finally:
        booted = run_unit(make_lab, "runner-amd", "forgeway-binfmt.service")
    assert booted.returncode == 0, booted.stderr
    assert "qemu-aarch64" in handlers()
    assert runner.docker(*hello).strip() == "hello from aarch64"
    # binfmt-up.sh again, on the host where the applier ran it: nothing to change
    image = runner.docker("image", "inspect", "--format", "{{.Id}}", "forgeway-lab/binfmt-standin:1.0").strip()
    again = runner.inside.succeed(["sh", "/etc/forgeway/stage/binfmt/binfmt-up.sh", image, "arm64"], timeout=120)
    assert again.startswith("ok binfmt: registered: qemu-aarch64"), again
