"""The forgeway policy pack, as the Pulumi CLI runs it (`pulumi preview --policy-pack policies`).

Only builds the pack: the policies live in the rules package. Constructing ``PolicyPack`` starts
the analyzer's gRPC server and blocks until the engine stops it, so tests never import
this module; they import ``policies.rules``. The CLI runs this file with the pack's
directory first on ``sys.path``, hence the plain ``import rules``.
"""

from pulumi_policy import PolicyPack
from rules import POLICIES

PolicyPack(name="forgeway", policies=POLICIES)
