"""The lab applier's ``command:local:Command`` (pulumi-command 1.2.1), run on the deploying
machine as the deploying user, as the provider runs it.

From provider/pkg/provider/local/commandOutputs.go ``run`` and commandController.go (v1.2.1):
the command goes to ``interpreter`` (default ``/bin/sh -c``) in ``dir`` (default: the
current directory), with the provider's own environment plus ``environment`` and, with
``addPreviousOutputInEnv`` (default true), the previous outputs' non-empty stdout/stderr as
``PULUMI_COMMAND_STDOUT``/``PULUMI_COMMAND_STDERR``; ``stdin`` is piped when non-empty.
stdout and stderr lose one trailing newline. Create runs ``create``; update runs ``update``,
else ``create``, and with neither keeps the previous outputs; delete runs the state's
``delete`` with the state's inputs and outputs. ``triggers`` replace (``replaceOnChanges``
in provider/pkg/provider/common/inputs.go). A failure names the step and the exit status,
with the output (as the provider's error does), stdin and environment values redacted.
``logging`` is accepted (it only picks what the engine would print; the applier prints no
command output). ``assetPaths``/``archivePaths`` and any other input are refused by name.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from typing import Any

from tools.applier.docker_api import redact
from tools.applier.state import ApplyError

__all__ = ["LOCAL_COMMAND", "run_local"]

LOCAL_COMMAND = "command:local:Command"
_INPUTS = {
    "create", "update", "delete", "triggers", "stdin", "environment", "dir", "interpreter", "logging",
    "addPreviousOutputInEnv",
}  # fmt: skip
_PREVIOUS_ENV = (("PULUMI_COMMAND_STDOUT", "stdout"), ("PULUMI_COMMAND_STDERR", "stderr"))
TIMEOUT_S = 300


def _trim(text: str) -> str:
    return text.removesuffix("\n")  # Go's strings.TrimSuffix(s, "\n"): one newline only


def run_local(
    name: str, inputs: Mapping[str, Any], step: str, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Outputs after ``step`` (create | update | delete) of one local Command."""
    unknown = sorted(k for k, v in inputs.items() if v is not None and k not in _INPUTS)
    if unknown:
        raise ApplyError(f"the lab applier does not emulate {', '.join(unknown)} of {LOCAL_COMMAND} ({name})")
    kept = {"stdout": str((previous or {}).get("stdout") or ""), "stderr": str((previous or {}).get("stderr") or "")}
    if step == "create":
        script, kept = inputs.get("create"), {"stdout": "", "stderr": ""}
    elif step == "update":
        script = inputs.get("update") or inputs.get("create")
    else:
        script = inputs.get("delete")
    outputs = {**inputs, **kept}
    if not script:
        return outputs
    env = {**os.environ, **{str(k): str(v) for k, v in (inputs.get("environment") or {}).items()}}
    if inputs.get("addPreviousOutputInEnv", True) is not False:
        env.update({var: kept[out] for var, out in _PREVIOUS_ENV if kept[out]})
    interpreter = [str(a) for a in inputs.get("interpreter") or []] or ["/bin/sh", "-c"]
    stdin = str(inputs.get("stdin") or "")
    secrets = [stdin, *(str(v) for v in (inputs.get("environment") or {}).values())]
    try:
        done = subprocess.run(
            [*interpreter, str(script)],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=inputs.get("dir") or os.getcwd(),
            env=env,
            timeout=TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(redact(f"{name}: local `{step}` could not run: {exc}", secrets)) from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip()[-2000:]
        raise ApplyError(
            redact(f"{name}: local `{step}` failed on this machine (exit {done.returncode}): {said}", secrets)
        )
    return {**outputs, "stdout": _trim(done.stdout), "stderr": _trim(done.stderr)}
