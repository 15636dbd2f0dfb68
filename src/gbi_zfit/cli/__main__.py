"""``python -m gbi_zfit.cli``."""

import sys

from . import main

sys.exit(main())
