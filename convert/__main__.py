"""`python -m convert ...` = `seg-convert ...`."""

import sys

from convert.cli import main

sys.exit(main())
