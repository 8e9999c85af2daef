"""``python -m tools.imagecheck REF --platform P[,P...] [--ca FILE] [--user U (--password-stdin | --password-file F)]``

Exit status: 0 the index holds exactly the platforms asked for; 1 it does not (each problem
printed); 2 it could not be read (usage, network, TLS, auth, not found).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.imagecheck.index import INDEX_TYPES, MANIFEST_TYPES, Platform, index_problems, parse_platforms, platforms_of
from tools.imagecheck.registry import Credentials, RegistryError, fetch_blob, fetch_manifest, parse_ref


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if args.user is None:
        return None
    if args.password_file:
        password = Path(args.password_file).read_text().rstrip("\n")
    elif args.password_stdin:
        password = sys.stdin.read().rstrip("\n")
    else:
        raise ValueError("--user needs --password-stdin or --password-file (never a password on the command line)")
    return Credentials(args.user, password)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.imagecheck", description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="REGISTRY[:PORT]/NAME[:TAG][@sha256:DIGEST]")
    parser.add_argument("--platform", action="append", required=True, help="os/arch[/variant], comma-separated")
    parser.add_argument("--ca", help="CA file the registry's certificate is checked with (own-ca: the stack's CA)")
    parser.add_argument("--user", help="registry user (CI: $CI_REGISTRY_USER)")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    parser.add_argument("--password-file", help="read the password from this file")
    args = parser.parse_args(argv)
    try:
        ref = parse_ref(args.ref)
        wanted = parse_platforms(args.platform)
        media_type, document, session = fetch_manifest(ref, ca_file=args.ca, credentials=_credentials(args))
        if media_type in MANIFEST_TYPES:
            config = fetch_blob(session, str(document["config"]["digest"]))
            found = Platform(str(config.get("os")), str(config.get("architecture")), str(config.get("variant") or ""))
            problems = [] if [found.normalized()] == wanted else [
                f"{ref} is one image for {found.normalized()}, not an index of {', '.join(map(str, wanted))}"
            ]  # fmt: skip
            listed = [str(found.normalized())]
        elif media_type in INDEX_TYPES:
            problems = index_problems(document, wanted)
            listed = [str(e.platform) + (" (attestation)" if e.attestation else "") for e in platforms_of(document)]
        else:
            raise RegistryError(f"{ref}: unexpected media type {media_type!r}")
    except (ValueError, OSError, RegistryError, KeyError) as err:
        print(f"imagecheck: {err}", file=sys.stderr)
        return 2
    print(f"{ref}: {media_type}: {', '.join(listed) or 'no manifests'}")
    for problem in problems:
        print(f"  FAIL {problem}")
    if problems:
        print(f"{len(problems)} problem(s): the index is not exactly {', '.join(map(str, wanted))}")
        return 1
    print(f"ok: exactly {', '.join(map(str, wanted))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
