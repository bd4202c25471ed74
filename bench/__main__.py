"""Entry point for C{python -m bench}."""

from bench.run import main

raise SystemExit(main())
