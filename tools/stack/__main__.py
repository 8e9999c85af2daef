"""``python -m tools.stack``: runs tools/stack/new.py (the command kept its name)."""

from tools.stack.new import main

raise SystemExit(main())
