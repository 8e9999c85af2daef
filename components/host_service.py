"""The host-service seam: a service forgeway installs on a host, and removes exactly.

Borrowed from NixOS ``systemd.services`` / ``systemd.timers``: a service is its up script
(which installs its files and its unit or timer, through the shell library
components/scripts/host-files.sh: ``install_unit``, ``enable_unit``, ``remove_units``;
a timer: ``install_timer``, ``remove_timer``),
its down script (which removes exactly those), and the files staged beside the up.
:func:`host_service` turns one into the host's ``remote.Command``: create stages the
files in ``$FORGEWAY_ETC/forgeway/stage/<stage>`` and runs the up there; delete runs the
down and removes the stage. Re-running the up converges, so a changed script or file
(the command's text) simply runs it again.

Adding one (a backup timer, say): a ``<name>-up.sh``/``<name>-down.sh`` pair in
components/scripts/, a :class:`HostService` for it in the component that owns it, and
``host_service(host, f"{host_name}-<name>", service, parent=self)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from components.hosts import Host
from components.scripts import script, script_command, staged_command, unstaged_command

__all__ = ["HostService", "host_service"]


@dataclass(frozen=True)
class HostService:
    """One service on a host: what its command stages, runs and undoes."""

    stage: str  # the stage directory's name, unique per host
    up: str  # script in components/scripts/ run from the stage (create)
    down: str  # script in components/scripts/ run inline (delete)
    args: Sequence[pulumi.Input[str]] = ()  # the up's arguments (quoted); an Output waits for its value
    down_args: Sequence[str] = ()  # plain text: a delete is fixed when the service is created
    # Staged beside the up (name -> text); an Output (text rendered from other outputs) waits.
    files: pulumi.Input[Mapping[str, str]] = field(default_factory=dict)
    pass_dir: bool = True  # the stage directory as the up's last argument

    def create(self) -> pulumi.Input[str]:
        """Stage the up with ``files``, then run it there."""

        def command(files: Mapping[str, str], args: Sequence[object]) -> str:
            staged = {**files, self.up: script(self.up)}
            return staged_command(self.stage, staged, self.up, [str(a) for a in args], pass_dir=self.pass_dir)

        if isinstance(self.files, Mapping) and all(isinstance(arg, str) for arg in self.args):
            return command(self.files, self.args)
        return pulumi.Output.all(self.files, *self.args).apply(lambda v: command(v[0], v[1:]))

    def delete(self) -> str:
        """Run the down, then remove the stage."""
        return unstaged_command(self.stage, script_command(self.down, *self.down_args))


def host_service(
    host: Host,
    name: str,
    service: HostService,
    *,
    parent: pulumi.Resource,
    stdin: pulumi.Input[str] | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> remote.Command:
    """The host's command for ``service``: run as root (``become``), after the host's preflight."""
    return host.command(
        name, parent=parent, create=service.create(), delete=service.delete(), stdin=stdin, depends_on=depends_on
    )
