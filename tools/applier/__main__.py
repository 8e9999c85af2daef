"""``python -m tools.applier``: runs tools/applier/apply.py (the command kept its name);
``python -m tools.applier state-delete ...`` / ``state-unprotect ...``: `pulumi state delete` /
`pulumi state unprotect` (tools/applier/state.py)."""

import sys

if sys.argv[1:2] == ["state-delete"]:
    from tools.applier.state import state_delete_main

    raise SystemExit(state_delete_main(sys.argv[2:]))
if sys.argv[1:2] == ["state-unprotect"]:
    from tools.applier.state import state_unprotect_main

    raise SystemExit(state_unprotect_main(sys.argv[2:]))

from tools.applier.apply import main

raise SystemExit(main())
