"""``python -m sdnet.cli`` runs the command line."""

import sys

from sdnet.cli import main

sys.exit(main())
