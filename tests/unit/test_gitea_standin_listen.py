"""Where the Gitea stand-in's web server listens: as real Gitea does (Go's dual-stack
listener for HTTP_ADDR 0.0.0.0), so the forge host's DNAT to the container's IPv6 address
is answered (components/forge_nat.py; the end-to-end check is tests/lab/test_lab_gitea.py)."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest

from tools.lab.standin_image.gitea_standin import gitea_web
from tools.lab.standin_image.gitea_standin.gitea_web import listen_address

ANY4 = "0.0.0.0"  # noqa: S104 (HTTP_ADDR's default in Gitea)


@pytest.mark.parametrize(
    ("http_addr", "ipv6", "expected"),
    [
        (ANY4, True, "::"),  # Go: one [::] socket taking IPv4 too
        (ANY4, False, ANY4),  # no IPv6 in the container: IPv4 only, as Go falls back
        ("127.0.0.1", True, "127.0.0.1"),  # an address given is kept
        ("[::1]", True, "::1"),
    ],
)
def test_listen_address_is_gos_for_gitea_http_addr(http_addr: str, ipv6: bool, expected: str) -> None:
    assert listen_address(http_addr, ipv6) == expected


def test_the_standins_server_on_the_default_address_answers_both_families(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in's own Server, HTTP_ADDR's default, in a container with IPv6: one socket,
    IPv4 and IPv6 both connect (IPV6_V6ONLY off, as Go's)."""
    if not socket.has_ipv6:
        pytest.fail("this machine's Python has no IPv6: the stand-in's listener cannot be shown")
    monkeypatch.setattr(gitea_web, "has_ipv6", lambda: True)
    settings: Any = SimpleNamespace(http_addr=ANY4, http_port=0)
    server = gitea_web.Server(settings, None)
    try:
        assert server.address_family == socket.AF_INET6
        port = server.server_address[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.create_connection((host, port), timeout=5) as client:
                assert client.family == family
                accepted, _ = server.socket.accept()
                accepted.close()
    finally:
        server.server_close()


@pytest.mark.parametrize(
    ("seen", "shown"),
    [
        (("::ffff:10.8.0.1", 5, 0, 0), "10.8.0.1"),  # IPv4 on the dual-stack socket: Go's RemoteAddr form
        (("fd77:6179:7761::1", 5, 0, 0), "fd77:6179:7761::1"),
        (("10.8.0.1", 5), "10.8.0.1"),
    ],
)
def test_the_client_address_logged_and_answered_is_gos(seen: tuple[Any, ...], shown: str) -> None:
    assert gitea_web.unmapped(seen)[0] == shown
