"""The tunnel's segmentation is kept (12): no resource removes, flushes or opens
``table inet forgeway_segment``."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, ResourceValidationArgs

from ._props import CONTAINER, REMOTE_TYPES, _kind, _texts
from .decoding import _with_decoded

# --- 12. the tunnel's segmentation is kept ------------------------------------------
#
# Default deny between tunnel peers lives in table inet forgeway_segment on every host
# (components/render/segment.py). A drop in it is final whatever other tables accept,
# so what undoes it is removing or flushing it, or an accept in it that does not say
# from whom. Found by content in every text a resource ships, decoded, comments aside.

_SEGMENT_DEFINED = re.compile(r"^[ \t]*table[ \t]+inet[ \t]+forgeway_segment[ \t]*\{", re.MULTILINE)
_SEGMENT_REMOVED = re.compile(
    r"\b(?:delete|flush|destroy)[ \t]+(?:table|chain)[ \t]+inet[ \t]+forgeway_segment\b|\bflush[ \t]+ruleset\b"
)
# An accept that names its sources or its state (replies, DNATed flows), what is not the
# tunnel, or a ping (tunnel health).
_SEGMENT_ACCEPT_SCOPED = re.compile(
    r"\bip6?[ \t]+saddr\b|\bct[ \t]+(?:state|status)\b|\biifname[ \t]+!="
    r"|\bicmp[ \t]+type[ \t]+echo-request[ \t]+accept\b"
)


def _segment_problems(path: str, text: str) -> list[str]:
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    defined = _SEGMENT_DEFINED.search(code)
    problems = []
    if not path.startswith("delete"):  # a delete may take it away: that is its teardown
        for found in _SEGMENT_REMOVED.finditer(code):
            # forgeway's own file deletes the table and defines it again, in one transaction
            if defined and found.start() < defined.start() and "ruleset" not in found.group(0):
                continue
            problems.append(
                f"removes the tunnel's segmentation ('{found.group(0)}'): every tunnel peer then reaches every "
                "other and the VPS's admin SSH; leave table inet forgeway_segment to forgeway (tunnel.admin_peers "
                "opens SSH for named hosts)"
            )
    if defined:
        body = code[defined.end() :]
        for line in body.splitlines():
            rule = line.strip()
            if (
                re.search(r"\baccept\b", rule)
                and not rule.startswith("type ")
                and not _SEGMENT_ACCEPT_SCOPED.search(rule)
            ):
                problems.append(
                    f"accepts from every tunnel peer in table inet forgeway_segment ('{rule}'): name the sources "
                    "(ip saddr), as forgeway's rules do, or list the host in tunnel.admin_peers"
                )
        if not re.search(r"\bdrop\b", body):
            problems.append("defines table inet forgeway_segment without a drop: the tunnel is not segmented")
    return problems


def tunnel_segmentation_kept(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    where = _kind(args.resource_type)
    seen: set[str] = set()
    for path, text in _with_decoded(_texts(args.resource_type, args.props)):
        for problem in _segment_problems(path, text):
            if problem not in seen:  # a text and its decoded copy say the same
                seen.add(problem)
                report_violation(f"{where} '{args.name}' ({path}) {problem}", None)
