"""`python -m serve`: the same as the `seg-serve` console script."""

from serve.cli import main

raise SystemExit(main())
