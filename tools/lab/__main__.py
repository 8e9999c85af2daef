"""``python -m tools.lab``: runs tools/lab/topology.py (the command kept its name);
``python -m tools.lab wipe HOST``: a dead device replaced by a new one (tools/lab/wipe.py)."""

import sys

if sys.argv[1:2] == ["wipe"]:
    from tools.lab.wipe import main as wipe

    raise SystemExit(wipe(sys.argv[2:]))

from tools.lab.topology import main

raise SystemExit(main())
