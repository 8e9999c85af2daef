"""Benchmark: program synthesis time under the mock monitor as runner hosts grow.

Not a timed test: it prints one line per fleet size. Each size runs in a fresh
process (tools.stack.synth); the figure is the time from program start to the last
registration, measured inside that process, without Python start-up.
"""

from __future__ import annotations

import copy
import secrets
import sys
import time

from tests.stacks import lab_stack, new_host_key
from tools.stack.synth import synthesize_in_subprocess

SIZES = (1, 10, 100)


def fleet(runners: int) -> tuple[dict[str, object], list[str]]:
    config, secret_keys = lab_stack()
    hosts = [h for h in config["forgeway:hosts"] if "runner" not in h["roles"]]
    template = next(h for h in config["forgeway:hosts"] if "runner" in h["roles"])
    tokens = {}
    for i in range(runners):
        host = copy.deepcopy(template)
        host.update(name=f"runner-{i}", address=f"198.51.100.{10 + i}", host_key=new_host_key())
        host["arch"] = "arm64" if i % 2 else "amd64"
        hosts.append(host)
        tokens[host["name"]] = "glrt-" + secrets.token_urlsafe(15)
    config["forgeway:hosts"] = hosts
    config["forgeway:runner_tokens"] = tokens
    return config, secret_keys


def main() -> int:
    print("synthesis under mocks (tools.stack.synth), fresh process per size")
    for size in SIZES:
        config, secret_keys = fleet(size)
        started = time.perf_counter()
        result = synthesize_in_subprocess(f"bench-{size}", config, secret_keys)
        wall = time.perf_counter() - started
        print(
            f"runners={size:>3}  resources={len(result.resources):>4}  "
            f"synthesis={result.seconds:6.2f} s  with process start={wall:6.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
