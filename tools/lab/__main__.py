"""``python -m tools.lab``: runs tools/lab/topology.py (the command kept its name)."""

from tools.lab.topology import main

raise SystemExit(main())
