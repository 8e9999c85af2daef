"""``python -m tools.applier``: runs tools/applier/apply.py (the command kept its name)."""

from tools.applier.apply import main

raise SystemExit(main())
