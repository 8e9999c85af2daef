"""What the program would deploy, as doctor compares against it: the stack synthesized under
Pulumi's mocks (tools/stack/synth.py, no provider runs), read for the forwarding command's
input (the ruleset text `up` hands forwarding-up.sh) and the URNs the repairs name.

Why the synthesis and not components/render/nftables.py called here: the ruleset's inputs
(the forge's services, the home host's tunnel address, the VPS's interface, the mode) are
wired in __main__.py and the components; calling the program is the one way that cannot
drift from them. It costs about two seconds.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import StackConfig, parse_stack
from tools.stack.synth import PROJECT, stack_config_strings, synthesize, unwrap

__all__ = ["Expected", "backup_expectation", "expected_from_synthesis", "synthesize_expected", "token_spec"]

TOKEN_RB = Path(__file__).resolve().parent.parent.parent / "components" / "scripts" / "gitlab-api-token.rb"
# The backup section's defaults (components/config backup: schedule, randomized_delay_minutes,
# timeout_minutes), read from the raw config so doctor also runs on stacks from before it.
DEFAULT_BACKUP_SCHEDULE = "*-*-* 03:15:00"
DEFAULT_BACKUP_SLACK_MINUTES = 30 + 360


@dataclass(frozen=True)
class Expected:
    stack: str
    config: StackConfig
    urns: Mapping[str, str]  # a custom resource's logical name -> its URN
    ruleset: str  # the VPS forwarding command's stdin
    backup_schedule: str  # "" when backups are off (backup.enabled false)
    backup_slack: datetime.timedelta = datetime.timedelta(minutes=DEFAULT_BACKUP_SLACK_MINUTES)
    secrets: Sequence[str] = field(default=(), repr=False)  # values never to print
    registry_gc: bool = False  # the program has the GitLab host's registry garbage collection

    def urn(self, name: str) -> str:
        """The URN of resource ``name``; a URN of the right shape when the program has none by that name."""
        return self.urns.get(name) or f"urn:pulumi:{self.stack}::{PROJECT}::<not in the program: {name}>"


def token_spec(text: str | None = None) -> tuple[str, int]:
    """(TOKEN_NAME, TOKEN_DAYS) of components/scripts/gitlab-api-token.rb: one source for both."""
    text = TOKEN_RB.read_text() if text is None else text
    name = re.search(r"^TOKEN_NAME = '([^']+)'", text, re.MULTILINE)
    days = re.search(r"^TOKEN_DAYS = (\d+)", text, re.MULTILINE)
    if name is None or days is None:
        raise ValueError(f"{TOKEN_RB.name}: no TOKEN_NAME or TOKEN_DAYS line")
    return name.group(1), int(days.group(1))


def _secret_strings(values: Any) -> list[str]:
    if isinstance(values, Mapping):
        return [s for v in values.values() for s in _secret_strings(v)]
    if isinstance(values, (list, tuple)):
        return [s for v in values for s in _secret_strings(v)]
    text = str(values) if values is not None else ""
    return [text] if len(text) >= 6 else []


def expected_from_synthesis(
    stack: str, raw: Mapping[str, Any], secret_keys: Sequence[str], resources: Sequence[Any]
) -> Expected:
    """From a stack's raw config and its synthesis' registrations (``urn``, ``name``, ``inputs``)."""
    config, secrets = parse_stack(raw, secret_keys)
    urns = {r.name: r.urn for r in resources if r.custom}
    forwarding = next((r for r in resources if r.name == f"{config.vps.name}-forwarding"), None)
    ruleset = str(unwrap(forwarding.inputs).get("stdin", "")) if forwarding is not None else ""
    schedule, slack = backup_expectation(raw)
    gc = f"{config.gitlab_host.name}-registry-gc" in urns  # components/registry_gc.py, when the program has it
    return Expected(stack, config, urns, ruleset, schedule, slack, tuple(_secret_strings(secrets)), gc)


def backup_expectation(raw: Mapping[str, Any]) -> tuple[str, datetime.timedelta]:
    """(schedule, or "" when backup.enabled is false; slack) from the raw ``forgeway:backup``."""
    backup = raw.get(f"{PROJECT}:backup") or {}
    backup = backup if isinstance(backup, Mapping) else {}
    schedule = str(backup.get("schedule") or DEFAULT_BACKUP_SCHEDULE) if backup.get("enabled", True) else ""
    # A run may start randomized_delay after its time and take up to timeout: the last one can be that late.
    slack = int(backup.get("randomized_delay_minutes", 30)) + int(backup.get("timeout_minutes", 360))
    return schedule, datetime.timedelta(minutes=slack)


def synthesize_expected(stack: str, raw: Mapping[str, Any], secret_keys: Sequence[str]) -> Expected:
    """Run the program under mocks once (in this process) and read what doctor needs."""
    synthesis = synthesize(stack, stack_config_strings(raw), list(secret_keys))
    return expected_from_synthesis(stack, raw, secret_keys, synthesis.resources)
