"""The parsers inside the policies, one table each, and how the pack behaves on unknown values."""

from __future__ import annotations

import base64
import gzip
import time
import tomllib
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies import rules
from tests.policies.harness import run_policies, specs_from_fixture
from tools.stack.synth import unwrap

pytestmark = pytest.mark.policies

BY_NAME = {p.name: p for p in rules.POLICIES}
DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "ref",
    [
        "gitlab/gitlab-ce:18.5.1-ce.0",
        "yrzr/gitlab-ce-arm64v8:18.5.1-ce.0",
        "gitlab/gitlab-runner:v18.5.0",
        "forgeway-lab/gitlab-standin:1.0",
        "registry.example.org:5050/group/tool:1.2.3",
        f"alpine@sha256:{DIGEST}",
        f"alpine:3.20.3@sha256:{DIGEST}",
        f"sha256:{DIGEST}",
    ],
)
def test_pinned_images(ref: str) -> None:
    assert rules.image_pin_problem(ref) is None


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("gitlab/gitlab-ce", "no tag"),
        ("registry.example.org:5050/group/tool", "no tag"),
        ("gitlab/gitlab-ce:latest", "alias"),
        ("gitlab/gitlab-ce:LATEST", "alias"),
        ("node:20-latest", "alias"),
        ("debian:stable", "alias"),
        ("debian:bookworm", "no version"),
        ("gitlab/gitlab-ce:18", "major version"),
        ("gitlab/gitlab-runner:v18", "major version"),
        ("alpine@sha256:abc", "not a sha256 digest"),
    ],
)
def test_unpinned_images(ref: str, why: str) -> None:
    problem = rules.image_pin_problem(ref)
    assert problem is not None and why in problem


def test_forwarded_ports_reads_the_forms_nft_accepts() -> None:
    ruleset = """
    tcp dport { 80, https } dnat ip to 10.8.0.2   # a set, with a service name
    tcp dport ssh dnat ip to 10.8.0.2:2222
    udp dport 6000-6002 \\
        dnat ip to 10.8.0.2
    dnat ip to tcp dport map { 5050 : 10.8.0.2 . 5050 }
    tcp dport 2202 accept
    # tcp dport 9999 dnat ip to 10.8.0.2   (a comment, not a rule)
    """
    forwarded = rules.forwarded_ports(ruleset)
    assert sorted(forwarded.ranges) == [(22, 22), (80, 80), (443, 443), (5050, 5050), (6000, 6002)]
    assert forwarded.unreadable == ()


def test_forwarded_ports_refuses_what_it_cannot_read() -> None:
    forwarded = rules.forwarded_ports("tcp dport != 22 dnat to 10.8.0.2\ntcp dport $web dnat to 10.8.0.2\n")
    assert forwarded.ranges == ()
    assert len(forwarded.unreadable) == 2


def test_variables_and_public_keys_are_not_secret_material() -> None:
    props = {
        "create": 'token="$(cat)"; PASSWORD=$1 run',
        "environment": {"HOST_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFSY7q4MU3hM6UPT8VuIVmVIR7Yvyebuq1slw7WfZ9OW"},
        "envs": ["GITLAB_ROOT_PASSWORD=", "TZ=UTC"],
        "hostKey": "ssh-ed25519 AAAA",
    }
    assert rules.secret_material(props) == []


def test_secret_scan_stays_linear_on_long_scripts() -> None:
    """Rendered scripts are tens of kilobytes; a backtracking pattern once took 37 s on the prod stack."""
    text = ("a" * 5000 + "_token_" + "b" * 5000 + " = \n") * 20
    started = time.perf_counter()
    assert rules.secret_material({"create": text}) == []
    assert time.perf_counter() - started < 1.0


def test_unknown_values_are_not_evaluated_not_passed() -> None:
    """In a preview, a value from an uncreated resource is unknown: the policy is skipped, not passed or failed."""
    specs = specs_from_fixture([{"type": rules.REMOTE_IMAGE, "name": "img", "props": {"name": UNKNOWN_STRING_VALUE}}])
    outcome = run_policies([BY_NAME["images-pinned"]], specs)
    assert outcome.violations == []
    assert [(policy, why) for policy, _, why in outcome.not_evaluated] == [
        ("images-pinned", "string value at .name can't be known during preview")
    ]


def test_stack_policies_skip_only_the_unknown_resource() -> None:
    """One runner config unknown in preview does not stop the check of another."""
    toml = '[[runners]]\n  name = "r"\n  [runners.docker]\n    privileged = true\n'
    conn = {"host": "192.168.1.52", "hostKey": "ssh-ed25519 AAAA"}
    specs = specs_from_fixture(
        [
            {
                "type": rules.COMMAND,
                "name": "a-runner-config",
                "props": {"stdin": UNKNOWN_STRING_VALUE, "connection": conn},
            },
            {"type": rules.COMMAND, "name": "b-runner-config", "props": {"stdin": toml, "connection": conn}},
        ]
    )
    outcome = run_policies([BY_NAME["runner-job-isolation"]], specs)
    assert outcome.not_evaluated == []
    assert len(outcome.violations) == 1 and "b-runner-config" in outcome.violations[0].message


# --- what a host would decode ---------------------------------------------------------

_MARKER = "gitlab_rails['initial_root_password'] = 'correct-horse'\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("encoded", "what"),
    [
        (f"echo {_b64(_MARKER.encode())} | base64 -d", "a base64 blob"),
        ("echo " + base64.urlsafe_b64encode(_MARKER.encode()).decode().rstrip("="), "a base64 blob"),
        (f"stage.sh \"$d\" gitlab.rb '{_b64(_MARKER.encode())}'", "staged file 'gitlab.rb'"),
        (f"echo {_b64(gzip.compress(_MARKER.encode()))} | base64 -d | gunzip", "a base64 blob"),
        (f"echo {_MARKER.encode().hex()} | xxd -r -p", "a hex blob"),
        ("printf '" + "".join(f"\\{ord(c):03o}" for c in _MARKER) + "'", "escaped text"),
        ("printf '" + "".join(f"\\x{ord(c):02x}" for c in _MARKER) + "'", "escaped text"),
        (f"echo {_b64(_b64(_MARKER.encode()).encode())} | base64 -d | base64 -d", "inside a base64 blob"),
    ],
)
def test_decoded_texts_reads_what_a_host_decodes(encoded: str, what: str) -> None:
    decoded = list(rules.decoded_texts(encoded))
    assert any(_MARKER.strip() in text and what in label for label, text in decoded), decoded
    assert rules.secret_material({"create": encoded}), "the decoded secret is found"


@pytest.mark.parametrize(
    "text",
    [
        f"docker pull alpine@sha256:{DIGEST}",
        "wg set wg0 private-key /dev/stdin  # 6efjKb38ClsVH+igWUu66reUTYyIr2MbmnOASFmeSvw=",
        "/etc/docker/forgeway-jobs/certs.d:/etc/docker/certs.d:ro forgeway_runner_insecure_docker_socket",
    ],
)
def test_decoded_texts_leaves_binary_and_words_alone(text: str) -> None:
    assert list(rules.decoded_texts(text)) == []


def test_decoding_stays_linear_on_long_blobs() -> None:
    text = (_b64(bytes(range(256)) * 200) + " ") * 10 + "A" * 200_000
    # CPU time, not wall time: a loaded machine must not fail this, a quadratic scan would.
    started = time.process_time()
    assert rules.secret_material({"create": text}) == []
    assert time.process_time() - started < 2.0


# --- runner jobs, judged on the parsed config.toml --------------------------------------


def _runner(docker: str, executor: str = "docker") -> dict[str, Any]:
    document = tomllib.loads(f'[[runners]]\nname = "r"\nexecutor = "{executor}"\n[runners.docker]\n{docker}\n')
    runner: dict[str, Any] = document["runners"][0]
    return runner


@pytest.mark.parametrize(
    ("docker", "found"),
    [
        ('volumes = ["/:/host"]', "binds host paths"),
        ('volumes = ["/var/run:/run/host:ro"]', "binds host paths"),
        ('volumes = ["./relative:/x"]', "binds host paths"),
        ('volumes = ["/etc/docker/forgeway-jobs/certs.d:/etc/docker/certs.d"]', "binds host paths"),  # not :ro
        ('volumes = ["//var//run/docker.sock:/s"]', "docker socket"),
        ('VOLUMES = ["/srv:/srv"]', "binds host paths"),
        ('volumes_from = ["forgeway-runner"]', "volumes_from"),
        ('volume_driver_ops = {type = "none", o = "bind", device = "/"}', "volume_driver_ops"),
        ('cap_add = ["ALL"]', "adds capabilities"),
        ('Cap_Add = ["net_admin"]', "adds capabilities"),
        ('security_opt = ["seccomp=unconfined"]', "confinement"),
        ('security_opt = ["apparmor:unconfined"]', "confinement"),
        ('security_opt = ["label=disable"]', "confinement"),
        ('security_opt = ["seccomp=/etc/permissive.json"]', "confinement"),
        ('services_security_opt = ["systempaths=unconfined"]', "confinement"),
        ('devices = ["/dev/kvm"]', "host devices"),
        ('device_cgroup_rules = ["c 10:* rwm"]', "host devices"),
        ('network_mode = "host"', "shares a namespace"),
        ('network_mode = "container:forgeway-gitlab"', "shares a namespace"),
        ('ipcmode = "host"', "shares a namespace"),
        ('userns_mode = "host"', "shares a namespace"),
        ("privileged = true", "privileged"),
        ('"services_privileged" = true', "privileged"),
    ],
)
def test_job_isolation_problems(docker: str, found: str) -> None:
    problems = rules.job_isolation_problems(_runner(docker))
    assert [p for p in problems if found in p.what], [p.what for p in problems]


@pytest.mark.parametrize(
    "docker",
    [
        'volumes = ["/cache", "named-cache:/cache2", "/etc/docker/forgeway-jobs/buildkitd.toml:/etc/b.toml:ro"]',
        'cap_drop = ["ALL"]',
        'security_opt = ["no-new-privileges", "no-new-privileges:true", "apparmor=docker-default", "seccomp=builtin"]',
        'network_mode = "bridge"',
        "privileged = false",
    ],
)
def test_job_isolation_allows(docker: str) -> None:
    assert rules.job_isolation_problems(_runner(docker)) == []


@pytest.mark.parametrize("executor", ["shell", "custom", "ssh", "kubernetes", "Shell"])
def test_executors_outside_a_job_container_are_problems(executor: str) -> None:
    assert any("executor" in p.what for p in rules.job_isolation_problems(_runner("", executor)))


# --- forwarding: where each public port lands --------------------------------------------


@pytest.mark.parametrize(
    ("rule", "address", "home"),
    [
        ("tcp dport 443 dnat to 10.8.0.2", "10.8.0.2", (443, 443)),
        ("tcp dport 22 dnat ip to 10.8.0.2:2222", "10.8.0.2", (2222, 2222)),
        ("tcp dport 443 dnat ip6 to [fd00::2]:8443", "fd00::2", (8443, 8443)),
        ("tcp dport 443 dnat ip6 to fd00::2", "fd00::2", (443, 443)),
        ("dnat ip to tcp dport map { 443 : 10.8.0.3 . 22 }", "10.8.0.3", (22, 22)),
        ("tcp dport 80 redirect to :2202", None, (2202, 2202)),
        ("tcp dport 5050 tproxy to 10.8.0.2:5050", "10.8.0.2", (5050, 5050)),
    ],
)
def test_forwarded_ports_reads_targets(rule: str, address: str | None, home: tuple[int, int]) -> None:
    forwarded = rules.forwarded_ports(rule)
    assert forwarded.unreadable == ()
    assert [(e.address, e.home) for e in forwarded.exposures] == [(address, home)]


@pytest.mark.parametrize(
    "rule",
    [
        "tcp dport 443 dnat to $home",
        "tcp dport 443 dnat to numgen inc mod 2 map { 0 : 10.8.0.2, 1 : 10.8.0.3 }",
        "iptables -t nat -A PREROUTING -p tcp --dport 443 -j DNAT --to-destination 10.8.0.2",
        "firewall-cmd --add-forward-port=port=443:proto=tcp:toaddr=10.8.0.2",
        "socat TCP4-LISTEN:443,fork TCP:10.8.0.2:443",
        'iifname "eth0" redirect to :22',
    ],
)
def test_forwarded_ports_refuses_other_forms(rule: str) -> None:
    assert rules.forwarded_ports(rule).unreadable != ()


def test_register_flags_are_read_as_the_runner_they_write() -> None:
    script = (
        "docker exec -i forgeway-runner gitlab-runner register --non-interactive --name r1 \\\n"
        "  --executor=docker --docker-privileged --docker-volumes /srv:/srv --docker-volumes /cache \\\n"
        '  --docker-userns host --docker-cap-add "NET_ADMIN"  # and a comment\n'
    )
    specs = specs_from_fixture([{"type": rules.COMMAND, "name": "reg", "props": {"create": script}}])
    (path, document, _), *more = list(rules.runner_documents(_resource(specs[0])))
    assert more == [] and path == "create, gitlab-runner register flags" and document is not None
    (runner,) = document["runners"]
    assert runner["name"] == "r1" and runner["executor"] == "docker"
    assert runner["docker"] == {
        "privileged": ["true"],
        "volumes": ["/srv:/srv", "/cache"],
        "userns_mode": ["host"],
        "cap_add": ["NET_ADMIN"],
    }
    found = {p.what.split(" (")[0] for p in rules.job_isolation_problems(runner)}
    assert found == {
        "runs privileged jobs",
        "binds host paths into jobs",
        "shares a namespace with the host or another container",
        "adds capabilities to jobs",
    }


def _resource(spec: Any) -> Any:
    return SimpleNamespace(resource_type=spec.type, name=spec.name, props=unwrap(spec.props))


@pytest.mark.parametrize(
    "text",
    [
        "password_file: /run/secrets/db\ntoken_path: /etc/gitlab-runner/token\n",
        "[Peer]\nPublicKey = rkVBUR2+hmJfbsr1EFumfv/qD303iUoDV0oZMjxTZl0=\n",
        'password = "$REGISTRY_PASSWORD"\ntoken: ${TOKEN}\n',
        "docker login --password-stdin -u fleet && gitlab-runner verify --token-file /etc/token\n",
    ],
)
def test_names_and_references_are_not_secret_material(text: str) -> None:
    assert rules.secret_material({"stdin": text}) == []
