"""Allow ``python -m edged``."""

from edged.cli.main import main

raise SystemExit(main())
