"""``python -m vigil``: the same command as the ``vigil`` console script."""
import sys

from vigil.streams.cli import main

sys.exit(main())
