"""Restore GitLab from a forgeway backup onto a stack's (new, empty) GitLab host.

    python -m tools.restore --stack NAME [--snapshot ID|latest] [--password-file F] [--yes] [--overwrite]

It runs on the deployer's machine and drives the GitLab host over the program's own SSH
connection (tools/hostssh.py), with the host's ``forgeway-restic`` (what `pulumi up`
installs). The order is GitLab's (docs "Restore GitLab", Docker): see tools/restore/steps.py.
docs/operations.md, "Backups", is the user's page.
"""

from __future__ import annotations

from tools.restore.steps import Restore, RestoreFailed

__all__ = ["Restore", "RestoreFailed"]
