"""``python -m sdnet`` (and ``torchrun -m sdnet``) runs the command line."""

import sys

from sdnet.cli import main

sys.exit(main())
