"""``python -m wmsim`` runs the command-line interface."""

from wmsim.cli import main

raise SystemExit(main())
