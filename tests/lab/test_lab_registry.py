"""GitLab's registry through the VPS (`make lab`): who trusts the stack's CA, and pushes and pulls."""

from __future__ import annotations

import shutil

from tests.lab.make_lab import LAB_DIR, REGISTRY, MakeLab, client_trusts_the_stack_ca, login, push_and_pull


def test_docker_login_from_the_client_fails_x509_until_it_trusts_the_stack_ca(make_lab: MakeLab) -> None:
    # The client is nobody's managed host: its daemon knows nothing of our CA (another
    # test may have made it trust the CA: take that away first, and give it back after).
    shutil.rmtree(LAB_DIR / "client" / "etc-docker" / "certs.d" / REGISTRY, ignore_errors=True)
    before = login(make_lab, "client")
    assert before.returncode != 0
    assert "x509" in before.stderr or "certificate signed by unknown authority" in before.stderr, before.stderr
    # What the README tells a user to do on a laptop: the stack output ca_certificate in certs.d.
    client_trusts_the_stack_ca(make_lab)
    after = login(make_lab, "client")
    assert after.returncode == 0 and "Login Succeeded" in after.stdout, after.stderr


def test_a_runner_host_trusts_the_registry_by_itself_and_pushes_and_pulls(make_lab: MakeLab) -> None:
    # runner-amd's daemon trusts our CA only through forgeway's docker-client command.
    push_and_pull(make_lab, "runner-amd", size=64 << 10)


def test_every_docker_host_trusts_our_ca_for_the_registry(make_lab: MakeLab) -> None:
    ca_pem = make_lab.state()["tls:index/selfSignedCert:SelfSignedCert::ca-cert"]["outputs"]["certPem"]
    for name in ("home", "runner-arm", "runner-amd"):
        ca = make_lab.machine(name).path("/etc/docker/certs.d/gitlab.forgeway.test:5050/ca.crt")
        assert ca.read_text() == ca_pem, f"{name} does not trust the stack's CA for the registry"
    assert not make_lab.machine("vps").path("/etc/docker").exists(), "the VPS runs no docker"
