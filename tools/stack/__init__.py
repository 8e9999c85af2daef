"""Stacks: their files, their secrets, and what the program registers for one.

- ``new``: `make new-stack` (``python -m tools.stack new NAME``);
- ``secrets``: ``secure:`` values of the passphrase provider (``python -m tools.stack.secrets``);
- ``file``: a Pulumi.<stack>.yaml read as the CLI hands it to the program;
- ``configs``: the committed stacks' config (prod decrypted, lab with placeholders);
- ``synth``: the program under Pulumi's mock monitor, recording what it registers.
"""
