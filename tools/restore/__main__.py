"""``python -m tools.restore``: see tools/restore/__init__.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.hostssh import HostSshError, open_stack_host
from tools.restore.steps import Restore, RestoreFailed


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.restore",
        description="Restore GitLab from the stack's backup repository onto its GitLab host (docs/operations.md).",
    )
    parser.add_argument("--stack", required=True, help="the stack whose GitLab host to restore onto")
    parser.add_argument("--snapshot", default="latest", help="a snapshot id (or its start), or latest (default)")
    parser.add_argument(
        "--password-file",
        type=Path,
        help="the repository's password, if not the one `pulumi up` installed on the host (piped, never on argv)",
    )
    parser.add_argument("--host", help="the GitLab host's name (default: the stack's one host with role gitlab)")
    parser.add_argument("--yes", action="store_true", help="do not ask before replacing GitLab's data")
    parser.add_argument(
        "--overwrite", action="store_true", help="restore even though GitLab on the host already holds data"
    )
    return parser.parse_args(argv)


def _confirmed(host: str) -> bool:
    if not sys.stdin.isatty():
        print("restore: not a terminal to ask on: pass --yes to restore", file=sys.stderr)
        return False
    answer = input(f"Restore GitLab on host {host} from the backup, replacing its data? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().strip("\n")
        except OSError as exc:
            print(f"restore: --password-file {args.password_file}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        with open_stack_host(args.stack, host=args.host, role=None if args.host else "gitlab") as runner:
            if not args.yes and not _confirmed(runner.name):
                print("restore: nothing done", file=sys.stderr)
                return 1
            Restore(runner, snapshot=args.snapshot, password=password, overwrite=args.overwrite).run()
    except (HostSshError, RestoreFailed) as exc:
        print(f"restore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
