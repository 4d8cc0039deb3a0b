"""``python -m photoenhance``: the same as the ``photoenhance`` command."""

import sys

from photoenhance.cli import main

sys.exit(main())
