"""``python -m backdoor_utils run|sweep ...`` (see :mod:`backdoor_utils.cli`)."""

import sys

from .tooling.cli import main

sys.exit(main())
