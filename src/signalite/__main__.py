"""`python -m signalite` is the same as the `signalite` command."""

from signalite.cli import main

raise SystemExit(main())
