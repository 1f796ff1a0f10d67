"""``python -m tests.sim``: see ``tests/sim/__init__.py`` and ``tests/sim/cli.py``."""

import sys

from tests.sim.cli import main

sys.exit(main())
