"""Check a hand-made runner token (``runner_tokens.<host>``) against GitLab's API before
its runner container is touched: run by the deployer (command:local:Command
``<host>-runner-token-check``, components/runner_registration.py) with python3.

    python3 gitlab_runner_token_check.py HOST [WHY]

HOST names the runner host, WHY what in its config asks for protection (arguments: the
provider redacts environment values in its errors, and the refusal must name the runner).
stdin: a JSON object of the runner's glrt- token (``runner_token``) and forgeway's API
token (``admin_token``), never argv or env.
env: FORGEWAY_API_URL (…/api/v4/), FORGEWAY_CA_FILE (optional: the stack CA's PEM file)
and FORGEWAY_REQUIRE_PROTECTED (true|false).

``POST /runners/verify`` with the runner's token gives its id (GitLab answers 200 with
``id`` on 16.x+, 403 for a token it does not know); ``GET /runners/:id`` with the admin
token (scope manage_runner) gives its ``access_level``. A runner that must be protected
and is not is refused, naming the host: exit 1, the reason on stderr. Prints one line
without a token.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any


def _call(url: str, context: ssl.SSLContext, *, body: dict[str, str] | None = None, bearer: str = "") -> Any:
    if not url.startswith("https://"):
        raise SystemExit(f"FORGEWAY_API_URL must be https, not {url!r}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if bearer:
        request.add_header("PRIVATE-TOKEN", bearer)
    with urllib.request.urlopen(request, context=context, timeout=60) as response:  # noqa: S310 (https, checked)
        return json.loads(response.read().decode() or "null")


def check(env: dict[str, str], secrets: dict[str, str], runner: str, why: str = "") -> str:
    """The verdict line; raises SystemExit naming the runner when it is refused."""
    api = env["FORGEWAY_API_URL"]
    context = ssl.create_default_context(cafile=env.get("FORGEWAY_CA_FILE") or None)
    try:
        verified = _call(f"{api}runners/verify", context, body={"token": secrets["runner_token"]})
    except urllib.error.HTTPError as err:
        raise SystemExit(
            f"runner_tokens.{runner}: GitLab refused the token at POST /runners/verify (HTTP {err.code}): "
            "create the runner again or drop the override so forgeway creates it"
        ) from None
    runner_id = verified.get("id") if isinstance(verified, dict) else None
    if runner_id is None:
        raise SystemExit(f"runner_tokens.{runner}: POST /runners/verify named no runner id (GitLab 16.0 or later?)")
    try:
        details = _call(f"{api}runners/{int(runner_id)}", context, bearer=secrets["admin_token"])
    except urllib.error.HTTPError as err:
        raise SystemExit(f"runner '{runner}': GET /runners/{runner_id} answered HTTP {err.code}") from None
    level = details.get("access_level") if isinstance(details, dict) else None
    if env.get("FORGEWAY_REQUIRE_PROTECTED") == "true" and level != "ref_protected":
        raise SystemExit(
            f"runner '{runner}' is refused: its stack config makes it {why or 'protected'}, "
            f"but GitLab holds runner {runner_id} with access_level {level!r}, so any branch's job could run on it. "
            f"Set the runner to protected in GitLab (Admin > CI/CD > Runners > edit: Protected), or drop "
            f"runner_tokens.{runner} so forgeway creates it ref_protected"
        )
    return f"ok runner '{runner}': GitLab runner {runner_id}, access_level {level}"


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: gitlab_runner_token_check.py HOST [WHY] (tokens as JSON on stdin)")
    secrets = json.loads(sys.stdin.read())
    print(check(dict(os.environ), secrets, *sys.argv[1:]))


if __name__ == "__main__":
    main()
