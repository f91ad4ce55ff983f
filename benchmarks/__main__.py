"""`python -m benchmarks ...`: the benchmark's CLI (benchmarks.runner)."""

import sys

from benchmarks.runner import main

sys.exit(main())
