"""``python -m meshxds``."""

import sys

from meshxds.cli import main

sys.exit(main())
