"""``python -m longspec.aggregate SWEEP_DIR [--out DIR]``."""

import sys

from longspec.aggregate import main

sys.exit(main())
