"""``python -m tools.applier``: runs tools/applier/apply.py (the command kept its name);
``python -m tools.applier state-delete ...`` / ``state-unprotect ...``: `pulumi state delete` /
`pulumi state unprotect` (tools/applier/state.py)."""

import sys

if sys.argv[1:2] in (["state-delete"], ["state-unprotect"]):
    from tools.applier.state import state_main

    raise SystemExit(state_main(sys.argv[1], sys.argv[2:]))

from tools.applier.apply import main

raise SystemExit(main())
