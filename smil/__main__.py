"""`python -m smil` runs the `smil` command."""

from smil.cli import main

raise SystemExit(main())
