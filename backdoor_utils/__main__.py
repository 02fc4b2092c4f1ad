"""``python -m backdoor_utils run|sweep ...`` (see :mod:`backdoor_utils.cli`)."""

import sys

from .cli import main

sys.exit(main())
