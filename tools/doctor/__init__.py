"""`python -m tools.doctor --stack NAME [--json]`: the health and drift of a running stack.

Read-only: one probe per host, as root over the program's own SSH connection
(tools/hostssh.py), judged here against what the program itself would deploy (the stack
synthesized under Pulumi's mocks, tools/stack/synth.py). Every problem names its repair:
a ``pulumi up --replace``/``--target`` with the resource's URN, or the unit to run on a
host. Nothing is changed and no secret is printed. See tools/doctor/cli.py.
"""
